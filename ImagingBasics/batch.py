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
