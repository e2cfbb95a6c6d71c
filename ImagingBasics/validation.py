"""Plausibility checks of input images, run by every command of both command lines before the heavy work.

A wrong input must give a one-line :class:`~ImagingBasics.errors.UserError` that says what is wrong and what to do,
never a silent wrong result. :func:`check_ct` refuses a CT that

* holds NaN or infinite values, or voxels of a non-numeric type (:func:`require_finite`);
* is not in Hounsfield units: a CT in HU has voxels at or below :data:`AIR_HU` (air around the body, lungs, bowel
  gas). A CT stored as raw CT numbers (0..4095, air near 0) or with an offset has none, and neither has a CT cropped
  inside the body, which none of the pipelines can use; an image whose values span less than
  :data:`MIN_VALUE_RANGE_HU` (a mask, a probability map) is refused too;
* has an implausible geometry: fewer than :data:`MIN_VOXELS_PER_AXIS` voxels along an axis, or a voxel side outside
  :data:`MIN_VOXEL_MM` .. :data:`MAX_VOXEL_MM` (a 50 mm voxel is a damaged header, not a CT);

and returns quality warnings for what is usable but less reliable (voxels coarser than :data:`COARSE_VOXEL_MM`).
The thresholds are our choices, documented here; the tests check each one on real files.
"""

from __future__ import annotations

from typing import List

import numpy as np

from .errors import UserError
from .quality import QualityWarning
from .volume import Volume

#: a CT in HU has some voxels at or below this value (air is -1000 HU, lung -900..-500 HU)
AIR_HU = -500.0
#: an image whose values span less than this (HU) is not a CT (a mask or a probability map)
MIN_VALUE_RANGE_HU = 300.0
#: the fewest voxels along any axis of a usable CT
MIN_VOXELS_PER_AXIS = 4
#: plausible voxel sides (mm): clinical CTs have 0.3-1.5 mm in plane and 0.5-10 mm slices
MIN_VOXEL_MM = 0.1
MAX_VOXEL_MM = 10.0
#: voxel sides above this (mm) give a quality warning (results on such coarse CTs are less reliable)
COARSE_VOXEL_MM = 5.0
#: axis names of (x, y, z) for messages
_AXES = ("x (left-right)", "y (anterior-posterior)", "z (slices)")


def require_finite(volume: Volume, name: str) -> None:
    """Raise a one-line :class:`UserError` when ``volume`` is empty, holds NaN/infinite values or has an odd type."""
    a = volume.array
    if a.size == 0:
        raise UserError(f"the {name} is empty (no voxels)")
    if np.issubdtype(a.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise UserError(f"the {name} contains {bad} NaN or infinite voxel value{'s' if bad > 1 else ''}; "
                            "fix or re-export the image")
    elif not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
        raise UserError(f"the {name} has an unsupported voxel type {a.dtype}")


def check_geometry(volume: Volume, name: str = "CT") -> List[QualityWarning]:
    """Raise a one-line UserError for too few voxels along an axis or an implausible voxel size; return warnings for
    coarse voxels."""
    for axis, n in zip(_AXES, volume.size):
        if n < MIN_VOXELS_PER_AXIS:
            raise UserError(f"the {name} has {n} voxel{'s' if n != 1 else ''} along {axis}; at least "
                            f"{MIN_VOXELS_PER_AXIS} are needed: is it a single slice or a cropped export?")
    spacing = " x ".join(f"{s:.3g}" for s in volume.spacing)
    if min(volume.spacing) < MIN_VOXEL_MM or max(volume.spacing) > MAX_VOXEL_MM:
        raise UserError(f"the {name}'s voxel size {spacing} mm is implausible (each side must be {MIN_VOXEL_MM:g} to "
                        f"{MAX_VOXEL_MM:g} mm): check the image header (spacing, slice thickness)")
    if max(volume.spacing) > COARSE_VOXEL_MM:
        return [QualityWarning("coarse_voxels", f"the {name} has coarse voxels ({spacing} mm; above "
                               f"{COARSE_VOXEL_MM:g} mm): results are less reliable than on a CT of 0.5-3 mm voxels",
                               {"spacing_mm": [round(float(s), 4) for s in volume.spacing]})]
    return []


def check_hounsfield_units(ct: Volume, name: str = "CT") -> None:
    """Raise a one-line UserError unless the values look like a CT in Hounsfield units (see the module docstring)."""
    a = ct.array
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < MIN_VALUE_RANGE_HU:
        raise UserError(f"the {name} values run only from {lo:.4g} to {hi:.4g}: this is not a CT in Hounsfield units "
                        "(a label map, a mask or another modality?)")
    if lo > AIR_HU:
        raise UserError(f"the {name} values run from {lo:.0f} to {hi:.0f} with no voxel at or below {AIR_HU:.0f} HU: "
                        "this is not a CT in Hounsfield units (air should be near -1000 HU). If it is stored as raw "
                        "CT numbers (air near 0), convert it with the convert command and --add -1024 (or the offset "
                        "of your scanner); a CT cropped inside the body cannot be used")


def check_ct(ct: Volume, name: str = "CT") -> List[QualityWarning]:
    """The checks of a CT before any pipeline runs on it: finite values, Hounsfield units, geometry.

    Raises:
        UserError: one line naming what is wrong and what to do.
    Returns:
        Quality warnings (:class:`~.quality.QualityWarning`, possibly none) for the caller's report.
    """
    require_finite(ct, name)
    warnings = check_geometry(ct, name)
    check_hounsfield_units(ct, name)
    return warnings


def check_label_map(labels: Volume, name: str = "label map") -> None:
    """Raise a one-line UserError unless ``labels`` holds whole numbers of 0 or more (0: no label): a label map with
    fractional values is an image or a resampled (interpolated) label map, one with negative values another image
    (a CT given as labels); either would silently lose or merge regions in a table."""
    require_finite(labels, name)
    a = labels.array
    if a.dtype == bool:
        return
    if np.issubdtype(a.dtype, np.floating) and not np.array_equal(a, np.round(a)):
        raise UserError(f"the {name} holds fractional values (e.g. {float(a[a != np.round(a)].flat[0]):g}): a label map "
                        "holds whole numbers; is it an image, or a label map resampled with linear interpolation?")
    if a.size and float(a.min()) < 0:
        raise UserError(f"the {name} holds negative values (down to {float(a.min()):g}): label values must be 0 (no "
                        "label) or positive whole numbers; is it an image rather than a label map?")


def read_ct(path, name: str = "CT") -> Volume:
    """Read a CT file or DICOM folder and check it (:func:`check_ct`); for callers that check inputs up front
    (batch scripts) before starting any work."""
    from .imageio import read_volume

    ct = read_volume(path)
    check_ct(ct, name)
    return ct
