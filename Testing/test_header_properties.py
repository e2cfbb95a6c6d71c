"""Property-based tests (hypothesis) of the image readers, writers and validators over image headers and voxel types.

Generated: sizes including 0 and 1, voxel spacings including 0, negative, NaN, infinite and huge ones, directions that
are rotations, flips, permutations or not orthonormal at all (shears, scalings, a zero or NaN matrix), every voxel type
a file or an array may hold (bool, int8 to uint64, float16 to float64, complex) and NaN/infinite values. For each,
:class:`~ImagingBasics.volume.Volume`, :func:`~ImagingBasics.imageio.write_volume`,
:func:`~ImagingBasics.imageio.read_volume` (on files written by the project and on NRRD and MetaImage headers written
by hand, as a damaged export would have them) and :func:`~ImagingBasics.validation.check_ct` either work, and then keep
the geometry (exactly for NRRD, to NIfTI's float32 for NIfTI), or raise a one-line
:class:`~ImagingBasics.errors.UserError`: never another exception, never a second line.

Kept fast: few examples per property (HEADER_EXAMPLES=2000 in the environment explores further), no deadline (the
first SimpleITK call is slow), no example database.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ImagingBasics.errors import UserError
from ImagingBasics.imageio import read_volume, write_volume
from ImagingBasics.validation import check_ct, check_label_map
from ImagingBasics.volume import Volume

#: examples per property; HEADER_EXAMPLES=2000 explores further, with other examples on every run (not derandomized)
EXAMPLES = int(os.environ.get("HEADER_EXAMPLES", "50"))
FAST = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize="HEADER_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.float16,
          np.float32, np.float64, np.complex64, np.complex128]
ODD_NUMBERS = [0.0, -0.0, -1.0, -2.5, math.nan, math.inf, -math.inf, 1e-300, 1e300, 5e-324]


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = math.cos(a), math.sin(a), math.cos(b), math.sin(b), math.cos(c), math.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


angles = st.floats(-math.pi, math.pi, allow_nan=False)
orthonormal = st.one_of(
    st.just(np.eye(3)),
    st.tuples(st.sampled_from([1.0, -1.0]), st.sampled_from([1.0, -1.0]), st.sampled_from([1.0, -1.0])).map(np.diag),
    st.permutations(range(3)).map(lambda p: np.eye(3)[list(p)]),
    st.tuples(angles, angles, angles).map(lambda t: _rotation(*t)),
)
not_orthonormal = st.one_of(
    st.just(np.zeros((3, 3))),
    st.just(np.full((3, 3), math.nan)),
    st.floats(0.01, 0.9).map(lambda s: np.array([[1.0, s, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])),  # a shear
    st.floats(1.1, 5.0).map(lambda s: np.diag([s, 1.0, 1.0])),  # a scaling
)
good_spacing = st.floats(0.05, 50.0, allow_nan=False)
any_spacing = st.one_of(good_spacing, st.sampled_from(ODD_NUMBERS))
good_origin = st.floats(-1e4, 1e4, allow_nan=False)
shapes = st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5))
small_shapes = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))


def _array(draw, shape, dtype) -> np.ndarray:
    """Voxels of ``dtype`` drawn from the type's extremes and, for floating-point types, NaN and infinities (a seed
    drawn by hypothesis picks them: fast, and still shrinks to few distinct values)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if np.dtype(dtype) == np.bool_:
        pool = np.array([False, True])
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        pool = np.array([info.min, info.max, 0, 1, 2], dtype=dtype)
    else:
        pool = np.array([math.nan, math.inf, -math.inf, 0.0, -1000.0, 40.0, 3000.0, 0.5], dtype=dtype)
        if draw(st.booleans()):  # finite values only: the other half of the examples
            pool = pool[np.isfinite(pool)]
    return rng.choice(pool, size=shape).astype(dtype)


@st.composite
def volumes_or_arguments(draw):
    """Arguments of Volume(...): any shape (incl. 0 and 1), dtype, spacing, origin and direction."""
    shape = draw(shapes)
    dtype = draw(st.sampled_from(DTYPES))
    spacing = draw(st.tuples(any_spacing, any_spacing, any_spacing))
    origin = draw(st.tuples(st.one_of(good_origin, st.sampled_from(ODD_NUMBERS)), good_origin, good_origin))
    direction = draw(st.one_of(orthonormal, not_orthonormal))
    return _array(draw, shape, dtype), spacing, origin, direction


@st.composite
def plausible_volumes(draw, shape_strategy=small_shapes, dtypes=DTYPES):
    """Volumes that construct: positive finite spacing, a finite origin, an orthonormal direction."""
    shape = draw(shape_strategy)
    array = _array(draw, shape, draw(st.sampled_from(dtypes)))
    spacing = draw(st.tuples(good_spacing, good_spacing, good_spacing))
    origin = draw(st.tuples(good_origin, good_origin, good_origin))
    return Volume(array, spacing, origin, draw(orthonormal))


def _one_line(exc: UserError) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text


