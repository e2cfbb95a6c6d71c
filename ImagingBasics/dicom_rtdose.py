"""RT Dose (RTDOSE) in and out: an absorbed dose grid in Gy <-> one multi-frame RT Dose Storage object.

Reading (:func:`read_rtdose`, :func:`rtdose_info`): dose (Gy) = stored integer x DoseGridScaling. The frames are
planes parallel to the image plane (ImageOrientationPatient) at the offsets of GridFrameOffsetVector along the plane
normal, either relative to ImagePositionPatient (first offset 0) or, for axial grids only, absolute z positions (first
offset = ImagePositionPatient z); frames stored from head to feet are reordered so that z grows along the normal.
DoseUnits must be GY (a RELATIVE dose has no absolute scale); unevenly spaced frames are refused (a Volume has one
slice spacing).

Writing (:func:`write_rtdose`): one RT Dose Storage object (SOP class 1.2.840.10008.5.1.4.1.1.481.2) in a new
series of the planning CT's study, on the CT's frame of reference: multi-frame, 32-bit unsigned integers with
DoseGridScaling = maximum dose / (2^31 - 1) (a step of 5e-10 of the maximum, far below the 0.1 % asked; 2^31 rather
than 2^32 keeps the counts valid for readers that take them as signed), GridFrameOffsetVector relative (first 0),
DoseUnits GY, DoseType PHYSICAL. The grid must have the CT's row and column directions (an axial dose grid for an
axial CT): planning systems expect the dose grid aligned with the planning CT. No RT Plan is referenced (there is
none for a radionuclide therapy dose): see docs/DICOM_RT.md about DoseSummationType.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from .dicom_series import CtGeometry, ct_geometry, is_truncated, select_ct_series
from .dicom_write import ds_number, ds_numbers, frame_of_reference, new_dataset, refuse_inside_input, save_dataset
from .errors import UserError
from .volume import Volume

PathLike = Union[str, "os.PathLike[str]"]

RTDOSE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.2"
#: the largest stored count: the maximum dose maps to it
MAX_COUNT = 2**31 - 1
#: DICOM's defined terms for Dose Summation Type (3004,000A)
SUMMATION_TYPES = ("PLAN", "MULTI_PLAN", "PLAN_OVERVIEW", "FRACTION", "BEAM", "BRACHY", "FRACTION_SESSION",
                   "BEAM_SESSION", "BRACHY_SESSION", "CONTROL_POINT", "RECORD")
#: frame offsets (mm) may differ by this much from even spacing
FRAME_SPACING_TOLERANCE_MM = 1e-3
#: GridFrameOffsetVector's tag, the FrameIncrementPointer of an RT Dose
GRID_FRAME_OFFSET_TAG = 0x3004000C


@dataclass(frozen=True)
class RtDoseInfo:
    """What an RTDOSE header says about its dose (without the pixels)."""

    path: Path
    dose_units: str
    dose_type: str
    summation_type: str
    frame_of_reference_uid: str
    study_uid: str
    series_uid: str
    comment: str

    def describe(self) -> str:
        """One line for logs and reports."""
        comment = f", '{self.comment}'" if self.comment else ""
        return (f"{self.path.name}: {self.dose_type or '?'} dose in {self.dose_units or '?'}, summation "
                f"{self.summation_type or '?'}{comment}")


# --- reading --------------------------------------------------------------------------------------
def _read_dose_file(path: PathLike, pixels: bool):
    import pydicom

    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise UserError(f"{p} not found")
    try:
        ds = pydicom.dcmread(str(p), stop_before_pixels=not pixels)
    except Exception:  # noqa: BLE001 - any parse failure of a user's file
        raise UserError(f"could not read {p}: the file is damaged or not a DICOM file") from None
    if is_truncated(ds):
        raise UserError(f"could not read {p}: the file is damaged (it ends in the middle of an element); export it again")
    if str(ds.get("SOPClassUID", "")) != RTDOSE_SOP_CLASS and str(ds.get("Modality", "")).upper() != "RTDOSE":
        raise UserError(f"{p} is not an RT Dose file (modality {ds.get('Modality', 'unknown')})")
    return p, ds


def rtdose_info(path: PathLike) -> RtDoseInfo:
    """The units, type, summation type and references of an RTDOSE file (header only)."""
    p, ds = _read_dose_file(path, pixels=False)
    return _info(p, ds)


def _info(p: Path, ds) -> RtDoseInfo:
    return RtDoseInfo(
        path=p, dose_units=str(ds.get("DoseUnits", "")).upper(), dose_type=str(ds.get("DoseType", "")).upper(),
        summation_type=str(ds.get("DoseSummationType", "")).upper(),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")), study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")), comment=str(ds.get("DoseComment", "")).strip(),
    )


def read_rtdose(path: PathLike, frame_of_reference_uid: Optional[str] = None) -> Volume:  # noqa: UP045
    """The dose grid of an RTDOSE file as a float32 Volume in Gy on its LPS grid.

    ``frame_of_reference_uid``: the planning CT's, when known; a dose on another frame is an error.

    Raises:
        UserError: not an RTDOSE, DoseUnits not GY, no DoseGridScaling, damaged or truncated pixel data, another
        frame of reference, or frames that are not evenly spaced.
    """
    p, ds = _read_dose_file(path, pixels=True)
    info = _info(p, ds)
    if info.dose_units != "GY":
        raise UserError(f"{p} gives its dose in {info.dose_units or 'no stated unit'}, not GY; a relative dose has no "
                        "absolute scale: export the dose in Gy from the planning system")
    if frame_of_reference_uid and info.frame_of_reference_uid != str(frame_of_reference_uid):
        raise UserError(f"{p} is on another frame of reference ({info.frame_of_reference_uid or 'none'}) than the CT "
                        f"({frame_of_reference_uid}); it was computed on another scan")
    if info.dose_type == "ERROR":
        warnings.warn(f"{p.name}: DoseType ERROR (a dose difference, not a dose)", UserWarning, stacklevel=2)
    counts = _pixels(p, ds)
    scaling = _number(ds, "DoseGridScaling", p)
    origin, direction, pixel = _plane(ds, p)
    offsets = _frame_offsets(ds, p, counts.shape[0], origin, direction)
    order = np.argsort(offsets, kind="stable")
    offsets, counts = offsets[order], counts[order]
    spacing_z = _frame_spacing(offsets, ds, p)
    first = np.asarray(origin) + offsets[0] * direction[:, 2]
    dose = (counts.astype(np.float64) * scaling).astype(np.float32)
    return Volume(dose, (pixel[1], pixel[0], spacing_z), tuple(first), direction)


def _pixels(p: Path, ds) -> np.ndarray:
    """The stored integers as ``[frame, row, column]``."""
    if "PixelData" not in ds:
        raise UserError(f"{p} holds no dose grid (no pixel data; perhaps only DVHs)")
    try:
        counts = np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - truncated data, unsupported compression: pydicom's many errors
        raise UserError(f"could not read the dose grid of {p}: the file is damaged or truncated ({str(exc)[:120]})") from None
    if counts.ndim == 2:
        counts = counts[np.newaxis]
    if counts.ndim != 3:
        raise UserError(f"{p}: the dose grid has shape {counts.shape}; a scalar 3D grid is needed")
    return counts


def _number(ds, keyword: str, p: Path) -> float:
    try:
        value = float(ds.get(keyword))
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise UserError(f"{p}: {keyword} is missing or not a positive number; the dose cannot be scaled to Gy")
    return value


def _plane(ds, p: Path) -> Tuple[Tuple[float, float, float], np.ndarray, Tuple[float, float]]:
    """ImagePositionPatient, the direction matrix (row, column, normal) and PixelSpacing (row, column spacing)."""
    try:
        origin = tuple(float(v) for v in ds.ImagePositionPatient)
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
        pixel = tuple(float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        raise UserError(f"{p}: ImagePositionPatient, ImageOrientationPatient or PixelSpacing is missing; the dose "
                        "grid cannot be placed") from None
    if len(origin) != 3 or orientation.shape != (6,) or len(pixel) != 2 or min(pixel) <= 0:
        raise UserError(f"{p}: unusable ImagePositionPatient/ImageOrientationPatient/PixelSpacing")
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    direction = np.stack([row, col, normal], axis=1)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise UserError(f"{p}: ImageOrientationPatient is not two orthogonal unit vectors")
    return origin, direction, pixel  # type: ignore[return-value]


def _frame_offsets(ds, p: Path, n_frames: int, origin, direction: np.ndarray) -> np.ndarray:
    """The frames' distances (mm) from ImagePositionPatient along the normal, from GridFrameOffsetVector."""
    from pydicom.multival import MultiValue

    raw = ds.get("GridFrameOffsetVector")
    values = list(raw) if isinstance(raw, (MultiValue, list, tuple)) else ([] if raw in (None, "") else [raw])
    if not values:
        if n_frames > 1:
            raise UserError(f"{p}: {n_frames} frames but no GridFrameOffsetVector; the frames cannot be placed")
        return np.zeros(1)
    try:
        offsets = np.array([float(v) for v in values])
    except (TypeError, ValueError):
        raise UserError(f"{p}: GridFrameOffsetVector holds values that are not numbers") from None
    if len(offsets) != n_frames:
        raise UserError(f"{p}: GridFrameOffsetVector has {len(offsets)} values for {n_frames} frames")
    if offsets[0] == 0:
        return offsets  # relative: the standard's form (a)
    axial = np.allclose(direction, np.eye(3), atol=1e-4)
    if not axial:
        raise UserError(f"{p}: GridFrameOffsetVector does not start at 0 (absolute positions), which DICOM allows only "
                        "for axial dose grids; this grid is not axial")
    if abs(offsets[0] - float(origin[2])) > 1e-2:
        raise UserError(f"{p}: GridFrameOffsetVector's first value ({offsets[0]:g} mm) is neither 0 nor the grid's z "
                        f"position ({float(origin[2]):g} mm); the frames cannot be placed")
    return offsets - float(origin[2])  # absolute z positions: form (b)


