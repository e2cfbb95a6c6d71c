"""DICOM out, the parts every written object shares: the CT's patient and study, new UIDs, safe output paths.

Every object this project writes (RT Structure Set, RT Dose, derived image series) belongs to the planning CT's
patient and study: the Patient and General Study modules are copied from the CT's first slice (StudyInstanceUID
included), the SeriesInstanceUID and SOPInstanceUIDs are new (:func:`pydicom.uid.generate_uid`), and the files are
Explicit VR Little Endian Part 10 files written to a temporary name and renamed (:func:`save_dataset`). Outputs are
never written into the CT's folder (:func:`refuse_inside_input`), which would change what a later read of that
folder finds.

Works with pydicom 2.4 (Python 3.9, e.g. inside Slicer 5.8) and pydicom 3.
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, List, Union

from . import __version__
from .dicom_series import CtGeometry, read_header
from .errors import UserError
from .files import atomic_output, write_failure

PathLike = Union[str, "os.PathLike[str]"]

#: General Equipment: who made the objects (the software, not a scanner)
MANUFACTURER = "slicer-lung-function-dosimetry"
#: attributes of the Patient, Patient Study and General Study modules copied from the CT (type 2 ones written empty
#: when the CT lacks them); de-identification flags travel with them
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "OtherPatientIDs", "PatientIdentityRemoved", "DeidentificationMethod", "PatientAge", "PatientSize",
    "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "StudyDescription",
)
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def refuse_inside_input(out_path: PathLike, ct_folder: PathLike) -> Path:
    """``out_path`` resolved; a :class:`UserError` when it is the CT folder or inside it."""
    out = Path(os.fspath(out_path)).expanduser().resolve()
    folder = Path(os.fspath(ct_folder)).expanduser().resolve()
    if out == folder or folder in out.parents:
        raise UserError(f"the output {out} is inside the CT folder {folder}; write it to another folder (the CT folder "
                        "is an input and stays as it is)")
    return out


def ds_number(value: float, decimals: int = 4) -> str:
    """A DICOM decimal string (at most 16 characters) of ``value`` rounded to ``decimals`` places."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(round(float(value), decimals) + 0.0)  # + 0.0: no "-0"


def ds_numbers(values: Iterable[float], decimals: int = 4) -> List[str]:
    """:func:`ds_number` of each value."""
    return [ds_number(v, decimals) for v in values]


def new_dataset(geometry: CtGeometry, sop_class_uid: str, modality: str, series_uid: str, series_description: str,
                series_number: int):
    """A dataset of class ``sop_class_uid`` in a new series of the CT's study: file meta, SOP Common, the patient
    and study copied from the CT's first slice, General/RT Series and General Equipment filled in."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    ct = read_header(geometry.slices[0].path)
    ds = Dataset()
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in ct:
            setattr(ds, keyword, ct.data_element(keyword).value)
        elif keyword in _TYPE2:
            setattr(ds, keyword, "")
    now = datetime.datetime.now()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(series_number)
    ds.SeriesDate = ds.InstanceCreationDate
    ds.SeriesTime = ds.InstanceCreationTime
    ds.SeriesDescription = str(series_description)[:64]
    ds.OperatorsName = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "ImagingBasics"
    ds.SoftwareVersions = __version__
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def new_instance_uid(ds) -> str:
    """Give ``ds`` (a copy made for the next slice) a new SOPInstanceUID, in the file meta too; return it."""
    from pydicom.uid import generate_uid

    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds.SOPInstanceUID


def frame_of_reference(ds, geometry: CtGeometry) -> None:
    """The Frame of Reference module: the CT's FrameOfReferenceUID and PositionReferenceIndicator."""
    ct = read_header(geometry.slices[0].path)
    if not geometry.series.frame_of_reference_uid:
        raise UserError(f"CT series {geometry.series.series_uid} has no FrameOfReferenceUID; objects placed on it could "
                        "not be registered to it: export the CT with its frame of reference")
    ds.FrameOfReferenceUID = geometry.series.frame_of_reference_uid
    ds.PositionReferenceIndicator = ct.get("PositionReferenceIndicator", "")


def patient_position(ds, geometry: CtGeometry) -> None:
    """PatientPosition (e.g. HFS) copied from the CT, when it has one."""
    ct = read_header(geometry.slices[0].path)
    if ct.get("PatientPosition"):
        ds.PatientPosition = ct.PatientPosition


def _write_part10(ds, path: Path) -> None:
    import pydicom

    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x (Python 3.9)
        ds.is_little_endian = True
        ds.is_implicit_VR = False
        ds.save_as(str(path), write_like_original=False)


def save_dataset(ds, path: PathLike) -> Path:
    """Write ``ds`` as a DICOM Part 10 file at ``path`` atomically (temporary name, then rename); return the path.

    Raises:
        UserError: the folder is not writable or the disk is full.
    """
    final = Path(os.fspath(path)).expanduser()
    with atomic_output(final) as tmp:
        try:
            _write_part10(ds, tmp)
        except (ValueError, TypeError) as exc:  # an attribute pydicom cannot encode: a bug here, said plainly
            raise write_failure(final, f"the DICOM dataset could not be encoded ({exc})") from None
    return final


@contextmanager
def atomic_folder(out_dir: PathLike) -> Iterator[Path]:
    """Yield a new hidden temporary folder beside ``out_dir``; rename it to ``out_dir`` when the block succeeds, remove
    it when it fails. ``out_dir`` must not exist or be empty (checked first, so that nothing is half replaced).

    Raises:
        UserError: ``out_dir`` exists and is not an empty folder; the parent is not writable.
    """
    final = Path(os.fspath(out_dir)).expanduser()
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise UserError(f"{final} already exists and is not an empty folder; choose a new output folder")
    tmp = final.parent / f".{final.name}.tmp-{secrets.token_hex(4)}"
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
    except OSError as exc:
        raise write_failure(final, exc.strerror or str(exc)) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
