"""Voxel weights for function-weighted dose metrics: how much each lung voxel contributes to lung function.

Function-weighted DVHs and mean doses weight each voxel of a structure by its share of the function (the dose-function
histograms of SPECT-guided planning; the 4DCT-ventilation literature does the same with ventilation). Here the
function is perfusion:

* :func:`normalised_perfusion` -- the perfusion inside the evaluated lungs, negative values (noise of a
  scatter-corrected SPECT) set to 0, divided by its maximum there: 0..1, and 0 outside the lungs;
* :func:`perfusion_weights` -- these values as weights, or, with a high-function threshold t, only the voxels at or
  above t (the high-function volume, :func:`~CTPerfusionMappingLib.metrics.functional_volumes`' split) keep their
  weight and all others get 0.

Function-weighted metrics are ratios (sum(w*D)/sum(w), sum(w where D >= d)/sum(w)), so the normalisation does not
change them; it makes the weights comparable between patients and with the 0.66 split of ``ctpm run``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ImagingBasics.errors import UserError

from ..metrics import functional_volumes


def normalised_perfusion(perfusion: np.ndarray, lung_mask: np.ndarray) -> np.ndarray:
    """float64 array: ``max(perfusion, 0) / max(perfusion in lung_mask)`` inside ``lung_mask``, 0 outside (0..1,
    dimensionless).

    Raises:
        UserError: the mask is empty or the perfusion has no positive value in it.
    """
    p = np.asarray(perfusion, dtype=np.float64)
    m = np.asarray(lung_mask, dtype=bool)
    if not m.any():
        raise UserError("the lung mask is empty: no lung voxels to weight")
    peak = float(p[m].max())
    if not peak > 0:
        raise UserError("the perfusion map has no positive value inside the lungs: function-weighted metrics are "
                        "undefined; is it the perfusion map of these lungs?")
    return np.where(m, np.clip(p, 0.0, None) / peak, 0.0)


def perfusion_weights(perfusion: np.ndarray, lung_mask: np.ndarray,
                      high_function_threshold: Optional[float] = None) -> np.ndarray:
    """The weight of each voxel (float64, 0..1): the normalised perfusion (:func:`normalised_perfusion`) or, with
    ``high_function_threshold`` t (fraction of the maximum), the normalised perfusion in the high-function volume
    of :func:`~CTPerfusionMappingLib.metrics.functional_volumes` (perfusion >= t x maximum) and 0 elsewhere.
    """
    w = normalised_perfusion(perfusion, lung_mask)
    if high_function_threshold is None:
        return w
    high = functional_volumes(perfusion, lung_mask, float(high_function_threshold)) == 2
    return np.where(high, w, 0.0)