def _frame_spacing(sorted_offsets: np.ndarray, ds, p: Path) -> float:
    if len(sorted_offsets) < 2:
        thickness = ds.get("SliceThickness")
        try:
            return float(thickness) if thickness and float(thickness) > 0 else 1.0
        except (TypeError, ValueError):
            return 1.0
    steps = np.diff(sorted_offsets)
    if np.min(steps) <= 0:
        raise UserError(f"{p}: two dose frames at the same position; the GridFrameOffsetVector is invalid")
    if np.ptp(steps) > FRAME_SPACING_TOLERANCE_MM:
        raise UserError(f"{p}: the dose frames are unevenly spaced ({np.min(steps):.4g} to {np.max(steps):.4g} mm); "
                        "export the dose on a regular grid (uniform slice spacing) from the planning system")
    return float(np.mean(steps))


# --- writing --------------------------------------------------------------------------------------
def write_rtdose(volume_gy: Volume, ct_series_folder: PathLike, out_path: PathLike, summation_type: str = "PLAN",
                 description: str = "Absorbed dose (research software)", series_uid: Optional[str] = None  # noqa: UP045
                 ) -> Path:
    """Write a dose grid in Gy as an RTDOSE on the frame of reference and in the study of the CT in
    ``ct_series_folder`` (``series_uid`` chooses the CT series when the folder holds several).

    Negative doses (e.g. from a CNN correction) are written as 0 with a warning.

    Returns:
        the path written.

    Raises:
        UserError: non-finite doses, a grid not aligned with the CT's rows and columns, a grid that does not overlap
        the CT, an unknown summation type, or ``out_path`` inside the CT folder.
    """
    out = refuse_inside_input(out_path, ct_series_folder)
    summation = str(summation_type).strip().upper()
    if summation not in SUMMATION_TYPES:
        raise UserError(f"dose summation type {summation_type!r} is not one of DICOM's: {', '.join(SUMMATION_TYPES)}")
    geometry = ct_geometry(select_ct_series(ct_series_folder, series_uid))
    volume = _aligned_with_ct(volume_gy, geometry)
    counts, scaling = _scaled_counts(volume.array)
    ds = _dose_dataset(volume, geometry, summation, description)
    ds.DoseGridScaling = ds_number(scaling, decimals=30)
    ds.PixelData = counts.astype("<u4").tobytes()
    return save_dataset(ds, out)


