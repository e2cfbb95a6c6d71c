"""Reading and writing 3D images as :class:`~.volume.Volume` values.

Supported for reading (:func:`read_volume`):

* NRRD (``.nrrd``, ``.nhdr``), NIfTI-1 (``.nii``, ``.nii.gz``) and MetaImage (``.mha``, ``.mhd``), through SimpleITK;
* a folder holding a DICOM series (the files directly inside the folder; the largest series is used);
* Interfile 3.3 headers (``.h33``, ``.hdr`` whose first line is ``!INTERFILE``), through the small parser
  :func:`read_interfile` (GATE voxelised phantoms, SPECT/CT exports, dose kernels);
* any other file SimpleITK can identify by its content (e.g. Analyze ``.hdr``/``.img``).

Supported for writing (:func:`write_volume`): NRRD (``.nrrd``, gzip-encoded) and NIfTI (``.nii``, ``.nii.gz``).

Orientation model (every reader gives a :class:`~.volume.Volume` in patient LPS coordinates: x to the patient's left,
y posterior, z toward the head; the direction matrix says where each index axis points):

* DICOM: from Image Orientation (Patient) and Image Position (Patient) of each slice (GDCM sorts the slices along
  their normal, so feet-first and head-first series both come out right);
* NRRD: ``space`` and ``space directions`` (a ``right-anterior-superior`` file is converted to LPS by ITK);
* NIfTI: the sform (else qform) matrix, which is RAS by definition, converted to LPS by ITK;
* MetaImage: ``TransformMatrix``/``Offset`` (LPS by ITK's convention);
* Interfile: no orientation in the header; the caller states it (:func:`read_interfile`), else LPS is assumed
  with a warning.

Where a file leaves its orientation unstated, a ``UserWarning`` says what is assumed (the command lines print it as
``warning: ...``): a NIfTI file whose ``qform_code`` and ``sform_code`` are both 0 (ITK then takes the voxel axes as
given, no patient frame), a NRRD without ``space``/``space directions``, a MetaImage without ``TransformMatrix``
(or ``Orientation``/``Rotation``) and without ``AnatomicalOrientation``; the image is read as if its axes were LPS.

Geometry is kept as SimpleITK reports it (LPS, see :mod:`.volume`); voxel values are returned as stored
(no unit conversion: a CT stored as HU+1000 stays HU+1000). Every failure a user can cause raises
:class:`~.errors.UserError` with a one-line message naming the file.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np

from .errors import UserError
from .files import atomic_output, file_extension, write_failure
from .volume import Volume, direction_from_code, from_sitk, to_sitk

PathLike = Union[str, "os.PathLike[str]"]

#: Extensions read with SimpleITK's ImageFileReader.
ITK_EXTENSIONS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
#: Extensions that may hold an Interfile header (``.hdr`` may also be Analyze 7.5, read by SimpleITK).
INTERFILE_EXTENSIONS = (".h33", ".hdr")
#: Extensions :func:`write_volume` accepts.
WRITE_EXTENSIONS = (".nrrd", ".nii", ".nii.gz")

SUPPORTED_READ = (
    "NRRD (.nrrd, .nhdr), NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd), Interfile (.h33, .hdr) or a folder with a DICOM series"
)


# --- helpers ------------------------------------------------------------------------------------
def sitk_reason(exc: BaseException) -> str:
    """The last meaningful line of a (multi-line) SimpleITK/ITK error message, for one-line messages. ITK's trailing
    ``Reason: <errno text>`` line is skipped: it is the last system error of the process, often unrelated (a damaged
    MetaImage file is reported with "Reason: No such file or directory")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("Reason:")]
    reason = lines[-1] if lines else type(exc).__name__
    reason = re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*", "", reason)
    reason = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", reason)
    return reason[:200]


