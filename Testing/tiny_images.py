"""Small but real images for tests that need a readable, plausible file (argument parsing, up-front checks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ImagingBasics.imageio import write_volume
from ImagingBasics.volume import Volume


def tiny_ct(shape=(8, 10, 12), spacing=(2.0, 2.0, 3.0)) -> Volume:
    """A CT in HU: air (-1000) around a soft-tissue block (40 HU) with a bone rod (700 HU)."""
    a = np.full(shape, -1000.0, np.float32)
    a[1:-1, 2:-2, 2:-2] = 40.0
    a[:, shape[1] // 2, shape[2] // 2] = 700.0
    return Volume(a, spacing, (-10.0, -12.0, 0.0))


def write_tiny_ct(path: Path, **kwargs) -> Path:
    write_volume(tiny_ct(**kwargs), path)
    return Path(path)


def write_tiny_image(path: Path, kind: str = "spect") -> Path:
    """A readable image on the tiny CT's grid: ``spect`` (counts, 100 in the body and 1 outside) or ``labels`` (0
    outside, 1 in the body)."""
    ct = tiny_ct()
    body = ct.array > -500
    if kind == "labels":
        write_volume(ct.with_array(body.astype(np.uint8)), path)
    else:
        write_volume(ct.with_array(np.where(body, 100.0, 1.0).astype(np.float32)), path)
    return Path(path)


def write_weights_archive(path: Path) -> Path:
    """A torch weights archive (the zip format ``torch.save`` writes) holding nothing a model could load: enough for
    the checks that look at the file's form, not its content."""
    import torch

    torch.save({"format": "not a model"}, str(path))
    return Path(path)
