"""The truth perfusion of a synthetic case (relative units: mean 1 over the lung parenchyma).

Perfusion of a lung voxel = (gravity gradient) x (apex-to-base gradient) x (flow of its arterial territory)
x (health of its tissue) x (fraction of the voxel that is capillary-bearing parenchyma):

* gravity (supine patient): linear in the anterior-posterior position, posterior / anterior = 1 + ``gravity_gain``;
* base / apex = 1 + ``basal_gain``;
* territory flow: the product of the flow-split factors down the arterial tree (see vessels.py),
  times the downstream factors of emboli and tumour compression;
* tissue: emphysema, bullae and opacities (pathology.py);
* parenchyma fraction: large vessels, bronchi and tumour carry no MAA-trapping capillaries.

Gravity, territory flow and the emboli are computed on the 4 mm model grid and smoothed by a 4 mm Gaussian
(capillary beds of neighbouring territories interdigitate); tissue factors and the parenchyma fraction are
applied on the CT grid. CT therefore predicts perfusion through context (vessel calibre, position, tumour,
texture of emphysema and opacities), not pointwise through HU: dense dependent lung is well perfused while
dense consolidation is not, and emboli barely change density.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
from scipy import ndimage

from .params import PerfusionParams

SMOOTHING_MM = 4.0


def gravity_factor(y_mm: np.ndarray, cavity_ap_mm: float, gain: float) -> np.ndarray:
    """Posterior (dependent) lung is better perfused: 1 at the front of the cavity, 1 + gain at the back."""
    yn = np.clip((y_mm + cavity_ap_mm) / (2.0 * cavity_ap_mm), 0.0, 1.0)
    return 1.0 + gain * yn


def basal_factor(z_mm: np.ndarray, lung_height_mm: float, gain: float) -> np.ndarray:
    """The bases are better perfused than the apices: 1 + gain at the base, 1 at the apex."""
    return 1.0 + gain * (1.0 - np.clip(z_mm / lung_height_mm, 0.0, 1.0))


def lung_share_factors(healthy_flow: np.ndarray, right: np.ndarray, right_share: float):
    """(right, left) multipliers that give the right lung ``right_share`` of the summed ``healthy_flow`` (the flow of
    the lungs before any pathology; ``right``: which entries lie in the right lung). The lobar arteries' own
    heterogeneity would otherwise spread the right/left split far wider than the 2.1 % SD of normal scans
    (Cheng et al., Congenit Heart Dis 2006); pathologies change the split afterwards, as in patients."""
    total = float(healthy_flow.sum())
    right_flow = float(healthy_flow[right].sum())
    if total <= 0 or right_flow <= 0 or right_flow >= total:
        return 1.0, 1.0
    return right_share * total / right_flow, (1.0 - right_share) * total / (total - right_flow)


def leaf_factors(tree, pathologies: Dict) -> Dict[int, float]:
    """Flow factor of each leaf territory: heterogeneity x emboli x tumour compression."""
    factors = {leaf: tree.leaf_flow_factor(leaf) for leaf in tree.leaves()}
    emboli = pathologies.get("embolism")
    if emboli:
        for s, f in zip(emboli["occluded_segments"], emboli["downstream_factor"]):
            for leaf in tree.leaves_below(s):
                factors[leaf] *= f
    tumour = pathologies.get("tumour")
    if tumour:
        for s in tumour["compressed_segments"]:
            for leaf in tree.leaves_below(s):
                factors[leaf] *= tumour["downstream_factor"]
    return factors


def mosaic_shift_by_leaf(tree, pathologies: Dict) -> Dict[int, float]:
    """HU change of each territory: oligaemia downstream of an embolus lowers its density (mosaic attenuation)."""
    shift = {leaf: 0.0 for leaf in tree.leaves()}
    emboli = pathologies.get("embolism")
    if emboli:
        for s, hu in zip(emboli["occluded_segments"], emboli["mosaic_hu"]):
            for leaf in tree.leaves_below(s):
                shift[leaf] += hu
    return shift


def smooth_and_extend(values: np.ndarray, mask: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Gaussian-smooth ``values`` within ``mask`` (normalised convolution), then fill outside the mask with the
    nearest inside value, so that interpolating onto a finer grid does not darken the lung border."""
    m = mask.astype(np.float32)
    num = ndimage.gaussian_filter(values * m, sigma_vox)
    den = ndimage.gaussian_filter(m, sigma_vox)
    smooth = np.where(mask, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)
    if not mask.any():
        return smooth
    _, nearest = ndimage.distance_transform_edt(~mask, return_indices=True)
    return smooth[tuple(nearest)].astype(np.float32)


def normalise_to_mean(truth: np.ndarray, lung_mask: np.ndarray) -> np.ndarray:
    """Scale so that the mean over ``lung_mask`` is 1 (relative perfusion); zero outside the lungs."""
    mean = float(truth[lung_mask].mean()) if lung_mask.any() else 1.0
    return np.where(lung_mask, truth / max(mean, 1e-9), 0.0).astype(np.float32)


def describe(p: PerfusionParams) -> str:
    return (f"gravity x{1 + p.gravity_gain:.2f} posterior/anterior, base/apex x{1 + p.basal_gain:.2f}, "
            f"flow split SD {p.branch_sigma:.2f} at every branching")