def _volume_from_image(image, path: Path) -> Volume:
    """Check that a SimpleITK image is a 3D scalar volume and convert it; errors name ``path``."""
    if image.GetDimension() != 3:
        raise UserError(f"{path} is a {image.GetDimension()}D image; a 3D volume is required")
    try:
        return from_sitk(image)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


@contextmanager
def native_stderr_held_back() -> Iterator[None]:
    """What native code (ITK's MetaImage and NIfTI readers, GDCM) prints on the process's stderr (file descriptor 2)
    inside the block is held back: shown after the block when it succeeds, dropped when it raises, so that a damaged
    file gives the one-line error of the command line and not the reader's own lines besides it."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 (an embedding host): nothing to hold back
        yield
        return
    held = tempfile.TemporaryFile()
    ok = False
    try:
        os.dup2(held.fileno(), 2)
        yield
        ok = True
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if ok:
            held.seek(0)
            text = held.read().decode("utf-8", errors="replace")
            if text:
                sys.stderr.write(text)
        held.close()


def _read_with_sitk(path: Path) -> Volume:
    """Read one image file with SimpleITK; an unreadable file becomes a one-line :class:`UserError`."""
    import SimpleITK as sitk

    try:
        with native_stderr_held_back(), _nifti_alone(path) as readable:
            image = sitk.ReadImage(str(readable))
    except RuntimeError as exc:
        reason = sitk_reason(exc)
        generic = ("Unable to determine ImageIO", "File cannot be read")
        detail = "" if reason.startswith(generic) else f" ({reason})"
        kind = file_extension(path) or "image"
        raise UserError(f"could not read {path}: the file is damaged or not a valid {kind} file{detail}") from None
    volume = _volume_from_image(image, path)
    if file_extension(path) in (".nrrd", ".nhdr"):
        _check_nrrd_voxel_size(path, volume)
    if file_extension(path) in (".nii", ".nii.gz") and np.issubdtype(volume.array.dtype, np.inexact):
        volume = _nifti_non_finite_kept(path, volume)
    _warn_if_orientation_unstated(path)
    return volume


@contextmanager
def _nifti_alone(path: Path) -> Iterator[Path]:
    """``path``, or for ``NAME.nii.gz`` with a ``NAME.nii`` beside it, a link to it alone in a temporary folder: ITK's
    NIfTI library, asked for ``NAME.nii.gz``, reads ``NAME.nii`` when both exist (another image, without a word)."""
    if file_extension(path) != ".nii.gz" or not path.with_suffix("").exists():
        yield path
        return
    import shutil

    with tempfile.TemporaryDirectory(prefix="nifti-") as folder:
        alone = Path(folder) / "image.nii.gz"
        try:
            os.symlink(path.resolve(), alone)
        except OSError:  # no symbolic links here: a copy
            shutil.copyfile(path, alone)
        yield alone


def _nifti_bytes(path: Path, size: int = -1) -> Optional[bytes]:
    """The first ``size`` bytes (all: -1) of a NIfTI file, unzipped for ``.nii.gz``; None when unreadable."""
    import gzip

    try:
        opener = gzip.open if file_extension(path) == ".nii.gz" else open
        with opener(path, "rb") as f:
            return f.read(size)
    except (OSError, EOFError):
        return None


def _nifti_byte_order(data: bytes) -> Optional[str]:
    """``"<"`` or ``">"``: the byte order in which a NIfTI-1 header's ``sizeof_hdr`` reads 348; None: not NIfTI-1."""
    if len(data) < 348:
        return None
    return next((order for order in ("<", ">") if int(np.frombuffer(data[0:4], order + "i4")[0]) == 348), None)


def _nifti_transform_codes(path: Path) -> Optional[Tuple[int, int]]:
    """(qform_code, sform_code) of a NIfTI-1 header (``.nii``, ``.nii.gz``), None when the header cannot be read."""
    header = _nifti_bytes(path, 348)
    order = _nifti_byte_order(header) if header is not None else None
    if order is None:
        return None
    qform, sform = np.frombuffer(header[252:256], order + "i2")
    return int(qform), int(sform)


