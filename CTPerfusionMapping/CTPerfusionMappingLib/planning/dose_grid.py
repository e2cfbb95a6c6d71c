"""A planned dose checked and put on the perfusion grid (the CT grid of ``ctpm run``).

A planning system exports the dose on its own calculation grid (often 2-3 mm, cropped to the body). Before any DVH:

* :func:`check_dose_values` refuses a dose that is empty, holds NaN/infinite or negative values, is 0 everywhere, or
  is obviously not in Gy (a maximum above :data:`MAX_PLAUSIBLE_DOSE_GY`: a dose in cGy reads 100 times too high);
* :func:`dose_on_grid` resamples it linearly onto the perfusion grid with the project's one resampler
  (:func:`ImagingBasics.resample.resample`; linear interpolation reproduces a linear dose field exactly) and measures
  which lung voxels lie outside the dose grid (:func:`fraction_outside_dose_grid`): more than
  :data:`MAX_FRACTION_OUTSIDE` of the lungs is refused (the DVHs would miss part of the lungs); a smaller part gets
  0 Gy, as a planning system reports outside its calculation grid, with a warning that says how much.

A voxel counts as inside the dose grid when its centre lies within the dose grid's voxels (the sample points grown by
half a voxel, as ITK interpolates).
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.quality import QualityWarning
from ImagingBasics.resample import resample
from ImagingBasics.validation import require_finite
from ImagingBasics.volume import Volume

#: a dose maximum above this (Gy) is not a radiotherapy dose in Gy (a dose in cGy of a 60 Gy plan reads 6000)
MAX_PLAUSIBLE_DOSE_GY = 200.0
#: at most this fraction of the evaluated lung voxels may lie outside the dose grid (they get 0 Gy, with a warning)
MAX_FRACTION_OUTSIDE = 0.01
#: dose voxels coarser than this (mm) give a warning: interpolation flattens the dose gradients at the field edges
COARSE_DOSE_GRID_MM = 5.0


def check_dose_values(dose: Volume, name: str) -> None:
    """Raise a one-line UserError unless ``dose`` holds finite, non-negative values in Gy, not all 0.

    ``name``: how the dose is called in the message (the plan name and file).
    """
    require_finite(dose, name)
    a = np.asarray(dose.array)
    low, high = float(a.min()), float(a.max())
    if low < 0:
        raise UserError(f"the {name} holds negative values (down to {low:.4g}): a dose is never negative; is it a dose "
                        "difference or another kind of image?")
    if high <= 0:
        raise UserError(f"the {name} is 0 in every voxel: export the plan's calculated dose")
    if high > MAX_PLAUSIBLE_DOSE_GY:
        raise UserError(f"the {name} reaches {high:.4g}, more than {MAX_PLAUSIBLE_DOSE_GY:g} Gy: is it in cGy? Give the "
                        "dose in Gy (divide a dose in cGy by 100)")


def inside_dose_grid(dose: Volume, reference: Volume) -> np.ndarray:
    """bool array on ``reference``'s grid: True where the voxel centre lies within the dose grid."""
    ones = dose.with_array(np.ones(dose.shape, dtype=np.uint8))
    return resample(ones, reference, interpolation="nearest", default=0, dtype=None).array > 0


def fraction_outside_dose_grid(dose: Volume, reference: Volume, mask: np.ndarray) -> float:
    """Fraction (0..1) of the ``mask`` voxels (on ``reference``'s grid) whose centre lies outside the dose grid."""
    n = int(np.count_nonzero(mask))
    if n == 0:
        raise UserError("no lung voxels to evaluate the dose in")
    outside = np.count_nonzero(mask & ~inside_dose_grid(dose, reference))
    return float(outside) / n


def dose_on_grid(dose: Volume, reference: Volume, lung_mask: np.ndarray, name: str) -> Tuple[Volume, List[QualityWarning]]:
    """The dose (Gy, float64) on ``reference``'s grid, linearly interpolated, 0 Gy outside the dose grid; and the
    warnings. The dose is checked first (:func:`check_dose_values`).

    Raises:
        UserError: a bad dose, or more than :data:`MAX_FRACTION_OUTSIDE` of ``lung_mask`` outside the dose grid.
    """
    check_dose_values(dose, name)
    warnings: List[QualityWarning] = []
    outside = fraction_outside_dose_grid(dose, reference, lung_mask)
    if outside >= 1.0:
        raise UserError(f"the {name} does not overlap the lungs at all: does it belong to this patient and CT (same "
                        "frame of reference)?")
    if outside > MAX_FRACTION_OUTSIDE:
        raise UserError(f"{100 * outside:.1f} % of the lungs lie outside the grid of the {name}: export the dose over "
                        "the whole lungs (a calculation grid covering the body)")
    if outside > 0:
        warnings.append(QualityWarning(
            "dose_grid_partial", f"{100 * outside:.2f} % of the lungs lie outside the grid of the {name} and count as "
            "0 Gy", {"outside_percent": round(100 * outside, 3)}))
    if max(dose.spacing) > COARSE_DOSE_GRID_MM:
        spacing = " x ".join(f"{s:.3g}" for s in dose.spacing)
        warnings.append(QualityWarning(
            "dose_grid_coarse", f"the {name} has coarse voxels ({spacing} mm, above {COARSE_DOSE_GRID_MM:g} mm): "
            "DVHs near steep dose gradients are less accurate", {"spacing_mm": [round(s, 4) for s in dose.spacing]}))
    if dose.same_geometry(reference):
        return reference.with_array(np.asarray(dose.array, dtype=np.float64)), warnings
    on_grid = resample(dose, reference, interpolation="linear", default=0.0, dtype=np.float64)
    return on_grid, warnings