def _aligned_with_ct(volume: Volume, geometry: CtGeometry) -> Volume:
    """``volume`` with z along the CT's slice normal (frames reversed if need be), checked to share the CT's rows and
    columns and to overlap the CT."""
    ct_dir = geometry.direction
    if not np.allclose(volume.direction[:, :2], ct_dir[:, :2], atol=1e-4):
        raise UserError("the dose grid's axes are not the CT's rows and columns (a rotated or non-axial grid); resample "
                        "the dose onto the CT's axes first: planning systems expect the dose grid aligned with the CT")
    if np.dot(volume.direction[:, 2], ct_dir[:, 2]) < 0:  # z against the normal: reverse the frames
        nz = volume.shape[0]
        last = volume.index_to_lps(np.array([0.0, 0.0, nz - 1.0]))
        volume = Volume(volume.array[::-1], volume.spacing, tuple(last), ct_dir)
    ct = geometry.empty_volume(np.uint8)
    if not _boxes_overlap(volume, ct):
        raise UserError(f"the dose grid ({volume.describe()}) does not overlap the CT ({ct.describe()}); it belongs to "
                        "another scan or its geometry is wrong")
    return volume


def _box(volume: Volume) -> Tuple[np.ndarray, np.ndarray]:
    nz, ny, nx = volume.shape
    corners = np.array([[i, j, k] for i in (-0.5, nx - 0.5) for j in (-0.5, ny - 0.5) for k in (-0.5, nz - 0.5)])
    points = volume.index_to_lps(corners)
    return points.min(axis=0), points.max(axis=0)


