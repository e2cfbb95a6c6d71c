"""Plan evaluation: perfusion, lungs (+ lobes, exclusions) and planned doses -> DVHs and metrics per plan and structure.

:func:`evaluate_plans` is the one function the command line (``ctpm plan``) and a Slicer Logic call. Its steps:

1. the perfusion side, once for all plans (:func:`prepare_functional_lung`): the lungs and lobes on the perfusion
   grid, the structures minus the exclusions, the voxel weights and the high/low functional volumes;
2. every plan's dose checked and put on the perfusion grid (:func:`~.dose_grid.dose_on_grid`), then, per plan, the
   metrics of each structure (:mod:`.dose_metrics`);
3. the DVHs of every plan and structure on one dose-bin grid up to the largest lung dose of all plans (:mod:`.dvh`).

Every input is checked before the first DVH: a problem is one :class:`~ImagingBasics.errors.UserError` line, what is
only uncertain a :class:`~ImagingBasics.quality.QualityWarning`. Computation runs on the vector of the evaluated lung
voxels (both lungs minus the exclusions), so a plan costs one resampling and a few passes over the lungs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.quality import QualityWarning
from ImagingBasics.validation import require_finite
from ImagingBasics.volume import Volume

from ..metrics import HIGH_FUNCTION_THRESHOLD, functional_volumes
from .dose_grid import check_dose_values, dose_on_grid
from .dose_metrics import (
    DOSE_LEVELS_GY,
    HIGH_FUNCTION,
    LOW_FUNCTION,
    function_percent_receiving,
    function_weighted_mean_dose_gy,
    mean_dose_gy,
    mean_dose_in_functional_volumes,
    volume_percent_receiving,
)
from .dvh import DEFAULT_BIN_WIDTH_GY, DOSE_TOLERANCE_GY, anatomical_dvh, dose_bins_gy, function_weighted_dvh
from .perfusion_weights import perfusion_weights
from .structures import build_structures, exclusion_mask, lung_regions, lung_sides, require_same_grid


@dataclass(frozen=True, eq=False)
class StructureVoxels:
    """A structure as a boolean selection of the evaluated lung voxels (``select``, 1D)."""

    name: str
    kind: str
    side: str
    select: np.ndarray

    @property
    def voxels(self) -> int:
        return int(np.count_nonzero(self.select))


@dataclass(frozen=True, eq=False)
class FunctionalLung:
    """The perfusion side of the evaluation, shared by every plan.

    ``grid``: the perfusion map (its geometry is the evaluation grid); ``lung_mask``: the evaluated lung voxels (3D,
    both lungs minus the exclusions); ``weights`` and ``functional`` (2 high, 1 low) over those voxels (1D);
    ``structures``; ``split``: the high/low split (fraction of the maximum); ``weights_thresholded``: the weights hold
    the high-function volume only; ``regions_kind``: "lobes", "thirds" or None; ``excluded_ml``: the lung volume
    removed by the exclusions.
    """

    grid: Volume
    lung_mask: np.ndarray
    weights: np.ndarray
    functional: np.ndarray
    structures: List[StructureVoxels]
    split: float
    weights_thresholded: bool
    regions_kind: Optional[str]
    excluded_ml: float
    warnings: List[QualityWarning] = field(default_factory=list)

    @property
    def voxel_volume_ml(self) -> float:
        return self.grid.voxel_volume_ml


@dataclass(eq=False)
class PlanResult:
    """One plan: its ``name``, the dose in the evaluated lung voxels (``lung_dose_gy``, 1D, Gy), one metrics row per
    structure, the DVHs (structure name -> (V, F), fractions on the result's dose levels) and its warnings."""

    name: str
    lung_dose_gy: np.ndarray
    rows: List[Dict[str, Any]]
    dvh: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    warnings: List[QualityWarning] = field(default_factory=list)

    @property
    def max_dose_gy(self) -> float:
        return float(self.lung_dose_gy.max()) if self.lung_dose_gy.size else 0.0

    def row(self, structure: str) -> Dict[str, Any]:
        """The metrics row of ``structure`` (e.g. "both lungs")."""
        return next(r for r in self.rows if r["structure"] == structure)


@dataclass(eq=False)
class PlanningResult:
    """Every plan's result, the shared perfusion side, the DVH dose levels (Gy) and the settings used."""

    plans: List[PlanResult]
    lung: FunctionalLung
    dose_levels_gy: np.ndarray
    settings: Dict[str, Any]

    @property
    def warnings(self) -> List[QualityWarning]:
        return list(self.lung.warnings) + [w for plan in self.plans for w in plan.warnings]


# --- the perfusion side ------------------------------------------------------------------------------------------
def prepare_functional_lung(perfusion: Volume, lungs: Volume, lobes: Optional[Volume] = None,
                            exclusions: Optional[Mapping[str, Volume]] = None,
                            high_function_threshold: Optional[float] = None,
                            labels_source: str = "auto") -> FunctionalLung:
    """Structures, weights and functional volumes on the perfusion grid (steps in the module docstring).

    ``exclusions``: name -> label map (non-zero voxels removed from every structure). ``high_function_threshold``:
    None weights every voxel by its normalised perfusion and splits the functional volumes at 0.66; a fraction t
    keeps only the weights of the high-function volume and splits at t (:mod:`.perfusion_weights`).
    """
    require_finite(perfusion, "perfusion map")
    require_same_grid(lungs, perfusion, "the lung labels")
    sides = lung_sides(lungs, labels_source)
    regions = kind = None
    if lobes is not None:
        require_same_grid(lobes, perfusion, "the lobe labels")
        regions, kind = lung_regions(lobes, sides, labels_source)
    each = {name: exclusion_mask(volume, perfusion, name) for name, volume in (exclusions or {}).items()}
    excluded = np.logical_or.reduce(list(each.values())) if each else None
    structures, warnings = build_structures(sides, regions, excluded)
    lung_mask = next(s for s in structures if s.kind == "lungs").mask
    for name, mask in each.items():
        if not (mask & (sides > 0)).any():
            warnings.append(QualityWarning("exclusion_outside_lungs", f"the exclusion mask {name} removes no lung "
                                           "voxel: does it belong to this patient?", {"mask": name}))
    if kind == "thirds":
        warnings.append(QualityWarning("regions_are_thirds", "the region map holds lung thirds, not lobes: the "
                                       "per-region rows are thirds"))
    p = np.asarray(perfusion.array, dtype=np.float64)
    negative = int(np.count_nonzero(lung_mask & (p < 0)))
    if negative:
        warnings.append(QualityWarning("perfusion_negative", f"{negative} lung voxels of the perfusion map are negative "
                                       "and weigh 0", {"voxels": negative}))
    split = HIGH_FUNCTION_THRESHOLD if high_function_threshold is None else float(high_function_threshold)
    weights = perfusion_weights(p, lung_mask, high_function_threshold)[lung_mask]
    functional = functional_volumes(p, lung_mask, split)[lung_mask]
    selections = [StructureVoxels(s.name, s.kind, s.side, s.mask[lung_mask]) for s in structures]
    for s in selections:
        if not weights[s.select].sum() > 0:
            warnings.append(QualityWarning("structure_without_function", f"the {s.name} holds no function (all "
                                           "weights 0): its function-weighted metrics are undefined",
                                           {"structure": s.name}))
    voxel_ml = perfusion.voxel_volume_ml
    excluded_ml = 0.0 if excluded is None else float(np.count_nonzero(excluded & (sides > 0))) * voxel_ml
    return FunctionalLung(perfusion, lung_mask, weights, functional, selections, split,
                          high_function_threshold is not None, kind, excluded_ml, warnings)


# --- one plan ----------------------------------------------------------------------------------------------------
def structure_metrics(dose_gy: np.ndarray, lung: FunctionalLung, s: StructureVoxels) -> Dict[str, Any]:
    """The metrics row of one structure (keys and units in the names; NaN where undefined)."""
    sel, w = s.select, lung.weights
    total_function = float(w.sum())
    row: Dict[str, Any] = {
        "structure": s.name, "kind": s.kind, "side": s.side, "voxels": s.voxels,
        "volume_ml": s.voxels * lung.voxel_volume_ml,
        "function_share_percent": 100.0 * float(w[sel].sum()) / total_function if total_function > 0 else float("nan"),
        "mld_gy": mean_dose_gy(dose_gy, sel),
        "fmld_gy": function_weighted_mean_dose_gy(dose_gy, w, sel),
    }
    for level in DOSE_LEVELS_GY:
        row[f"v{level:g}_percent"] = volume_percent_receiving(dose_gy, sel, level)
        row[f"fv{level:g}_percent"] = function_percent_receiving(dose_gy, w, sel, level)
    functional_means = mean_dose_in_functional_volumes(dose_gy, lung.functional, sel)
    row["mean_dose_high_function_gy"] = functional_means["high"]
    row["mean_dose_low_function_gy"] = functional_means["low"]
    row["high_function_ml"] = float(np.count_nonzero(sel & (lung.functional == HIGH_FUNCTION))) * lung.voxel_volume_ml
    row["low_function_ml"] = float(np.count_nonzero(sel & (lung.functional == LOW_FUNCTION))) * lung.voxel_volume_ml
    row["max_dose_gy"] = float(dose_gy[sel].max())
    return row


def dose_name(plan: str) -> str:
    """How the dose of a plan is called in messages."""
    return f"dose of plan '{plan}'"


def lung_dose_gy(name: str, dose: Volume, lung: FunctionalLung) -> Tuple[np.ndarray, List[QualityWarning]]:
    """The checked dose of plan ``name`` on the perfusion grid, in the evaluated lung voxels (1D, Gy), and its
    warnings (:func:`~.dose_grid.dose_on_grid`)."""
    on_grid, warnings = dose_on_grid(dose, lung.grid, lung.lung_mask, dose_name(name))
    return np.asarray(on_grid.array, dtype=np.float64)[lung.lung_mask], warnings


def evaluate_plan(name: str, lung_dose: np.ndarray, lung: FunctionalLung,
                  warnings: Optional[List[QualityWarning]] = None) -> PlanResult:
    """Every structure's metrics of one plan, from its dose in the evaluated lung voxels (:func:`lung_dose_gy`)."""
    rows = [dict(plan=name, **structure_metrics(lung_dose, lung, s)) for s in lung.structures]
    return PlanResult(name, lung_dose, rows, warnings=list(warnings or []))


def add_dvhs(plan: PlanResult, lung: FunctionalLung, levels_gy: np.ndarray) -> None:
    """Fill ``plan.dvh``: the anatomical and the function-weighted DVH of each structure on ``levels_gy``."""
    for s in lung.structures:
        plan.dvh[s.name] = (anatomical_dvh(plan.lung_dose_gy, s.select, levels_gy),
                            function_weighted_dvh(plan.lung_dose_gy, lung.weights, s.select, levels_gy))


# --- the whole evaluation ----------------------------------------------------------------------------------------
def evaluate_plans(perfusion: Volume, lungs: Volume, doses: Mapping[str, Volume], lobes: Optional[Volume] = None,
                   exclusions: Optional[Mapping[str, Volume]] = None, high_function_threshold: Optional[float] = None,
                   bin_width_gy: float = DEFAULT_BIN_WIDTH_GY, labels_source: str = "auto") -> PlanningResult:
    """Evaluate each planned dose (plan name -> dose in Gy, any grid) against the lung function of ``perfusion``.

    ``lungs`` (and ``lobes``) on the perfusion grid, ``exclusions`` (name -> label map, any grid),
    ``high_function_threshold``, ``bin_width_gy`` and ``labels_source`` as in :data:`~.options.PLAN`.

    Raises:
        UserError: no plan, a bad input (see :mod:`.dose_grid`, :mod:`.structures`, :mod:`.perfusion_weights`).
    """
    if not doses:
        raise UserError("no planned dose to evaluate: give at least one dose")
    for name, dose in doses.items():  # the cheap checks of every dose first
        check_dose_values(dose, dose_name(name))
    lung = prepare_functional_lung(perfusion, lungs, lobes, exclusions, high_function_threshold, labels_source)
    on_grid = {name: lung_dose_gy(name, dose, lung) for name, dose in doses.items()}  # every coverage check
    plans = [evaluate_plan(name, values, lung, warnings) for name, (values, warnings) in on_grid.items()]
    levels = dose_bins_gy(max(plan.max_dose_gy for plan in plans), bin_width_gy)
    for plan in plans:
        add_dvhs(plan, lung, levels)
    settings = {
        "weights": ("normalised perfusion (perfusion / its maximum in the evaluated lungs, negative values 0)"
                    + (f", only in the high-function volume (>= {lung.split:g} of the maximum)"
                       if lung.weights_thresholded else "")),
        "high_function_threshold": high_function_threshold,
        "functional_split": lung.split,
        "dose_levels_gy": list(DOSE_LEVELS_GY),
        "bin_width_gy": float(bin_width_gy),
        "dose_tolerance_gy": DOSE_TOLERANCE_GY,
        "dose_resampling": "linear onto the perfusion grid (ImagingBasics.resample), 0 Gy outside the dose grid",
        "labels_source": labels_source,
        "regions_kind": lung.regions_kind,
        "excluded": list(exclusions or {}),
        "excluded_lung_ml": lung.excluded_ml,
        "evaluation_grid": {"size": list(perfusion.size), "spacing_mm": list(perfusion.spacing),
                            "origin_mm": list(perfusion.origin)},
    }
    return PlanningResult(plans, lung, levels, settings)
