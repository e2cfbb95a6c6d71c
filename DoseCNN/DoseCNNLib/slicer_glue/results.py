"""The DoseCNN Slicer module's results as tables: per-segment statistics and DVH curves (pure Python: no Slicer).

The Logic reads the child's output maps and calls these functions in Slicer's own process (numpy only, no torch);
the table node is then filled by ``ImagingBasics.slicer_nodes.fill_typed_table`` (typed columns with units,
shared with the CTPerfusionMapping module). Columns are ``(key, title, "string" | "double", unit, description)``.

One time point (``dosecnn run``): per segment the volume, the activity, the mean and maximum dose rate and D2, D50, D98
of the dose rate (mGy/s). Several time points (``dosecnn integrate``): the mean dose rate at every time point, the
time-integrated activity and effective half-life of the organ-level fit, the mean absorbed dose (voxel map and organ
fit) and D2, D50, D98 and maximum of the absorbed dose (Gy). With a reference map (e.g. Monte Carlo) on top: its mean
and Li 2020's mean dose error (MDE) and NRMSE in %. Dx: the minimum dose of the hottest x % of the segment's volume.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume

#: Slicer's PET colour map (vtkMRMLColorLogic: procedural PET nodes), for dose-rate and absorbed-dose maps alike
DOSE_COLOUR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"
#: the display window tops at this percentile of the map's positive voxels (a few hot voxels do not wash it out)
WINDOW_PERCENTILE = 99.9

Column = Tuple[str, str, str, str, str]


def display_window(array: np.ndarray) -> Tuple[float, float]:
    """(0, top) for showing a dose map: top = the 99.9th percentile of its positive voxels (1 when there are none)."""
    a = np.asarray(array, dtype=np.float64)
    positive = a[np.isfinite(a) & (a > 0)]
    if positive.size == 0:
        return 0.0, 1.0
    top = float(np.percentile(positive, WINDOW_PERCENTILE))
    return 0.0, top if top > 0 else float(positive.max())


def on_grid(volume: Volume, grid: Volume, what: str) -> Volume:
    """``volume`` on ``grid``'s voxels: as it is when the geometry matches, else resampled (linear, 0 outside; for an
    intensive quantity such as a dose rate, not for amounts per voxel)."""
    if volume.same_geometry(grid):
        return volume
    from ImagingBasics.resample import resample
    from ImagingBasics.validation import require_finite

    require_finite(volume, what)
    return resample(volume, grid)


def labels_on_grid(labels: Volume, grid: Volume) -> Volume:
    """A label map on ``grid``'s voxels (nearest neighbour, 0 outside) as uint16; as it is when the geometry matches."""
    if labels.same_geometry(grid):
        return labels.with_array(labels.array.astype(np.uint16, copy=False))
    from ImagingBasics.resample import resample

    return resample(labels.with_array(labels.array.astype(np.uint16)), grid, interpolation="nearest", dtype=np.uint16)


