"""DICOM CT series written with pydicom for the tests (Testing/test_dicom_rt.py, Testing/test_dicom_commands.py).

:func:`write_ct_series` writes an HU array on any LPS grid as one file per slice, in shuffled file order, with the
patient, study, series, frame of reference and image attributes a planning CT has; :func:`write_ct_volume` does it
for a :class:`~ImagingBasics.volume.Volume`. The truth (UIDs, HU, each slice's SOPInstanceUID) is returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ImagingBasics.volume import Volume

CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
FRAME_UID = "1.2.826.0.1.3680043.8.498.2"


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as an Explicit VR Little Endian Part 10 file with pydicom 2.4 or 3."""
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)


def _slice_dataset(series_uid: str, study_uid: str, frame_uid: str, description: str, modality: str,
                   image_type: Sequence[str]) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_SOP_CLASS
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CT_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(image_type)
    ds.Modality = modality
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Chest", "PH-001", "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20240102", "101010", "1", "", ""
    ds.SeriesNumber, ds.SeriesDescription = 2, description
    ds.PatientPosition, ds.PositionReferenceIndicator = "HFS", ""
    return ds


def write_ct_series(folder: Path, hu: np.ndarray, spacing: Sequence[float], origin: Sequence[float],
                    direction: Optional[np.ndarray] = None, series_uid: Optional[str] = None, study_uid: str = STUDY_UID,
                    frame_uid: str = FRAME_UID, description: str = "Chest CT", seed: int = 0, prefix: str = "IMG",
                    modality: str = "CT", image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
                    patient_position: str = "HFS") -> Dict[str, object]:
    """Write ``hu[z, y, x]`` (HU) as a CT series: voxel [0, 0, 0] at ``origin`` (LPS mm), ``spacing`` (x, y, z mm),
    ``direction`` (columns: the x, y, z axes in LPS; default identity). Returns the truth."""
    folder.mkdir(parents=True, exist_ok=True)
    axes = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    series_uid = series_uid or generate_uid()
    hu = np.asarray(hu)
    shape = hu.shape
    sop_uids = []
    order = np.random.default_rng(seed).permutation(shape[0])
    for k in range(shape[0]):
        ds = _slice_dataset(series_uid, study_uid, frame_uid, description, modality, image_type)
        ds.PatientPosition = patient_position
        ds.InstanceNumber = k + 1
        position = np.asarray(origin, dtype=float) + k * float(spacing[2]) * axes[:, 2]
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([axes[:, 0], axes[:, 1]])]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = shape[1], shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.KVP = 120
        ds.PixelData = np.clip(np.rint(hu[k]).astype(np.int32) + 1024, 0, 65535).astype("<u2").tobytes()
        save_dataset(ds, folder / f"{prefix}{order[k]:04d}.dcm")
        sop_uids.append(ds.SOPInstanceUID)
    return {"folder": folder, "series_uid": series_uid, "study_uid": study_uid, "frame_uid": frame_uid, "hu": hu,
            "sop_uids": sop_uids, "shape": shape}


def write_ct_volume(folder: Path, ct: Volume, **kwargs) -> Dict[str, object]:
    """:func:`write_ct_series` of a CT Volume (HU) on its own grid."""
    return write_ct_series(folder, ct.array, ct.spacing, ct.origin, ct.direction, **kwargs)
