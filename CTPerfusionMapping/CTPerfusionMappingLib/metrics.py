"""Agreement between a synthetic perfusion map and SPECT, functional volumes and per-region tables.

The evaluation follows the CT-to-perfusion papers (Ren 2021 IJROBP, Ren 2022 Front Oncol; docs/REFERENCES.md):

* **Spearman R** is the true rank correlation (:func:`scipy.stats.spearmanr`) over the lung voxels of the mask
  the caller passes (the lung mask with tumour and vessels removed); **Pearson r** is reported beside it.
* **SSIM** (:func:`skimage.metrics.structural_similarity`, 7x7x7 uniform window) of the two maps, each
  normalised so that its maximum inside the mask is 1 and set to 0 outside it, averaged over the mask.
* **DSC** of the high and low functional volumes: each map divided by its maximum inside the mask and split at
  0.66 (high: ``value >= 0.66 * max``, low: the rest of the mask).

Undefined values (a constant map, an empty mask) are ``nan`` from the single metrics and ``None`` in the
JSON-ready dictionary of :func:`evaluate`. Voxels where either map is NaN or infinite are left out.
Every function accepts numpy arrays or :class:`~ImagingBasics.volume.Volume` values (the array is used).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.files import atomic_output
from ImagingBasics.volume import Volume

from .labels import LOBE_IDS, REGION_NAMES, THIRD_IDS, LungLabels, region_kind, region_side

ArrayLike = Union[np.ndarray, Volume]

#: Split of the functional volumes (fraction of the maximum) used by the papers.
HIGH_FUNCTION_THRESHOLD = 0.66
#: SSIM window (voxels per side), skimage's default for uniform windows.
SSIM_WINDOW = 7


def _arr(x: ArrayLike) -> np.ndarray:
    return np.asarray(x.array if isinstance(x, Volume) else x)


def _mask(mask: Optional[ArrayLike], shape: Tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = _arr(mask)
    if m.shape != tuple(shape):
        raise UserError(f"the mask has shape {m.shape} but the maps have shape {tuple(shape)}; resample them onto one grid")
    return m.astype(bool)


def _pair(pred: ArrayLike, ref: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    p, r = _arr(pred), _arr(ref)
    if p.shape != r.shape:
        raise UserError(f"the synthetic map {p.shape} and the reference {r.shape} differ in shape; resample them onto one grid")
    return p, r


def _masked_values(pred: ArrayLike, ref: ArrayLike, mask: Optional[ArrayLike]) -> Tuple[np.ndarray, np.ndarray]:
    p, r = _pair(pred, ref)
    m = _mask(mask, p.shape) & np.isfinite(p) & np.isfinite(r)
    return p[m].astype(np.float64), r[m].astype(np.float64)


def _constant(x: np.ndarray) -> bool:
    return x.size < 2 or bool(np.all(x == x[0]))


# --- correlations -------------------------------------------------------------------------------
def spearman_r(pred: ArrayLike, ref: ArrayLike, mask: Optional[ArrayLike] = None) -> float:
    """Spearman rank correlation of the voxels inside ``mask`` (all voxels when None).

    Returns ``nan`` when fewer than two voxels are left or either map is constant there (undefined).
    """
    from scipy import stats

    p, r = _masked_values(pred, ref, mask)
    if _constant(p) or _constant(r):
        return float("nan")
    return float(stats.spearmanr(p, r)[0])


def pearson_r(pred: ArrayLike, ref: ArrayLike, mask: Optional[ArrayLike] = None) -> float:
    """Pearson correlation of the voxels inside ``mask``; ``nan`` when undefined (as :func:`spearman_r`)."""
    from scipy import stats

    p, r = _masked_values(pred, ref, mask)
    if _constant(p) or _constant(r):
        return float("nan")
    return float(stats.pearsonr(p, r)[0])


# --- SSIM -----------------------------------------------------------------------------------------
def _crop_box(m: np.ndarray, margin: int, minimum: int) -> Tuple[slice, ...]:
    """Bounding box of ``m`` grown by ``margin`` voxels (and to at least ``minimum`` voxels where the array allows)."""
    box = []
    for axis, n in enumerate(m.shape):
        other = tuple(a for a in range(m.ndim) if a != axis)
        idx = np.nonzero(m.any(axis=other))[0]
        lo, hi = max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, n)
        while hi - lo < minimum and (lo > 0 or hi < n):
            lo, hi = max(lo - 1, 0), min(hi + 1, n)
        box.append(slice(lo, hi))
    return tuple(box)


def ssim(pred: ArrayLike, ref: ArrayLike, mask: Optional[ArrayLike] = None, data_range: float = 1.0) -> float:
    """Structural similarity of two 3D maps (skimage, 7x7x7 uniform window, ``data_range`` as given).

    Without a mask: skimage's mean SSIM (which leaves out the 3 voxels along each border). With a mask: the mean
    of skimage's full SSIM map over the mask voxels. The maps are used as given; normalise them first (see
    :func:`evaluate`). For speed the computation is done on the mask's bounding box grown by half a window,
    which gives exactly the SSIM values of the whole volume at the mask voxels. Non-finite voxels are set to 0.

    Raises:
        UserError: the maps differ in shape or are smaller than 7 voxels along an axis.
    """
    from skimage.metrics import structural_similarity

    p, r = _pair(pred, ref)
    if p.ndim != 3:
        raise UserError(f"SSIM needs 3D maps, got shape {p.shape}")
    p = np.nan_to_num(p.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    r = np.nan_to_num(r.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    m = None
    if mask is not None:
        m = _mask(mask, p.shape)
        if not m.any():
            return float("nan")
        box = _crop_box(m, SSIM_WINDOW // 2, SSIM_WINDOW)
        p, r, m = p[box], r[box], m[box]
    if min(p.shape) < SSIM_WINDOW:
        raise UserError(f"SSIM needs at least {SSIM_WINDOW} voxels along each axis, got a map of {p.shape} voxels")
    mssim, smap = structural_similarity(p, r, data_range=float(data_range), win_size=SSIM_WINDOW, full=True)
    if m is None:
        return float(mssim)
    return float(np.mean(smap[m]))


# --- functional volumes ---------------------------------------------------------------------------
def _max_in_mask(p: np.ndarray, m: np.ndarray) -> float:
    values = p[m]
    if values.size == 0:
        raise UserError("the lung mask is empty; functional volumes need lung voxels")
    vmax = float(values.max())
    if not vmax > 0:
        raise UserError("the perfusion map has no positive value inside the lung mask; functional volumes are undefined")
    return vmax


def functional_volumes(
    perfusion: ArrayLike, mask: Optional[ArrayLike] = None, threshold: float = HIGH_FUNCTION_THRESHOLD
) -> np.ndarray:
    """uint8 map of functional volumes: 2 high, 1 low, 0 outside ``mask`` (or non-finite).

    The map is normalised so that its maximum inside the mask is 1 and split at ``threshold`` (0.66 in the
    papers): high is ``value >= threshold * max``, low is every other mask voxel.

    Raises:
        UserError: empty mask or no positive value in it.
    """
    p = _arr(perfusion)
    m = _mask(mask, p.shape) & np.isfinite(p)
    vmax = _max_in_mask(p, m)
    out = np.zeros(p.shape, dtype=np.uint8)
    out[m] = 1
    out[m & (p >= threshold * vmax)] = 2
    return out


def percentile_functional_volumes(
    perfusion: ArrayLike, mask: Optional[ArrayLike] = None, percentiles: Sequence[float] = (33.3, 66.7)
) -> np.ndarray:
    """uint8 map of percentile classes inside ``mask``: 1 (lowest) .. len(percentiles) + 1 (highest), 0 outside.

    A voxel's class is 1 + the number of cut-points (percentiles of the mask values, :func:`numpy.percentile`)
    at or below its value. Tertiles by default; ``(50,)`` gives 2 for the top 50 % and 1 for the rest.

    Raises:
        UserError: percentiles not strictly increasing within (0, 100), or an empty mask.
    """
    cuts_pct = [float(q) for q in percentiles]
    if not cuts_pct or any(not 0 < q < 100 for q in cuts_pct) or any(b <= a for a, b in zip(cuts_pct, cuts_pct[1:])):
        raise UserError(f"percentiles must increase strictly between 0 and 100, got {tuple(percentiles)}")
    if len(cuts_pct) > 254:
        raise UserError("at most 254 percentile cut-points are supported")
    p = _arr(perfusion)
    m = _mask(mask, p.shape) & np.isfinite(p)
    values = p[m]
    if values.size == 0:
        raise UserError("the lung mask is empty; functional volumes need lung voxels")
    cuts = np.percentile(values.astype(np.float64), cuts_pct)
    out = np.zeros(p.shape, dtype=np.uint8)
    out[m] = (1 + np.searchsorted(cuts, values, side="right")).astype(np.uint8)
    return out


def dice(a: ArrayLike, b: ArrayLike) -> float:
    """Dice similarity coefficient 2|A and B| / (|A| + |B|) of two binary masks; ``nan`` when both are empty."""
    x, y = _arr(a).astype(bool), _arr(b).astype(bool)
    if x.shape != y.shape:
        raise UserError(f"masks of shapes {x.shape} and {y.shape} cannot be compared")
    total = int(x.sum()) + int(y.sum())
    if total == 0:
        return float("nan")
    return 2.0 * float(np.logical_and(x, y).sum()) / total


def dsc_high_low(
    pred: ArrayLike, ref: ArrayLike, mask: Optional[ArrayLike] = None, threshold: float = HIGH_FUNCTION_THRESHOLD
) -> Dict[str, float]:
    """DSC of the high and the low functional volumes of both maps (each split by :func:`functional_volumes`).

    Voxels where either map is non-finite are left out of both. Returns ``{"high": .., "low": ..}``.
    """
    p, r = _pair(pred, ref)
    m = _mask(mask, p.shape) & np.isfinite(p) & np.isfinite(r)
    fp = functional_volumes(p, m, threshold)
    fr = functional_volumes(r, m, threshold)
    return {"high": dice(fp == 2, fr == 2), "low": dice(fp == 1, fr == 1)}


def dsc_percentile_classes(pred: ArrayLike, ref: ArrayLike, mask: Optional[ArrayLike] = None,
                           percentiles: Sequence[float] = (33.3, 66.7)) -> List[float]:
    """DSC of each percentile class (lowest first) of both maps, split by :func:`percentile_functional_volumes`.

    Percentile splits are what planners use beside the 0.66 split: tertiles (default) or ``(50,)`` for the top half.
    """
    p, r = _pair(pred, ref)
    m = _mask(mask, p.shape) & np.isfinite(p) & np.isfinite(r)
    cp = percentile_functional_volumes(p, m, percentiles)
    cr = percentile_functional_volumes(r, m, percentiles)
    return [dice(cp == k, cr == k) for k in range(1, len(percentiles) + 2)]


# --- per-region table -------------------------------------------------------------------------------
def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def region_table(
    perfusion: ArrayLike,
    regions: ArrayLike,
    voxel_volume_ml: Optional[float] = None,
    reference: Optional[ArrayLike] = None,
) -> List[Dict[str, Any]]:
    """Per-region volume, mean perfusion and share of the total perfusion, plus right, left and both lungs.

    Args:
        perfusion: the perfusion map (any unit; shares do not depend on it).
        regions: CIP region ids (lobes 4-8 or thirds 9-14), e.g. ``LungLabels.regions``.
        voxel_volume_ml: volume of one voxel; taken from ``regions`` (or ``perfusion``) when it is a Volume.
        reference: the SPECT on the same grid, for ``mean_reference`` and ``reference_share_percent``.

    Each row: ``region_id`` (the CIP id; the summary rows use CIP's 2 right lung, 3 left lung, 1 whole lung),
    ``name``, ``kind`` ("lobe", "third", "lung" or "lungs"), ``side`` ("right", "left", "both"), ``voxels``,
    ``volume_ml``, ``mean_perfusion``, ``perfusion_share_percent`` (sum over the row's voxels / sum over all
    region voxels x 100) and, with a reference, ``mean_reference`` and ``reference_share_percent``. Means and
    sums use the finite voxels only; undefined values are ``None``. Rows of region ids not present are omitted.

    Raises:
        UserError: shapes differ or no lung region is present.
    """
    p = _arr(perfusion).astype(np.float64)
    reg = _arr(regions)
    if reg.shape != p.shape:
        raise UserError(f"the region map {reg.shape} and the perfusion map {p.shape} differ in shape; resample onto one grid")
    r = None
    if reference is not None:
        r = _arr(reference).astype(np.float64)
        if r.shape != p.shape:
            raise UserError(f"the reference {r.shape} and the perfusion map {p.shape} differ in shape")
    if voxel_volume_ml is None:
        for candidate in (regions, perfusion, reference):
            if isinstance(candidate, Volume):
                voxel_volume_ml = candidate.voxel_volume_ml
                break
    vml = float("nan") if voxel_volume_ml is None else float(voxel_volume_ml)

    present = [int(v) for v in np.unique(reg) if int(v) in LOBE_IDS + THIRD_IDS]
    if not present:
        raise UserError("no lung regions (lobes 4-8 or thirds 9-14) in the region map")
    labelled = np.isin(reg, present)
    right = np.isin(reg, [rid for rid in present if region_side(rid) == "right"])
    left = labelled & ~right

    def _stats(sel: np.ndarray, values: np.ndarray) -> Tuple[float, float]:
        v = values[sel]
        v = v[np.isfinite(v)]
        return (float(v.mean()) if v.size else float("nan")), float(v.sum())

    total_p = _stats(labelled, p)[1]
    total_r = _stats(labelled, r)[1] if r is not None else float("nan")

    def _row(rid: int, name: str, kind: str, side: str, sel: np.ndarray) -> Dict[str, Any]:
        n = int(sel.sum())
        mean_p, sum_p = _stats(sel, p)
        row: Dict[str, Any] = {
            "region_id": rid,
            "name": name,
            "kind": kind,
            "side": side,
            "voxels": n,
            "volume_ml": n * vml,
            "mean_perfusion": mean_p,
            "perfusion_share_percent": 100.0 * sum_p / total_p if total_p != 0 else float("nan"),
        }
        if r is not None:
            mean_r, sum_r = _stats(sel, r)
            row["mean_reference"] = mean_r
            row["reference_share_percent"] = 100.0 * sum_r / total_r if total_r != 0 else float("nan")
        return {k: _nan_to_none(v) for k, v in row.items()}

    rows = [_row(rid, REGION_NAMES[rid], region_kind(rid), region_side(rid), reg == rid) for rid in present]
    rows.append(_row(2, REGION_NAMES[2], "lung", "right", right))
    rows.append(_row(3, REGION_NAMES[3], "lung", "left", left))
    rows.append(_row(1, REGION_NAMES[1], "lungs", "both", labelled))
    return rows


def write_region_csv(rows: Sequence[Dict[str, Any]], path: Union[str, os.PathLike]) -> None:
    """Write the rows of :func:`region_table` as CSV (header = keys in order of first appearance).

    Floats are written with 6 significant digits, ``None``/NaN as empty cells. The file is written to a temporary
    file in the destination folder and moved into place (:func:`os.replace`).

    Raises:
        UserError: the folder cannot be created or the file cannot be written.
    """
    p = Path(os.fspath(path)).expanduser()
    columns: List[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)

    def _cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, (float, np.floating)):
            return "" if not math.isfinite(float(v)) else f"{float(v):.6g}"
        return str(v)

    with atomic_output(p) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


# --- the evaluation -----------------------------------------------------------------------------
def _normalised(x: np.ndarray, m: np.ndarray) -> Optional[np.ndarray]:
    """``x / max(x in m)`` inside ``m`` and 0 outside; None when the maximum is not positive."""
    if not m.any():
        return None
    vmax = float(x[m].max())
    if not vmax > 0:
        return None
    return np.where(m, x / vmax, 0.0)


def _mask_agreement(p: np.ndarray, r: np.ndarray, m: np.ndarray, threshold: float,
                    percentile_classes: bool = True) -> Dict[str, Any]:
    """Spearman R, Pearson r, SSIM and DSC high/low (and percentile-class DSCs) of two maps inside mask ``m``."""
    entry: Dict[str, Any] = {"voxels": int(m.sum())}
    entry["spearman"] = spearman_r(p, r, m)
    entry["pearson"] = pearson_r(p, r, m)
    pn, rn = _normalised(p, m), _normalised(r, m)
    entry["ssim"] = entry["dsc_high"] = entry["dsc_low"] = float("nan")
    if pn is not None and rn is not None:
        try:
            entry["ssim"] = ssim(pn, rn, m, data_range=1.0)
        except UserError:
            pass
        dsc = dsc_high_low(pn, rn, m, threshold)
        entry["dsc_high"], entry["dsc_low"] = dsc["high"], dsc["low"]
        if percentile_classes:
            entry["dsc_top50"] = dsc_percentile_classes(p, r, m, (50.0,))[1]
            entry["dsc_tertiles"] = [_nan_to_none(v) for v in dsc_percentile_classes(p, r, m)]
    return {k: _nan_to_none(v) for k, v in entry.items()}


def evaluate(
    pred: ArrayLike,
    ref: ArrayLike,
    lungs: Union[ArrayLike, LungLabels],
    regions: Optional[ArrayLike] = None,
    hu: Optional[ArrayLike] = None,
    hu_window: Tuple[float, float] = (-1000.0, -300.0),
    threshold: float = HIGH_FUNCTION_THRESHOLD,
) -> Dict[str, Any]:
    """Agreement of a synthetic perfusion map with the reference (SPECT on the CT grid) per hemi-lung and patient.

    Args:
        pred: the synthetic perfusion map.
        ref: the reference perfusion (normalised SPECT) on the same grid.
        lungs: 1 right lung, 2 left lung (or a :class:`~.labels.LungLabels`, whose regions are then used too).
        regions: CIP region ids for the per-region table (optional).
        hu: the CT in HU; when given only voxels within ``hu_window`` count (tumour and vessels removed, as in
            Ren 2022 Front Oncol).
        hu_window: inclusive HU range of lung parenchyma.
        threshold: the high/low split of the functional volumes.

    For each of ``"right"``, ``"left"`` and ``"patient"`` (both lungs) the mask is that part of the lungs (within
    the HU window, finite in both maps) and the entry holds ``voxels``, ``spearman`` and ``pearson`` (on the raw
    values), ``dsc_top50`` and ``dsc_tertiles`` (percentile splits of each map, :func:`dsc_percentile_classes`), and
    ``ssim``, ``dsc_high`` and ``dsc_low`` computed after both maps are normalised the same way:
    divided by their own maximum inside that mask (as for the 0.66 split) and set to 0 outside it; SSIM uses
    ``data_range=1``. A hemi-lung is thus normalised on its own, as the papers' hemi-lung samples were.
    With regions the result also has ``"regions"``: the rows of :func:`region_table` over the masked regions
    (``mean_perfusion`` of the synthetic map, ``mean_reference`` of the reference), each with the agreement inside
    that region (``spearman``, ``pearson``, ``ssim``, ``dsc_high``, ``dsc_low``, normalised within the region).
    Undefined values are None; the result holds only Python floats, ints, strings, lists, dicts and None (JSON-ready).

    Raises:
        UserError: the inputs differ in shape.
    """
    if isinstance(lungs, LungLabels):
        if regions is None:
            regions = lungs.regions
        lungs = lungs.lungs
    p, r = _pair(pred, ref)
    p = p.astype(np.float64)
    r = r.astype(np.float64)
    lung = _arr(lungs)
    if lung.shape != p.shape:
        raise UserError(f"the lung labels {lung.shape} and the perfusion maps {p.shape} differ in shape; resample onto one grid")
    base = (lung > 0) & np.isfinite(p) & np.isfinite(r)
    if hu is not None:
        h = _arr(hu)
        if h.shape != p.shape:
            raise UserError(f"the CT {h.shape} and the perfusion maps {p.shape} differ in shape; resample them onto one grid")
        lo, hi = float(hu_window[0]), float(hu_window[1])
        base &= (h >= lo) & (h <= hi)

    result: Dict[str, Any] = {}
    for scope, sel in (("right", lung == 1), ("left", lung == 2), ("patient", lung > 0)):
        result[scope] = _mask_agreement(p, r, base & sel, threshold)

    if regions is not None:
        reg = _arr(regions)
        if reg.shape != p.shape:
            raise UserError(f"the region map {reg.shape} and the perfusion maps {p.shape} differ in shape")
        vml = None
        for candidate in (regions, lungs, pred, ref):
            if isinstance(candidate, Volume):
                vml = candidate.voxel_volume_ml
                break
        masked = np.where(base, reg, 0)
        try:
            result["regions"] = region_table(p, masked, vml, reference=r)
        except UserError:
            result["regions"] = []
        present = [int(k) for k in np.unique(masked) if k]
        lung_ids = {2: [k for k in present if region_side(k) == "right"], 3: [k for k in present if region_side(k) == "left"]}
        for row in result["regions"]:  # the agreement inside each region (Ren 2022 Front Oncol reported per-lobe correlations)
            rid = row["region_id"]
            if rid == 1:
                sel = masked > 0
            elif rid in lung_ids:
                sel = np.isin(masked, lung_ids[rid])
            else:
                sel = masked == rid
            agreement = _mask_agreement(p, r, sel, threshold, percentile_classes=False)
            row.update({k: agreement[k] for k in ("spearman", "pearson", "ssim", "dsc_high", "dsc_low")})
    result["settings"] = {
        "threshold": float(threshold),
        "hu_window": [float(hu_window[0]), float(hu_window[1])] if hu is not None else None,
        "normalisation": "each map divided by its maximum inside the evaluated mask (SSIM and DSC)",
        "ssim_window": SSIM_WINDOW,
    }
    return result