def read_rows_by_label(path: Path) -> Dict[int, Dict[str, str]]:
    """The rows of a child's CSV (``table.csv`` of run, ``organs.csv`` of integrate) by their ``label`` value;
    {} when the file is absent (no labels were given)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {int(float(r["label"])): r for r in csv.DictReader(f) if r.get("label")}


def _number(row: Optional[Mapping[str, object]], key: str) -> float:
    value = (row or {}).get(key)
    try:
        return float(value) if value not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def _reference_columns(unit_key: str, unit: str) -> Tuple[Column, ...]:
    return ((f"reference_mean_{unit_key}", "Reference mean", "double", unit, "mean of the reference map (e.g. Monte Carlo)"),
            ("mde_percent", "MDE", "double", "%", "mean dose error: |mean - reference mean| / reference mean (Li 2020)"),
            ("nrmse_percent", "NRMSE", "double", "%", "root mean square difference to the reference over the root mean "
                                                      "square of the reference, voxel by voxel (Li 2020, equation 2)"))


def _with_reference(row: Dict[str, object], estimate: Volume, reference: Optional[Volume], mask: np.ndarray,
                    unit_key: str) -> None:
    from ..dosimetry.metrics import mean_dose_error, nrmse

    if reference is None:
        return
    row[f"reference_mean_{unit_key}"] = float(reference.array[mask].mean(dtype=np.float64))
    row["mde_percent"] = 100.0 * mean_dose_error(estimate.array, reference.array, mask)
    row["nrmse_percent"] = 100.0 * nrmse(estimate.array, reference.array, mask)


# --- one time point: dose rate ----------------------------------------------------------------------------------------
def dose_rate_columns(with_reference: bool) -> Tuple[Column, ...]:
    unit = "mGy/s"
    columns: Tuple[Column, ...] = (
        ("name", "Segment", "string", "", "organ or lesion (segment, or label value of a label map)"),
        ("volume_ml", "Volume", "double", "mL", "segment volume on the CT grid"),
        ("activity_mbq", "Activity", "double", "MBq", "calibrated SPECT activity in the segment"),
        ("mean_dose_rate_mgy_s", "Mean dose rate", "double", unit, "mean dose rate over the segment's voxels"),
        ("max_dose_rate_mgy_s", "Max dose rate", "double", unit, "largest voxel dose rate"),
        ("d2_mgy_s", "D2", "double", unit, "minimum dose rate of the hottest 2 % of the volume"),
        ("d50_mgy_s", "D50", "double", unit, "median dose rate"),
        ("d98_mgy_s", "D98", "double", unit, "minimum dose rate of the hottest 98 % of the volume"),
    )
    return columns + (_reference_columns("mgy_s", unit) if with_reference else ())


def dose_rate_rows(dose_rate: Volume, labels: Volume, names: Mapping[int, str],
                   run_rows: Optional[Mapping[int, Mapping[str, str]]] = None,
                   reference: Optional[Volume] = None) -> List[Dict[str, object]]:
    """Per label present: the :func:`dose_rate_columns` values (``run_rows``: ``table.csv`` of ``dosecnn run``, for
    the activity; ``reference``: a dose-rate map on the same grid)."""
    from ..dosimetry.metrics import dose_statistics

    rows = []
    for s in dose_statistics(dose_rate, labels, names, unit="mgy_s"):
        value = int(s["label"])
        row: Dict[str, object] = {"label": value, "name": s["name"], "volume_ml": s["volume_ml"],
                                  "activity_mbq": _number((run_rows or {}).get(value), "activity_mbq"),
                                  "mean_dose_rate_mgy_s": s["mean_mgy_s"], "max_dose_rate_mgy_s": s["max_mgy_s"],
                                  "d2_mgy_s": s["d2_mgy_s"], "d50_mgy_s": s["d50_mgy_s"], "d98_mgy_s": s["d98_mgy_s"]}
        _with_reference(row, dose_rate, reference, labels.array == value, "mgy_s")
        rows.append(row)
    return rows


# --- several time points: absorbed dose ---------------------------------------------------------------------------------
def absorbed_dose_columns(times_h: Sequence[float], with_reference: bool) -> Tuple[Column, ...]:
    from .commands import time_label

    columns: List[Column] = [
        ("name", "Segment", "string", "", "organ or lesion (segment, or label value of a label map)"),
        ("volume_ml", "Volume", "double", "mL", "segment volume on the reference CT's grid")]
    for i, t in enumerate(times_h):
        columns.append((f"mean_dose_rate_{i}", f"Mean dose rate at {time_label(t)}", "double", "mGy/s",
                        f"mean dose rate over the segment at {time_label(t)} after administration (reference frame)"))
    columns += [
        ("max_dose_rate_mgy_s", "Max dose rate", "double", "mGy/s", "largest voxel dose rate at any time point"),
        ("tia_mbq_h", "TIA", "double", "MBq*h", "time-integrated activity of the organ-level fit"),
        ("effective_half_life_h", "Effective half-life", "double", "h", "of the organ-level activity fit"),
        ("mean_dose_gy", "Mean absorbed dose", "double", "Gy", "mean of the voxel absorbed-dose map"),
        ("mean_dose_gy_organ_fit", "Mean absorbed dose (organ fit)", "double", "Gy",
         "from the fit of the segment's mean dose rate over time"),
        ("d2_gy", "D2", "double", "Gy", "minimum absorbed dose of the hottest 2 % of the volume"),
        ("d50_gy", "D50", "double", "Gy", "median absorbed dose"),
        ("d98_gy", "D98", "double", "Gy", "minimum absorbed dose of the hottest 98 % of the volume"),
        ("max_gy", "Max absorbed dose", "double", "Gy", "largest voxel absorbed dose")]
    return tuple(columns) + (_reference_columns("gy", "Gy") if with_reference else ())


def absorbed_dose_rows(absorbed_gy: Volume, dose_rates: Sequence[Volume], labels: Volume, names: Mapping[int, str],
                       organ_rows: Optional[Mapping[int, Mapping[str, str]]] = None,
                       reference: Optional[Volume] = None) -> List[Dict[str, object]]:
    """Per label present: the :func:`absorbed_dose_columns` values (``dose_rates``: one map per time point on the
    same grid, in time order; ``organ_rows``: ``organs.csv`` of ``dosecnn integrate``; ``reference``: an absorbed-dose
    map in Gy on the same grid)."""
    from ..dosimetry.metrics import dose_statistics

    rows = []
    for s in dose_statistics(absorbed_gy, labels, names, unit="gy"):
        value = int(s["label"])
        mask = labels.array == value
        organ = (organ_rows or {}).get(value)
        row: Dict[str, object] = {"label": value, "name": s["name"], "volume_ml": s["volume_ml"]}
        for i, rate in enumerate(dose_rates):
            row[f"mean_dose_rate_{i}"] = float(rate.array[mask].mean(dtype=np.float64))
        row["max_dose_rate_mgy_s"] = max((float(r.array[mask].max()) for r in dose_rates), default=math.nan)
        row.update({"tia_mbq_h": _number(organ, "tia_mbq_h"), "effective_half_life_h": _number(organ, "effective_half_life_h"),
                    "mean_dose_gy": s["mean_gy"], "mean_dose_gy_organ_fit": _number(organ, "mean_dose_gy_organ_fit"),
                    "d2_gy": s["d2_gy"], "d50_gy": s["d50_gy"], "d98_gy": s["d98_gy"], "max_gy": s["max_gy"]})
        _with_reference(row, absorbed_gy, reference, mask, "gy")
        rows.append(row)
    return rows


# --- DVH ----------------------------------------------------------------------------------------------------------------
def dvh_table(dose: Volume, labels: Volume, names: Mapping[int, str], unit: str = "Gy", n_points: int = 100
              ) -> Tuple[Tuple[Column, ...], List[Dict[str, object]], List[Tuple[str, str, int]]]:
    """Cumulative DVHs of every label present as one wide table (a dose column, then one volume-% column per label,
    on shared dose levels: what a Slicer plot series needs) and the series ``(column key, name, label value)``."""
    from ..dosimetry.metrics import dvh_rows

    if unit not in ("Gy", "mGy/s"):
        raise UserError(f"unknown dose unit {unit!r}")
    key = "gy" if unit == "Gy" else "mgy_s"
    long_rows = dvh_rows(dose, labels, names, n_points=n_points, unit=key)
    values = list(dict.fromkeys(int(r["label"]) for r in long_rows))
    title = "Absorbed dose" if unit == "Gy" else "Dose rate"
    columns: List[Column] = [("dose", title, "double", unit, "dose level")]
    series = []
    for value in values:
        name = str(names.get(value, f"label {value}"))
        columns.append((f"volume_percent_{value}", name, "double", "%", f"share of {name}'s volume receiving at least "
                                                                         "the dose level"))
        series.append((f"volume_percent_{value}", name, value))
    levels = [float(r[f"dose_{key}"]) for r in long_rows if int(r["label"]) == values[0]] if values else []
    rows: List[Dict[str, object]] = [{"dose": d} for d in levels]
    for value in values:
        mine = [float(r["volume_percent"]) for r in long_rows if int(r["label"]) == value]
        for row, percent in zip(rows, mine):
            row[f"volume_percent_{value}"] = percent
    return tuple(columns), rows, series