def _read_or_refuse(content: bytes, name: str):
    """Read a hand-written image file: the Volume, or None when it was refused with a one-line UserError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            return read_volume(path)
        except UserError as exc:
            _one_line(exc)
            return None


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    if np.iscomplexobj(a) or np.issubdtype(a.dtype, np.floating):
        return np.array_equal(a, b, equal_nan=True)
    return np.array_equal(a, b)


# --- Volume ----------------------------------------------------------------------------------------------------------
@FAST
@given(volumes_or_arguments())
def test_a_volume_is_made_or_refused_in_one_line(arguments):
    array, spacing, origin, direction = arguments
    try:
        volume = Volume(array, spacing, origin, direction)
    except UserError as exc:
        _one_line(exc)
        return
    assert all(math.isfinite(s) and s > 0 for s in volume.spacing)
    assert all(math.isfinite(o) for o in volume.origin)
    assert np.allclose(volume.direction.T @ volume.direction, np.eye(3), atol=1e-4)
    assert volume.shape == array.shape and volume.size == array.shape[::-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # describe() is one line for the logs: no warning besides it
        line = volume.describe()
    assert "\n" not in line


# --- check_ct and check_label_map ------------------------------------------------------------------------------------
@FAST
@given(plausible_volumes(shapes.filter(lambda s: 0 in s) | small_shapes | st.just((4, 4, 4))))
def test_check_ct_gives_warnings_or_one_line(volume):
    try:
        warnings_found = check_ct(volume)
    except UserError as exc:
        _one_line(exc)
        return
    a = volume.array
    assert a.size and min(volume.size) >= 4 and not np.iscomplexobj(a)
    assert not np.issubdtype(a.dtype, np.floating) or np.isfinite(a).all()
    assert float(a.min()) <= -500 and all(0.1 <= s <= 10 for s in volume.spacing)
    assert all("\n" not in str(w) for w in warnings_found)


@FAST
@given(plausible_volumes())
def test_check_label_map_accepts_whole_numbers_only(volume):
    a = volume.array
    try:
        check_label_map(volume)
    except UserError as exc:
        _one_line(exc)
        return
    if a.dtype != bool:
        assert np.isrealobj(a) and np.isfinite(a.astype(np.float64)).all()
        assert np.array_equal(a, np.round(a)) and (a.size == 0 or a.min() >= 0)


# --- write_volume and read_volume ------------------------------------------------------------------------------------
@FAST
@given(plausible_volumes(shapes | small_shapes), st.sampled_from([".nrrd", ".nii.gz", ".nii"]))
def test_written_volumes_read_back_with_their_geometry(volume, extension):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"image{extension}"
        try:
            write_volume(volume, path)
        except UserError as exc:
            _one_line(exc)
            assert not path.exists() and not list(Path(folder).iterdir()), "a refused write left a file"
            return
        back = read_volume(path)
    assert back.shape == volume.shape
    if extension == ".nrrd":  # NRRD keeps every double; it stores spacing x direction, which ITK's reader divides
        assert back.origin == volume.origin  # again: the direction comes back to an ulp (1 - 1e-16 for 1), and when
        if set(np.unique(volume.direction)) <= {-1.0, 0.0, 1.0}:  # rotated the spacing too
            assert back.spacing == volume.spacing
        else:
            assert np.allclose(back.spacing, volume.spacing, rtol=1e-14, atol=0)
        assert np.allclose(back.direction, volume.direction, atol=1e-14, rtol=0)
    else:  # NIfTI stores spacing, origin and orientation as float32 (quaternions: a rotation is rounded a little)
        assert np.allclose(back.spacing, volume.spacing, rtol=1e-6, atol=0)
        assert np.allclose(back.origin, volume.origin, rtol=1e-6, atol=1e-3)
        assert np.allclose(back.direction, volume.direction, atol=1e-5)
    expected = volume.array
    if expected.dtype == np.bool_:
        expected = expected.astype(np.uint8)
    elif expected.dtype == np.float16:
        expected = expected.astype(np.float32)
    assert back.array.dtype == expected.dtype and _same_values(back.array, expected)


@st.composite
def nrrd_headers(draw):
    """A hand-written NRRD header (what a damaged export holds) with matching raw data, or data too short."""
    kinds = {"uchar": np.uint8, "short": np.int16, "ushort": np.uint16, "int": np.int32, "float": np.float32,
             "double": np.float64, "int64": np.int64}
    kind = draw(st.sampled_from(sorted(kinds)))
    dimension = draw(st.sampled_from([3, 3, 3, 2, 4]))
    sizes = draw(st.lists(st.integers(0, 4), min_size=dimension, max_size=dimension))
    direction = draw(st.one_of(orthonormal, not_orthonormal))
    spacing = draw(st.tuples(any_spacing, any_spacing, any_spacing))
    columns = direction * np.array(spacing)[None, :] if dimension == 3 else np.eye(dimension)
    origin = draw(st.tuples(st.one_of(good_origin, st.sampled_from([math.nan, math.inf])), good_origin, good_origin))

    def vector(values):
        return "(" + ",".join(repr(float(v)) for v in values) + ")"

    lines = ["NRRD0004", f"type: {kind}", f"dimension: {dimension}", "sizes: " + " ".join(map(str, sizes))]
    if dimension == 3:
        lines += ["space: left-posterior-superior",
                  "space directions: " + " ".join(vector(columns[:, i]) for i in range(3)),
                  f"space origin: {vector(origin)}"]
    lines += ["encoding: raw", "endian: little", "", ""]
    n = int(np.prod(sizes))
    data = np.zeros(n, kinds[kind]).tobytes()
    if draw(st.booleans()) and data:
        data = data[: len(data) // 2]  # a truncated file
    return "\n".join(lines).encode("ascii") + data, dimension, sizes, np.linalg.norm(columns, axis=0)


@st.composite
def metaimage_headers(draw):
    """A hand-written MetaImage (.mha) header with its data."""
    sizes = draw(st.lists(st.integers(0, 4), min_size=3, max_size=3))
    spacing = draw(st.tuples(any_spacing, any_spacing, any_spacing))
    direction = draw(st.one_of(orthonormal, not_orthonormal))
    element = draw(st.sampled_from(["MET_FLOAT", "MET_SHORT", "MET_UCHAR", "MET_DOUBLE"]))
    channels = draw(st.sampled_from([1, 1, 1, 3]))
    itemsize = {"MET_FLOAT": 4, "MET_SHORT": 2, "MET_UCHAR": 1, "MET_DOUBLE": 8}[element]
    text = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"TransformMatrix = {' '.join(repr(float(v)) for v in direction.T.reshape(-1))}\n"
            "Offset = 0 0 0\n"
            f"ElementSpacing = {' '.join(repr(float(s)) for s in spacing)}\n"
            f"DimSize = {' '.join(map(str, sizes))}\n"
            f"ElementNumberOfChannels = {channels}\nElementType = {element}\nElementDataFile = LOCAL\n")
    data = bytes(int(np.prod(sizes)) * itemsize * channels)
    return text.encode("ascii") + data


@FAST
@given(nrrd_headers())
def test_a_hand_written_nrrd_header_is_read_or_refused_in_one_line(header):
    content, dimension, sizes, declared = header
    volume = _read_or_refuse(content, "image.nrrd")
    if volume is None:
        return
    assert dimension == 3 and volume.size == tuple(sizes)
    assert np.allclose(volume.spacing, declared, rtol=1e-12, atol=0)  # the header's voxel size, not a default
    try:
        check_ct(volume)
    except UserError as exc:
        _one_line(exc)


@FAST
@given(metaimage_headers())
def test_a_hand_written_metaimage_header_is_read_or_refused_in_one_line(content):
    volume = _read_or_refuse(content, "image.mha")
    if volume is None:
        return
    assert all(math.isfinite(s) and s > 0 for s in volume.spacing)
    assert np.allclose(volume.direction.T @ volume.direction, np.eye(3), atol=1e-4)


# --- what the properties found in ITK's readers ------------------------------------------------------------------------
def test_nifti_keeps_nan_and_infinite_voxels(tmp_path):
    """ITK's NIfTI reader turns NaN and infinities into 0 (a CT padded with NaN would pass as water); the project's
    reader puts them back."""
    array = np.array([[[math.nan, 1.0, -math.inf, 3.0]]] * 4, np.float32)
    for name in ("a.nii", "b.nii.gz"):
        write_volume(Volume(array, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), np.diag([1.0, -1.0, -1.0])), tmp_path / name)
        back = read_volume(tmp_path / name)
        assert np.array_equal(back.array, array, equal_nan=True), name
        with pytest.raises(UserError, match="the CT contains 8 NaN or infinite voxel values"):
            check_ct(back)


def test_a_nii_gz_beside_a_nii_of_the_same_name_reads_its_own_voxels(tmp_path):
    """ITK's NIfTI library, asked for ``ct.nii.gz``, reads ``ct.nii`` when both are in the folder (an old export beside
    a new one): another image, without a word."""
    write_volume(Volume(np.full((2, 2, 2), 1.0, np.float32)), tmp_path / "ct.nii.gz")
    write_volume(Volume(np.full((2, 2, 2), 7.0, np.float32)), tmp_path / "ct.nii")
    assert read_volume(tmp_path / "ct.nii.gz").array.max() == 1.0
    assert read_volume(tmp_path / "ct.nii").array.max() == 7.0


def test_a_nrrd_header_without_a_voxel_size_is_refused(tmp_path):
    """ITK reads ``spacings: nan`` (NRRD's "unknown"), no spacing at all, or a vector too long for a double as 1 mm."""
    data = bytes(8 * 4)
    for name, geometry in (("unknown", "spacings: nan 1 1\n"), ("none", ""),
                           ("huge", "space: left-posterior-superior\nspace directions: (1e300,0,0) (0,1,0) (0,0,1)\n")):
        path = tmp_path / f"{name}.nrrd"
        path.write_bytes(f"NRRD0004\ntype: float\ndimension: 3\nsizes: 2 2 2\n{geometry}encoding: raw\nendian: little"
                         "\n\n".encode() + data)
        with pytest.raises(UserError, match="voxel size"):
            read_volume(path)
