"""Plan evaluation in the CTPerfusionMapping Slicer module: a planned dose (optionally minus the GTV/PTV) evaluated
against the perfusion map of a run by the planning package's one pipeline,
:func:`~CTPerfusionMappingLib.planning.evaluation.evaluate_plans` (what ``ctpm plan`` calls), and its results as the
columns and rows of Slicer tables and the series of a plot chart.

Pure Python: the module file passes its nodes in, and only MRML node methods are called on them (as
:mod:`ImagingBasics.slicer_nodes` does).

* :data:`PLAN_KEYWORDS`: the Logic's keywords (and parameter node fields) of the plan options
  (:data:`~CTPerfusionMappingLib.planning.options.PLAN`, the definitions of ``ctpm plan``);
* :func:`dose_unit` and :func:`dose_unit_problem`: the unit SlicerRT recorded for a dose volume, and why a dose in
  another unit than Gy is refused;
* :func:`plan_inputs`: the dose and the exclusion masks of a request as core Volumes, checked before the child starts;
* :func:`evaluate_dose`: one dose evaluated on the files of a ``ctpm run`` output folder;
* :func:`dvh_table`, :func:`metrics_table`, :func:`summary_text`: the results for the output nodes.

SlicerRT (``vtkSlicerRtCommon``, ``vtkSlicerDicomRtImportExportModuleLogic::LoadRtDose``) marks a dose volume node with
the attribute ``DicomRtImport.DoseVolume`` = "1" and records the RTDOSE's Dose Units (``GY`` or ``RELATIVE``; its dose
engines write ``Gy``) as the attribute ``DicomRtImport.DoseUnitName`` of the volume's *study* item in the subject
hierarchy, not of the volume node; its DVH module reads it with ``GetAttributeFromItemAncestor(item, name, "Study")``.
The dose grid scaling is applied on import: the voxels are in that unit.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ImagingBasics.volume import Volume

from ..planning.options import BIN_WIDTH, HIGH_FUNCTION_THRESHOLD

#: keyword of CTPerfusionMappingLogic.process (and parameter node field) -> option of ``ctpm plan``
PLAN_KEYWORDS = {"highFunctionThreshold": HIGH_FUNCTION_THRESHOLD, "dvhBinWidthGy": BIN_WIDTH}

#: SlicerRT's node attribute of a dose volume (value "1") and the attribute holding the dose unit (module docstring)
DOSE_VOLUME_ATTRIBUTE = "DicomRtImport.DoseVolume"
DOSE_UNIT_ATTRIBUTE = "DicomRtImport.DoseUnitName"
#: the subject hierarchy level whose item holds the dose unit (vtkMRMLSubjectHierarchyConstants::GetDICOMLevelStudy)
STUDY_LEVEL = "Study"

#: a table column: (key, title, "string" or "double", unit, description), as ImagingBasics.slicer_nodes.fill_typed_table
Column = Tuple[str, str, str, str, str]

#: the columns of the metrics table: one row per structure, the keys of the planning package's metrics rows
METRIC_TABLE_COLUMNS: Tuple[Column, ...] = (
    ("structure", "Structure", "string", "", "right lung, left lung, both lungs, then each lobe (or lung third); "
                                             "minus the excluded GTV/PTV"),
    ("kind", "Kind", "string", "", "lung, lungs (both), lobe or third"),
    ("side", "Side", "string", "", "right, left or both"),
    ("voxels", "Voxels", "double", "", "evaluated voxels of the structure (on the perfusion map's grid)"),
    ("volume_ml", "Volume", "double", "mL", "evaluated volume of the structure"),
    ("function_share_percent", "Function share", "double", "%",
     "share of the both-lung function (perfusion weights) in the structure"),
    ("mld_gy", "MLD", "double", "Gy", "mean dose: sum of D / number of voxels"),
    ("fmld_gy", "fMLD", "double", "Gy", "function-weighted mean dose: sum of w D / sum of w"),
    ("v5_percent", "V5", "double", "%", "share of the volume receiving at least 5 Gy"),
    ("fv5_percent", "fV5", "double", "%", "share of the function receiving at least 5 Gy"),
    ("v20_percent", "V20", "double", "%", "share of the volume receiving at least 20 Gy"),
    ("fv20_percent", "fV20", "double", "%", "share of the function receiving at least 20 Gy"),
    ("v30_percent", "V30", "double", "%", "share of the volume receiving at least 30 Gy"),
    ("fv30_percent", "fV30", "double", "%", "share of the function receiving at least 30 Gy"),
    ("mean_dose_high_function_gy", "Mean dose high function", "double", "Gy",
     "mean dose in the high-function volume of the structure"),
    ("mean_dose_low_function_gy", "Mean dose low function", "double", "Gy",
     "mean dose in the low-function volume of the structure"),
    ("high_function_ml", "High-function volume", "double", "mL", "high-function volume in the structure"),
    ("low_function_ml", "Low-function volume", "double", "mL", "low-function volume in the structure"),
    ("max_dose_gy", "Maximum dose", "double", "Gy", "largest voxel dose in the structure"),
)

#: colours (RGB 0..1) of the lungs' curves: those of ctpm plan's dvh.png (matplotlib's tab:blue, tab:orange, black);
#: the regions take the colours of their segments (:data:`~.segments.REGION_COLOURS`)
LUNG_CURVE_COLOURS = {"right lung": (0.12, 0.47, 0.71), "left lung": (1.0, 0.5, 0.05), "both lungs": (0.0, 0.0, 0.0)}
#: line styles of the two curves of a structure (names of vtkMRMLPlotSeriesNode's LineStyle constants)
ANATOMICAL_STYLE, FUNCTION_STYLE = "Dash", "Solid"


# --- the dose's unit ---------------------------------------------------------------------------------------------
def dose_unit(node) -> Optional[str]:
    """The dose unit recorded for a volume node: its own attribute ``DicomRtImport.DoseUnitName``, else that of its
    study item in the scene's subject hierarchy (where SlicerRT puts it); None when none is recorded."""
    unit = node.GetAttribute(DOSE_UNIT_ATTRIBUTE)
    if unit and unit.strip():
        return unit.strip()
    scene = node.GetScene()
    hierarchy = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode") if scene is not None else None
    if hierarchy is None:
        return None
    item = hierarchy.GetItemByDataNode(node)
    if not item:  # INVALID_ITEM_ID is 0
        return None
    unit = hierarchy.GetAttributeFromItemAncestor(item, DOSE_UNIT_ATTRIBUTE, STUDY_LEVEL)
    return unit.strip() if unit and unit.strip() else None


