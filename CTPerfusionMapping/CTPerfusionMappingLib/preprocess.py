"""Preprocessing of Ren 2021 IJROBP and Ren 2022 Front Oncol: hemi-lung samples of 128 x 64 x 64 voxels, CT
enhancement (equation 1) and SPECT standardisation (equation 2).

One sample per lung (right, left), as in the papers:

1. :func:`sample_grid`: the lung's bounding box in patient space (LPS mm, axis-aligned, so any CT orientation
   works) resampled to ``SAMPLE_SHAPE`` = 128 x 64 x 64 voxels (z, y, x: 128 along the cranio-caudal axis).
   The left lung is not mirrored (the papers do not mention it).
2. :func:`resample_to_sample`: CT and SPECT linearly, masks by linear interpolation thresholded at 0.5.
3. :func:`parenchyma_mask`: the lung minus tumour and vessels, i.e. voxels outside the -1000..-300 HU window
   (Ren 2022 Front Oncol).
4. :func:`ct_enhancement`, equation (1) of Ren 2021 IJROBP: histogram equalisation of the window through the cumulative
   histogram of the sample's parenchyma, (chf(HU) - chf(-1000)) / (chf(-300) - chf(-1000)), outliers clipped to the
   window; then a median filter of 10 voxels and a uniform filter of 5 voxels. Choices where the paper is silent:
   the filters use parenchyma voxels only (a masked median on 256 grey levels, exact up to that quantisation; a
   normalised uniform average), so the lung border is not dragged towards the zero background; the result is 0
   outside the parenchyma.
5. :func:`spect_standardisation`, equation (2) of Ren 2021 IJROBP: SPECT / HIR with HIR = P75 of the SPECT inside the lungs,
   clipped to 0..1 (the evaluation ground truth), then discretised to 11 levels 0, 0.1, ..., 1 (training targets).
   HIR is taken over both lungs of the patient by default (``hir_scope="patient"``), which keeps the left/right
   balance; ``"hemilung"`` computes it per lung.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from ImagingBasics.errors import UserError
from ImagingBasics.resample import resample
from ImagingBasics.volume import Volume

SAMPLE_SHAPE = (128, 64, 64)  # z, y, x
SIDES = {1: "right", 2: "left"}


@dataclass(frozen=True)
class PreprocessParams:
    shape: Tuple[int, int, int] = SAMPLE_SHAPE
    hu_window: Tuple[float, float] = (-1000.0, -300.0)
    median_size: int = 10
    uniform_size: int = 5
    levels: int = 11
    hir_percentile: float = 75.0
    hir_scope: str = "patient"  # or "hemilung"
    margin_mm: float = 0.0

    def to_dict(self) -> Dict:
        return {"shape": list(self.shape), "hu_window": list(self.hu_window), "median_size": self.median_size,
                "uniform_size": self.uniform_size, "levels": self.levels, "hir_percentile": self.hir_percentile,
                "hir_scope": self.hir_scope, "margin_mm": self.margin_mm}


@dataclass
class LungSample:
    """One hemi-lung on its 128 x 64 x 64 grid (``grid`` holds the geometry; arrays are [z, y, x])."""

    side: int  # 1 right, 2 left
    grid: Volume
    ct_hu: np.ndarray
    lung: np.ndarray  # bool
    parenchyma: np.ndarray  # bool: lung within the HU window
    ct_input: np.ndarray  # float32 0..1, equation (1); 0 outside the parenchyma
    spect_eval: Optional[np.ndarray] = None  # SPECT / HIR clipped to 0..1
    spect_target: Optional[np.ndarray] = None  # discretised to 11 levels

    @property
    def name(self) -> str:
        return SIDES[self.side]


def sample_grid(lungs: Volume, side: int, shape=SAMPLE_SHAPE, margin_mm: float = 0.0) -> Volume:
    """The 128 x 64 x 64 grid (identity direction, LPS) spanning one lung's bounding box in patient space."""
    idx = np.argwhere(lungs.array == side)
    if idx.size == 0:
        raise UserError(f"the {SIDES[side]} lung is empty")
    corners = _box_corners(idx)
    pts = lungs.index_to_lps(corners)
    half = np.abs(lungs.direction @ (0.5 * np.asarray(lungs.spacing)))  # half a voxel along each patient axis
    lo = pts.min(axis=0) - half - margin_mm
    hi = pts.max(axis=0) + half + margin_mm
    nz, ny, nx = shape
    size = np.array([nx, ny, nz], float)
    spacing = (hi - lo) / size
    origin = lo + spacing / 2.0
    return Volume(np.zeros(shape, np.float32), tuple(spacing), tuple(origin), np.eye(3))