def _boxes_overlap(a: Volume, b: Volume) -> bool:
    (a0, a1), (b0, b1) = _box(a), _box(b)
    return bool(np.all(a0 < b1) and np.all(b0 < a1))


def _scaled_counts(dose_gy: np.ndarray) -> Tuple[np.ndarray, float]:
    """Integer counts and the DoseGridScaling (Gy per count) with the maximum at about :data:`MAX_COUNT`."""
    dose = np.asarray(dose_gy, dtype=np.float64)
    if not np.all(np.isfinite(dose)):
        raise UserError("the dose grid holds NaN or infinite values; fix the dose computation before export")
    if dose.min() < 0:
        warnings.warn(f"the dose grid has negative values (down to {dose.min():.4g} Gy); written as 0 Gy",
                      UserWarning, stacklevel=3)
        dose = np.clip(dose, 0.0, None)
    peak = float(dose.max())
    scaling = float(ds_number(peak / MAX_COUNT, decimals=30)) if peak > 0 else 1.0
    if peak / scaling > 2**32 - 1:  # the rounded scaling is a hair too small: one step up
        scaling = float(ds_number(scaling * (1 + 1e-9), decimals=30))
    return np.rint(dose / scaling).astype(np.uint32), scaling


def _dose_dataset(volume: Volume, geometry: CtGeometry, summation: str, description: str):
    from pydicom.tag import Tag
    from pydicom.uid import generate_uid

    nz, ny, nx = volume.shape
    sx, sy, sz = volume.spacing
    ds = new_dataset(geometry, RTDOSE_SOP_CLASS, "RTDOSE", generate_uid(), description, series_number=902)
    frame_of_reference(ds, geometry)
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ImagePositionPatient = ds_numbers(volume.origin)
    ds.ImageOrientationPatient = ds_numbers(geometry.orientation, decimals=6)
    ds.PixelSpacing = ds_numbers((sy, sx))
    ds.SliceThickness = ds_number(sz)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ny, nx
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = Tag(GRID_FRAME_OFFSET_TAG)
    ds.GridFrameOffsetVector = ds_numbers(np.arange(nz) * sz)
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation
    ds.DoseComment = str(description)[:64]
    return ds
