"""DICOM in: the series of a folder, and the CT series among them as a :class:`~.volume.Volume`.

* :func:`find_series` walks a folder (and its sub-folders), reads only the headers of its files (pydicom,
  ``stop_before_pixels``) and groups them by SeriesInstanceUID: modality, frame of reference, file count and
  description of each series. Files that are not DICOM are skipped.
* :func:`select_ct_series` picks one CT series: the one with the given SeriesInstanceUID, else the largest CT series
  (a ``UserWarning`` names the choice and the other series when there are several).
* :func:`ct_geometry` gives the CT's slices sorted along the slice normal and their LPS grid from the headers alone
  (the writers of RTSTRUCT, RTDOSE and derived series need the slices' SOPInstanceUIDs and positions).
* :func:`read_ct_series` reads the pixels of that series with SimpleITK (GDCM: rescale slope and intercept applied,
  so the values are HU), from the explicit file list sorted here, not from GDCM's own grouping of the folder.

Geometry follows :mod:`.volume`: LPS, ``array[z, y, x]``, x along the rows (ImageOrientationPatient's first
vector), y along the columns, z along the slice normal (row x column), slices sorted by increasing position on it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import UserError
from .imageio import native_stderr_held_back, sitk_reason
from .volume import Volume, from_sitk

PathLike = Union[str, "os.PathLike[str]"]

#: modalities of image series that hold a CT for planning
CT_MODALITIES = ("CT",)
#: slice spacings (mm) may differ by this fraction of their median before the series counts as non-uniform
SLICE_SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class DicomInstance:
    """One file of a series: its path, SOPInstanceUID and, for image slices, position and orientation (LPS, mm)."""

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    position_mm: Optional[Tuple[float, float, float]] = None
    orientation: Optional[Tuple[float, ...]] = None


@dataclass(frozen=True)
class DicomSeries:
    """A DICOM series found in a folder (headers only)."""

    modality: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    description: str
    instances: Tuple[DicomInstance, ...]

    @property
    def n_files(self) -> int:
        """Number of files (instances) of the series."""
        return len(self.instances)

    @property
    def files(self) -> Tuple[Path, ...]:
        """The files of the series, in the order they were found."""
        return tuple(i.path for i in self.instances)

    def summary(self) -> str:
        """One line: modality, UID, number of files and description."""
        desc = f", '{self.description}'" if self.description else ""
        return f"{self.modality} {self.series_uid} ({self.n_files} files{desc})"


@dataclass(frozen=True)
class CtGeometry:
    """The slices of a CT series sorted along the slice normal, and the LPS grid they span (mm)."""

    series: DicomSeries
    slices: Tuple[DicomInstance, ...]
    shape: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: np.ndarray

    def empty_volume(self, dtype=np.float32) -> Volume:
        """A zero volume on the CT grid (for checks and for placing masks)."""
        return Volume(np.zeros(self.shape, dtype=dtype), self.spacing, self.origin, self.direction)

    @property
    def orientation(self) -> Tuple[float, ...]:
        """ImageOrientationPatient of the slices: the row direction then the column direction (LPS)."""
        return tuple(float(v) for v in np.concatenate([self.direction[:, 0], self.direction[:, 1]]))


# --- finding series -----------------------------------------------------------------------------
def read_header(path: Path):
    """The pydicom header of ``path`` (no pixel data); None when it is not a DICOM file.

    Raises:
        UserError: the file starts like a DICOM file (``DICM`` after the preamble) but its header cannot be parsed.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any parse failure: not a DICOM file, or a damaged one (told apart below)
        if _has_dicom_magic(path):
            raise UserError(f"{path} is a damaged DICOM file (its header cannot be read); export it again") from None
        return None
    if is_truncated(ds) or (_has_dicom_magic(path) and not ds.get("SeriesInstanceUID") and not _is_directory(ds)):
        raise UserError(f"{path} is a damaged DICOM file (its header is cut short or has no SeriesInstanceUID); export "
                        "it again")
    return ds


def header_patient_position(path: Path) -> Optional[str]:
    """The DICOM PatientPosition (``HFS``, ``FFP``, ``HFDR``, ...; upper case) in the header of ``path``, or None when
    the file is not DICOM or has no such attribute."""
    header = read_header(path)
    position = str(getattr(header, "PatientPosition", "") or "").strip().upper() if header is not None else ""
    return position or None


def _is_directory(ds) -> bool:
    """A DICOMDIR (Media Storage Directory): a DICOM file without a series, legitimately."""
    meta = getattr(ds, "file_meta", None)
    return meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == "1.2.840.10008.1.3.10"