def dose_unit_problem(node) -> Optional[str]:
    """Why the dose volume ``node`` cannot be evaluated because of its recorded unit (a one-line message), or None: a
    recorded unit must be Gy (any case: RTDOSE writes GY); without a recorded unit the dose is taken as Gy, and the
    planning checks still refuse a dose above 200 Gy as one in cGy."""
    unit = dose_unit(node)
    if unit is None or unit.upper() == "GY":
        return None
    name = node.GetName()
    if unit.upper() == "RELATIVE":
        return f"The dose '{name}' is a relative dose (Dose Units RELATIVE): export the plan's physical dose in Gy"
    hint = " (divide a dose in cGy by 100)" if unit.upper() == "CGY" else ""
    return f"The dose '{name}' is in {unit}, not Gy: give the planned dose in Gy{hint}"


# --- the inputs and the evaluation ------------------------------------------------------------------------------
def plan_inputs(request, ct: Volume, segment_mask) -> Dict[str, Any]:
    """``{"dose": Volume, "exclusions": {name: Volume}}`` of a request (:class:`~.request.PerfusionRequest` with an
    ``inputDose``). The dose in world coordinates, as Slicer shows it (a linear parent transform applied; a warping
    one refused), checked as ``ctpm plan`` checks it. The exclusion segment as a mask on the CT's voxels
    (``segment_mask(segmentationNode, segmentId, ctNode)``: Slicer's ``arrayFromSegmentBinaryLabelmap``, which applies
    the parent transforms of both nodes), ``ct`` the CT's Volume; the exclusion label map in world coordinates (the
    planning package resamples it onto the perfusion grid).

    Raises:
        UserError: a dose with NaN, negative values, 0 everywhere or above 200 Gy; an empty exclusion segment.
    """
    import numpy as np

    from ImagingBasics.errors import UserError
    from ImagingBasics.slicer_nodes import volume_from_node

    from ..planning.dose_grid import check_dose_values

    dose = volume_from_node(request.inputDose, "dose")
    check_dose_values(dose, f"dose '{request.inputDose.GetName()}'")
    exclusions = {}
    segmentation = request.inputExclusionSegmentation
    if segmentation is not None:
        name = segmentation.GetSegmentation().GetSegment(request.exclusionSegmentID).GetName()
        mask = np.asarray(segment_mask(segmentation, request.exclusionSegmentID, request.inputCT)) > 0
        if not mask.any():
            raise UserError(f"the exclusion segment '{name}' is empty on the CT's grid")
        exclusions[name] = ct.with_array(mask.astype(np.uint8))
    if request.inputExclusionLabelmap is not None:
        label_map = request.inputExclusionLabelmap
        name = label_map.GetName() if label_map.GetName() not in exclusions else label_map.GetName() + " (label map)"
        exclusions[name] = volume_from_node(label_map, "exclusion label map")
    return {"dose": dose, "exclusions": exclusions}


