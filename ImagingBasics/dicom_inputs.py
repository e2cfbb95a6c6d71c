"""DICOM inputs of the command lines: the CT argument, RT objects recognised by their content, grid and folder checks.

The library functions (:mod:`.dicom_series`, :mod:`.dicom_rtdose`, :mod:`.dicom_rtstruct`) read DICOM; this module
holds what every command that takes DICOM needs on top of them, once for ``ctpm`` and ``dosecnn``:

* :data:`CT_SERIES` -- the ``--ct-series UID`` option beside a CT folder (an input choice, not a pipeline setting:
  it is added to a command's parser beside ``--ct``, not to the pipeline's :class:`~.options.OptionSet`);
* :func:`read_ct` -- a CT given as an image file or as a DICOM folder. A folder holding one series directly inside
  it is read as :func:`~.imageio.read_volume` always read it (GDCM); a folder holding several series (a planning CT
  with a scout, an RTSTRUCT, an RTDOSE, sub-folders) gives the largest CT series (:func:`choose_ct_series`, one
  ``warning:`` line naming it and the others), and ``--ct-series`` any CT series of the folder;
* :func:`ct_patient_position` -- the CT series' PatientPosition (supine, prone, decubitus), for the models that
  assume a supine patient, and :data:`PATIENT_POSITION` (``--patient-position``) to give it for an image file;
* :func:`choose_ct_series` -- that choice, for the commands that need the CT's headers only (frame of reference,
  slices, grid) and for the writers of RT objects;
* :func:`dicom_modality` -- what a file is by its content (an RTDOSE named ``dose.nrrd.dcm`` or ``RD1``);
* :func:`require_on_ct_grid` -- an image (results of a run) must lie on the CT series' grid: results of another CT
  are refused;
* :func:`export_geometry` -- the checks an ``export-dicom`` command makes before it reads an image.

``--out`` inside an input folder (a DICOM series folder would then hold the outputs) is refused by
:func:`~.outputs.check_output_folder`, with every other output-folder check.

Why not inside :func:`~.imageio.read_volume`: :mod:`.dicom_series` reads its pixels with helpers of
:mod:`.imageio`, so ``imageio`` cannot call it back without an import cycle (the ``acyclic_siblings`` contract in
pyproject.toml); the commands read their CT through :func:`read_ct` instead.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

from .dicom_rtdose import RTDOSE_SOP_CLASS
from .dicom_rtstruct import RTSTRUCT_SOP_CLASS
from .dicom_series import (
    CtGeometry,
    DicomSeries,
    ct_geometry,
    describe_series,
    find_series,
    header_patient_position,
    read_ct_series,
    read_header,
    select_ct_series,
)
from .errors import UserError
from .imageio import read_volume
from .options import Option
from .volume import Volume

PathLike = Union[str, "os.PathLike[str]"]

CT_SERIES = Option("ct_series", "--ct-series", str, None, metavar="UID",
                   help="SeriesInstanceUID of the CT series to read when the CT folder holds several series (default: "
                        "the CT series with the most slices, named in a warning)")

#: DICOM PatientPosition values (PS3.3 C.7.3.1.1.2) of a patient lying on the table
PATIENT_POSITIONS = ("HFS", "FFS", "HFP", "FFP", "HFDR", "HFDL", "FFDR", "FFDL")
PATIENT_POSITION = Option("patient_position", "--patient-position", str, None, choices=PATIENT_POSITIONS,
                          metavar="POSITION",
                          help="how the patient lay, as DICOM writes it (HFS head first supine, FFP feet first prone, "
                               "HFDR head first lying on the right side, ...); default: read from a DICOM CT series, "
                               "unknown for an image file. The maps assume a supine patient (a warning otherwise)")

#: positions and spacings (mm) within this distance count as one grid (DICOM stores them as decimal strings)
GRID_TOLERANCE_MM = 1e-2
#: the RT objects the commands recognise by content, by SOP class UID
_MODALITY_OF_SOP_CLASS = {RTDOSE_SOP_CLASS: "RTDOSE", RTSTRUCT_SOP_CLASS: "RTSTRUCT"}


def _path(path: PathLike) -> Path:
    return Path(os.fspath(path)).expanduser()


# --- the CT of a command ----------------------------------------------------------------------------------------
def choose_ct_series(folder: PathLike, series_uid: Optional[str] = None,  # noqa: UP045
                     found: Optional[Sequence[DicomSeries]] = None) -> DicomSeries:  # noqa: UP045
    """The CT series of ``folder`` with ``series_uid``, else the largest CT series
    (:func:`~.dicom_series.select_ct_series`); when the folder holds other series too, one ``UserWarning`` names the
    chosen series and every other one (CT or not). ``found``: the folder's series when the caller has them already
    (:func:`~.dicom_series.find_series`), which saves reading every header once more.

    Raises:
        UserError: no CT series in the folder, an unknown series UID, a series that is not a CT.
    """
    root = _path(folder)
    if series_uid is not None:
        return select_ct_series(root, series_uid)
    with warnings.catch_warnings():  # its warning names the other CT series only; the one below names them all
        warnings.simplefilter("ignore", UserWarning)
        chosen = select_ct_series(root)
    others = [s for s in (find_series(root) if found is None else found) if s.series_uid != chosen.series_uid]
    if others:
        warnings.warn(f"{root} holds {len(others) + 1} DICOM series; reading the largest CT series, {chosen.summary()}; "
                      f"the others: {describe_series(others)}. Give --ct-series UID to read another", UserWarning,
                      stacklevel=2)
    return chosen


def _one_series_directly_inside(folder: Path, found) -> bool:
    return len(found) == 1 and all(path.parent == folder for path in found[0].files)


def check_series_choice(ct_path: PathLike, series_uid: Optional[str] = None) -> None:  # noqa: UP045
    """A one-line UserError when a series UID is given for a CT that is not a folder (checked before heavy work)."""
    if series_uid is not None and _path(ct_path).exists() and not _path(ct_path).is_dir():
        raise UserError(f"{CT_SERIES.flag} chooses a series of a DICOM folder, but the CT {ct_path} is not a folder")


def read_ct(path: PathLike, series_uid: Optional[str] = None) -> Volume:  # noqa: UP045
    """The CT of a command as a Volume (HU): an image file, or a DICOM folder (module docstring).

    ``series_uid`` (``--ct-series``) chooses the CT series of a folder.

    Raises:
        UserError: the file or folder cannot be read, a series UID given with a file, no CT series in a folder of
        several series, an unknown series UID.
    """
    p = _path(path)
    check_series_choice(p, series_uid)
    if not p.is_dir():
        return read_volume(p)
    if series_uid is not None:
        return read_ct_series(p, series_uid)
    whole_folder, chosen = _series_to_read(p)
    if whole_folder:
        return read_volume(p)  # as always: GDCM reads the one series (or says that there is none)
    return read_ct_series(p, chosen.series_uid)


def _series_to_read(folder: Path, warn: bool = True):
    """(whole folder, series) of :func:`read_ct` without a series UID: ``(True, the one series or None)`` when GDCM
    reads the folder itself (no series, or one directly inside), else ``(False, the largest CT series)``
    (:func:`choose_ct_series`, whose warning names the others when ``warn``)."""
    found = find_series(folder)
    if not found or _one_series_directly_inside(folder, found):
        return True, (found[0] if found else None)
    with warnings.catch_warnings():
        if not warn:
            warnings.simplefilter("ignore", UserWarning)
        return False, choose_ct_series(folder, found=found)


def ct_patient_position(path: PathLike, series_uid: Optional[str] = None) -> Optional[str]:  # noqa: UP045
    """The DICOM PatientPosition (``HFS``, ``FFP``, ``HFDR``, ...) of the CT series :func:`read_ct` reads from
    ``path`` (upper case), or None: an image file (NRRD, NIfTI: no such field), or a series without the attribute."""
    p = _path(path)
    if not p.is_dir():
        return None
    if series_uid is not None:
        series = select_ct_series(p, series_uid)
    else:
        series = _series_to_read(p, warn=False)[1]  # read_ct has named the choice already
    return None if series is None else header_patient_position(series.files[0])


def ct_series_geometry(folder: PathLike, series_uid: Optional[str] = None) -> CtGeometry:  # noqa: UP045
    """The chosen CT series' slices and grid (headers only), refused without a FrameOfReferenceUID (RT objects could
    not reference it)."""
    series = choose_ct_series(folder, series_uid)
    if not series.frame_of_reference_uid:
        raise UserError(f"CT series {series.series_uid} in {folder} has no FrameOfReferenceUID; RT objects cannot be "
                        "placed on it: export the CT with its frame of reference")
    return ct_geometry(series)


def export_geometry(results: PathLike, ct_dicom: PathLike, series_option: Optional[str], out: PathLike,  # noqa: UP045
                    outputs: Sequence[str]) -> CtGeometry:
    """What an ``export-dicom`` command checks before reading any image: ``--ct-series`` (``series_option``, the raw
    option value), ``--out`` against the inputs (``results`` folder, ``ct_dicom`` folder) and the files it writes
    (:func:`~.outputs.check_output_folder`), and the CT series' grid and frame of reference (headers only)."""
    from .outputs import check_output_folder

    series_uid = CT_SERIES.check(series_option)
    check_output_folder(out, [results, ct_dicom], outputs)
    return ct_series_geometry(ct_dicom, series_uid)


