"""A derived image volume (e.g. the perfusion map) as a DICOM image series on the planning CT's frame of reference.

Planning systems (Eclipse, RayStation, Monaco, Pinnacle) import CT, MR and PET series (RayStation also NM) as
secondary image sets that they can register and display over the planning CT; a Secondary Capture is a picture
without a patient frame and is usually not accepted as an image set. :func:`write_secondary_series` therefore writes
one of the classic single-frame image storage classes, one file per slice:

* ``modality="PT"`` (default): PET Image Storage (1.2.840.10008.5.1.4.1.1.128): a functional image, the natural
  home of a perfusion map (an emission-like distribution); ImageType DERIVED\\PRIMARY, Units PROPCNTS
  (proportional to counts: a relative perfusion) unless told otherwise, DecayCorrection NONE, no radiopharmaceutical;
  RescaleIntercept 0 as PET requires.
* ``modality="CT"``: CT Image Storage (1.2.840.10008.5.1.4.1.1.2), for systems that accept only CT secondaries;
  ImageType DERIVED\\SECONDARY\\AXIAL and RescaleType US (unspecified), so the values are not taken for HU by a
  careful reader, but a planning system might still treat them as HU: never use it as the planning CT.

Values are stored as 16-bit integers with one RescaleSlope for the whole series (maximum |value| -> 65535 unsigned,
or 32767 signed when there are negative values: a step of 1.5e-5 (3e-5) of the maximum). The series is new
(SeriesInstanceUID), in the CT's study (StudyInstanceUID, patient copied) and on its frame of reference
(FrameOfReferenceUID): a planning system shows it registered to the CT without a registration step.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from .dicom_series import CtGeometry, ct_geometry, select_ct_series
from .dicom_write import (
    atomic_folder,
    ds_number,
    ds_numbers,
    frame_of_reference,
    new_dataset,
    new_instance_uid,
    patient_position,
    refuse_inside_input,
    save_dataset,
)
from .errors import UserError
from .volume import Volume

PathLike = Union[str, "os.PathLike[str]"]

SOP_CLASSES = {"PT": "1.2.840.10008.5.1.4.1.1.128", "CT": "1.2.840.10008.5.1.4.1.1.2"}
#: PET Series Units (0054,1001) defined terms accepted here
PET_UNITS = ("PROPCNTS", "CNTS", "NONE", "BQML", "PCNT", "CPS", "PROPCPS", "GML", "MLMING", "MLMINML", "MLML")


def write_secondary_series(volume: Volume, ct_series_folder: PathLike, out_dir: PathLike, modality: str = "PT",
                           description: str = "Perfusion map (research software)", units: str = "PROPCNTS",
                           series_uid: Optional[str] = None, series_number: int = 903) -> List[Path]:  # noqa: UP045
    """Write ``volume`` as a DICOM image series (one file per slice) in the new folder ``out_dir``, on the frame of
    reference and in the study of the CT in ``ct_series_folder`` (``series_uid`` chooses the CT series when the
    folder holds several). ``units``: the PET Units of a PT series.

    The volume may have any grid (usually the CT's); its slices must be planes of constant z index (any orientation).

    Returns:
        the files written, in slice order.

    Raises:
        UserError: unknown modality or units, non-finite values, ``out_dir`` inside the CT folder or not a new or empty
        folder.
    """
    kind = str(modality).strip().upper()
    if kind not in SOP_CLASSES:
        raise UserError(f"modality {modality!r} is not supported for a derived series; use PT or CT")
    if kind == "PT" and str(units).upper() not in PET_UNITS:
        raise UserError(f"PET units {units!r} are not one of {', '.join(PET_UNITS)}")
    out = refuse_inside_input(out_dir, ct_series_folder)
    geometry = ct_geometry(select_ct_series(ct_series_folder, series_uid))
    stored, slope, signed = _stored_values(volume.array)
    template = _template(volume, geometry, kind, description, str(units).upper(), series_number)
    _pixel_format(template, kind, slope, signed, volume.array)
    with atomic_folder(out) as tmp:
        names = _write_slices(template, volume, stored, tmp)
    return [out / name for name in names]


def _stored_values(values: np.ndarray) -> Tuple[np.ndarray, float, bool]:
    """16-bit integers, the RescaleSlope that turns them back into values, and whether they are signed."""
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise UserError("the image holds NaN or infinite values; DICOM images cannot store them: fill them first")
    signed = bool(array.min() < 0)
    top = 32767 if signed else 65535
    peak = float(np.max(np.abs(array)))
    slope = float(ds_number(peak / top, decimals=30)) if peak > 0 else 1.0
    if peak / slope > top:
        slope = float(ds_number(slope * (1 + 1e-9), decimals=30))
    stored = np.clip(np.rint(array / slope), -top if signed else 0, top)
    return stored.astype(np.int16 if signed else np.uint16), slope, signed


def _template(volume: Volume, geometry: CtGeometry, kind: str, description: str, units: str, series_number: int):
    """The dataset shared by every slice (patient, study, series, frame of reference, image modules)."""
    from pydicom.uid import generate_uid

    ds = new_dataset(geometry, SOP_CLASSES[kind], kind, generate_uid(), description, series_number)
    frame_of_reference(ds, geometry)
    patient_position(ds, geometry)
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.AcquisitionDate, ds.AcquisitionTime = "", ""
    ds.DerivationDescription = str(description)[:1024]
    ds.ImageOrientationPatient = ds_numbers(np.concatenate([volume.direction[:, 0], volume.direction[:, 1]]), decimals=6)
    ds.PixelSpacing = ds_numbers((volume.spacing[1], volume.spacing[0]))
    ds.SliceThickness = ds_number(volume.spacing[2])
    ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
    if kind == "PT":
        _pet_modules(ds, units, volume.shape[0])
    else:
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.KVP = ""
        ds.AcquisitionNumber = ""
        ds.RescaleType = "US"
    return ds


def _pet_modules(ds, units: str, n_slices: int) -> None:
    """PET Series, PET Isotope, NM/PET Patient Orientation and PET Image attributes of a derived static image."""
    ds.ImageType = ["DERIVED", "PRIMARY"]  # the PET Image module wants PRIMARY as the second value
    ds.SeriesType = ["STATIC", "IMAGE"]
    ds.Units = units
    ds.CountsSource = "EMISSION"
    ds.DecayCorrection = "NONE"
    ds.CorrectedImage = ""
    ds.CollimatorType = ""
    ds.NumberOfSlices = n_slices
    ds.RadiopharmaceuticalInformationSequence = []
    ds.PatientOrientationCodeSequence = []
    ds.PatientGantryRelationshipCodeSequence = []
    ds.FrameReferenceTime = "0"
    ds.ActualFrameDuration = ""


def _pixel_format(ds, kind: str, slope: float, signed: bool, values: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleSlope = ds_number(slope, decimals=30)
    ds.RescaleIntercept = "0"
    ds.LossyImageCompression = "00"
    low, high = float(np.min(values)), float(np.max(values))
    ds.WindowCenter = ds_number((low + high) / 2, decimals=6)
    ds.WindowWidth = ds_number(max(high - low, slope), decimals=6)


def _write_slices(template, volume: Volume, stored: np.ndarray, folder: Path) -> List[str]:
    """One file per slice (new SOPInstanceUID, its position and pixels) in ``folder``; the file names."""
    normal = np.cross(volume.direction[:, 0], volume.direction[:, 1])
    names = []
    for k in range(volume.shape[0]):
        ds = copy.deepcopy(template)
        new_instance_uid(ds)
        position = volume.index_to_lps(np.array([0.0, 0.0, float(k)]))
        ds.InstanceNumber = k + 1
        if ds.Modality == "PT":
            ds.ImageIndex = k + 1
        ds.ImagePositionPatient = ds_numbers(position)
        ds.SliceLocation = ds_number(float(np.dot(position, normal)))
        ds.PixelData = np.ascontiguousarray(stored[k]).astype(stored.dtype.newbyteorder("<")).tobytes()
        name = f"{ds.Modality}{k + 1:04d}.dcm"
        save_dataset(ds, folder / name)
        names.append(name)
    return names
