"""The output files of a plan evaluation (each written to a temporary name and renamed into place).

* ``dvh.csv`` -- long format, one row per plan, structure and dose level: ``plan``, ``structure``, ``dose_gy``,
  ``volume_fraction`` (anatomical DVH, 0..1), ``function_fraction`` (function-weighted DVH, 0..1; empty where the
  structure holds no function);
* ``metrics.csv`` -- one row per plan and structure (:data:`METRIC_COLUMNS`, units in the names);
* ``metrics.json`` -- the same rows per plan, each plan's both-lung values beside the reference cut-points, the
  settings, the inputs and the structured warnings; written last (its presence marks a finished run);
* ``dvh.png`` -- :func:`~.figures.plot_dvh`;
* with several plans: ``comparison.csv`` (one row per plan: the both-lung metrics) and ``comparison.png``
  (:func:`~.figures.plot_comparison`).

Numbers are written with 6 significant digits; undefined values as empty cells (CSV) or null (JSON).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from ImagingBasics.files import write_csv, write_json
from ImagingBasics.quality import warning_dicts

from .cutpoints import CUT_POINTS, SOURCE
from .evaluation import PlanningResult
from .figures import BOTH_LUNGS, plot_comparison, plot_dvh

OUTPUT_FILES = {
    "dvh": "dvh.csv",
    "table": "metrics.csv",
    "figure": "dvh.png",
    "comparison": "comparison.csv",
    "comparison_figure": "comparison.png",
    "metrics": "metrics.json",
}
#: the columns of metrics.csv, in order
METRIC_COLUMNS = ("plan", "structure", "kind", "side", "voxels", "volume_ml", "function_share_percent", "mld_gy",
                  "fmld_gy", "v5_percent", "fv5_percent", "v20_percent", "fv20_percent", "v30_percent", "fv30_percent",
                  "mean_dose_high_function_gy", "mean_dose_low_function_gy", "high_function_ml", "low_function_ml",
                  "max_dose_gy")
#: the columns of comparison.csv: the plan and its both-lung metrics
COMPARISON_COLUMNS = ("plan", "mld_gy", "fmld_gy", "v5_percent", "fv5_percent", "v20_percent", "fv20_percent",
                      "v30_percent", "fv30_percent", "mean_dose_high_function_gy", "mean_dose_low_function_gy")


def _cell(value: Any) -> Any:
    """A CSV cell: floats with 6 significant digits, NaN and None empty."""
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else None
    return value


def dvh_rows(result: PlanningResult) -> List[Dict[str, Any]]:
    """The rows of dvh.csv."""
    rows = []
    for plan in result.plans:
        for structure, (volume, function) in plan.dvh.items():
            for dose, v, f in zip(result.dose_levels_gy, volume, function):
                rows.append({"plan": plan.name, "structure": structure, "dose_gy": _cell(float(dose)),
                             "volume_fraction": _cell(float(v)), "function_fraction": _cell(float(f))})
    return rows


def metric_rows(result: PlanningResult) -> List[Dict[str, Any]]:
    """The rows of metrics.csv."""
    return [{key: _cell(row[key]) for key in METRIC_COLUMNS} for plan in result.plans for row in plan.rows]


def comparison_rows(result: PlanningResult) -> List[Dict[str, Any]]:
    """The rows of comparison.csv: each plan's both-lung metrics."""
    return [{key: _cell(plan.row(BOTH_LUNGS)[key]) for key in COMPARISON_COLUMNS} for plan in result.plans]


def cut_point_comparison(row: Dict[str, Any]) -> List[Dict[str, Any]]:
    """A metrics row's values beside the reference cut-points: metric, value, cut_point, unit, above (None when the
    value is undefined)."""
    out = []
    for cut in CUT_POINTS:
        value = row[cut.metric]
        defined = value is not None and math.isfinite(value)
        out.append({"metric": cut.metric, "value": value, "cut_point": cut.value, "unit": cut.unit,
                    "above": cut.exceeded_by(value) if defined else None})
    return out


def metrics_document(result: PlanningResult, inputs: Optional[Dict[str, Any]] = None,
                     written: Optional[List[str]] = None) -> Dict[str, Any]:
    """The content of metrics.json."""
    plans = []
    for plan in result.plans:
        plans.append({
            "name": plan.name,
            "file": (inputs or {}).get("doses", {}).get(plan.name),
            "max_lung_dose_gy": plan.max_dose_gy,
            "structures": [{k: v for k, v in row.items() if k != "plan"} for row in plan.rows],
            "reference_cut_points": cut_point_comparison(plan.row(BOTH_LUNGS)),
        })
    return {
        "plans": plans,
        "reference_cut_points": {"source": SOURCE, "structure": BOTH_LUNGS,
                                 "values": [{"metric": c.metric, "value": c.value, "unit": c.unit} for c in CUT_POINTS]},
        "settings": result.settings,
        "inputs": inputs or {},
        "outputs": list(written or []),
        "warnings": warning_dicts(result.warnings),
    }


def write_plan_outputs(result: PlanningResult, folder: Path, inputs: Optional[Dict[str, Any]] = None) -> Dict[str, Path]:
    """Write every output (module docstring) into ``folder``; returns the paths by key, metrics.json written last."""
    folder = Path(folder)
    written: Dict[str, Path] = {}

    def path(key: str) -> Path:
        written[key] = folder / OUTPUT_FILES[key]
        return written[key]

    write_csv(dvh_rows(result), path("dvh"))
    write_csv(metric_rows(result), path("table"))
    plot_dvh(result, path("figure"))
    if len(result.plans) > 1:
        write_csv(comparison_rows(result), path("comparison"))
        plot_comparison(result, path("comparison_figure"))
    names = [p.name for p in written.values()] + [OUTPUT_FILES["metrics"]]
    write_json(metrics_document(result, inputs, names), path("metrics"))
    return written
