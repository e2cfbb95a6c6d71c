"""Tests of ImagingBasics.imageio: reading/writing volumes, DICOM series, Interfile, geometry, errors, CLI."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from ImagingBasics.errors import UserError
from ImagingBasics.imageio import read_interfile, read_volume, write_volume
from ImagingBasics.volume import (
    Volume,
    direction_from_code,
    from_sitk,
    ijk_to_ras_matrix,
    orientation_code,
    to_sitk,
    volume_from_ijk_to_ras,
)


# --- helpers --------------------------------------------------------------------------------------
def _rotation(ax_deg: float, ay_deg: float, az_deg: float) -> np.ndarray:
    """A proper rotation matrix Rz @ Ry @ Rx (angles in degrees)."""
    ax, ay, az = (math.radians(a) for a in (ax_deg, ay_deg, az_deg))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


ROTATED = _rotation(20, -35, 50)
FLIPPED = np.diag([-1.0, -1.0, 1.0])  # an LPS->RAS-like axis flip (Slicer/NIfTI-style images)
ROTATED_IMPROPER = ROTATED @ np.diag([1.0, 1.0, -1.0])  # determinant -1: slices stored feet-first
DIRECTIONS = {"rotated": ROTATED, "flipped": FLIPPED, "improper": ROTATED_IMPROPER}
SPACING = (0.7, 1.3, 2.9)
ORIGIN = (-12.3, 33.3, 101.7)


def _test_array(dtype, shape: Tuple[int, int, int] = (5, 6, 7)) -> np.ndarray:
    """A deterministic array that uses the dtype's range (negative values for signed types)."""
    rng = np.random.default_rng(42)
    if np.issubdtype(dtype, np.floating):
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _assert_same_volume(actual: Volume, expected: Volume, tol: float) -> None:
    assert actual.array.dtype == expected.array.dtype
    np.testing.assert_array_equal(actual.array, expected.array)
    np.testing.assert_allclose(actual.spacing, expected.spacing, rtol=0, atol=tol)
    np.testing.assert_allclose(actual.origin, expected.origin, rtol=0, atol=tol)
    np.testing.assert_allclose(actual.direction, expected.direction, rtol=0, atol=tol)


def _assert_one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
@pytest.mark.parametrize("direction", sorted(DIRECTIONS))
@pytest.mark.parametrize("ext", [".nrrd", ".nii", ".nii.gz", ".mha"])
def test_round_trip_keeps_voxels_dtype_and_geometry(tmp_path, ext, direction, dtype):
    volume = Volume(_test_array(dtype), SPACING, ORIGIN, DIRECTIONS[direction])
    path = tmp_path / f"image{ext}"
    if ext == ".mha":
        sitk.WriteImage(to_sitk(volume), str(path))  # write_volume writes only NRRD and NIfTI
    else:
        write_volume(volume, path)
    back = read_volume(path)
    # NIfTI keeps spacing and the qform/sform in float32: ~1e-7 relative error, so allow 1e-4 mm.
    _assert_same_volume(back, volume, tol=1e-4 if ext.startswith(".nii") else 1e-5)


def test_nrrd_is_compressed(tmp_path):
    volume = Volume(np.zeros((20, 30, 40), np.int16))
    path = tmp_path / "zeros.nrrd"
    write_volume(volume, path)
    assert path.stat().st_size < volume.array.nbytes / 10
    assert b"encoding: gzip" in path.read_bytes()[:1000]


def test_single_slice_3d_volume_is_accepted(tmp_path):
    volume = Volume(np.arange(12, dtype=np.int16).reshape(1, 3, 4), (1.0, 2.0, 3.0))
    write_volume(volume, tmp_path / "one.nrrd")
    back = read_volume(tmp_path / "one.nrrd")
    assert back.shape == (1, 3, 4)
    _assert_same_volume(back, volume, tol=1e-6)


