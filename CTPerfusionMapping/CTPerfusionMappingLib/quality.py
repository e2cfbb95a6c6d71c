"""Quality checks of the lungs a run works on: given labels against their CT, lungs cut by the field of view,
implausible lung volumes, a left lung larger than the right (:func:`lung_quality` runs them all); a CT of a patient
who is not supine (:func:`patient_orientation`).

Each check returns :class:`~ImagingBasics.quality.QualityWarning` values (code, one-line message, numbers); the
thresholds are our choices, set on the real CTs of the test data (whole lungs touch the image border with at most
2.5 cm^2, at the apex; cropped chest CTs with 13-250 cm^2 per lung and side).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from ImagingBasics.quality import QualityWarning
from ImagingBasics.volume import Volume, orientation_code

from .labels import LEFT_LUNG, RIGHT_LUNG, LungLabels, check_lung_labels

#: lung on an image face beyond this area (cm^2) means the field of view cuts the lung there
TRUNCATION_AREA_CM2 = 5.0
#: the usual volume of both lungs of an adult at inspiration on CT (mL); outside it, a warning
LUNG_VOLUME_RANGE_ML = (2000.0, 9000.0)
#: below this right/left lung volume ratio, a warning (normal lungs: the right is the larger; whole-lung CTs of the
#: real CTs of the test data 1.14-1.46, synthetic phantoms 1.06-1.16)
MIN_RIGHT_TO_LEFT = 0.95
#: each patient direction letter -> the lung's end that lies there
_ENDS = {"S": "top (apex)", "I": "bottom (base)", "R": "right side", "L": "left side", "A": "front", "P": "back"}
_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}


def lung_truncation(lungs: Volume, min_area_cm2: float = TRUNCATION_AREA_CM2) -> List[QualityWarning]:
    """One warning per lung that lies on the border of the image with more than ``min_area_cm2`` at one or more
    image faces: the field of view cuts it there, and its volume and region shares are those of the part in view.
    ``lungs``: 1 right, 2 left. The values give the area (cm^2) on each face, named by its patient end."""
    labels = np.asarray(lungs.array)
    code = orientation_code(lungs.direction)
    sx, sy, sz = lungs.spacing
    faces = ((2, sy * sz), (1, sx * sz), (0, sx * sy))  # index axis i, j, k: the array axis and the face area (mm^2)
    cut: Dict[str, Dict[str, float]] = {"right": {}, "left": {}}
    for index_axis, (array_axis, voxel_area_mm2) in enumerate(faces):
        for end in (0, -1):
            letter = code[index_axis] if end == -1 else _OPPOSITE[code[index_axis]]
            face = np.take(labels, end, axis=array_axis)
            for value, side in ((RIGHT_LUNG, "right"), (LEFT_LUNG, "left")):
                area_cm2 = float(np.count_nonzero(face == value)) * voxel_area_mm2 / 100.0
                if area_cm2 > min_area_cm2:
                    cut[side][_ENDS[letter]] = round(area_cm2, 1)
    warnings: List[QualityWarning] = []
    for side, ends in cut.items():
        if not ends:
            continue
        where = ", ".join(f"{end} {area:.0f} cm^2" for end, area in sorted(ends.items(), key=lambda item: -item[1]))
        warnings.append(QualityWarning(
            "lung_truncated",
            f"the {side} lung is cut by the field of view (lung on the image border: {where}): its volume and shares "
            "are those of the part in view",
            {"lung": side, "ends_cm2": ends, "area_cm2": round(sum(ends.values()), 1)}))
    return warnings


def lung_volume(lungs: Volume, volume_range_ml=LUNG_VOLUME_RANGE_ML) -> List[QualityWarning]:
    """A warning when both lungs together lie outside ``volume_range_ml`` (an adult's lungs at inspiration)."""
    total_ml = float(np.count_nonzero(np.asarray(lungs.array) > 0)) * lungs.voxel_volume_ml
    low, high = volume_range_ml
    if low <= total_ml <= high:
        return []
    why = ("a field of view that cuts the lungs, an expiratory scan, a child, or lung lost to disease" if total_ml < low
           else "labels that take in air outside the lungs, or hyperinflation")
    return [QualityWarning("lung_volume_unusual",
                           f"the lungs measure {total_ml:.0f} mL, outside the usual {low:.0f}-{high:.0f} mL of an "
                           f"adult's lungs at inspiration: {why}",
                           {"volume_ml": round(total_ml, 1), "usual_min_ml": low, "usual_max_ml": high})]


def lung_sides(lungs: Volume, min_right_to_left: float = MIN_RIGHT_TO_LEFT) -> List[QualityWarning]:
    """A warning when the left lung is clearly the larger (right/left volume below ``min_right_to_left``): the right
    lung is normally the larger (three lobes; the heart takes room on the left): right/left 1.14-1.46 on the real CTs
    of the test data, 1.06-1.16 on the synthetic phantoms. A left/right swap in the image header (a mirrored image)
    shows this way, as do right-lung surgery, collapse or effusion: the warning names both. Call it on whole lungs
    only (a cut lung says nothing)."""
    labels = np.asarray(lungs.array)
    right_ml = float(np.count_nonzero(labels == RIGHT_LUNG)) * lungs.voxel_volume_ml
    left_ml = float(np.count_nonzero(labels == LEFT_LUNG)) * lungs.voxel_volume_ml
    if left_ml <= 0.0 or right_ml / left_ml >= min_right_to_left:
        return []
    ratio = right_ml / left_ml
    return [QualityWarning(
        "lung_sides_unusual",
        f"the left lung ({left_ml:.0f} mL) is larger than the right ({right_ml:.0f} mL; right/left {ratio:.2f}), "
        "whereas the right lung is normally the larger: after right-lung surgery, collapse or effusion this is "
        "expected; otherwise check in a viewer that left and right are not swapped in the image header",
        {"right_ml": round(right_ml, 1), "left_ml": round(left_ml, 1), "right_to_left": round(ratio, 3),
         "min_right_to_left": min_right_to_left})]


def lung_quality(labels: LungLabels, ct: Volume, given: bool) -> List[QualityWarning]:
    """The warnings about the lungs of a run: given labels checked against the CT (:func:`.labels.check_lung_labels`,
    which refuses labels that would give a wrong result), then :func:`lung_truncation`, :func:`lung_volume` and, for
    lungs the field of view does not cut, :func:`lung_sides`."""
    warnings = check_lung_labels(labels, ct) if given else []
    truncated = lung_truncation(labels.lungs)
    sides = [] if truncated else lung_sides(labels.lungs)
    return warnings + truncated + lung_volume(labels.lungs) + sides


#: DICOM PatientPosition values (C.7.3.1.1.2) of a supine patient
SUPINE_POSITIONS = ("HFS", "FFS")
_POSITION_WORDS = {"HFP": "head first, prone", "FFP": "feet first, prone", "HFDR": "head first, lying on the right side",
                   "HFDL": "head first, lying on the left side", "FFDR": "feet first, lying on the right side",
                   "FFDL": "feet first, lying on the left side"}


def patient_orientation(position: Optional[str]) -> List[QualityWarning]:
    """A warning when the CT's DICOM PatientPosition is known and not supine (``HFS``, ``FFS``): the maps follow a
    supine patient's perfusion, which rises toward the back (the phantoms, the papers' MAA SPECTs, the network's
    position channels); in a prone or lying-on-the-side patient the dependent lung is another one. ``None`` (an
    image file without the field): no warning."""
    if not position or position.upper() in SUPINE_POSITIONS:
        return []
    words = _POSITION_WORDS.get(position.upper(), "not supine")
    return [QualityWarning(
        "patient_not_supine", f"the CT was acquired {words} (DICOM PatientPosition {position}), but the perfusion map "
        "assumes a supine patient, whose perfusion rises toward the back: where gravity points elsewhere, the map's "
        "gradient is wrong", {"patient_position": position})]


#: what the bundled model saw in training (its model card): synthetic phantoms, half of them at 3.9 x 3.9 mm in plane
#: with 5 mm slices, half at 0.98 mm with 1.25-3.75 mm slices; lungs of median -866 to -833 HU (measured on the
#: generator's cases), widened by 40 HU
BUNDLED_TRAINING_DOMAIN = {"in_plane_mm": (0.9765625, 3.90625), "slice_mm": (1.25, 5.0), "lung_median_hu": (-906.0, -793.0)}


def model_domain(ct: Volume, lungs: Volume, domain=BUNDLED_TRAINING_DOMAIN) -> List[QualityWarning]:
    """Warnings where the CT lies outside what the model saw in training (``domain``: ranges of in-plane voxel size,
    slice spacing (mm) and the lungs' median HU): its prediction there is an extrapolation."""
    warnings: List[QualityWarning] = []
    in_plane, slices = max(ct.spacing[0], ct.spacing[1]), ct.spacing[2]
    for key, value, what in (("in_plane_mm", in_plane, "in-plane voxel size"), ("slice_mm", slices, "slice spacing")):
        low, high = domain[key]
        if not low * 0.9 <= value <= high * 1.1:
            warnings.append(QualityWarning(
                "outside_training_domain", f"the CT's {what} ({value:.3g} mm) is outside what the model was trained on "
                f"({low:.3g}-{high:.3g} mm): the perfusion map is an extrapolation", {key: round(float(value), 4)}))
    inside = np.asarray(lungs.array) > 0
    if inside.any():
        median_hu = float(np.median(np.asarray(ct.array)[inside]))
        low, high = domain["lung_median_hu"]
        if not low <= median_hu <= high:
            warnings.append(QualityWarning(
                "outside_training_domain", f"the lungs' median CT number ({median_hu:.0f} HU) is outside what the model "
                f"was trained on ({low:.0f} to {high:.0f} HU; e.g. another kernel, dose or inspiration): the perfusion "
                "map is an extrapolation", {"lung_median_hu": round(median_hu, 1)}))
    return warnings


def spect_coverage(lungs: Volume, spect: Volume, ct_to_spect_lps=None, min_share: float = 0.95) -> List[QualityWarning]:
    """A warning when less than ``min_share`` of the lung voxels lie inside the SPECT's field of view (through the
    registration, a 4x4 LPS matrix from a CT point to the SPECT point; None: the identity): the comparison with the
    SPECT then covers part of the lungs only."""
    idx = np.argwhere(np.asarray(lungs.array) > 0)[::7, ::-1].astype(float)  # every 7th lung voxel, (i, j, k)
    if idx.size == 0:
        return []
    points = lungs.index_to_lps(idx)
    if ct_to_spect_lps is not None:
        m = np.asarray(ct_to_spect_lps, dtype=float)
        points = points @ m[:3, :3].T + m[:3, 3]
    ijk = spect.lps_to_index(points)
    inside = np.all((ijk >= -0.5) & (ijk <= np.array(spect.size) - 0.5), axis=1)
    share = float(inside.mean())
    if share >= min_share:
        return []
    return [QualityWarning("spect_partial_coverage", f"the SPECT covers {100 * share:.0f} % of the lungs: the "
                           "agreement figures describe that part only", {"covered_percent": round(100 * share, 1)})]