def _header_text(path: Path) -> Optional[str]:
    """The first 64 KiB of a text-header image file (NRRD, MetaImage) as text; None when unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(65536).decode("latin-1")
    except OSError:
        return None


def _metaimage_fields(path: Path) -> Optional[Dict[str, str]]:
    """The ``Key = value`` lines of a MetaImage header (keys lower case) up to ``ElementDataFile``; None when unreadable."""
    head = _header_text(path)
    if head is None:
        return None
    fields: Dict[str, str] = {}
    for line in head.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            break
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            break
    return fields


def orientation_unstated(path: Path) -> Optional[str]:
    """What is missing when the header of the image file ``path`` (NIfTI, NRRD, MetaImage) states no patient
    orientation, else None (stated, or another format)."""
    ext = file_extension(path)
    if ext in (".nii", ".nii.gz"):
        codes = _nifti_transform_codes(path)
        if codes == (0, 0):
            return "its NIfTI header has qform_code and sform_code 0 (no patient frame)"
    elif ext in (".nrrd", ".nhdr"):
        fields = _nrrd_fields(path)
        if fields is not None and "space" not in fields and "space directions" not in fields:
            return "its NRRD header has no space or space directions"
    elif ext in (".mha", ".mhd"):
        fields = _metaimage_fields(path)
        keys = {"transformmatrix", "orientation", "rotation", "anatomicalorientation"}
        if fields is not None and not keys & set(fields):
            return "its MetaImage header has no TransformMatrix or AnatomicalOrientation"
    return None


def _warn_if_orientation_unstated(path: Path) -> None:
    missing = orientation_unstated(path)
    if missing:
        warnings.warn(f"{path.name}: the image orientation is not stated ({missing}); read as if its axes were LPS (x "
                      "to the patient's left, y posterior, slices toward the head): check the image in a viewer "
                      "before trusting left and right", UserWarning, stacklevel=4)


def _nrrd_fields(path: Path) -> Optional[Dict[str, str]]:
    """The ``field: value`` lines of a NRRD header (keys lower case), None when it cannot be read."""
    head = _header_text(path)
    if head is None:
        return None
    fields: Dict[str, str] = {}
    for line in head.split("\n\n", 1)[0].splitlines()[1:]:  # after the magic line; comments and key:=value skipped
        key, sep, value = line.partition(": ")
        if sep and not line.startswith("#") and ":=" not in key:
            fields[key.strip().lower()] = value.strip()
    return fields


def _check_nrrd_voxel_size(path: Path, volume: Volume) -> None:
    """A one-line UserError when a NRRD header gives no voxel size, or one that ITK replaced by its default of 1 mm:
    ``spacings: nan ...`` (NRRD's "unknown"), no ``space directions`` nor ``spacings`` at all, or vectors too long to
    be represented. Every volume and dose per voxel would otherwise be computed for 1 mm voxels without a word."""
    fields = _nrrd_fields(path)
    if fields is None:
        return
    try:
        if "space directions" in fields:
            field = "space directions"
            vectors = re.findall(r"\(([^)]*)\)", fields[field])
            declared = [math.hypot(*(float(x) for x in v.split(","))) for v in vectors]
        elif "spacings" in fields:
            field = "spacings"
            declared = [abs(float(t)) for t in fields[field].split()]
        else:
            raise UserError(f"{path}: the NRRD header gives no voxel size (neither 'space directions' nor 'spacings'): "
                            "the image's geometry is unknown; re-export it with its geometry")
    except ValueError:
        return  # a form ITK read and we do not parse: its reading stands
    if len(declared) != 3:
        return
    if not all(np.isfinite(declared)) or not np.allclose(declared, volume.spacing, rtol=1e-6, atol=0):
        raise UserError(f"{path}: the NRRD header's voxel size is unusable ({field}: {fields[field][:80]}); the file is "
                        "damaged or its geometry unknown: re-export it")


#: NIfTI-1 datatype codes of floating-point and complex voxels -> numpy type
_NIFTI_FLOATS = {16: "f4", 64: "f8", 32: "c8", 1792: "c16"}


def _nifti_non_finite_kept(path: Path, volume: Volume) -> Volume:
    """``volume`` with the NaN and infinite voxels of a floating-point NIfTI-1 file put back: ITK's NIfTI reader turns
    them into 0 without a word, so that a CT padded with NaN would pass every check as water (0 HU). The stored values
    are read from the file itself (single-file NIfTI-1, ``.nii`` or ``.nii.gz``); any other layout is left to ITK."""
    data = _nifti_bytes(path)
    if data is None or len(data) < 352 or data[344:347] != b"n+1":
        return volume
    order = _nifti_byte_order(data)
    if order is None:
        return volume
    datatype = int(np.frombuffer(data[70:72], order + "i2")[0])
    offset = int(np.frombuffer(data[108:112], order + "f4")[0])
    code = _NIFTI_FLOATS.get(datatype)
    count = volume.array.size
    if code is None or offset < 348 or len(data) < offset + count * np.dtype(code).itemsize:
        return volume
    stored = np.frombuffer(data, order + code, count=count, offset=offset).reshape(volume.shape)
    bad = ~np.isfinite(stored)
    if not bad.any():
        return volume
    array = np.array(volume.array, copy=True)
    array[bad] = stored[bad]
    return volume.with_array(array)


# --- reading --------------------------------------------------------------------------------------
def read_volume(path: PathLike, interfile_orientation: Optional[str] = None) -> Volume:  # noqa: UP045
    """Read a 3D image file or a DICOM series folder into a :class:`Volume`.

    Dispatch on what ``path`` is:

    * a folder: the DICOM series in it (see :func:`read_dicom_folder`);
    * ``.h33``/``.hdr`` whose first non-empty line starts with ``!INTERFILE``: :func:`read_interfile`;
    * ``.nrrd``, ``.nhdr``, ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd`` (and non-Interfile ``.hdr``): SimpleITK;
    * anything else: SimpleITK if it recognises the content, otherwise a :class:`UserError` listing the formats.

    The values are returned with their stored type and meaning (no rescaling beyond what the format itself
    prescribes, e.g. DICOM rescale slope/intercept applied by GDCM). A 3D image with a single slice is
    accepted; a 2D image, a 4D image and colour/vector images are not.

    ``interfile_orientation`` (e.g. ``"LAI"`` for GATE's CTs) is the patient orientation of an Interfile image,
    whose header has none (see :func:`read_interfile`); every other format carries its own, and giving one for it
    is an error rather than a silent override.

    Raises:
        UserError: the path does not exist, cannot be read or parsed, or is not a 3D scalar image.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise UserError(f"{p} not found")
    interfile = p.is_file() and file_extension(p) in INTERFILE_EXTENSIONS and _is_interfile(p)
    if interfile_orientation is not None and not interfile:
        raise UserError(f"an orientation can only be given for an Interfile image (its header has none); {p.name} "
                        "carries its own orientation")
    if p.is_dir():
        return read_dicom_folder(p)
    ext = file_extension(p)
    if interfile:
        return read_interfile(p, interfile_orientation)
    if ext in ITK_EXTENSIONS or ext in INTERFILE_EXTENSIONS:
        return _read_with_sitk(p)
    return _read_unknown(p)


def _read_unknown(path: Path) -> Volume:
    """Let SimpleITK guess the format of a file with an unfamiliar extension."""
    import SimpleITK as sitk

    try:
        with native_stderr_held_back():
            image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise UserError(f"could not read {path}: unsupported or damaged file; supported formats: {SUPPORTED_READ}") from None
    return _volume_from_image(image, path)


def read_dicom_folder(folder: PathLike) -> Volume:
    """Read the DICOM series directly inside ``folder`` (sub-folders are not searched).

    The files are grouped into series with GDCM (SimpleITK ``ImageSeriesReader.GetGDCMSeriesIDs``) and sorted
    by slice position. When the folder holds several series the one with the most files is read and a
    :class:`UserWarning` names the choice; put one series per folder to avoid the ambiguity.

    Raises:
        UserError: no DICOM series in the folder, or the series cannot be read.
    """
    import SimpleITK as sitk

    folder = Path(os.fspath(folder))
    reader = sitk.ImageSeriesReader()
    was_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints "No Series were found" to stderr otherwise
    try:
        series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in reader.GetGDCMSeriesIDs(str(folder))}
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(was_shown)
    if not series:
        raise UserError(f"no DICOM files found in the folder {folder} (the files of one series must be directly inside it)")
    chosen = max(series, key=lambda sid: len(series[sid]))
    if len(series) > 1:
        warnings.warn(
            f"{folder} holds {len(series)} DICOM series; reading the largest ({len(series[chosen])} files, "
            f"series UID {chosen})",
            UserWarning,
            stacklevel=2,
        )
    reader.SetFileNames(series[chosen])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise UserError(f"could not read the DICOM series in {folder}: {sitk_reason(exc)}") from None
    return _volume_from_image(image, folder)


# --- writing --------------------------------------------------------------------------------------
def write_volume(volume: Volume, path: PathLike) -> None:
    """Write ``volume`` as NRRD (``.nrrd``, gzip-encoded data) or NIfTI (``.nii``, or gzipped ``.nii.gz``) at ``path``.

    The image is first written to a hidden temporary file in the destination folder whose name keeps the real
    extension at its end (``.NAME.tmp-XXXXXXXX.nrrd``, so SimpleITK picks the format), then moved into place
    with :func:`os.replace`: a reader never sees a half-written file, and an existing file is replaced only by a
    complete one. Missing parent folders are created. The temporary file is removed if writing fails. The
    input volume is not modified. ``bool`` arrays are written as uint8 and ``float16`` as float32 (neither
    format stores them).

    Raises:
        UserError: unsupported extension, folder not writable, or the voxel type cannot be stored.
    """
    p = Path(os.fspath(path)).expanduser()
    ext = file_extension(p)
    if ext not in WRITE_EXTENSIONS:
        raise UserError(f"cannot write {p}: the output must end in .nrrd, .nii or .nii.gz")
    image = _writable_image(volume, p)
    with atomic_output(p) as tmp:
        _write_image(image, tmp, p)


def _writable_image(volume: Volume, path: Path):
    """A SimpleITK copy of ``volume`` in a voxel type NRRD and NIfTI can store."""
    array = volume.array
    if array.size == 0:
        raise UserError(f"cannot write {path}: the image has no voxels (size {' x '.join(map(str, volume.size))})")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    try:
        return to_sitk(volume.with_array(array) if array is not volume.array else volume)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"cannot write {path}: voxel type {volume.array.dtype} is not supported") from None