def _box_corners(idx_kji: np.ndarray) -> np.ndarray:
    """The 8 corners (i, j, k) of the index bounding box of voxels given as (k, j, i) rows."""
    lo, hi = idx_kji.min(axis=0)[::-1], idx_kji.max(axis=0)[::-1]
    return np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])], float)


def resample_to_sample(volume: Volume, grid: Volume, linear: bool = True, default: float = 0.0) -> np.ndarray:
    """``volume`` resampled onto the sample grid (float32)."""
    return resample(volume, grid, interpolation="linear" if linear else "nearest", default=default).array


def mask_to_sample(mask: np.ndarray, like: Volume, grid: Volume) -> np.ndarray:
    """A boolean mask resampled by linear interpolation of its indicator, thresholded at 0.5."""
    return resample_to_sample(like.with_array(mask.astype(np.float32)), grid) >= 0.5


def parenchyma_mask(ct_hu: np.ndarray, lung: np.ndarray, hu_window=(-1000.0, -300.0)) -> np.ndarray:
    """Lung voxels inside the HU window: tumour and vessels (above -300 HU) removed, as in Ren 2022 Front Oncol."""
    return lung & (ct_hu >= hu_window[0]) & (ct_hu <= hu_window[1])


def histogram_equalise(ct_hu: np.ndarray, mask: np.ndarray, hu_window=(-1000.0, -300.0)) -> np.ndarray:
    """Equation (1) of Ren 2021 IJROBP without the filtering: (chf(HU) - chf(lo)) / (chf(hi) - chf(lo)) on the window.

    chf is the cumulative histogram (1 HU bins) of the clipped HU of the voxels in ``mask``; values outside the
    window are replaced by the window's ends first. Returns float32 in 0..1 (0 outside ``mask``).
    """
    lo, hi = hu_window
    clipped = np.clip(ct_hu, lo, hi)
    out = np.zeros(ct_hu.shape, np.float32)
    if not mask.any():
        return out
    bins = np.arange(lo, hi + 2.0)  # 1 HU bins, the last one closed
    hist, _ = np.histogram(clipped[mask], bins=bins)
    chf = np.cumsum(hist).astype(np.float64)
    chf_lo, chf_hi = chf[0], chf[-1]
    index = np.clip(np.floor(clipped[mask] - lo).astype(int), 0, len(chf) - 1)
    out[mask] = (chf[index] - chf_lo) / max(chf_hi - chf_lo, 1.0)
    return out