def test_read_volume_accepts_str_and_uppercase_extension(tmp_path):
    volume = Volume(_test_array(np.int16), SPACING, ORIGIN)
    path = tmp_path / "UPPER.NRRD"
    sitk.WriteImage(to_sitk(volume), str(path))
    _assert_same_volume(read_volume(str(path)), volume, tol=1e-6)


# --- write_volume behaviour -------------------------------------------------------------------------
def test_write_volume_leaves_no_temp_file_and_does_not_touch_input(tmp_path):
    array = _test_array(np.float32)
    original = array.copy()
    volume = Volume(array, SPACING, ORIGIN, ROTATED)
    write_volume(volume, tmp_path / "a.nrrd")
    write_volume(volume, tmp_path / "b.nii.gz")
    write_volume(volume.with_array(array * 2), tmp_path / "a.nrrd")  # overwrite an existing file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nrrd", "b.nii.gz"]
    np.testing.assert_array_equal(volume.array, original)
    np.testing.assert_array_equal(read_volume(tmp_path / "a.nrrd").array, original * 2)


def test_write_volume_creates_parent_folders(tmp_path):
    path = tmp_path / "new" / "deeper" / "out.nii"
    write_volume(Volume(np.ones((2, 3, 4), np.uint8)), path)
    assert path.is_file()
    assert read_volume(path).array.sum() == 24


def test_write_volume_stores_bool_as_uint8(tmp_path):
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 2, 3] = True
    write_volume(Volume(mask), tmp_path / "mask.nrrd")
    back = read_volume(tmp_path / "mask.nrrd")
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask.astype(np.uint8))


@pytest.mark.parametrize("name", ["out.png", "out.mha", "out", "out.nii.bz2"])
def test_write_volume_rejects_unsupported_extension(tmp_path, name):
    with pytest.raises(UserError) as excinfo:
        write_volume(Volume(np.zeros((2, 2, 2), np.uint8)), tmp_path / name)
    _assert_one_line_error(excinfo, ".nrrd", ".nii")
    assert list(tmp_path.iterdir()) == []


def test_write_volume_failure_removes_temp_file(tmp_path):
    target = tmp_path / "out.nrrd"
    target.mkdir()  # a folder where the file should go: the final os.replace fails
    with pytest.raises(UserError) as excinfo:
        write_volume(Volume(np.zeros((2, 2, 2), np.uint8)), target)
    _assert_one_line_error(excinfo, "out.nrrd")
    assert [p.name for p in tmp_path.iterdir()] == ["out.nrrd"]
    assert target.is_dir()


