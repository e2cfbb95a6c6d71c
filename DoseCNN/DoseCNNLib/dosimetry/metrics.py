"""Dose-map statistics per organ/lesion label, cumulative DVHs, and the DoseCNN paper's (Li 2020) error metrics.

Everything here works for dose-rate maps (mGy/s) and absorbed-dose maps (Gy) alike: the unit is a label in the
outputs, never a conversion.

Li 2020's metrics, per organ/lesion, against a reference (Li 2020: the Monte Carlo dose rate of the true activity, "GT"):

* :func:`mean_dose_error`: MDE = |mean(estimate) - mean(reference)| / mean(reference) over the region's voxels
  (Li 2020: "the absolute error of the mean dose-rate relative to GT across that organ/lesion").
* :func:`nrmse`: NRMSE = sqrt(mean((x_hat - x)^2)) / sqrt(mean(x^2)) over the region's voxels (Li 2020, equation 2).
* :func:`nrmse_noise_corrected`: a Monte Carlo reference is itself noisy: with ``x = x_true + e``,
  ``E[(x_hat - x)^2] = (x_hat - x_true)^2 + var(e)`` and ``E[x^2] = x_true^2 + var(e)``, so the plain NRMSE counts the
  reference's noise as the estimate's error. Given the reference's per-voxel standard error ``sigma``, the corrected
  value subtracts ``mean(sigma^2)`` from both mean squares (each floored at 0). Unbiased for the squares; the ratio's
  square root is consistent for many voxels. ``dosecnn mc`` writes the relative standard error: ``sigma = relative x
  reference``.

Dose statistics (:func:`dose_statistics`): volume (mL), mean, minimum, maximum and D2, D50, D98, where ``Dx`` is the
minimum dose received by the hottest x % of the region's volume: with the n voxel doses sorted in decreasing order,
``Dx`` is the k-th with ``k = ceil(x n / 100)`` (at least 1). DVH (:func:`cumulative_dvh`): the percentage of the
region's volume receiving at least ``d``, for ``d`` from 0 (100 %) to the region's maximum.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume

DX_PERCENTS = (2, 50, 98)


# --- Li 2020's metrics -------------------------------------------------------------------------------------------------
def _region(values: np.ndarray, mask: Optional[np.ndarray], shape: Tuple[int, ...], what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != shape:
        raise UserError(f"the {what} ({a.shape}) and the reference ({shape}) differ in shape")
    if mask is None:
        return a.reshape(-1)
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape:
        raise UserError("the region mask does not match the maps")
    return a[m]


def _pair(estimate: np.ndarray, reference: np.ndarray, mask: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    x = _region(reference, mask, np.shape(reference), "reference")
    if x.size == 0:
        raise UserError("the region is empty")
    return _region(estimate, mask, np.shape(reference), "estimate"), x


def mean_dose_error(estimate: np.ndarray, reference: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """MDE (Li 2020): ``|mean(estimate) - mean(reference)| / mean(reference)`` over the region (a fraction, x100 for %).

    NaN when the reference's mean is zero.
    """
    x_hat, x = _pair(estimate, reference, mask)
    ref = float(x.mean())
    return abs(float(x_hat.mean()) - ref) / ref if ref != 0 else float("nan")


def nrmse(estimate: np.ndarray, reference: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """NRMSE (Li 2020, equation 2): ``sqrt(mean((x_hat - x)^2)) / sqrt(mean(x^2))`` over the region (a fraction).

    NaN when the reference is zero throughout the region.
    """
    x_hat, x = _pair(estimate, reference, mask)
    den = float(np.mean(x * x))
    return math.sqrt(float(np.mean((x_hat - x) ** 2)) / den) if den > 0 else float("nan")


def nrmse_noise_corrected(estimate: np.ndarray, reference: np.ndarray, reference_sigma: np.ndarray,
                          mask: Optional[np.ndarray] = None) -> float:
    """NRMSE of Li 2020's equation 2 with the reference's noise removed (module docstring):
    ``sqrt(max(mean((x_hat - x)^2) - mean(sigma^2), 0) / max(mean(x^2) - mean(sigma^2), 0))``.

    ``reference_sigma``: the reference's per-voxel standard error, in the reference's unit. NaN when the corrected
    denominator is not positive (the reference is all noise).
    """
    x_hat, x = _pair(estimate, reference, mask)
    sigma = _region(reference_sigma, mask, np.shape(reference), "standard-error map")
    var = float(np.mean(sigma * sigma))
    num = max(float(np.mean((x_hat - x) ** 2)) - var, 0.0)
    den = float(np.mean(x * x)) - var
    return math.sqrt(num / den) if den > 0 else float("nan")


# --- dose statistics --------------------------------------------------------------------------------------------------
def dose_at_volume_percent(doses: np.ndarray, percent: float) -> float:
    """``Dx``: the minimum dose received by the hottest ``percent`` % of the voxels (``k = ceil(x n / 100)``-th
    largest dose, at least the largest)."""
    d = np.asarray(doses, dtype=np.float64).reshape(-1)
    if d.size == 0:
        raise UserError("no voxels to compute a dose-volume value from")
    if not 0 < percent <= 100:
        raise UserError(f"the volume percentage must be in (0, 100], got {percent}")
    k = max(1, int(math.ceil(percent * d.size / 100.0 - 1e-9)))
    return float(np.partition(d, d.size - k)[d.size - k])


def _label_values(labels: Volume, dose: Volume) -> List[int]:
    if not labels.same_geometry(dose):
        raise UserError("the label map must be on the dose map's grid")
    return sorted(int(v) for v in np.unique(labels.array) if v > 0)


def dose_statistics(dose: Volume, labels: Volume, names: Optional[Mapping[int, str]] = None,
                    unit: str = "gy") -> List[Dict[str, object]]:
    """Per label > 0: name, volume (mL), mean, min, max, D2, D50, D98 of ``dose`` (keys end in ``_<unit>``: ``gy``
    for absorbed dose, ``mgy_s`` for dose rate)."""
    rows: List[Dict[str, object]] = []
    lab = labels.array
    for value in _label_values(labels, dose):
        d = dose.array[lab == value].astype(np.float64)
        row: Dict[str, object] = {"label": value, "name": (names or {}).get(value, f"label {value}"),
                                  "volume_ml": float(d.size * dose.voxel_volume_ml),
                                  f"mean_{unit}": float(d.mean()), f"min_{unit}": float(d.min()),
                                  f"max_{unit}": float(d.max())}
        for x in DX_PERCENTS:
            row[f"d{x}_{unit}"] = dose_at_volume_percent(d, x)
        rows.append(row)
    return rows


# --- DVH ---------------------------------------------------------------------------------------------------------------
def cumulative_dvh(doses: np.ndarray, n_points: int = 200, max_dose: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(dose levels, volume %) of the cumulative DVH: the percentage of voxels receiving at least each level.

    Levels from 0 to ``max_dose`` (default the largest dose) in ``n_points`` steps: 100 % at 0 (for non-negative
    doses), non-increasing.
    """
    d = np.sort(np.asarray(doses, dtype=np.float64).reshape(-1))
    if d.size == 0:
        raise UserError("no voxels to compute a DVH from")
    top = float(d[-1]) if max_dose is None else float(max_dose)
    levels = np.linspace(0.0, max(top, 0.0), max(2, int(n_points)))
    at_least = d.size - np.searchsorted(d, levels, side="left")
    return levels, 100.0 * at_least / d.size