def _write_image(image, tmp: Path, final: Path) -> None:
    """Write ``image`` compressed to ``tmp``; SimpleITK errors become a one-line message about ``final``."""
    import SimpleITK as sitk

    try:
        sitk.WriteImage(image, str(tmp), True)
    except RuntimeError as exc:
        raise write_failure(final, sitk_reason(exc)) from None


# --- Interfile ------------------------------------------------------------------------------------
_INTERFILE_TYPES = {
    ("unsigned integer", 1): "u1",
    ("unsigned integer", 2): "u2",
    ("unsigned integer", 4): "u4",
    ("unsigned integer", 8): "u8",
    ("signed integer", 1): "i1",
    ("signed integer", 2): "i2",
    ("signed integer", 4): "i4",
    ("signed integer", 8): "i8",
    ("short float", 4): "f4",
    ("float", 4): "f4",
    ("float", 8): "f8",
    ("long float", 8): "f8",
}
_DEFAULT_BYTES = {"short float": 4, "long float": 8}


def _is_interfile(path: Path) -> bool:
    """True when the first non-empty line of ``path`` starts with ``!INTERFILE``."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    for line in head.decode("latin-1").splitlines():
        if line.strip():
            return line.strip().upper().startswith("!INTERFILE")
    return False


def _normalise_key(key: str) -> str:
    """``!Matrix Size[1]`` -> ``matrix size [1]``: lower case, no leading ``!``, single spaces."""
    key = key.strip().lstrip("!").strip().lower()
    key = re.sub(r"\s*\[\s*", " [", key)
    key = re.sub(r"\s*\]", "]", key)
    return re.sub(r"\s+", " ", key)


def parse_interfile_header(header_path: PathLike) -> Dict[str, str]:
    """The ``key := value`` pairs of an Interfile header, keys normalised (see below), values stripped.

    Keys are compared case-insensitively with the leading ``!`` (the standard's "required key" mark) removed
    and white space collapsed, e.g. ``!matrix size [1]``. Lines starting with ``;`` are comments; lines
    without ``:=`` and keys with an empty value are skipped; the first occurrence of a key wins.

    Raises:
        UserError: the file cannot be read or is not an Interfile header.
    """
    path = Path(os.fspath(header_path))
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise UserError(f"could not read {path}: {exc.strerror or exc}") from None
    if not _is_interfile(path):
        raise UserError(f"{path} is not an Interfile header (its first line must be '!INTERFILE :=')")
    header: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";") or ":=" not in line:
            continue
        key, value = line.split(":=", 1)
        key, value = _normalise_key(key), value.strip()
        if value and key not in header:
            header[key] = value
    return header


def _number(header: Dict[str, str], key: str, path: Path, integer: bool = False) -> Optional[float]:  # noqa: UP045 (py39 style, see pyproject)
    """The value of ``key`` as a float (or an int when ``integer``), None when absent.

    Raises:
        UserError: the value is not a finite number (or not a whole number when ``integer``).
    """
    if key not in header:
        return None
    try:
        value = float(header[key])
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or (integer and not value.is_integer()):
        kind = "a whole number" if integer else "a number"
        raise UserError(f"{path}: Interfile key '{key}' should be {kind}, got {header[key]!r}")
    return int(value) if integer else value


def _interfile_dtype(header: Dict[str, str], path: Path) -> np.dtype:
    """The numpy dtype (with byte order) from ``number format``, ``number of bytes per pixel`` and byte order."""
    fmt = re.sub(r"\s+", " ", header.get("number format", "").lower())
    nbytes = _number(header, "number of bytes per pixel", path, integer=True) or _DEFAULT_BYTES.get(fmt)
    code = _INTERFILE_TYPES.get((fmt, nbytes))
    if code is None:
        raise UserError(
            f"{path}: unsupported Interfile number format {header.get('number format', '(missing)')!r} "
            f"with {nbytes} bytes per pixel"
        )
    order = header.get("imagedata byte order", "BIGENDIAN").upper()
    if order not in ("LITTLEENDIAN", "BIGENDIAN"):
        raise UserError(f"{path}: unknown Interfile byte order {order!r} (expected LITTLEENDIAN or BIGENDIAN)")
    return np.dtype(("<" if order == "LITTLEENDIAN" else ">") + code)


def _interfile_size(header: Dict[str, str], path: Path) -> Tuple[int, int, int]:
    """``(nx, ny, nz)``: matrix size [1], [2], and [3] or number of slices or total number of images."""
    nx = _number(header, "matrix size [1]", path, integer=True)
    ny = _number(header, "matrix size [2]", path, integer=True)
    nz = None
    for key in ("matrix size [3]", "number of slices", "total number of images"):
        nz = _number(header, key, path, integer=True)
        if nz is not None:
            break
    if nx is None or ny is None:
        raise UserError(f"{path}: the Interfile header does not give 'matrix size [1]' and 'matrix size [2]'")
    if nz is None:
        raise UserError(f"{path}: the Interfile header does not give the number of slices; a 3D volume is required")
    if min(nx, ny, nz) < 1:
        raise UserError(f"{path}: invalid Interfile matrix size {nx}x{ny}x{nz}")
    return (nx, ny, nz)


def _interfile_spacing(header: Dict[str, str], path: Path) -> Tuple[float, float, float]:
    """Voxel size (mm): ``scaling factor (mm/pixel) [1..3]``, the slice step else from ``slice thickness (pixels)`` in mm."""
    sx = _number(header, "scaling factor (mm/pixel) [1]", path)
    sy = _number(header, "scaling factor (mm/pixel) [2]", path)
    sz = _number(header, "scaling factor (mm/pixel) [3]", path)
    if sz is None:
        sz = _number(header, "slice thickness (pixels)", path)  # GATE convention: millimetres, see read_interfile
    if sx is None or sy is None or sz is None:
        raise UserError(
            f"{path}: the Interfile header does not give the voxel size "
            "('scaling factor (mm/pixel) [1]', '[2]' and '[3]' or 'slice thickness (pixels)')"
        )
    return (abs(sx), abs(sy), abs(sz))


def _interfile_data_path(header: Dict[str, str], path: Path) -> Path:
    """The data file: ``name of data file`` relative to the header's folder (an absolute path that does not exist
    falls back to its file name next to the header)."""
    name = header.get("name of data file")
    if not name:
        raise UserError(f"{path}: the Interfile header does not give 'name of data file'")
    data = Path(name.replace("\\", "/"))
    candidates = [data] if data.is_absolute() else []
    candidates += [path.parent / data, path.parent / data.name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"Interfile data file {name!r} named in {path} not found (looked in {path.parent})")


def _interfile_offset(header: Dict[str, str], path: Path) -> int:
    """Bytes to skip: ``data offset in bytes``, else ``data starting block`` x 2048, else 0."""
    offset = _number(header, "data offset in bytes", path, integer=True)
    if offset is None:
        offset = 2048 * (_number(header, "data starting block", path, integer=True) or 0)
    if offset < 0:
        raise UserError(f"{path}: negative Interfile data offset {offset}")
    return offset


#: the assumed orientation of an Interfile image whose caller does not state one (see :func:`read_interfile`)
INTERFILE_DEFAULT_ORIENTATION = "LPS"


def read_interfile(header_path: PathLike, orientation: Optional[str] = None) -> Volume:  # noqa: UP045
    """Read an Interfile 3.3 image (header + raw data file) as a :class:`Volume`.

    Header keys used (case-insensitive, leading ``!`` optional):

    * ``name of data file``: relative to the header's folder;
    * ``data offset in bytes`` (or ``data starting block`` x 2048), default 0;
    * ``imagedata byte order``: ``LITTLEENDIAN`` or ``BIGENDIAN`` (the standard's default, used when absent);
    * ``number format`` (``unsigned integer``, ``signed integer``, ``short float``/``float``, ``long float``) with
      ``number of bytes per pixel``;
    * ``matrix size [1]`` (x, fastest in the file), ``matrix size [2]`` (y), and for z ``matrix size [3]``, else
      ``number of slices``, else ``total number of images``;
    * ``scaling factor (mm/pixel) [1]``, ``[2]`` and ``[3]`` for the voxel size.

    Conventions (choices, because Interfile leaves them open or is not followed in practice):

    * Slice spacing: when ``scaling factor (mm/pixel) [3]`` is absent, ``slice thickness (pixels)`` is taken
      **in millimetres**. The Interfile 3.3 standard says that key is in pixels, but GATE writes millimetres
      there, and so do the files we use (e.g. a 3.906 x 3.906 mm CT with ``slice thickness (pixels) := 4.4196``
      has 4.420 mm slices). A header that truly follows the standard and omits ``[3]`` would get a wrong
      slice spacing.
    * Position: Interfile has no origin; the volume is centred on (0, 0, 0) mm (GATE's convention for voxelised
      phantoms), i.e. the centre of the matrix is at (0, 0, 0) whatever the orientation.
    * Orientation: Interfile 3.3 has no image-direction keys (``patient orientation``/``patient rotation`` say how
      the patient lay in the scanner, not how the matrix is stored, and writers disagree), so the orientation is
      the caller's: ``orientation`` is the code of the patient directions in which the matrix's x, y and slice
      indices grow (:func:`~ImagingBasics.volume.direction_from_code`), e.g. ``"LAI"`` for the GATE Lu-177 patient
      example (its anatomy shows it: see :mod:`DoseCNNLib.phantoms.gate_patient`). Without it,
      :data:`INTERFILE_DEFAULT_ORIENTATION` ("LPS": x to the patient's left, y posterior, z superior, the DICOM
      order) is assumed and a ``UserWarning`` says so: check the image in a viewer.
    * Values: returned exactly as stored (native byte order, same type, e.g. uint16), without any rescaling;
      a CT stored as HU+1000 is still HU+1000.

    A data file longer than the declared matrix is read from its start (after the offset) with a warning.

    Raises:
        UserError: not an Interfile header, a required key is missing or invalid, the data file is missing,
        or it is shorter than the declared matrix.
    """
    path = Path(os.fspath(header_path)).expanduser()
    if not path.is_file():
        raise UserError(f"{path} not found")
    header = parse_interfile_header(path)
    dtype = _interfile_dtype(header, path)
    nx, ny, nz = _interfile_size(header, path)
    spacing = _interfile_spacing(header, path)
    data_path = _interfile_data_path(header, path)
    array = _read_raw(data_path, _interfile_offset(header, path), dtype, (nz, ny, nx), path)
    if orientation is None:
        warnings.warn(f"{path.name}: Interfile gives no image orientation; assumed {INTERFILE_DEFAULT_ORIENTATION} (x to "
                      "the patient's left, y posterior, slices toward the head): check the image in a viewer, and give its "
                      "orientation with `convert --orientation` (e.g. LAI for GATE's CTs) if it is another",
                      UserWarning, stacklevel=2)
    direction = direction_from_code(orientation or INTERFILE_DEFAULT_ORIENTATION)
    centre_index = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0, (nz - 1) / 2.0])
    origin = tuple(-(direction @ (centre_index * np.array(spacing))))  # the matrix centre at (0, 0, 0) mm
    return Volume(array, spacing, origin, direction)


def _read_raw(data_path: Path, offset: int, dtype: np.dtype, shape: Tuple[int, int, int], header_path: Path) -> np.ndarray:
    """Read ``shape`` voxels of ``dtype`` from ``data_path`` after ``offset`` bytes, in native byte order."""
    count = int(np.prod(shape))
    needed = offset + count * dtype.itemsize
    available = data_path.stat().st_size
    if available < needed:
        raise UserError(
            f"Interfile data file {data_path} is too short for the {shape[2]}x{shape[1]}x{shape[0]} {dtype.name} "
            f"matrix declared in {header_path.name} ({available} bytes, {needed} needed)"
        )
    if available > needed:
        extra = available - needed
        warnings.warn(f"{data_path} has {extra} bytes more than {header_path.name} declares", UserWarning, stacklevel=3)
    try:
        array = np.fromfile(data_path, dtype=dtype, count=count, offset=offset)
    except OSError as exc:
        raise UserError(f"could not read {data_path}: {exc.strerror or exc}") from None
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)