def grid_text(volume: Volume) -> str:
    """A grid in words: voxels, spacing (mm), origin (mm)."""
    nx, ny, nz = volume.size
    spacing = "x".join(f"{s:.4g}" for s in volume.spacing)
    origin = ", ".join(f"{o:.2f}" for o in volume.origin)
    return f"{nx}x{ny}x{nz} voxels of {spacing} mm at ({origin}) mm"


def require_on_ct_grid(volume: Volume, geometry: CtGeometry, what: str) -> None:
    """A one-line UserError unless ``volume`` (``what``: e.g. "the perfusion map in DIR") lies on the CT series' grid
    (same size and axes, spacing and origin within :data:`GRID_TOLERANCE_MM`)."""
    ct = geometry.empty_volume()
    if not volume.same_geometry(ct, tol_mm=GRID_TOLERANCE_MM):
        raise UserError(f"{what} ({grid_text(volume)}) and CT series {geometry.series.series_uid} ({grid_text(ct)}) are "
                        "not on one grid: it was made from another CT; give the DICOM series of the CT it was made from")


# --- RT objects by content ----------------------------------------------------------------------------------------
def dicom_modality(path: PathLike) -> Optional[str]:  # noqa: UP045
    """The modality of a DICOM file (``RTDOSE``, ``RTSTRUCT``, ``CT``, ...; RT objects also by their SOP class), None
    for a folder or a file that is not DICOM (an NRRD, say). Only the header is read.

    Raises:
        UserError: a damaged DICOM file.
    """
    p = _path(path)
    if not p.is_file():
        return None
    ds = read_header(p)
    if ds is None:
        return None
    by_class = _MODALITY_OF_SOP_CLASS.get(str(ds.get("SOPClassUID", "")))
    return by_class or (str(ds.get("Modality", "")).strip().upper() or None)


def require_modality(path: PathLike, modality: str, option: str) -> None:
    """A one-line UserError unless ``path`` is a DICOM file of ``modality`` (``option``: the flag that named it)."""
    if not _path(path).exists():
        raise UserError(f"{path} not found")
    found = dicom_modality(path)
    if found != modality:
        what = f"a DICOM {found} object" if found else "not a DICOM file"
        raise UserError(f"{option} {path} is {what}; give an {modality} file")