def evaluate_dose(results: Path, dose: Volume, plan: str, exclusions: Optional[Mapping[str, Volume]] = None,
                  **options: Any):
    """The planning result of ``dose`` (Gy, world geometry) named ``plan`` against the perfusion map, lungs and lung
    regions of a ``ctpm run`` output folder ``results``, minus ``exclusions`` (name -> mask, any grid).
    ``options``: values of :data:`~CTPerfusionMappingLib.planning.options.PLAN` by name.

    Raises:
        UserError: what ``ctpm plan`` refuses (a dose that does not cover the lungs, negative, in cGy, ...).
    """
    from ImagingBasics.imageio import read_volume

    from ..planning.evaluation import evaluate_plans
    from ..report import OUTPUT_FILES

    results = Path(results)
    regions = results / OUTPUT_FILES["regions"]
    return evaluate_plans(read_volume(results / OUTPUT_FILES["perfusion"]), read_volume(results / OUTPUT_FILES["lungs"]),
                          {plan: dose}, read_volume(regions) if regions.is_file() else None, dict(exclusions or {}),
                          **options)


def _key(name: str) -> str:
    """A column key of a structure name ("right lung" -> "right_lung")."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def _percent(fraction: float) -> float:
    return 100.0 * float(fraction) if math.isfinite(fraction) else float("nan")


def curve_colour(structure: str) -> Tuple[float, float, float]:
    """The colour of a structure's curves: the lungs' fixed colours, a region's segment colour."""
    from ..labels import REGION_NAMES
    from .segments import REGION_COLOURS

    if structure in LUNG_CURVE_COLOURS:
        return LUNG_CURVE_COLOURS[structure]
    region = next((rid for rid, name in REGION_NAMES.items() if name == structure), None)
    return REGION_COLOURS.get(region, (0.5, 0.5, 0.5))


def dvh_table(result) -> Tuple[Tuple[Column, ...], List[Dict[str, float]], List[Tuple[str, str, tuple, str]]]:
    """The DVHs of the (one) plan of a planning result as one wide table: the dose levels (Gy), then per structure the
    anatomical and the function-weighted DVH in % (NaN where the structure holds no function); and the plot series
    ``(column key, series name, RGB, line style)``: anatomical dashed, function-weighted solid, in one colour."""
    plan = result.plans[0]
    columns: List[Column] = [("dose_gy", "Dose", "double", "Gy", "dose level d; the curves give the share of volume or "
                                                                  "function receiving at least d")]
    series = []
    for structure in plan.dvh:
        key, colour = _key(structure), curve_colour(structure)
        columns.append((f"{key}_volume_percent", f"{structure} V", "double", "%",
                        f"anatomical DVH: share of the {structure}'s volume receiving at least the dose level"))
        columns.append((f"{key}_function_percent", f"{structure} fV", "double", "%",
                        f"function-weighted DVH: share of the {structure}'s function (perfusion weights) receiving at "
                        "least the dose level"))
        series.append((f"{key}_volume_percent", f"{structure} V (volume)", colour, ANATOMICAL_STYLE))
        series.append((f"{key}_function_percent", f"{structure} fV (function)", colour, FUNCTION_STYLE))
    rows: List[Dict[str, float]] = []
    for index, dose in enumerate(result.dose_levels_gy):
        row = {"dose_gy": float(dose)}
        for structure, (volume, function) in plan.dvh.items():
            row[f"{_key(structure)}_volume_percent"] = _percent(volume[index])
            row[f"{_key(structure)}_function_percent"] = _percent(function[index])
        rows.append(row)
    return tuple(columns), rows, series


def metrics_table(result) -> Tuple[Tuple[Column, ...], List[Dict[str, Any]]]:
    """The metrics of the (one) plan of a planning result: :data:`METRIC_TABLE_COLUMNS`, one row per structure."""
    return METRIC_TABLE_COLUMNS, [dict(row) for row in result.plans[0].rows]


def summary_text(result) -> str:
    """What the status line adds for a plan: the both-lung MLD and fMLD."""
    from ..planning.figures import BOTH_LUNGS

    plan = result.plans[0]
    row = plan.row(BOTH_LUNGS)
    return f"; plan '{plan.name}': MLD {row['mld_gy']:.2f} Gy, fMLD {row['fmld_gy']:.2f} Gy (both lungs)"