# --- DICOM ------------------------------------------------------------------------------------------
def _write_dicom_series(
    folder: Path, array: np.ndarray, spacing: Sequence[float], origin: Sequence[float], series_uid: str, prefix: str = "s"
) -> None:
    """Write an int16 ``array[z, y, x]`` as an axial CT series, one file per slice, with explicit geometry tags."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        image = sitk.GetImageFromArray(array[k].astype(np.int16))
        image.SetSpacing((spacing[0], spacing[1]))
        position = (origin[0], origin[1], origin[2] + k * spacing[2])
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.99.1",
            "0020|000e": series_uid,
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(k + 1),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",  # row spacing (y) then column spacing (x)
            "0018|0050": str(spacing[2]),
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(image)


def test_dicom_series_folder_reads_back(tmp_path):
    array = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 37 - 1500).astype(np.int16)
    spacing, origin = (0.8, 0.9, 2.5), (-100.25, -50.5, 20.0)
    _write_dicom_series(tmp_path / "ct", array, spacing, origin, "1.2.826.0.1.3680043.2.1125.99.2")
    volume = read_volume(tmp_path / "ct")
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, spacing, atol=1e-3)
    np.testing.assert_allclose(volume.origin, origin, atol=1e-3)
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-6)


def test_dicom_folder_with_two_series_reads_the_largest_and_warns(tmp_path):
    big = np.full((4, 3, 3), 7, np.int16)
    small = np.full((2, 3, 3), -5, np.int16)
    _write_dicom_series(tmp_path, big, (1, 1, 2), (0, 0, 0), "1.2.826.0.1.3680043.2.1125.99.3", prefix="a")
    _write_dicom_series(tmp_path, small, (1, 1, 2), (0, 0, 0), "1.2.826.0.1.3680043.2.1125.99.4", prefix="b")
    with pytest.warns(UserWarning, match="2 DICOM series"):
        volume = read_volume(tmp_path)
    np.testing.assert_array_equal(volume.array, big)


def test_empty_folder_is_a_user_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image\n")
    with pytest.raises(UserError) as excinfo:
        read_volume(tmp_path)
    _assert_one_line_error(excinfo, "no DICOM files", str(tmp_path))


# --- Slicer IJK-to-RAS geometry ---------------------------------------------------------------------
def test_ijk_to_ras_matrix_hand_computed_case():
    volume = Volume(np.zeros((2, 2, 2)), (2.0, 3.0, 4.0), (10.0, 20.0, 30.0))
    expected = np.array([[-2, 0, 0, -10], [0, -3, 0, -20], [0, 0, 4, 30], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_allclose(ijk_to_ras_matrix(volume), expected, atol=1e-12)


@pytest.mark.parametrize(
    "spacing, origin, direction",
    [
        ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)),
        ((0.5, 0.75, 3.0), (-120.0, 85.5, -300.25), np.eye(3)),
        (SPACING, ORIGIN, ROTATED),
        (SPACING, ORIGIN, FLIPPED),
        (SPACING, ORIGIN, ROTATED_IMPROPER),
    ],
)
def test_volume_from_ijk_to_ras_inverts_ijk_to_ras_matrix(spacing, origin, direction):
    volume = Volume(_test_array(np.int16), spacing, origin, direction)
    back = volume_from_ijk_to_ras(volume.array, ijk_to_ras_matrix(volume))
    _assert_same_volume(back, volume, tol=1e-9)


def test_ijk_to_ras_maps_voxels_to_ras_points():
    volume = Volume(np.zeros((3, 4, 5)), SPACING, ORIGIN, ROTATED)
    ijk = np.array([[0, 0, 0], [4, 3, 2], [1.5, 0.25, 2]])
    ras = (ijk_to_ras_matrix(volume) @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    lps = volume.index_to_lps(ijk)
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-9)


def test_index_to_lps_agrees_with_simpleitk():
    volume = Volume(np.zeros((3, 4, 5), np.float32), SPACING, ORIGIN, ROTATED_IMPROPER)
    image = to_sitk(volume)
    ijk = np.array([[0, 0, 0], [4, 3, 2], [1.5, -0.5, 2.25], [10, 20, 30]])
    expected = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(map(float, p))) for p in ijk])
    np.testing.assert_allclose(volume.index_to_lps(ijk), expected, atol=1e-9)
    np.testing.assert_allclose(volume.lps_to_index(expected), ijk, atol=1e-9)


# --- Interfile --------------------------------------------------------------------------------------
def _write_interfile(
    folder: Path,
    array: np.ndarray,
    number_format: str,
    byte_order: str,
    spacing_lines: Sequence[str] = ("scaling factor (mm/pixel) [1] := 2.5", "scaling factor (mm/pixel) [2] := 3.0",
                                    "slice thickness (pixels) := 4.25"),
    offset: int = 0,
    truncate_bytes: int = 0,
    write_data: bool = True,
) -> Path:
    """Write ``array[z, y, x]`` as ``img.h33`` + ``img.i33`` (keys in mixed case, a comment, GATE-style layout)."""
    nz, ny, nx = array.shape
    dtype = array.dtype.newbyteorder("<" if byte_order == "LITTLEENDIAN" else ">")
    data = b"\0" * offset + array.astype(dtype).tobytes()
    if truncate_bytes:
        data = data[:-truncate_bytes]
    if write_data:
        (folder / "img.i33").write_bytes(data)
    lines = [
        "!INTERFILE :=",
        "; a comment line := with a separator",
        "!imaging modality := nucmed",
        f"!data offset in bytes := {offset}",
        "!name of data file := img.i33",
        f"imagedata byte order := {byte_order}",
        f"!Matrix Size[1] := {nx}",
        f"!MATRIX SIZE [2] := {ny}",
        f"!number format := {number_format}",
        f"!number of bytes per pixel := {array.dtype.itemsize}",
        f"!number of slices := {nz}",
        *spacing_lines,
        "!END OF INTERFILE :=",
    ]
    header = folder / "img.h33"
    header.write_text("\n".join(lines) + "\n")
    return header


def test_interfile_uint16_little_endian_reads_exactly(tmp_path):
    array = _test_array(np.uint16, (4, 3, 5))
    header = _write_interfile(tmp_path, array, "unsigned integer", "LITTLEENDIAN", offset=16)
    with pytest.warns(UserWarning, match="Interfile gives no image orientation; assumed LPS"):
        volume = read_volume(header)
    assert volume.array.dtype == np.uint16
    np.testing.assert_array_equal(volume.array, array)
    # slice thickness (pixels) is read as millimetres (GATE convention)
    np.testing.assert_allclose(volume.spacing, (2.5, 3.0, 4.25))
    # centred on (0, 0, 0): voxel [0,0,0] at -(n-1)/2 * spacing, identity direction
    np.testing.assert_allclose(volume.origin, (-2 * 2.5, -1 * 3.0, -1.5 * 4.25))
    np.testing.assert_array_equal(volume.direction, np.eye(3))
    centre = volume.index_to_lps(np.array([(5 - 1) / 2, (3 - 1) / 2, (4 - 1) / 2]))
    np.testing.assert_allclose(centre, 0, atol=1e-12)


@pytest.mark.parametrize("code, diagonal", [("LPS", (1, 1, 1)), ("LAI", (1, -1, -1)), ("RAS", (-1, -1, 1))])
def test_interfile_orientation_is_the_callers_and_the_centre_stays_at_zero(tmp_path, code, diagonal):
    array = _test_array(np.uint16, (4, 3, 5))
    header = _write_interfile(tmp_path, array, "unsigned integer", "LITTLEENDIAN")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stated orientation: no warning
        volume = read_interfile(header, code)
    np.testing.assert_array_equal(volume.direction, np.diag(diagonal))
    np.testing.assert_array_equal(volume.array, array)  # the voxels are not reordered, only placed
    centre = volume.index_to_lps(np.array([(5 - 1) / 2, (3 - 1) / 2, (4 - 1) / 2]))
    np.testing.assert_allclose(centre, 0, atol=1e-12)
    first = volume.index_to_lps(np.zeros(3))  # voxel [0, 0, 0] lies toward the code's opposite directions
    assert np.all(np.sign(first) == -np.array(diagonal))
    assert orientation_code(volume.direction) == code


def test_orientation_codes():
    np.testing.assert_array_equal(direction_from_code("lps"), np.eye(3))
    assert orientation_code(direction_from_code("ASL")) == "ASL"  # axes may be permuted (a sagittal stack)
    for bad in ("LP", "LPX", "LLS", "PAS"):
        with pytest.raises(UserError, match="orientation code"):
            direction_from_code(bad)


def test_interfile_float32_big_endian_reads_exactly(tmp_path):
    array = _test_array(np.float32, (3, 4, 2))
    spacing_lines = [
        "scaling factor (mm/pixel) [1] := 1.5",
        "scaling factor (mm/pixel) [2] := 1.5",
        "scaling factor (mm/pixel) [3] := 2.0",
        "slice thickness (pixels) := 1",  # standard-conforming (pixels); [3] takes precedence
    ]
    header = _write_interfile(tmp_path, array, "short float", "BIGENDIAN", spacing_lines=spacing_lines)
    volume = read_interfile(header)
    assert volume.array.dtype == np.float32 and volume.array.dtype.isnative
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, (1.5, 1.5, 2.0))


def test_interfile_missing_data_file_is_a_user_error(tmp_path):
    header = _write_interfile(tmp_path, np.zeros((2, 2, 2), np.uint16), "unsigned integer", "LITTLEENDIAN", write_data=False)
    with pytest.raises(UserError) as excinfo:
        read_volume(header)
    _assert_one_line_error(excinfo, "img.i33", "not found")


def test_interfile_truncated_data_is_a_user_error(tmp_path):
    header = _write_interfile(tmp_path, np.zeros((2, 3, 4), np.uint16), "unsigned integer", "LITTLEENDIAN", truncate_bytes=2)
    with pytest.raises(UserError) as excinfo:
        read_volume(header)
    _assert_one_line_error(excinfo, "too short", "46 bytes", "48 needed")


def test_interfile_without_voxel_size_is_a_user_error(tmp_path):
    header = _write_interfile(tmp_path, np.zeros((2, 2, 2), np.uint8), "unsigned integer", "LITTLEENDIAN", spacing_lines=())
    with pytest.raises(UserError) as excinfo:
        read_volume(header)
    _assert_one_line_error(excinfo, "voxel size")


def test_interfile_real_lu177_patient_ct(shared_data):
    header = shared_data / "real" / "lu177_dotatate_patient15" / "patient15_LuDOTATATE_attn.h33"
    if not header.is_file():
        pytest.skip(f"{header} not available")
    volume = read_volume(header)
    assert volume.shape == (90, 70, 108)
    assert volume.array.dtype == np.uint16
    np.testing.assert_allclose(volume.spacing, (3.9063, 3.9063, 4.4196), atol=1e-6)
    hu = volume.array.astype(np.int32) - 1000  # stored as HU+1000
    corners = np.array([hu[z, y, x] for z in (0, -1) for y in (0, -1) for x in (0, -1)])
    assert np.median(corners) < -900  # air outside the body
    assert np.count_nonzero(hu > 200) > 100  # bone
    assert np.count_nonzero(np.abs(hu) < 100) > 0.1 * hu.size  # soft tissue fills much of the volume


def test_interfile_real_kernel_hdr(shared_data):
    header = shared_data / "reference" / "pytheranostics_lu177_kernel" / "DK_softtissueICRP_mGyperMBqs.hdr"
    if not header.is_file():
        pytest.skip(f"{header} not available")
    volume = read_volume(header)  # .hdr with an Interfile header, "short float", "total number of images := 1"
    assert volume.shape == (51, 51, 51)
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.spacing, (4.7952,) * 3, atol=1e-6)
    assert np.unravel_index(np.argmax(volume.array), volume.shape) == (25, 25, 25)


# --- real CT files ----------------------------------------------------------------------------------
def test_real_feet_first_dicom_series_is_placed_by_its_image_positions(shared_data):
    folder = shared_data / "real" / "lidc_idri_0001_dicom"
    volume = read_volume(folder)
    files = sorted(folder.glob("*.dcm"))
    positions = []
    for f in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        reader.ReadImageInformation()
        positions.append([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
    positions = np.array(sorted(positions, key=lambda p: p[2]))  # every slice's Image Position (Patient), LPS mm
    corners = np.array([volume.index_to_lps(np.array([0.0, 0.0, k])) for k in range(volume.shape[0])])
    np.testing.assert_allclose(np.sort(corners[:, 2]), positions[:, 2], atol=1e-3)
    np.testing.assert_allclose(corners[:, :2].mean(axis=0), positions[:, :2].mean(axis=0), atol=1e-3)
    assert volume.direction[2, 2] != 0 and abs(abs(volume.direction[2, 2]) - 1) < 1e-6  # axial slices



def test_real_cip_chest_ct_nrrd(shared_data):
    path = shared_data / "real" / "cip_chest_ct" / "ct-64.nrrd"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    volume = read_volume(path)
    assert volume.shape == (79, 64, 64)
    np.testing.assert_allclose(volume.spacing, (4.172, 4.172, 3.987), atol=1e-3)
    assert volume.array.min() < -900 and volume.array.max() > 300  # HU: air and bone


def test_real_totalsegmentator_nifti_files_are_3d(shared_data):
    folder = shared_data / "real" / "totalsegmentator_chest_ct"
    files = sorted(folder.glob("*.nii.gz"))
    if not files:
        pytest.skip(f"no NIfTI files in {folder}")
    for path in files:
        volume = read_volume(path)
        assert volume.array.ndim == 3 and min(volume.shape) > 1, path.name
        assert min(volume.spacing) > 0.5, path.name


# --- bad inputs -------------------------------------------------------------------------------------
def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as excinfo:
        read_volume(tmp_path / "missing.nrrd")
    _assert_one_line_error(excinfo, "missing.nrrd", "not found")


def test_garbage_nrrd_is_a_one_line_user_error(tmp_path):
    path = tmp_path / "x.nrrd"
    path.write_text("this is not\nan image\n")
    with pytest.raises(UserError) as excinfo:
        read_volume(path)
    message = _assert_one_line_error(excinfo, "x.nrrd", "could not read")
    assert ".cxx" not in message


def test_unknown_extension_lists_supported_formats(tmp_path):
    path = tmp_path / "x.foo"
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(UserError) as excinfo:
        read_volume(path)
    _assert_one_line_error(excinfo, "x.foo", "NRRD", "NIfTI", "DICOM", "Interfile")


@pytest.mark.parametrize("name", ["flat.png", "flat.nrrd", "flat.nii"])
def test_2d_image_is_rejected(tmp_path, name):
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.uint8)), str(path))
    assert sitk.ReadImage(str(path)).GetDimension() == 2
    with pytest.raises(UserError) as excinfo:
        read_volume(path)
    _assert_one_line_error(excinfo, name, "3D volume is required")


def test_vector_image_is_rejected(tmp_path):
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 3), np.uint8), isVector=True), str(path))
    with pytest.raises(UserError) as excinfo:
        read_volume(path)
    _assert_one_line_error(excinfo, "rgb.nrrd", "3 components")


def test_non_interfile_hdr_goes_to_simpleitk(tmp_path):
    volume = Volume(_test_array(np.int16), (1.0, 2.0, 3.0))
    path = tmp_path / "analyze.hdr"
    sitk.WriteImage(to_sitk(volume), str(path))  # Analyze/NIfTI pair .hdr + .img
    np.testing.assert_array_equal(read_volume(path).array, volume.array)


def test_to_sitk_from_sitk_is_exact(tmp_path):
    volume = Volume(_test_array(np.float32), SPACING, ORIGIN, ROTATED)
    _assert_same_volume(from_sitk(to_sitk(volume)), volume, tol=0)


# --- command line -----------------------------------------------------------------------------------
def test_cli_convert_interfile_adds_offset_value(tmp_path):
    from DoseCNNLib.cli import main

    array = np.array([[[0, 1000], [1500, 3000]]], dtype=np.uint16)
    header = _write_interfile(tmp_path, array, "unsigned integer", "LITTLEENDIAN")
    out = tmp_path / "out" / "ct.nrrd"
    assert main(["convert", str(header), str(out), "--add", "-1000"]) == 0
    converted = read_volume(out)
    np.testing.assert_array_equal(converted.array, array.astype(np.float32) - 1000)
    np.testing.assert_allclose(converted.spacing, (2.5, 3.0, 4.25))


def test_cli_convert_gives_an_interfile_image_its_orientation(tmp_path, capsys):
    from CTPerfusionMappingLib.cli import main

    array = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    header = _write_interfile(tmp_path, array, "unsigned integer", "LITTLEENDIAN")
    assert main(["convert", str(header), str(tmp_path / "lai.nrrd"), "--orientation", "LAI"]) == 0
    lai = read_volume(tmp_path / "lai.nrrd")
    np.testing.assert_array_equal(lai.direction, np.diag([1.0, -1.0, -1.0]))
    np.testing.assert_array_equal(lai.array, array)  # the voxels as stored; only where they lie changes
    nrrd = tmp_path / "lai.nrrd"
    before = nrrd.read_bytes()
    capsys.readouterr()
    assert main(["convert", str(nrrd), str(tmp_path / "again.nrrd"), "--orientation", "LPS"]) == 2
    assert main(["convert", str(nrrd), str(tmp_path / ".." / tmp_path.name / "lai.nrrd")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: an orientation can only be given for an Interfile image")
    assert err[1].startswith("error: the output") and "is the input" in err[1]
    assert nrrd.read_bytes() == before and not (tmp_path / "again.nrrd").exists()


def test_cli_info_missing_file_prints_one_error_line(tmp_path, capsys):
    from DoseCNNLib.cli import main

    assert main(["info", str(tmp_path / "missing.nrrd")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not found" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_cli_info_prints_geometry(tmp_path, capsys):
    from DoseCNNLib.cli import main

    path = tmp_path / "v.nrrd"
    write_volume(Volume(np.zeros((3, 4, 5), np.int16), (1.0, 2.0, 3.0)), path)
    assert main(["info", str(path)]) == 0
    assert "5x4x3 voxels" in capsys.readouterr().out


def _nifti_with_codes(path: Path, qform: int, sform: int) -> Path:
    """A float NIfTI-1 file written by ITK, then its qform_code/sform_code set by hand (header bytes 252-255)."""
    import gzip

    write_volume(Volume(np.zeros((3, 4, 5), np.float32), (1.0, 1.0, 2.0)), path)
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[252:256] = np.array([qform, sform], "<i2").tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def test_a_header_without_orientation_is_read_as_lps_with_a_warning(tmp_path):
    a = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    stated = tmp_path / "stated.nrrd"
    write_volume(Volume(a, (1.0, 1.0, 2.0)), stated)
    bare = tmp_path / "bare.nrrd"  # a NRRD written by a tool that knows no patient frame
    bare.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 5 4 3\nspacings: 1 1 2\nencoding: raw\n"
                     b"endian: little\n\n" + a.astype("<f4").tobytes())
    mha = tmp_path / "bare.mha"
    mha.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 5 4 3\nElementSpacing = 1 1 2\nElementType = MET_FLOAT\n"
                    b"ElementByteOrderMSB = False\nElementDataFile = LOCAL\n" + a.astype("<f4").tobytes())
    unstated = {bare: "no space or space directions", mha: "no TransformMatrix",
                _nifti_with_codes(tmp_path / "codes0.nii.gz", 0, 0): "qform_code and sform_code 0"}
    for path, missing in unstated.items():
        with pytest.warns(UserWarning, match="orientation is not stated") as record:
            volume = read_volume(path)
        assert missing in str(record[0].message) and f"{path.name}:" in str(record[0].message)
        np.testing.assert_array_equal(volume.direction, np.eye(3))  # as if LPS, as the warning says
    for path in (stated, _nifti_with_codes(tmp_path / "sform.nii.gz", 0, 2),
                 _nifti_with_codes(tmp_path / "qform.nii.gz", 1, 0)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a header that states it: no warning
            read_volume(path)


def test_cli_prints_a_reader_warning_as_one_warning_line(tmp_path):
    """In a child process: under pytest, warnings are recorded rather than printed."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    bare = tmp_path / "bare.nrrd"
    bare.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nspacings: 1 1 1\nencoding: raw\n"
                     b"endian: little\n\n" + np.zeros(64, "<i2").tobytes())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(root / p) for p in ("", "DoseCNN", "CTPerfusionMapping")))
    done = subprocess.run([sys.executable, "-m", "DoseCNNLib.cli", "info", str(bare)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith(f"{bare}: ")
    assert done.stderr.startswith("warning: bare.nrrd: the image orientation is not stated")
    assert done.stderr.count("\n") == 1, done.stderr  # one line: no file name, line number or source line
