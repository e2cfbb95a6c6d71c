"""The CT, model and SPECT grids of a synthetic case.

* CT ``full``: 512 x 512 at 0.977 x 0.977 mm in plane (as in Ren 2021 IJROBP), slices 1.25, 2.5 or 3.75 mm.
* CT ``small``: 128 x 128 at 3.906 mm in plane (the same 500 mm field of view), 5 mm slices, for fast tests.
* model grid: isotropic 4 mm over the same field of view; the smooth fields (perfusion, arterial territories,
  mosaic attenuation) are computed there and interpolated onto the CT grid.
* SPECT ``standard``: 128^3 at 4.42 mm (as in Ren 2021 IJROBP). SPECT ``fine``: 128 x 128 in plane at 2.76 mm with
  60 slices of 5 mm (the slice spacing is our choice: 60 slices of 1 mm would cover only 6 cm of a lung).

All grids have identity direction (axial, LPS) and are centred in x and y on the body axis; in z the CT
covers the lungs with margins, and the SPECT is centred on the CT.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume

CT_SIZES = {"small": (128, 3.90625), "full": (512, 0.9765625)}
SPECT_GRIDS = {"standard": ((128, 128, 128), (4.42, 4.42, 4.42)), "fine": ((128, 128, 60), (2.76, 2.76, 5.0))}
MODEL_SPACING_MM = 4.0
CT_MARGIN_BELOW_MM = 45.0
CT_MARGIN_ABOVE_MM = 25.0


def empty_volume(size_xyz: Tuple[int, int, int], spacing: Tuple[float, float, float], origin, dtype=np.float32) -> Volume:
    nx, ny, nz = size_xyz
    return Volume(np.zeros((nz, ny, nx), dtype=dtype), spacing, origin)


def ct_grid(size: str, slice_thickness_mm: float, lung_height_mm: float) -> Volume:
    """An empty int16 CT grid covering the lungs (z = 0 at the lung bases) for size ``small`` or ``full``."""
    if size not in CT_SIZES:
        raise UserError(f"unknown phantom size {size!r}; choose 'small' or 'full'")
    n, pixel = CT_SIZES[size]
    z0 = -CT_MARGIN_BELOW_MM
    nz = int(np.ceil((lung_height_mm + CT_MARGIN_ABOVE_MM - z0) / slice_thickness_mm)) + 1
    half = (n - 1) / 2.0 * pixel
    return empty_volume((n, n, nz), (pixel, pixel, slice_thickness_mm), (-half, -half, z0), np.int16)


def model_grid(ct: Volume) -> Volume:
    """An isotropic float32 grid of MODEL_SPACING_MM covering the CT's field of view."""
    extent = np.array(ct.spacing) * (np.array(ct.size) - 1)
    size = tuple(int(np.ceil(e / MODEL_SPACING_MM)) + 1 for e in extent)
    return empty_volume(size, (MODEL_SPACING_MM,) * 3, ct.origin)


def spect_grid(ct: Volume, name: str = "standard") -> Volume:
    """An empty float32 SPECT grid (``standard`` or ``fine``) centred on the CT's centre."""
    if name not in SPECT_GRIDS:
        raise UserError(f"unknown SPECT grid {name!r}; choose from {', '.join(SPECT_GRIDS)}")
    size, spacing = SPECT_GRIDS[name]
    centre = np.asarray(ct.origin) + np.array(ct.spacing) * (np.array(ct.size) - 1) / 2.0
    origin = centre - np.array(spacing) * (np.array(size) - 1) / 2.0
    return empty_volume(size, spacing, tuple(origin))


def axis_coordinates(volume: Volume) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1D LPS coordinates (mm) of the voxel centres along x, y and z (identity direction only)."""
    if not np.allclose(volume.direction, np.eye(3)):
        raise UserError("synthetic grids must have identity direction")
    nx, ny, nz = volume.size
    return tuple(volume.origin[a] + volume.spacing[a] * np.arange(n) for a, n in enumerate((nx, ny, nz)))  # type: ignore[return-value]
