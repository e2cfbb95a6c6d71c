"""Checks that a synthetic case is learnable but not trivial (used by the tests and bench/validate_phantom.py).

* :func:`spect_truth_spearman`: the SPECT, resampled onto the CT through the recorded misalignment (which undoes
  it), normalised for partial volume at the lung border and by its 75th percentile (equation 2 of Ren 2021 IJROBP), against
  the truth perfusion: how much of the truth a SPECT carries.
* :func:`hu_truth_spearman`: |Spearman R| of Gaussian-smoothed HU against the truth; since Spearman R is
  invariant under monotone maps, this is what the best monotone function of smoothed HU can reach.

Both use the papers' evaluation voxels: lung voxels within the -1000..-300 HU window (Ren 2022 Front Oncol), where vessels and
tumour are removed.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
from scipy import ndimage, stats

from ..plausibility import posterior_to_anterior
from .spect import partial_volume_normalised, resample_to_reference, transform_from_meta

HU_WINDOW = (-1000.0, -300.0)
SMOOTHING_MM = (0.0, 2.0, 5.0, 10.0, 15.0)


def parenchyma_mask(case) -> np.ndarray:
    """Lung voxels inside the -1000..-300 HU window."""
    hu = case.ct.array
    return (case.lungs.array > 0) & (hu >= HU_WINDOW[0]) & (hu <= HU_WINDOW[1])


def normalised_spect_on_ct(case) -> np.ndarray:
    """The SPECT on the CT grid, misalignment undone, partial-volume and P75 normalised (0 outside the lungs)."""
    lung = case.lungs.array > 0
    on_ct = resample_to_reference(case.spect, case.ct, transform_from_meta(case.meta))
    out = partial_volume_normalised(on_ct, lung, case.meta["spect"]["fwhm_mm"])
    p75 = float(np.percentile(out[lung], 75)) if lung.any() else 1.0
    return out / max(p75, 1e-9)


def spect_truth_spearman(case) -> float:
    mask = parenchyma_mask(case)
    return float(stats.spearmanr(normalised_spect_on_ct(case)[mask], case.truth.array[mask])[0])


def hu_truth_spearman(case, smoothing_mm: Sequence[float] = SMOOTHING_MM) -> Dict[float, float]:
    """|Spearman R| between smoothed HU (Gaussian sigma in mm; 0 = raw) and the truth, per smoothing."""
    mask = parenchyma_mask(case)
    hu = case.ct.array.astype(np.float32)
    truth = case.truth.array[mask]
    out = {}
    for sigma_mm in smoothing_mm:
        smoothed = ndimage.gaussian_filter(hu, [sigma_mm / s for s in case.ct.spacing[::-1]]) if sigma_mm else hu
        out[float(sigma_mm)] = float(abs(stats.spearmanr(smoothed[mask], truth)[0]))
    return out


def truth_posterior_to_anterior(case, side: int) -> float:
    """Mean truth perfusion of one lung's posterior half over its anterior half (``side``: 1 right, 2 left, as in
    lungs.nrrd; :func:`~CTPerfusionMappingLib.plausibility.posterior_to_anterior`, the measure ``ctpm run`` and the
    real-CT plausibility report apply to a map): the supine gravity gradient the phantom carries."""
    return posterior_to_anterior(case.truth.array, case.lungs, side)