def is_truncated(ds) -> bool:
    """True when the file behind a just-read pydicom dataset ended early (pydicom stops at the end of a file without a
    word): no element at all, the file meta or the last element (or the last element of the last item of a last
    sequence) shorter than its declared length, or a few bytes left after the last element, too few for another
    element's header. Call it before reading other elements (they are checked while still raw)."""
    meta = getattr(ds, "file_meta", None)
    if len(ds) == 0 or (meta is not None and len(meta) and _last_element_cut(meta)):
        return True
    if _bytes_left_after(ds) in range(1, 12):  # too few for an element header (8 or 12 bytes): one was cut
        return True
    return _last_element_cut(ds)


def _bytes_left_after(ds) -> Optional[int]:
    """Bytes of the file after the dataset's last element, when its last element is still raw (else None)."""
    filename = getattr(ds, "filename", None)
    last = ds.get_item(sorted(ds.keys())[-1])
    if not isinstance(filename, str) or not hasattr(last, "value_tell") or last.length == 0xFFFFFFFF:
        return None
    try:
        return os.path.getsize(filename) - (last.value_tell + last.length)
    except OSError:
        return None


def _last_element_cut(ds) -> bool:
    from pydicom.dataelem import RawDataElement
    from pydicom.sequence import Sequence

    tags = sorted(ds.keys())
    if not tags:
        return False
    element = ds.get_item(tags[-1])
    if isinstance(element, RawDataElement):
        value = element.value
        if element.length != 0xFFFFFFFF and isinstance(value, bytes) and len(value) < element.length:
            return True
        element = ds[tags[-1]]
    if isinstance(element.value, Sequence) and len(element.value):
        return _last_element_cut(element.value[-1])
    return False


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _floats(ds, keyword: str, count: int) -> Optional[Tuple[float, ...]]:
    value = ds.get(keyword)
    try:
        values = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    return values if len(values) == count and all(np.isfinite(values)) else None


def _instance(path: Path, ds) -> DicomInstance:
    return DicomInstance(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        position_mm=_floats(ds, "ImagePositionPatient", 3),  # type: ignore[arg-type]
        orientation=_floats(ds, "ImageOrientationPatient", 6),
    )


def _files_under(folder: Path, recursive: bool) -> List[Path]:
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return found


def find_series(folder: PathLike, recursive: bool = True) -> List[DicomSeries]:
    """The DICOM series in ``folder`` (and its sub-folders when ``recursive``), largest first within a modality.

    Only the headers are read. Files that are not DICOM (or have no SeriesInstanceUID, e.g. a DICOMDIR) are skipped.

    Raises:
        UserError: ``folder`` is not a folder.
    """
    root = Path(os.fspath(folder)).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give the folder that holds the DICOM files")
    groups: Dict[str, list] = {}
    for path in _files_under(root, recursive):
        ds = read_header(path)
        if ds is None or not ds.get("SeriesInstanceUID"):
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    series = [_series(uid, members) for uid, members in groups.items()]
    return sorted(series, key=lambda s: (s.modality, -s.n_files, s.series_uid))


def _series(uid: str, members: list) -> DicomSeries:
    first = members[0][1]
    return DicomSeries(
        modality=str(first.get("Modality", "")).upper() or "?",
        series_uid=uid,
        study_uid=str(first.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "") or _referenced_frame(first)),
        description=str(first.get("SeriesDescription", "")).strip(),
        instances=tuple(_instance(path, ds) for path, ds in members),
    )


def _referenced_frame(ds) -> str:
    """The frame of reference of an RT Structure Set (it has none of its own, only a referenced one)."""
    for item in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        if item.get("FrameOfReferenceUID"):
            return str(item.FrameOfReferenceUID)
    return ""


def describe_series(series: Sequence[DicomSeries]) -> str:
    """The series as one line: ``CT 1.2.3 (120 files, 'desc'); RTSTRUCT ...``."""
    return "; ".join(s.summary() for s in series) or "none"


# --- choosing the CT --------------------------------------------------------------------------------
def select_ct_series(folder: PathLike, series_uid: Optional[str] = None) -> DicomSeries:  # noqa: UP045
    """The CT series of ``folder`` with SeriesInstanceUID ``series_uid``, else the largest CT series.

    When ``series_uid`` is None and the folder holds several CT series, a ``UserWarning`` says which was chosen and
    lists the others.

    Raises:
        UserError: no CT series in the folder; no series with ``series_uid``; that series is not a CT.
    """
    root = Path(os.fspath(folder)).expanduser()
    found = find_series(root)
    if series_uid is not None:
        match = [s for s in found if s.series_uid == str(series_uid).strip()]
        if not match:
            raise UserError(f"no DICOM series with UID {series_uid} in {root}; available: {describe_series(found)}")
        if match[0].modality not in CT_MODALITIES:
            raise UserError(f"series {series_uid} in {root} is a {match[0].modality} series, not a CT; available: "
                            f"{describe_series(found)}")
        return match[0]
    cts = [s for s in found if s.modality in CT_MODALITIES]
    if not cts:
        raise UserError(f"no CT series in {root} (found: {describe_series(found)}); give the folder of the planning CT")
    chosen = max(cts, key=lambda s: (s.n_files, s.series_uid))
    if len(cts) > 1:
        others = describe_series([s for s in cts if s is not chosen])
        warnings.warn(f"{root} holds {len(cts)} CT series; using the largest, {chosen.summary()}; the others: {others}. "
                      "Give the series UID to use another", UserWarning, stacklevel=2)
    return chosen