def masked_median(values01: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """Median over a ``size``^3 cube of the in-mask neighbours (256 grey levels), 0 outside the mask."""
    from skimage.filters import rank

    quantised = np.round(np.clip(values01, 0.0, 1.0) * 255.0).astype(np.uint8)
    med = rank.median(quantised, footprint=np.ones((size,) * 3, bool), mask=mask.astype(np.uint8))
    return np.where(mask, med.astype(np.float32) / 255.0, 0.0).astype(np.float32)


def masked_uniform(values: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size``^3 cube of the in-mask neighbours (normalised convolution), 0 outside the mask."""
    m = mask.astype(np.float32)
    num = ndimage.uniform_filter(values * m, size=size, mode="constant")
    den = ndimage.uniform_filter(m, size=size, mode="constant")
    return np.where(mask, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


def ct_enhancement(ct_hu: np.ndarray, parenchyma: np.ndarray, params: PreprocessParams = PreprocessParams()) -> np.ndarray:
    """Equation (1) of Ren 2021 IJROBP: histogram equalisation on the HU window, median filter 10, uniform filter 5."""
    eq = histogram_equalise(ct_hu, parenchyma, params.hu_window)
    if params.median_size > 1:
        eq = masked_median(eq, parenchyma, params.median_size)
    if params.uniform_size > 1:
        eq = masked_uniform(eq, parenchyma, params.uniform_size)
    return eq


def high_intensity_region(spect: np.ndarray, mask: np.ndarray, percentile: float = 75.0) -> float:
    """HIR of equation (2): the ``percentile`` (75th) of the SPECT inside ``mask``."""
    values = spect[mask]
    if values.size == 0:
        raise UserError("the SPECT has no values inside the lungs: is it aligned with the CT?")
    hir = float(np.percentile(values, percentile))
    if not np.isfinite(hir) or hir <= 0:
        raise UserError("the SPECT is zero over most of the lungs: is it aligned with the CT, and is it a perfusion SPECT?")
    return hir


def spect_standardisation(spect: np.ndarray, hir: float, levels: int = 11) -> Tuple[np.ndarray, np.ndarray]:
    """Equation (2) of Ren 2021 IJROBP: (SPECT / HIR clipped to 0..1, and the same discretised to ``levels`` values 0..1)."""
    normalised = np.clip(spect / hir, 0.0, 1.0).astype(np.float32)
    steps = levels - 1
    return normalised, (np.round(normalised * steps) / steps).astype(np.float32)


def preprocess_case(ct: Volume, lungs: Volume, spect_on_ct: Optional[Volume] = None,
                    params: PreprocessParams = PreprocessParams()) -> List[LungSample]:
    """Right and left hemi-lung samples of a case (SPECT, when given, must already be on the CT grid)."""
    if not lungs.same_geometry(ct):
        raise UserError("the lung labels are not on the CT grid")
    if spect_on_ct is not None and not spect_on_ct.same_geometry(ct):
        raise UserError("the SPECT must be resampled onto the CT grid first")
    hir_patient = None
    if spect_on_ct is not None and params.hir_scope == "patient":
        hir_patient = high_intensity_region(spect_on_ct.array, lungs.array > 0, params.hir_percentile)
    samples = []
    for side in SIDES:
        if not (lungs.array == side).any():
            continue
        grid = sample_grid(lungs, side, params.shape, params.margin_mm)
        hu = resample_to_sample(ct, grid, default=-1000.0)
        lung = mask_to_sample(lungs.array == side, lungs, grid)
        par = parenchyma_mask(hu, lung, params.hu_window)
        sample = LungSample(side, grid, hu, lung, par, ct_enhancement(hu, par, params))
        if spect_on_ct is not None:
            spect = resample_to_sample(spect_on_ct, grid)
            hir = hir_patient if hir_patient is not None else high_intensity_region(spect, lung, params.hir_percentile)
            sample.spect_eval, sample.spect_target = spect_standardisation(spect, hir, params.levels)
        samples.append(sample)
    if not samples:
        raise UserError("no lung labels (1 right, 2 left) to preprocess")
    return samples


def sample_to_ct(values: np.ndarray, grid: Volume, ct: Volume) -> np.ndarray:
    """Values on a sample grid resampled back onto the CT grid (linear; 0 outside the sample's box).

    Only the CT voxels inside the sample's box are computed (the rest of a 512 x 512 x 300 CT stays 0).
    """
    out = np.zeros(ct.shape, np.float32)
    corners = grid.index_to_lps(np.array([[a, b, c] for a in (-0.5, grid.size[0] - 0.5) for b in (-0.5, grid.size[1] - 0.5)
                                          for c in (-0.5, grid.size[2] - 0.5)], float))
    ijk = ct.lps_to_index(corners)
    lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, np.array(ct.size))
    if np.any(hi <= lo):
        return out
    sub = Volume(np.zeros(tuple((hi - lo)[::-1]), np.uint8), ct.spacing, tuple(ct.index_to_lps(lo.astype(float))),
                 ct.direction)
    out[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = resample(grid.with_array(values.astype(np.float32)), sub).array
    return out


def combine_lungs(per_side: Dict[int, np.ndarray], lungs: Volume) -> np.ndarray:
    """One CT-grid map from per-lung maps: each lung's voxels take their own lung's values; 0 elsewhere."""
    out = np.zeros(lungs.shape, np.float32)
    for side, values in per_side.items():
        sel = lungs.array == side
        out[sel] = values[sel]
    return out
