"""The structures a plan is evaluated in: the lungs, the lobes, and what is excluded from them (GTV, PTV).

Label conventions are the project's (:mod:`CTPerfusionMappingLib.labels`): the lung map is read by
:func:`~CTPerfusionMappingLib.labels.normalise_labels` (1 right, 2 left, or any supported tool's labels), the lobe map
gives CIP regions (4 RUL, 5 RML, 6 RLL, 7 LUL, 8 LLL; lung thirds 9-14 are named as thirds, never as lobes).

Structures, in this order: right lung, left lung, both lungs, then each region present. As planners report "lung
minus GTV", every voxel of an exclusion mask (any non-zero label, e.g. a GTV or PTV) is removed from every structure.
The lungs and lobes must lie on the perfusion grid (``ctpm run`` writes all three on the CT grid): a map on another
grid belongs to another image. Exclusion masks come from structure sets on any grid and are resampled onto it
(nearest neighbour, :func:`~ImagingBasics.resample.resample_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.quality import QualityWarning
from ImagingBasics.resample import resample_labels
from ImagingBasics.validation import check_label_map
from ImagingBasics.volume import Volume

from ..labels import (
    CIP_LEFT_LUNG,
    CIP_RIGHT_LUNG,
    CIP_WHOLE_LUNG,
    LEFT_LUNG,
    LOBE_IDS,
    REGION_NAMES,
    RIGHT_LUNG,
    THIRD_IDS,
    normalise_labels,
    region_kind,
    region_side,
)


@dataclass(frozen=True, eq=False)
class Structure:
    """One evaluated structure: ``name`` (e.g. "right lung", "RUL"), ``kind`` ("lung", "lungs", "lobe" or "third"),
    ``side`` ("right", "left", "both") and its voxels ``mask`` (bool, on the perfusion grid)."""

    name: str
    kind: str
    side: str
    mask: np.ndarray

    @property
    def voxels(self) -> int:
        return int(np.count_nonzero(self.mask))


def _grid_text(volume: Volume) -> str:
    nx, ny, nz = volume.size
    spacing = "x".join(f"{s:.3g}" for s in volume.spacing)
    origin = ", ".join(f"{o:.1f}" for o in volume.origin)
    return f"{nx}x{ny}x{nz} voxels of {spacing} mm at ({origin}) mm"


def require_same_grid(volume: Volume, reference: Volume, name: str) -> None:
    """Raise a one-line UserError unless ``volume`` (e.g. the lung labels) lies on the perfusion map's grid."""
    if not volume.same_geometry(reference):
        raise UserError(f"{name} ({_grid_text(volume)}) and the perfusion map ({_grid_text(reference)}) are not on one "
                        "grid: give the labels the perfusion map was made with (ctpm run writes both on the CT grid)")


def lung_sides(lungs: Volume, source: str = "auto", name: str = "the lung labels") -> np.ndarray:
    """uint8 array: 1 right lung, 2 left lung, 0 elsewhere, from a lung label map of any supported convention."""
    return np.asarray(normalise_labels(lungs, source=source, name=name).lungs.array, dtype=np.uint8)


def lung_regions(lobes: Volume, lung_side_map: np.ndarray, source: str = "auto",
                 name: str = "the lobe labels") -> Tuple[np.ndarray, str]:
    """(uint8 array of CIP region ids inside the lungs, ``"lobes"`` or ``"thirds"``) from a lobe label map."""
    labels = normalise_labels(lobes, source=source, name=name)
    regions = np.where(lung_side_map > 0, np.asarray(labels.regions.array), 0).astype(np.uint8)
    return regions, labels.kind


def exclusion_mask(mask: Volume, reference: Volume, name: str) -> np.ndarray:
    """bool array on ``reference``'s grid: the non-zero voxels of the label map ``mask`` (resampled nearest neighbour
    onto the grid; ``name`` for the messages)."""
    check_label_map(mask, f"exclusion mask {name}")
    on_grid = resample_labels(mask, reference, name=f"the exclusion mask {name}")
    return np.asarray(on_grid.array) != 0


def build_structures(lung_side_map: np.ndarray, regions: Optional[np.ndarray] = None,
                     excluded: Optional[np.ndarray] = None) -> Tuple[List[Structure], List[QualityWarning]]:
    """The structures (module docstring) and warnings: regions emptied by the exclusion are left out with a warning.

    Raises:
        UserError: a lung without voxels (before or after the exclusion).
    """
    side_map = np.asarray(lung_side_map)
    keep = np.ones(side_map.shape, dtype=bool) if excluded is None else ~np.asarray(excluded, dtype=bool)
    warnings: List[QualityWarning] = []
    structures: List[Structure] = []
    for rid, value, side in ((CIP_RIGHT_LUNG, RIGHT_LUNG, "right"), (CIP_LEFT_LUNG, LEFT_LUNG, "left")):
        in_lung = side_map == value
        if not in_lung.any():
            raise UserError(f"the lung labels give the {side} lung no voxels: both lungs are needed (check the label "
                            "convention, --labels-source)")
        mask = in_lung & keep
        if not mask.any():
            raise UserError(f"the exclusion masks cover the whole {side} lung: nothing of it is left to evaluate")
        structures.append(Structure(REGION_NAMES[rid], "lung", side, mask))
    structures.append(Structure(REGION_NAMES[CIP_WHOLE_LUNG], "lungs", "both", (side_map > 0) & keep))
    if regions is not None:
        present = [int(v) for v in np.unique(regions) if int(v) in LOBE_IDS + THIRD_IDS]
        for rid in present:
            mask = (np.asarray(regions) == rid) & keep
            if not mask.any():
                warnings.append(QualityWarning(
                    "structure_excluded", f"the {REGION_NAMES[rid]} lies wholly inside the exclusion masks and is not "
                    "reported", {"region_id": rid}))
                continue
            structures.append(Structure(REGION_NAMES[rid], region_kind(rid), region_side(rid), mask))
    return structures, warnings
