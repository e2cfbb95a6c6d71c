"""One internal convention for lungs and lung regions, and the conversions from the label maps of other tools.

Internal convention (:class:`LungLabels`):

* ``lungs``: uint8 Volume, 0 background, 1 right lung, 2 left lung (also this project's own ``lungs.nrrd``);
* ``regions``: uint8 Volume on the same grid holding Chest Imaging Platform (CIP) region ids, either the five
  lobes (4 RUL, 5 RML, 6 RLL, 7 LUL, 8 LLL; ``kind == "lobes"``) or the six lung thirds (9/10/11 left
  upper/middle/lower, 12/13/14 right upper/middle/lower; ``kind == "thirds"``). Thirds are never called lobes.

"Right" and "left" are the patient's: the right lung lies on the negative x (LPS) side of the patient.

Sources :func:`normalise_labels` understands (the label values each tool writes):

=====================  ==========================================================================================
``cip``                CIP label map, value = (type << 8) | region; region = value & 0xFF: 1 whole lung, 2 right lung,
                       3 left lung, 4-8 lobes, 9-14 thirds (airway/vessel types in the high byte are kept in their
                       region; voxels whose region is 0 are background whatever their type)
``totalsegmentator``   TotalSegmentator v2 task "total": 10 LUL, 11 LLL, 12 RUL, 13 RML, 14 RLL (other organs ignored)
``totalsegmentator_v1`` TotalSegmentator v1 task "total": 13 LUL, 14 LLL, 15 RUL, 16 RML, 17 RLL
``lungmask_r231``      lungmask R231 (and this project's lungs): 1 right lung, 2 left lung
``lungmask_ltrclobes`` lungmask LTRCLobes: 1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL
``mapping``            a user dict ``{value: CIP region id 4-14, or "right"/"left" (or 2/3) for a whole lung}``
=====================  ==========================================================================================

When a source gives regions, the lungs are derived from them (RUL/RML/RLL and thirds 12-14 are right). When it
gives only lungs with their side, the regions are the lung thirds of :func:`lung_thirds`. A lung label without
a side (CIP WholeLung, 1) cannot be used: the user must split the lungs first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.quality import QualityWarning
from ImagingBasics.resample import resample_labels
from ImagingBasics.volume import Volume

# --- conventions --------------------------------------------------------------------------------
RIGHT_LUNG = 1
LEFT_LUNG = 2
#: Values of the ``lungs`` volume by side name.
LUNG_VALUES: Dict[str, int] = {"right": RIGHT_LUNG, "left": LEFT_LUNG}

#: CIP region ids of the lobes and of the lung thirds.
LOBE_IDS: Tuple[int, ...] = (4, 5, 6, 7, 8)
THIRD_IDS: Tuple[int, ...] = (9, 10, 11, 12, 13, 14)
#: CIP WholeLung / RightLung / LeftLung region ids (also used for the summary rows of region tables).
CIP_WHOLE_LUNG, CIP_RIGHT_LUNG, CIP_LEFT_LUNG = 1, 2, 3

#: Short display name of each CIP region id used here (lobes by their usual abbreviations, thirds spelled out).
REGION_NAMES: Dict[int, str] = {
    1: "both lungs",
    2: "right lung",
    3: "left lung",
    4: "RUL",
    5: "RML",
    6: "RLL",
    7: "LUL",
    8: "LLL",
    9: "left upper third",
    10: "left middle third",
    11: "left lower third",
    12: "right upper third",
    13: "right middle third",
    14: "right lower third",
}
#: Long names (for tables and reports).
REGION_LONG_NAMES: Dict[int, str] = {
    1: "both lungs",
    2: "right lung",
    3: "left lung",
    4: "right upper lobe",
    5: "right middle lobe",
    6: "right lower lobe",
    7: "left upper lobe",
    8: "left lower lobe",
    9: "left upper third",
    10: "left middle third",
    11: "left lower third",
    12: "right upper third",
    13: "right middle third",
    14: "right lower third",
}
_RIGHT_IDS = frozenset({2, 4, 5, 6, 12, 13, 14})
_LEFT_IDS = frozenset({3, 7, 8, 9, 10, 11})

#: Thirds of each lung in superior-to-inferior order, by the value of the lung in ``lungs``.
_THIRDS_OF_LUNG: Dict[int, Tuple[int, int, int]] = {RIGHT_LUNG: (12, 13, 14), LEFT_LUNG: (9, 10, 11)}

#: Lobe label values of the tools with lobe outputs -> CIP lobe id.
_LOBE_MAPS: Dict[str, Dict[int, int]] = {
    "totalsegmentator": {10: 7, 11: 8, 12: 4, 13: 5, 14: 6},
    "totalsegmentator_v1": {13: 7, 14: 8, 15: 4, 16: 5, 17: 6},
    "lungmask_ltrclobes": {1: 7, 2: 8, 3: 4, 4: 5, 5: 6},
}
SOURCES: Tuple[str, ...] = (
    "cip",
    "totalsegmentator",
    "totalsegmentator_v1",
    "lungmask_r231",
    "lungmask_ltrclobes",
    "mapping",
)
_SOURCE_DESCRIPTIONS = {
    "cip": "CIP region ids 1-14",
    "totalsegmentator": "TotalSegmentator v2 lobe labels 10-14",
    "totalsegmentator_v1": "TotalSegmentator v1 lobe labels 13-17",
    "lungmask_r231": "lungmask R231 labels 1 (right) and 2 (left)",
    "lungmask_ltrclobes": "lungmask LTRCLobes labels 1-5",
    "mapping": "the values of the given mapping",
}
_CHOOSE = (
    "choose the label source (cip, totalsegmentator, totalsegmentator_v1, lungmask_r231, lungmask_ltrclobes) "
    "or give a mapping of values to regions"
)


#: Segment IDs of lung segmentations made in Slicer -> CIP region id (TotalSegmentator's "total" task IDs; lungmask;
#: the names this module writes). Looked up by segment ID first, then by name (case and spaces ignored).
SEGMENT_REGIONS: Dict[str, int] = {
    "lung_upper_lobe_right": 4, "lung_middle_lobe_right": 5, "lung_lower_lobe_right": 6,
    "lung_upper_lobe_left": 7, "lung_lower_lobe_left": 8,
    "rul": 4, "rml": 5, "rll": 6, "lul": 7, "lll": 8,
    "right_upper_lobe": 4, "right_middle_lobe": 5, "right_lower_lobe": 6, "left_upper_lobe": 7, "left_lower_lobe": 8,
    "lung_right": 2, "right_lung": 2, "lung_left": 3, "left_lung": 3,
    # the structure names of radiotherapy structure sets (AAPM TG-263, Mayo et al., Int J Radiat Oncol Biol Phys 2018)
    "lung_r": 2, "lung_l": 3, "lung_rul": 4, "lung_rml": 5, "lung_rll": 6, "lung_lul": 7, "lung_lll": 8,
}


def segment_region(segment_id: str, name: str = "") -> Optional[int]:
    """The CIP region id (2/3 a whole right/left lung, 4-8 a lobe) of a segment, or None for other segments."""
    for key in (segment_id, name):
        k = "_".join(str(key or "").strip().lower().replace("-", " ").split())
        if k in SEGMENT_REGIONS:
            return SEGMENT_REGIONS[k]
    return None


def region_side(region_id: int) -> str:
    """``"right"`` or ``"left"``: the lung of a CIP region id (2 and 4-6, 12-14 right; 3 and 7-11 left).

    Raises:
        ValueError: the id has no side (0 background, 1 whole lung, or not a lung region).
    """
    rid = int(region_id)
    if rid in _RIGHT_IDS:
        return "right"
    if rid in _LEFT_IDS:
        return "left"
    raise ValueError(f"CIP region {rid} is not a lung region with a side")


def region_kind(region_id: int) -> str:
    """``"lobe"`` (4-8), ``"third"`` (9-14) or ``"lung"`` (1-3) for a CIP region id.

    Raises:
        ValueError: not a lung region id.
    """
    rid = int(region_id)
    if rid in LOBE_IDS:
        return "lobe"
    if rid in THIRD_IDS:
        return "third"
    if rid in (1, 2, 3):
        return "lung"
    raise ValueError(f"CIP region {rid} is not a lung region")


# --- the value type -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LungLabels:
    """Lungs (0/1 right/2 left) and lung regions (CIP ids, lobes or thirds) on one grid."""

    lungs: Volume
    regions: Volume
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ("lobes", "thirds"):
            raise ValueError(f"kind must be 'lobes' or 'thirds', got {self.kind!r}")
        if not self.lungs.same_geometry(self.regions):
            raise ValueError("lungs and regions must have the same geometry")

    @property
    def region_ids(self) -> Tuple[int, ...]:
        """The region ids present, sorted."""
        return tuple(int(v) for v in np.unique(self.regions.array) if v != 0)

    def region_names(self) -> Dict[int, str]:
        """``{id: short name}`` of the regions present."""
        return {rid: REGION_NAMES[rid] for rid in self.region_ids}


# --- validation ---------------------------------------------------------------------------------
def _integer_labels(volume: Volume, name: str) -> np.ndarray:
    """The label array as a non-negative integer array (bool -> uint8; whole-number floats accepted)."""
    a = np.asarray(volume.array)
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise UserError(f"{name} contains NaN or infinite values; a label map must hold whole numbers")
        if not np.all(a == np.round(a)):
            raise UserError(f"{name} holds fractional values; a label map must hold whole numbers (is it an image, not labels?)")
        if a.size and a.min() < 0:
            raise UserError(f"{name} holds negative values; label values must be 0 or positive whole numbers")
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise UserError(f"{name} has voxel type {a.dtype}; a label map must hold whole numbers")
    if np.issubdtype(a.dtype, np.signedinteger) and a.size and a.min() < 0:
        raise UserError(f"{name} holds negative values; label values must be 0 or positive whole numbers")
    return a


def detect_source(values: Iterable[int]) -> str:
    """The label source implied by a set of non-zero label values, or raise when it is not unambiguous.

    Rules (first match wins):

    * any value above 255 (a CIP type in the high byte) -> ``cip``;
    * any value 105-117 (only TotalSegmentator v2's "total" task goes above 104) -> ``totalsegmentator``;
    * exactly {1, 2} -> ``lungmask_r231`` (also this project's own lungs);
    * within 1-5 with 3 or more distinct values -> ``lungmask_ltrclobes``;
    * within 4-8 and containing 6, 7 or 8 -> ``cip`` lobes ({4, 5} alone could also be LTRCLobes);
    * within 9-14 and containing 9 -> ``cip`` thirds (10-14 alone could also be TotalSegmentator v2 lobes).

    Anything else (a single value, {2, 3}, values above 117, many labels all below 105 which could be either
    TotalSegmentator version) raises :class:`UserError` asking the user to name the source.
    """
    vals = sorted({int(v) for v in values} - {0})
    if not vals:
        raise UserError("the label map is empty (all voxels are 0)")
    shown = ", ".join(str(v) for v in vals[:12]) + (", ..." if len(vals) > 12 else "")
    s = set(vals)
    top = vals[-1]
    if top > 255:
        return "cip"
    if top > 117:
        raise UserError(f"label values ({shown}) match no supported tool; {_CHOOSE}")
    if top > 104:
        return "totalsegmentator"
    if s == {1, 2}:
        return "lungmask_r231"
    if top <= 5 and len(s) >= 3:
        return "lungmask_ltrclobes"
    if s <= set(LOBE_IDS) and s & {6, 7, 8}:
        return "cip"
    if s <= set(THIRD_IDS) and 9 in s:
        return "cip"
    raise UserError(f"cannot tell which tool made the label map from its values ({shown}); {_CHOOSE}")


# --- building LungLabels --------------------------------------------------------------------------
def _lungs_from_regions(regions: np.ndarray) -> np.ndarray:
    lungs = np.zeros(regions.shape, dtype=np.uint8)
    for rid in LOBE_IDS + THIRD_IDS:
        lungs[regions == rid] = RIGHT_LUNG if rid in _RIGHT_IDS else LEFT_LUNG
    return lungs


def _build(volume: Volume, regions: np.ndarray, sides: np.ndarray, whole: np.ndarray, name: str, what: str) -> LungLabels:
    """LungLabels from CIP region ids (4-14), side-only lung voxels (1 right, 2 left) and side-less lung voxels.

    With regions present the lungs are the sides of the regions plus any side-only voxels (which then belong to no
    region); without regions, the side-only lungs are split into thirds. Side-less voxels are an error unless
    regions or sided lungs are present (then they are ignored).
    """
    present = set(np.unique(regions).tolist()) - {0}
    has_lobes = bool(present & set(LOBE_IDS))
    has_thirds = bool(present & set(THIRD_IDS))
    if has_lobes and has_thirds:
        raise UserError(f"{name} mixes lobes and lung thirds; use a label map with either lobes or thirds")
    if present:
        lungs = _lungs_from_regions(regions)
        extra = (lungs == 0) & (sides > 0)
        lungs[extra] = sides[extra]
        kind = "lobes" if has_lobes else "thirds"
        return LungLabels(volume.with_array(lungs), volume.with_array(regions.astype(np.uint8)), kind)
    if np.any(sides):
        lungs_vol = volume.with_array(sides.astype(np.uint8))
        return LungLabels(lungs_vol, lung_thirds(lungs_vol), "thirds")
    if np.any(whole):
        raise UserError(
            f"{name} marks the lungs without telling left from right; use a label map with separate right and left "
            "lungs (or the built-in lung segmentation)"
        )
    raise UserError(f"no lung labels found in {name} (looked for {what})")


def _from_cip(volume: Volume, a: np.ndarray, name: str) -> LungLabels:
    region = (a & 0xFF).astype(np.uint8)
    regions = np.where((region >= 4) & (region <= 14), region, 0).astype(np.uint8)
    sides = np.zeros(a.shape, dtype=np.uint8)
    sides[region == CIP_RIGHT_LUNG] = RIGHT_LUNG
    sides[region == CIP_LEFT_LUNG] = LEFT_LUNG
    return _build(volume, regions, sides, region == CIP_WHOLE_LUNG, name, _SOURCE_DESCRIPTIONS["cip"])


def _from_lobe_map(volume: Volume, a: np.ndarray, table: Mapping[int, int], name: str, source: str) -> LungLabels:
    regions = np.zeros(a.shape, dtype=np.uint8)
    for value, rid in table.items():
        regions[a == value] = rid
    empty = np.zeros(a.shape, dtype=np.uint8)
    return _build(volume, regions, empty, empty, name, _SOURCE_DESCRIPTIONS[source])


def _from_r231(volume: Volume, a: np.ndarray, name: str) -> LungLabels:
    sides = np.zeros(a.shape, dtype=np.uint8)
    sides[a == 1] = RIGHT_LUNG
    sides[a == 2] = LEFT_LUNG
    none = np.zeros(a.shape, dtype=np.uint8)
    return _build(volume, none, sides, none, name, _SOURCE_DESCRIPTIONS["lungmask_r231"])


def _from_mapping(volume: Volume, a: np.ndarray, mapping: Mapping, name: str) -> LungLabels:
    if not mapping:
        raise UserError("the label mapping is empty; give at least one {value: region} pair")
    regions = np.zeros(a.shape, dtype=np.uint8)
    sides = np.zeros(a.shape, dtype=np.uint8)
    whole = np.zeros(a.shape, dtype=bool)
    for key, target in mapping.items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise UserError(f"label mapping key {key!r} is not a whole number") from None
        sel = a == value
        t = target.strip().lower() if isinstance(target, str) else target
        if t in ("right", CIP_RIGHT_LUNG):
            sides[sel] = RIGHT_LUNG
        elif t in ("left", CIP_LEFT_LUNG):
            sides[sel] = LEFT_LUNG
        elif t == CIP_WHOLE_LUNG:
            whole |= sel
        elif isinstance(t, (int, np.integer)) and not isinstance(t, bool) and int(t) in LOBE_IDS + THIRD_IDS:
            regions[sel] = int(t)
        else:
            raise UserError(
                f"label mapping {key!r}: {target!r} is not a lung region; use a CIP region id 4-14 or 'right'/'left'"
            )
    return _build(volume, regions, sides, whole, name, _SOURCE_DESCRIPTIONS["mapping"])


def normalise_labels(
    volume: Volume,
    source: str = "auto",
    mapping: Optional[Mapping[Union[int, str], Union[int, str]]] = None,
    name: str = "the label map",
) -> LungLabels:
    """Convert a label map of a supported tool to :class:`LungLabels` (see the module docstring for the sources).

    Args:
        volume: the label map (integer voxels; float voxels are accepted when they hold whole numbers).
        source: ``"auto"`` (see :func:`detect_source`), one of :data:`SOURCES`, or ``"mapping"``.
        mapping: ``{value: CIP region id 4-14 or "right"/"left"}``; required for (and implies) ``source="mapping"``.
        name: how the label map is called in error messages (e.g. its file name).

    Labels that are not lung labels of the chosen source (other organs) are ignored.

    Raises:
        UserError: unknown source, empty label map, NaN or fractional values, an ambiguous map with
            ``source="auto"``, no lung labels for the source, lungs without a left/right split, or lobes mixed
            with thirds.
    """
    if mapping is not None and source == "auto":
        source = "mapping"
    source = str(source).strip().lower()
    if source not in SOURCES + ("auto",):
        raise UserError(f"unknown label source {source!r}; {_CHOOSE}")
    if source == "mapping" and mapping is None:
        raise UserError("label source 'mapping' needs a mapping of label values to regions")
    a = _integer_labels(volume, name)
    if not np.any(a):
        raise UserError(f"{name} is empty (all voxels are 0); no lung labels found in it")
    if source == "auto":
        try:
            source = detect_source(np.unique(a))
        except UserError as exc:
            raise UserError(f"{name}: {exc}") from None
    if source == "cip":
        return _from_cip(volume, a, name)
    if source == "lungmask_r231":
        return _from_r231(volume, a, name)
    if source == "mapping":
        return _from_mapping(volume, a, mapping or {}, name)
    return _from_lobe_map(volume, a, _LOBE_MAPS[source], name, source)


# --- plausibility against the CT -------------------------------------------------------------------
#: given lung labels must cover at least this much lung (mL; the built-in segmentation's minimum too)
MIN_GIVEN_LUNG_ML = 500.0
#: the voxels labelled as lung must have a median HU below this (lung is -950..-500 HU; soft tissue is not lung)
MAX_LUNG_MEDIAN_HU = -500.0
#: given lobes covering less than this share of the lungs give a warning
MIN_REGION_COVERAGE = 0.9


def check_lung_labels(labels: LungLabels, ct: Volume, name: str = "the lung labels") -> List[QualityWarning]:
    """Given labels checked against the CT they are used with; where they would give a wrong result, a one-line
    UserError, else a list of warnings.

    Refused: labels covering less than :data:`MIN_GIVEN_LUNG_ML` of lung (an abdominal CT, labels of another
    patient); labels whose voxels are not lung on the CT (median above :data:`MAX_LUNG_MEDIAN_HU`); a side without
    any voxel (lobe labels read with the wrong convention leave a whole lung out: the region table would silently
    drop it); right and left swapped against the patient's x axis (the right lung lies at smaller LPS x). Warned:
    regions (lobes or thirds) that cover less than :data:`MIN_REGION_COVERAGE` of the lungs.
    """
    if not labels.lungs.same_geometry(ct):
        raise UserError(f"{name} are not on the CT grid")
    lungs = np.asarray(labels.lungs.array)
    voxel_ml = ct.voxel_volume_ml
    right, left = int(np.count_nonzero(lungs == RIGHT_LUNG)), int(np.count_nonzero(lungs == LEFT_LUNG))
    total_ml = (right + left) * voxel_ml
    if total_ml < MIN_GIVEN_LUNG_ML:
        raise UserError(f"{name} cover only {total_ml:.0f} mL of lung (at least {MIN_GIVEN_LUNG_ML:.0f} mL expected on a "
                        "chest CT): do they belong to this CT, and does the CT show the lungs?")
    median_hu = float(np.median(np.asarray(ct.array)[lungs > 0]))
    if median_hu > MAX_LUNG_MEDIAN_HU:
        raise UserError(f"the voxels {name} call lung have a median of {median_hu:.0f} HU on the CT (lung is below "
                        f"{MAX_LUNG_MEDIAN_HU:.0f} HU): the labels do not match this CT's lungs")
    for side, count in (("right", right), ("left", left)):
        if count == 0:
            raise UserError(f"{name} give the {side} lung no voxels: a label convention that does not fit the file "
                            "(choose --labels-source) or labels of one lung only; both lungs are needed")
    x_right, x_left = (float(ct.index_to_lps(np.argwhere(lungs == value)[::97, ::-1].astype(float).mean(axis=0))[0])
                       for value in (RIGHT_LUNG, LEFT_LUNG))
    if x_right > x_left:
        raise UserError(f"right and left are swapped in {name}: the 'right' lung lies on the patient's left (x = "
                        f"{x_right:.0f} mm, 'left' lung at {x_left:.0f} mm, LPS); check the label convention "
                        "(--labels-source) and the CT's orientation")
    covered = float(np.count_nonzero((np.asarray(labels.regions.array) > 0) & (lungs > 0))) / (right + left)
    if covered < MIN_REGION_COVERAGE:
        return [QualityWarning("regions_partial", f"the {labels.kind} cover {100 * covered:.0f} % of the lungs; the "
                               "rest is in no region of the table", {"covered_percent": round(100 * covered, 1)})]
    return []


# --- lung thirds ----------------------------------------------------------------------------------
def _cut_levels(counts: np.ndarray) -> Tuple[int, int]:
    """Numbers of leading levels in the upper and in the upper+middle parts.

    Each cut is one of the two level boundaries around 1/3 (2/3) of the voxels; of the four combinations the one
    whose largest deviation of a part from 1/3 of the total is smallest wins (so each part is within one level).
    """
    before = np.concatenate([[0], np.cumsum(counts)]).astype(np.float64)
    total = before[-1]

    def around(target: float) -> Tuple[int, ...]:
        i = int(np.searchsorted(before, target, side="right")) - 1  # before[i] <= target
        return tuple(sorted({i, min(i + 1, len(before) - 1)}))

    best: Optional[Tuple[float, float, int, int]] = None
    for b1 in around(total / 3.0):
        for b2 in around(2.0 * total / 3.0):
            if b2 < b1:
                continue
            parts = np.array([before[b1], before[b2] - before[b1], total - before[b2]]) - total / 3.0
            key = (float(np.abs(parts).max()), float(np.abs(parts).sum()), b1, b2)
            if best is None or key < best:
                best = key
    assert best is not None
    return best[2], best[3]


def lung_thirds(lungs: Volume) -> Volume:
    """Split each lung (1 right, 2 left) into upper, middle and lower thirds of equal volume.

    Returns a uint8 Volume on the same grid with CIP region ids 12/13/14 (right upper/middle/lower third) and
    9/10/11 (left). Thirds are cut along the patient's superior-inferior axis: the physical LPS z of each voxel
    centre (through the direction matrix, so flipped or oblique images are handled). Voxels at the same height
    stay together (a cut never splits an axial slice of an axial image); each cut lies at one of the two slice
    boundaries around 1/3 (2/3) of the lung volume counted from the top, choosing the pair that keeps the three
    parts closest to equal, so each third's volume is within one slice's worth of a third of the lung.

    CIP's own partial-lung thirds are similar in spirit but not identical: in CIP's sample label map both lungs
    are cut at the same slices and the thirds differ in volume by up to ~20 %; this per-lung split agrees with
    it on about 95 % of the lung voxels.
    """
    labels = np.asarray(lungs.array)
    out = np.zeros(labels.shape, dtype=np.uint8)
    d = lungs.direction
    sx, sy, sz = lungs.spacing
    ox, oy, oz = lungs.origin
    # z (superior +) of voxel (i, j, k) = oz + d[2, 0]*sx*i + d[2, 1]*sy*j + d[2, 2]*sz*k
    dz = np.array([d[2, 0] * sx, d[2, 1] * sy, d[2, 2] * sz])
    axial = abs(dz[0]) < 1e-9 and abs(dz[1]) < 1e-9
    for lung_value, third_ids in _THIRDS_OF_LUNG.items():
        mask = labels == lung_value
        if not mask.any():
            continue
        if axial:
            counts_k = mask.sum(axis=(1, 2))
            ks = np.nonzero(counts_k)[0]
            order = ks[np.argsort(-(oz + dz[2] * ks), kind="stable")]  # superior first
            b1, b2 = _cut_levels(counts_k[order])
            part = np.zeros(labels.shape[0], dtype=np.uint8)
            part[order[b1:b2]] = 1
            part[order[b2:]] = 2
            ids = np.asarray(third_ids, dtype=np.uint8)[part]  # per slice
            out[mask] = np.broadcast_to(ids[:, None, None], labels.shape)[mask]
        else:
            kk, jj, ii = np.nonzero(mask)
            z = oz + dz[0] * ii + dz[1] * jj + dz[2] * kk
            levels, inverse, counts = np.unique(-np.round(z, 3), return_inverse=True, return_counts=True)
            b1, b2 = _cut_levels(counts)
            part = np.zeros(levels.size, dtype=np.uint8)
            part[b1:b2] = 1
            part[b2:] = 2
            out[kk, jj, ii] = np.asarray(third_ids, dtype=np.uint8)[part[inverse.reshape(-1)]]
    return lungs.with_array(out)


# --- geometry ---------------------------------------------------------------------------------------

def load_lung_labels(
    path,
    reference: Optional[Volume] = None,
    source: str = "auto",
    mapping: Optional[Mapping[Union[int, str], Union[int, str]]] = None,
) -> LungLabels:
    """Read a label map file, bring it onto ``reference``'s grid when given, and normalise it (see :func:`normalise_labels`)."""
    from ImagingBasics.imageio import read_volume

    volume = read_volume(path)
    name = str(path)
    if reference is not None:
        volume = resample_labels(volume, reference, name=name)
    return normalise_labels(volume, source=source, mapping=mapping, name=name)