# --- geometry from the headers ----------------------------------------------------------------------
def ct_geometry(series: DicomSeries) -> CtGeometry:
    """The slices of ``series`` sorted along the slice normal and the LPS grid they span, from the headers alone.

    Raises:
        UserError: a slice without position or orientation, slices of different orientation, two slices at the
        same position, or unevenly spaced slices (a missing slice).
    """
    where = f"CT series {series.series_uid}"
    slices = [i for i in series.instances]
    if any(i.position_mm is None or i.orientation is None for i in slices):
        raise UserError(f"{where}: a file has no ImagePositionPatient/ImageOrientationPatient; it is not a usable "
                        "image series")
    orientation = np.asarray(slices[0].orientation, dtype=float)
    if any(not np.allclose(i.orientation, orientation, atol=1e-4) for i in slices):
        raise UserError(f"{where}: the slices have different orientations; export the series again as one axial stack")
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    positions = np.array([np.dot(i.position_mm, normal) for i in slices])
    order = np.argsort(positions, kind="stable")
    slices = [slices[k] for k in order]
    spacing_z = _slice_spacing(positions[order], where)
    rows_cols = _rows_columns(slices[0].path)
    pixel = rows_cols[2]
    direction = np.stack([row, col, normal], axis=1)
    return CtGeometry(series=series, slices=tuple(slices), shape=(len(slices), rows_cols[0], rows_cols[1]),
                      spacing=(pixel[1], pixel[0], spacing_z), origin=tuple(slices[0].position_mm), direction=direction)


def _slice_spacing(sorted_positions: np.ndarray, where: str) -> float:
    """The slice spacing (mm) of positions sorted along the normal; one slice: 1 mm (no spacing to measure)."""
    if len(sorted_positions) < 2:
        return 1.0
    steps = np.diff(sorted_positions)
    if np.min(steps) < 1e-3:
        raise UserError(f"{where}: two slices at the same position ({sorted_positions[int(np.argmin(steps))]:.2f} mm); "
                        "the series holds duplicates or several stacks; export one stack per series")
    median = float(np.median(steps))
    if np.max(np.abs(steps - median)) > SLICE_SPACING_TOLERANCE * median + 1e-3:
        raise UserError(f"{where}: unevenly spaced slices ({np.min(steps):.3g} to {np.max(steps):.3g} mm apart); a slice "
                        "is missing or the series mixes stacks; export a complete, evenly spaced series")
    return median


def _rows_columns(path: Path) -> Tuple[int, int, Tuple[float, float]]:
    """(Rows, Columns, PixelSpacing (row spacing, column spacing) in mm) of one slice."""
    ds = read_header(path)
    spacing = _floats(ds, "PixelSpacing", 2) if ds is not None else None
    if ds is None or spacing is None or min(spacing) <= 0 or not ds.get("Rows") or not ds.get("Columns"):
        raise UserError(f"{path}: no usable Rows/Columns/PixelSpacing; it is not a usable CT slice")
    return int(ds.Rows), int(ds.Columns), (spacing[0], spacing[1])


# --- reading the pixels ---------------------------------------------------------------------------
def read_series_files(files: Sequence[PathLike], where: str = "the DICOM series") -> Volume:
    """Read the given slice files, in the given order, as one volume with SimpleITK (GDCM applies rescale slope and
    intercept). The caller sorts the files along the slice normal (:func:`ct_geometry`).

    Raises:
        UserError: a file cannot be read (damaged, truncated, unsupported compression).
    """
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(Path(os.fspath(f))) for f in files])
    try:
        with native_stderr_held_back():
            image = reader.Execute()
    except RuntimeError as exc:
        raise UserError(f"could not read {where}: {sitk_reason(exc)}") from None
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    return from_sitk(image)


def read_ct_series(folder: PathLike, series_uid: Optional[str] = None) -> Volume:  # noqa: UP045
    """The CT series of ``folder`` (see :func:`select_ct_series`) as a Volume in HU on its LPS grid.

    Raises:
        UserError: no CT series, unknown UID, inconsistent slices (see :func:`ct_geometry`), or unreadable files.
    """
    series = select_ct_series(folder, series_uid)
    geometry = ct_geometry(series)
    volume = read_series_files([s.path for s in geometry.slices], f"CT series {series.series_uid} in {folder}")
    if volume.shape != geometry.shape:
        raise UserError(f"CT series {series.series_uid}: the slices do not all have {geometry.shape[1]}x"
                        f"{geometry.shape[2]} pixels")
    return volume
