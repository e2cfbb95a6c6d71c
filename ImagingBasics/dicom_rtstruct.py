"""RT Structure Set (RTSTRUCT) in and out: named binary masks on the planning CT <-> planar contours.

Writing (:func:`write_rtstruct`): one RT Structure Set Storage object (SOP class 1.2.840.10008.5.1.4.1.1.481.3) in
a new series of the CT's study. It references the CT's frame of reference, study and series
(ReferencedFrameOfReferenceSequence > RTReferencedStudySequence > RTReferencedSeriesSequence, listing every CT
slice), and each contour references the SOPInstanceUID of the CT slice it lies on (ContourImageSequence). Each mask
slice becomes CLOSED_PLANAR contours in the plane of that CT slice (:mod:`.dicom_contours`: outer boundaries and
holes as separate contours, points halfway between inside and outside pixel centres, in mm to 1 micrometre).

Reading (:func:`read_rtstruct`): the contours of each structure are placed on the reference CT grid: each contour's
points go to continuous voxel indices; a contour must be parallel to the slices (its points within half a slice of
each other, else an error) and lie on a slice (within a quarter of a slice; contours between slices, drawn on another
slice grid, are left out with a warning, and a structure with all its contours between slices is an error); per
slice the structure is the even-odd combination of its contours (a pixel is inside when its centre is inside an odd
number of them, so holes drawn as separate contours or as keyholes are holes: :mod:`.dicom_contours`). POINT
contours (markers) are ignored; OPEN_PLANAR/OPEN_NONPLANAR ones are ignored with a warning (they enclose no volume).
Structures without contours and contours beyond the first or last slice are reported in a ``UserWarning``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .dicom_contours import mask_to_polygons, polygons_to_mask
from .dicom_series import CtGeometry, ct_geometry, is_truncated, select_ct_series
from .dicom_write import new_dataset, refuse_inside_input, save_dataset
from .errors import UserError
from .volume import Volume

PathLike = Union[str, "os.PathLike[str]"]

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: colours (RGB 0-255) given in turn to structures written without one
DEFAULT_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
                   (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128))
#: a contour farther than this (in slices) from a slice plane, or spread over more, is not on the CT's slices
PLANE_TOLERANCE_SLICES = 0.25

Colour = Tuple[int, int, int]


@dataclass(frozen=True)
class StructureInfo:
    """One structure (ROI) of an RT Structure Set, as listed in its header."""

    number: int
    name: str
    colour: Optional[Colour]
    frame_of_reference_uid: str
    n_contours: int
    contour_types: Tuple[str, ...]


# --- writing --------------------------------------------------------------------------------------
def write_rtstruct(masks: Mapping[str, Union[np.ndarray, Volume]], colours: Optional[Mapping[str, Sequence[int]]],  # noqa: UP045
                   ct_series_folder: PathLike, out_path: PathLike, series_uid: Optional[str] = None,  # noqa: UP045
                   label: str = "Structures", description: str = "Structures (research software)") -> Path:
    """Write ``masks`` (name -> boolean array ``[z, y, x]`` on the CT grid, or a Volume on it) as an RTSTRUCT.

    ``colours``: name -> (r, g, b) 0-255 (others from :data:`DEFAULT_COLOURS`). ``series_uid`` chooses the CT
    series when the folder holds several (:func:`~.dicom_series.select_ct_series`). ``label`` is the
    StructureSetLabel (at most 16 characters), ``description`` the SeriesDescription.

    Returns:
        the path written.

    Raises:
        UserError: no masks, a mask not on the CT grid, a name too long, a bad colour, ``out_path`` inside the CT
        folder, or the CT series is unusable.
    """
    out = refuse_inside_input(out_path, ct_series_folder)
    if not masks:
        raise UserError("no structures to write; give at least one mask")
    geometry = ct_geometry(select_ct_series(ct_series_folder, series_uid))
    arrays = {str(name): _mask_on_ct(name, mask, geometry) for name, mask in masks.items()}
    palette = _colours(list(arrays), colours or {})
    ds = _structure_set(geometry, label, description)
    empty = []
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    for number, (name, array) in enumerate(arrays.items(), start=1):
        ds.StructureSetROISequence.append(_roi_item(number, name, geometry))
        contours = _roi_contours(array, geometry)
        empty += [] if contours else [name]
        ds.ROIContourSequence.append(_roi_contour_item(number, palette[name], contours))
        ds.RTROIObservationsSequence.append(_observation_item(number))
    if empty:
        warnings.warn(f"structures with no voxels, written without contours: {', '.join(empty)}", UserWarning, stacklevel=2)
    return save_dataset(ds, out)


def _mask_on_ct(name: str, mask: Union[np.ndarray, Volume], geometry: CtGeometry) -> np.ndarray:
    if len(str(name)) > 64 or not str(name).strip():
        raise UserError(f"structure name {name!r} must be 1 to 64 characters (DICOM ROI Name)")
    if isinstance(mask, Volume):
        if not mask.same_geometry(geometry.empty_volume(np.uint8), tol_mm=1e-2):
            raise UserError(f"structure {name!r} is not on the CT grid ({mask.describe()}); resample it onto the CT first")
        mask = mask.array
    array = np.asarray(mask)
    if array.shape != geometry.shape:
        raise UserError(f"structure {name!r} has shape {array.shape}, the CT {geometry.shape} (z, y, x); masks must be "
                        "on the CT grid")
    return array.astype(bool) if array.dtype != bool else array


def _colours(names: List[str], given: Mapping[str, Sequence[int]]) -> Dict[str, Colour]:
    palette = {}
    for k, name in enumerate(names):
        colour = given.get(name, DEFAULT_COLOURS[k % len(DEFAULT_COLOURS)])
        try:
            rgb = tuple(int(c) for c in colour)
        except (TypeError, ValueError):
            rgb = ()
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise UserError(f"the colour of structure {name!r} must be three integers 0-255 (r, g, b), got {colour!r}")
        palette[name] = rgb  # type: ignore[assignment]
    return palette


def _structure_set(geometry: CtGeometry, label: str, description: str):
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = new_dataset(geometry, RTSTRUCT_SOP_CLASS, "RTSTRUCT", generate_uid(), description, series_number=901)
    ds.InstanceNumber = 1
    ds.StructureSetLabel = str(label)[:16] or "Structures"
    ds.StructureSetName = str(label)[:64]
    ds.StructureSetDate = ds.InstanceCreationDate
    ds.StructureSetTime = ds.InstanceCreationTime
    series = Dataset()
    series.SeriesInstanceUID = geometry.series.series_uid
    series.ContourImageSequence = [_image_reference(s.sop_class_uid, s.sop_instance_uid) for s in geometry.slices]
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired; what RT objects use)
    study.ReferencedSOPInstanceUID = geometry.series.study_uid
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = _frame_uid(geometry)
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    return ds


def _frame_uid(geometry: CtGeometry) -> str:
    if not geometry.series.frame_of_reference_uid:
        raise UserError(f"CT series {geometry.series.series_uid} has no FrameOfReferenceUID; structures drawn on it could "
                        "not be placed: export the CT with its frame of reference")
    return geometry.series.frame_of_reference_uid


def _image_reference(sop_class_uid: str, sop_instance_uid: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _roi_item(number: int, name: str, geometry: CtGeometry):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ROINumber = number
    item.ReferencedFrameOfReferenceUID = _frame_uid(geometry)
    item.ROIName = name
    item.ROIGenerationAlgorithm = "AUTOMATIC"
    return item


def _roi_contours(array: np.ndarray, geometry: CtGeometry) -> list:
    """The CLOSED_PLANAR contour items of one mask, slice by slice, each referencing its CT slice."""
    from pydicom.dataset import Dataset

    row, col = geometry.direction[:, 0], geometry.direction[:, 1]
    sx, sy, _ = geometry.spacing
    items = []
    for k in np.flatnonzero(array.reshape(array.shape[0], -1).any(axis=1)):
        slice_ = geometry.slices[k]
        origin = np.asarray(slice_.position_mm)
        for polygon in mask_to_polygons(array[k]):
            points = origin + np.outer(polygon[:, 1] * sx, row) + np.outer(polygon[:, 0] * sy, col)
            item = Dataset()
            item.ContourImageSequence = [_image_reference(slice_.sop_class_uid, slice_.sop_instance_uid)]
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(points)
            item.ContourData = _contour_data(points)
            items.append(item)
    return items


def _contour_data(points: np.ndarray) -> List[float]:
    """ContourData values: x, y, z of each point in mm, rounded to 1 micrometre (at most 11 characters each as DS)."""
    return (np.round(points.reshape(-1), 3) + 0.0).tolist()


def _roi_contour_item(number: int, colour: Colour, contours: list):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedROINumber = number
    item.ROIDisplayColor = list(colour)
    if contours:
        item.ContourSequence = contours
    return item


def _observation_item(number: int):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ObservationNumber = number
    item.ReferencedROINumber = number
    item.RTROIInterpretedType = "ORGAN"
    item.ROIInterpreter = ""
    return item


# --- reading --------------------------------------------------------------------------------------
def _read_structure_set(path: PathLike):
    import pydicom

    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise UserError(f"{p} not found")
    try:
        ds = pydicom.dcmread(str(p))
    except Exception:  # noqa: BLE001 - any parse failure of a user's file
        raise UserError(f"could not read {p}: the file is damaged or not a DICOM file") from None
    if is_truncated(ds):
        raise UserError(f"could not read {p}: the file is damaged (it ends in the middle of an element); export it again")
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS and str(ds.get("Modality", "")).upper() != "RTSTRUCT":
        raise UserError(f"{p} is not an RT Structure Set (modality {ds.get('Modality', 'unknown')})")
    return p, ds


def list_structures(path: PathLike) -> List[StructureInfo]:
    """The structures of an RTSTRUCT file: number, name, colour, frame of reference, number and types of contours."""
    _, ds = _read_structure_set(path)
    return _structures(ds)


def _structures(ds) -> List[StructureInfo]:
    contours = {int(item.ReferencedROINumber): item for item in ds.get("ROIContourSequence", []) or []}
    infos = []
    for roi in ds.get("StructureSetROISequence", []) or []:
        number = int(roi.ROINumber)
        item = contours.get(number)
        sequence = (item.get("ContourSequence", []) or []) if item is not None else []
        colour = item.get("ROIDisplayColor") if item is not None else None
        infos.append(StructureInfo(
            number=number, name=str(roi.get("ROIName", "")).strip() or f"ROI {number}",
            colour=tuple(int(c) for c in colour) if colour is not None and len(colour) == 3 else None,
            frame_of_reference_uid=str(roi.get("ReferencedFrameOfReferenceUID", "")),
            n_contours=len(sequence), contour_types=tuple(sorted({str(c.get("ContourGeometricType", "")) for c in sequence})),
        ))
    return infos


def read_rtstruct(path: PathLike, reference: Volume, frame_of_reference_uid: Optional[str] = None  # noqa: UP045
                  ) -> Dict[str, np.ndarray]:
    """The structures of an RTSTRUCT as boolean masks ``[z, y, x]`` on the grid of ``reference`` (the CT).

    ``frame_of_reference_uid``: the CT's FrameOfReferenceUID when known; a structure on another frame is an error.

    Raises:
        UserError: not an RT Structure Set, another frame of reference, a contour not in a slice plane of the
        reference, or no structure with contours.
    """
    p, ds = _read_structure_set(path)
    infos = _structures(ds)
    if frame_of_reference_uid:
        _check_frames(p, ds, infos, str(frame_of_reference_uid))
    by_number = {int(item.ReferencedROINumber): item for item in ds.get("ROIContourSequence", []) or []}
    masks: Dict[str, np.ndarray] = {}
    empty, skipped, open_ = [], {"outside": 0, "between": 0}, set()
    for info in infos:
        item = by_number.get(info.number)
        sequence = (item.get("ContourSequence", []) or []) if item is not None else []
        closed = [c for c in sequence if str(c.get("ContourGeometricType", "")).upper() == "CLOSED_PLANAR"]
        open_ |= {info.name for c in sequence if str(c.get("ContourGeometricType", "")).upper().startswith("OPEN")}
        if not closed:
            empty.append(info.name)
            continue
        mask, counts = _rasterise(closed, reference, f"{p.name}, structure {info.name!r}")
        skipped = {key: skipped[key] + counts[key] for key in skipped}
        masks[_unique(info.name, masks)] = mask
    _report(p, empty, skipped, open_)
    if not masks:
        raise UserError(f"{p}: no structure has closed contours (structures: {', '.join(i.name for i in infos) or 'none'})")
    return masks


def _check_frames(p: Path, ds, infos: List[StructureInfo], expected: str) -> None:
    referenced = {str(item.get("FrameOfReferenceUID", "")) for item in ds.get("ReferencedFrameOfReferenceSequence", []) or []}
    frames = {i.frame_of_reference_uid for i in infos if i.frame_of_reference_uid} | (referenced - {""})
    if not frames:
        raise UserError(f"{p} names no frame of reference, so it cannot be checked against the CT's ({expected}); export "
                        "the structure set again from the planning system")
    wrong = sorted(frames - {expected})
    if wrong:
        raise UserError(f"{p} is on another frame of reference ({', '.join(wrong)}) than the CT ({expected}); it was drawn "
                        "on another scan: export the structures drawn on this CT")


def _unique(name: str, taken: Mapping[str, np.ndarray]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} ({n})", n + 1
    return candidate


def _report(p: Path, empty: List[str], skipped: Dict[str, int], open_: set) -> None:
    notes = []
    if empty:
        notes.append(f"structures with no closed contours, left out: {', '.join(empty)}")
    if skipped["outside"]:
        notes.append(f"{skipped['outside']} contours beyond the CT's first or last slice, left out")
    if skipped["between"]:
        notes.append(f"{skipped['between']} contours between the CT's slices (drawn on another slice grid), left out")
    if open_:
        notes.append(f"open contours ignored (they enclose no volume) in: {', '.join(sorted(open_))}")
    if notes:
        warnings.warn(f"{p.name}: " + "; ".join(notes), UserWarning, stacklevel=3)


def _rasterise(contours: list, reference: Volume, where: str) -> Tuple[np.ndarray, Dict[str, int]]:
    """The mask of one structure's closed contours on ``reference`` (even-odd per slice), and how many contours were
    left out because they lie beyond the first or last slice ("outside") or between two slices ("between").

    Raises:
        UserError: a contour not parallel to the slices, or every contour of the structure between two slices.
    """
    nz, ny, nx = reference.shape
    per_slice: Dict[int, list] = {}
    counts = {"outside": 0, "between": 0}
    for contour in contours:
        ijk = reference.lps_to_index(_contour_points(contour, where))
        if np.ptp(ijk[:, 2]) > 2 * PLANE_TOLERANCE_SLICES:
            raise UserError(f"{where}: a contour is not in a plane of the CT's slices (it spans {np.ptp(ijk[:, 2]):.2f} "
                            "slices); the structure set was drawn on differently oriented images")
        k = float(np.mean(ijk[:, 2]))
        slice_index = int(round(k))
        if not 0 <= slice_index < nz:
            counts["outside"] += 1
        elif abs(k - slice_index) > PLANE_TOLERANCE_SLICES:
            counts["between"] += 1
        else:
            per_slice.setdefault(slice_index, []).append(np.stack([ijk[:, 1], ijk[:, 0]], axis=1))  # (row, col) = (j, i)
    mask = np.zeros(reference.shape, dtype=bool)
    for slice_index, polygons in per_slice.items():
        mask[slice_index] = polygons_to_mask(polygons, (ny, nx))
    if counts["between"] and not mask.any():
        raise UserError(f"{where}: every contour lies between two CT slices; the structure set was drawn on another "
                        "slice grid: resample it onto this CT in the planning system")
    return mask, counts


def _contour_points(contour, where: str) -> np.ndarray:
    """The ``(n, 3)`` LPS points (mm) of a contour item; ContourData is parsed from its raw bytes when pydicom still
    holds them (much faster than one DSfloat per value for the 10^5 points of a lung)."""
    raw = contour.get_item(0x30060050)
    try:
        if raw is None:
            raise ValueError("no ContourData")
        value = raw.value
        if isinstance(value, bytes):
            values = np.array(value.strip(b" \0").split(b"\\"), dtype=float)
        else:
            values = np.atleast_1d(np.asarray(value, dtype=float))
        points = values.reshape(-1, 3)
    except (TypeError, ValueError):
        raise UserError(f"{where}: a contour has missing or unreadable ContourData") from None
    if len(points) < 3 or not np.all(np.isfinite(points)):
        raise UserError(f"{where}: a closed contour has fewer than 3 points or non-finite coordinates")
    return points
