"""Plan metrics of a structure S (voxel doses D_i in Gy, function weights w_i from :mod:`.perfusion_weights`).

=========================  ======================================================  =====
metric                     formula                                                 unit
=========================  ======================================================  =====
MLD (mean lung dose)       sum_S D_i / #S                                          Gy
fMLD (function-weighted)   sum_S w_i D_i / sum_S w_i                               Gy
V_d                        100 * #{i in S : D_i >= d} / #S                         %
fV_d                       100 * sum_{S, D_i >= d} w_i / sum_S w_i                 %
mean dose in high function sum_{S and H} D_i / #(S and H)                          Gy
=========================  ======================================================  =====

V_d and fV_d are the anatomical and function-weighted DVHs (:mod:`.dvh`) at d; the standard levels are
:data:`DOSE_LEVELS_GY` (V5, V20, V30). The high-function volume H and the low-function volume L are the project's
functional volumes (:func:`~CTPerfusionMappingLib.metrics.functional_volumes`: the perfusion split at 0.66 of its
maximum in the lungs). A metric that is undefined (no function in S, S without high-function voxels) is NaN.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from .dvh import DOSE_TOLERANCE_GY

#: the dose levels (Gy) of the reported V_d and fV_d
DOSE_LEVELS_GY: Tuple[float, ...] = (5.0, 20.0, 30.0)
#: values of the functional-volume map (CTPerfusionMappingLib.metrics.functional_volumes)
LOW_FUNCTION, HIGH_FUNCTION = 1, 2


def mean_dose_gy(dose_gy: np.ndarray, mask: np.ndarray) -> float:
    """MLD: the mean dose (Gy) over the voxels of ``mask``; NaN for an empty mask."""
    d = np.asarray(dose_gy, dtype=np.float64)[mask]
    return float(d.mean()) if d.size else float("nan")


def function_weighted_mean_dose_gy(dose_gy: np.ndarray, weights: np.ndarray, mask: np.ndarray) -> float:
    """fMLD = sum(w*D) / sum(w) over the voxels of ``mask`` (Gy); NaN when the weights there sum to 0."""
    d = np.asarray(dose_gy, dtype=np.float64)[mask]
    w = np.asarray(weights, dtype=np.float64)[mask]
    total = float(w.sum())
    return float(np.dot(w, d) / total) if total > 0 else float("nan")


def volume_percent_receiving(dose_gy: np.ndarray, mask: np.ndarray, level_gy: float) -> float:
    """V_d: the percentage of the volume of ``mask`` receiving at least ``level_gy`` (Gy); NaN for an empty mask."""
    d = np.asarray(dose_gy, dtype=np.float64)[mask]
    if d.size == 0:
        return float("nan")
    return 100.0 * float(np.count_nonzero(d >= float(level_gy) - DOSE_TOLERANCE_GY)) / d.size


def function_percent_receiving(dose_gy: np.ndarray, weights: np.ndarray, mask: np.ndarray, level_gy: float) -> float:
    """fV_d: the percentage of the function (sum of ``weights``) of ``mask`` in voxels receiving at least
    ``level_gy`` (Gy); NaN when the weights there sum to 0."""
    d = np.asarray(dose_gy, dtype=np.float64)[mask]
    w = np.asarray(weights, dtype=np.float64)[mask]
    total = float(w.sum())
    if not total > 0:
        return float("nan")
    return 100.0 * float(w[d >= float(level_gy) - DOSE_TOLERANCE_GY].sum()) / total


def mean_dose_in_functional_volumes(dose_gy: np.ndarray, functional: np.ndarray, mask: np.ndarray) -> Dict[str, float]:
    """``{"high": Gy, "low": Gy}``: the mean dose in the high- and in the low-function part of ``mask``
    (``functional``: 2 high, 1 low, the map of :func:`~CTPerfusionMappingLib.metrics.functional_volumes`)."""
    f = np.asarray(functional)
    return {"high": mean_dose_gy(dose_gy, mask & (f == HIGH_FUNCTION)),
            "low": mean_dose_gy(dose_gy, mask & (f == LOW_FUNCTION))}
