"""Cumulative dose-volume histograms: anatomical (by volume) and function-weighted (by share of function).

For a structure S with voxel doses D_i (Gy) and weights w_i (normalised perfusion, :mod:`.perfusion_weights`):

* anatomical DVH:        V(d) = #{i in S : D_i >= d} / #S                 (fraction of the structure's volume)
* function-weighted DVH: F(d) = sum_{i in S, D_i >= d} w_i / sum_{i in S} w_i   (fraction of the structure's function)

both cumulative, 1 at d = 0 and falling to 0 above the maximum dose. Voxels of a regular grid have one volume, so the
anatomical DVH counts voxels. F is the dose-function histogram of SPECT-guided lung planning (with unit weights it is
V). The curves are sampled on a dose-bin grid (:func:`dose_bins_gy`: 0.1 Gy steps by default, from 0 to one bin past
the largest dose).

A dose is compared with d at a tolerance of :data:`DOSE_TOLERANCE_GY` (1 uGy, far below any clinical meaning), so
that a dose stored as 19.9999999 Gy after interpolation or a float32 round trip still counts as receiving 20 Gy.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ImagingBasics.errors import UserError

#: a voxel receives d when its dose is >= d - DOSE_TOLERANCE_GY (Gy)
DOSE_TOLERANCE_GY = 1e-6
#: the default width of a dose bin (Gy)
DEFAULT_BIN_WIDTH_GY = 0.1


def dose_bins_gy(max_dose_gy: float, bin_width_gy: float = DEFAULT_BIN_WIDTH_GY) -> np.ndarray:
    """Dose levels (Gy) at which the DVHs are sampled: 0, w, 2w, ... up to the first level above ``max_dose_gy``
    (so that every curve ends at 0)."""
    width = float(bin_width_gy)
    if not width > 0:
        raise UserError(f"the DVH bin width must be positive, got {bin_width_gy!r} Gy")
    top = max(float(max_dose_gy), 0.0)
    n = int(np.floor(top / width + 1e-9)) + 2
    return width * np.arange(n, dtype=np.float64)


def cumulative_histogram(dose_gy: np.ndarray, levels_gy: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Fraction (0..1) of the total weight held by the voxels with dose >= each level (``weights`` None: every voxel
    weighs 1, the anatomical DVH). ``dose_gy`` and ``weights``: the structure's voxels (1D or any shape, same shape).
    NaN everywhere when the total weight is 0 (no voxel, or no function in the structure)."""
    d = np.asarray(dose_gy, dtype=np.float64).ravel()
    w = np.ones(d.size, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != d.shape:
        raise ValueError(f"{w.size} weights for {d.size} doses")
    levels = np.asarray(levels_gy, dtype=np.float64)
    total = float(w.sum())
    if d.size == 0 or not total > 0:
        return np.full(levels.shape, np.nan)
    order = np.argsort(d, kind="stable")
    d_sorted = d[order]
    at_or_above = np.concatenate([np.cumsum(w[order][::-1])[::-1], [0.0]])  # weight of voxels sorted[k:], k = 0..n
    first = np.searchsorted(d_sorted, levels - DOSE_TOLERANCE_GY, side="left")
    return np.clip(at_or_above[first] / total, 0.0, 1.0)


def anatomical_dvh(dose_gy: np.ndarray, mask: np.ndarray, levels_gy: np.ndarray) -> np.ndarray:
    """V(d): fraction (0..1) of the volume of ``mask`` receiving >= each dose level (Gy)."""
    return cumulative_histogram(np.asarray(dose_gy)[mask], levels_gy)


def function_weighted_dvh(dose_gy: np.ndarray, weights: np.ndarray, mask: np.ndarray, levels_gy: np.ndarray) -> np.ndarray:
    """F(d): fraction (0..1) of the function (sum of ``weights``) of ``mask`` in voxels receiving >= each dose level
    (Gy); NaN when the structure holds no function."""
    return cumulative_histogram(np.asarray(dose_gy)[mask], levels_gy, np.asarray(weights)[mask])
