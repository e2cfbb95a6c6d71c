"""Helpers of the Slicer modules' batch scripts (``Slicer --python-script <Module>Batch.py ...``): argument errors as
:class:`~ImagingBasics.errors.UserError`, so that the script prints one line and exits with status 2 (the command-line
convention), not argparse's own exit.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from .errors import UserError


class BatchArgumentParser(argparse.ArgumentParser):
    """argparse for the modules' batch scripts: a bad argument raises UserError instead of
    exiting, so that the script decides the exit status."""

    def error(self, message):
        raise UserError(message)


def existing_file(path: Optional[str], what: str) -> Optional[str]:
    """``path`` unchanged when it is None or exists; else a UserError naming ``what``."""
    if path and not Path(path).exists():
        raise UserError(f"{what} not found: {path}")
    return path


def checked_image(path: Optional[str], what: str) -> Optional[str]:
    """``path`` unchanged when it is None or names a readable image with finite values (NaN or infinite voxels would
    become a NaN result); else a one-line UserError. The batch scripts check their inputs with it before Slicer loads
    anything, so that a bad file is a bad argument (exit 2), not a failed run."""
    from .imageio import read_volume
    from .validation import require_finite

    if existing_file(path, what):
        require_finite(read_volume(path), what)
    return path


def checked_label_map(path: Optional[str], what: str) -> Optional[str]:
    """As :func:`checked_image` for a label map (whole numbers of 0 or more). A Slicer segmentation file
    (``.seg.nrrd``) is checked for existence only: Slicer's own reader decides what it holds."""
    from .imageio import read_volume
    from .validation import check_label_map

    if existing_file(path, what) and not str(path).lower().endswith(".seg.nrrd"):
        check_label_map(read_volume(path), what)
    return path


def checked_weights(path: Optional[str]) -> Optional[str]:
    """``path`` unchanged when it is None or a torch weights archive (:func:`~.checkpoints.check_weights_file`, no
    torch needed); else a one-line UserError."""
    from .checkpoints import check_weights_file

    if path:
        check_weights_file(path)
    return path