def dvh_rows(dose: Volume, labels: Volume, names: Optional[Mapping[int, str]] = None, n_points: int = 200,
             unit: str = "gy") -> List[Dict[str, object]]:
    """Cumulative DVHs of every label > 0 in long format (label, name, ``dose_<unit>``, ``volume_percent``), on
    the dose levels shared by all labels (0 to the largest dose in any label)."""
    values = _label_values(labels, dose)
    lab = labels.array
    top = max((float(dose.array[lab == v].max()) for v in values), default=0.0)
    rows: List[Dict[str, object]] = []
    for value in values:
        levels, percent = cumulative_dvh(dose.array[lab == value], n_points, top)
        name = (names or {}).get(value, f"label {value}")
        rows += [{"label": value, "name": name, f"dose_{unit}": float(d), "volume_percent": float(p)}
                 for d, p in zip(levels, percent)]
    return rows


def dvh_figure(rows: Sequence[Mapping[str, object]], path: Path, unit_label: str = "absorbed dose (Gy)",
               unit: str = "gy") -> None:
    """Cumulative DVH curves (rows of :func:`dvh_rows`), one line per label, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ImagingBasics.files import save_figure

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for value in sorted({int(r["label"]) for r in rows}):
        mine = [r for r in rows if int(r["label"]) == value]
        ax.plot([r[f"dose_{unit}"] for r in mine], [r["volume_percent"] for r in mine], label=str(mine[0]["name"]))
    ax.set_xlabel(unit_label)
    ax.set_ylabel("volume (%)")
    ax.set_ylim(0, 102)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("cumulative dose-volume histograms", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


# --- comparing methods --------------------------------------------------------------------------------------------------
def compare_methods(estimates: Mapping[str, Volume], reference: Volume, labels: Volume,
                    names: Optional[Mapping[int, str]] = None,
                    reference_sigma: Optional[Volume] = None) -> List[Dict[str, object]]:
    """Li 2020's comparison: per label > 0 and per method, the region's mean estimate and reference, MDE and NRMSE
    (and the noise-corrected NRMSE when the reference's standard-error map ``reference_sigma`` is given).

    ``estimates``: method name -> map (e.g. ``{"VDK": ..., "CNN": ...}``), each on the reference's grid.
    """
    if not estimates:
        raise UserError("no estimate to compare with the reference")
    for name, vol in estimates.items():
        if not vol.same_geometry(reference):
            raise UserError(f"the {name} map is not on the reference's grid")
    if reference_sigma is not None and not reference_sigma.same_geometry(reference):
        raise UserError("the reference's standard-error map is not on the reference's grid")
    rows: List[Dict[str, object]] = []
    for value in _label_values(labels, reference):
        mask = labels.array == value
        ref_mean = float(reference.array[mask].mean(dtype=np.float64))
        for method, vol in estimates.items():
            row: Dict[str, object] = {"label": value, "name": (names or {}).get(value, f"label {value}"),
                                      "method": method, "voxels": int(mask.sum()),
                                      "mean_estimate": float(vol.array[mask].mean(dtype=np.float64)),
                                      "mean_reference": ref_mean,
                                      "mde": mean_dose_error(vol.array, reference.array, mask),
                                      "nrmse": nrmse(vol.array, reference.array, mask)}
            if reference_sigma is not None:
                row["nrmse_noise_corrected"] = nrmse_noise_corrected(vol.array, reference.array, reference_sigma.array,
                                                                     mask)
            rows.append(row)
    return rows


def comparison_figure(rows: Sequence[Mapping[str, object]], path: Path, title: str = "") -> None:
    """Grouped bar charts of MDE (left) and NRMSE (right, noise-corrected when present), in %, per region and
    method (rows of :func:`compare_methods`), as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ImagingBasics.files import save_figure

    regions = list(dict.fromkeys(str(r["name"]) for r in rows))
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    corrected = all(r.get("nrmse_noise_corrected") is not None for r in rows)
    metrics = (("mde", "MDE (%)"), ("nrmse_noise_corrected" if corrected else "nrmse",
                                    "NRMSE, noise-corrected (%)" if corrected else "NRMSE (%)"))
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.3 * len(regions) * 2 + 2), 4))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(regions))
    for ax, (key, label) in zip(axes, metrics):
        for i, method in enumerate(methods):
            values = [next((100.0 * float(r[key]) for r in rows if r["name"] == reg and r["method"] == method
                            and r.get(key) is not None), np.nan) for reg in regions]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=method)
        ax.set_xticks(x)
        ax.set_xticklabels(regions, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
