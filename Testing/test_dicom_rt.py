"""DICOM and DICOM RT in and out (ImagingBasics.dicom_*): round trips, references, multi-series folders, bad inputs.

A small synthetic CT series is written here with pydicom (48 x 48 x 20 voxels, 2 mm pixels, 2.5 mm slices, files in
shuffled order); the objects written by the project are read back with pydicom (an independent reader of the
references) and, for RTDOSE and the derived series, with SimpleITK/GDCM as a second reader of the voxels.
Acceptance tolerances: mask -> RTSTRUCT -> mask within 3 % of the volume with Dice >= 0.95; Gy -> RTDOSE -> Gy within
0.1 % of the maximum dose.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_images import CT_SOP_CLASS
from dicom_images import save_dataset as _save
from dicom_images import write_ct_series as write_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ImagingBasics.dicom_contours import mask_to_polygons, polygons_to_mask
from ImagingBasics.dicom_rt import (
    find_series,
    list_structures,
    read_ct_series,
    read_rtdose,
    read_rtstruct,
    rtdose_info,
    select_ct_series,
    write_rtdose,
    write_rtstruct,
    write_secondary_series,
)
from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume

SHAPE = (20, 48, 48)  # z, y, x
SPACING = (2.0, 2.0, 2.5)  # x, y, z mm
ORIGIN = (-47.0, -60.0, -30.0)  # LPS mm of voxel [0, 0, 0]


# --- a synthetic CT series written with pydicom ---------------------------------------------------------------
def _phantom_hu(shape: Tuple[int, int, int]) -> np.ndarray:
    """Air outside, a water body, two lungs at -800 HU."""
    nz, ny, nx = shape
    _, y, x = np.mgrid[:nz, :ny, :nx]
    hu = np.full(shape, -1000, dtype=np.int16)
    body = ((x - nx / 2) / (0.45 * nx)) ** 2 + ((y - ny / 2) / (0.4 * ny)) ** 2 < 1
    hu[body] = 20
    for cx in (0.3 * nx, 0.7 * nx):
        hu[((x - cx) / (0.13 * nx)) ** 2 + ((y - ny / 2) / (0.25 * ny)) ** 2 < 1] = -800
    return hu


def write_ct_series(folder: Path, shape: Tuple[int, int, int] = SHAPE, series_uid: Optional[str] = None,
                    study_uid: str = "1.2.826.0.1.3680043.8.498.1", frame_uid: str = "1.2.826.0.1.3680043.8.498.2",
                    description: str = "Chest CT", seed: int = 0, prefix: str = "IMG") -> Dict[str, object]:
    """Write a CT series (one file per slice, shuffled file names) and return its truth: UIDs, HU, geometry."""
    return write_series(folder, _phantom_hu(shape), SPACING, ORIGIN, series_uid=series_uid, study_uid=study_uid,
                        frame_uid=frame_uid, description=description, seed=seed, prefix=prefix)


def _ct_volume(shape: Tuple[int, int, int] = SHAPE) -> Volume:
    return Volume(np.zeros(shape, np.float32), SPACING, ORIGIN, np.eye(3))


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Dict[str, object]:
    return write_ct_series(tmp_path_factory.mktemp("ct") / "CT")


@pytest.fixture(scope="module")
def multi(tmp_path_factory, ct) -> Dict[str, object]:
    """Two CT series (20 and 12 slices) and an RTSTRUCT in one folder."""
    root = tmp_path_factory.mktemp("multi")
    big = write_ct_series(root / "mixed", description="Chest CT 2.5 mm", seed=1)
    small = write_ct_series(root / "mixed", shape=(12, 48, 48), description="Chest CT short", seed=2, prefix="B")
    mask = np.zeros(SHAPE, bool)
    mask[5:10, 10:20, 10:20] = True
    write_rtstruct({"Box": mask}, None, ct["folder"], root / "mixed" / "RS.dcm")
    return {"folder": root / "mixed", "big": big, "small": small}


def _ellipsoid(centre_mm, semi_axes_mm, shape=SHAPE) -> np.ndarray:
    vol = _ct_volume(shape)
    k, j, i = np.mgrid[: shape[0], : shape[1], : shape[2]]
    points = vol.index_to_lps(np.stack([i, j, k], axis=-1))
    return (((points - np.asarray(centre_mm)) / np.asarray(semi_axes_mm)) ** 2).sum(axis=-1) <= 1.0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    return message


# --- DICOM in: series -------------------------------------------------------------------------------------------
def test_find_series_lists_every_series_with_modality_uids_count_and_description(multi):
    series = {s.series_uid: s for s in find_series(multi["folder"])}
    big, small = series[multi["big"]["series_uid"]], series[multi["small"]["series_uid"]]
    assert (big.modality, big.n_files, big.description) == ("CT", 20, "Chest CT 2.5 mm")
    assert (small.modality, small.n_files, small.frame_of_reference_uid) == ("CT", 12, multi["small"]["frame_uid"])
    structure = [s for s in series.values() if s.modality == "RTSTRUCT"]
    assert len(structure) == 1 and structure[0].n_files == 1
    assert structure[0].frame_of_reference_uid == multi["big"]["frame_uid"]  # the referenced frame of an RTSTRUCT
    assert len(series) == 3
    assert {s.series_uid for s in find_series(multi["folder"].parent)} == set(series)  # sub-folders are searched too


def test_the_largest_ct_series_is_read_with_a_warning_naming_the_others(multi):
    with pytest.warns(UserWarning) as caught:
        volume = read_ct_series(multi["folder"])
    message = " ".join(str(w.message) for w in caught)
    assert multi["big"]["series_uid"] in message and multi["small"]["series_uid"] in message
    assert "largest" in message
    assert volume.shape == SHAPE


def test_an_explicit_series_uid_is_honoured(multi):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = read_ct_series(multi["folder"], multi["small"]["series_uid"])
    assert volume.shape == (12, 48, 48)
    np.testing.assert_array_equal(volume.array, multi["small"]["hu"])


def test_an_unknown_series_uid_is_a_user_error_listing_the_available_ones(multi):
    with pytest.raises(UserError) as exc:
        read_ct_series(multi["folder"], "1.2.3.4.5")
    message = _one_line(exc)
    assert "1.2.3.4.5" in message
    assert multi["big"]["series_uid"] in message and multi["small"]["series_uid"] in message and "RTSTRUCT" in message


def test_a_non_ct_series_uid_is_refused(multi):
    rtstruct = [s for s in find_series(multi["folder"]) if s.modality == "RTSTRUCT"][0]
    with pytest.raises(UserError, match="not a CT"):
        select_ct_series(multi["folder"], rtstruct.series_uid)


def test_the_ct_is_read_sorted_by_position_with_its_lps_geometry_and_hu(ct):
    volume = read_ct_series(ct["folder"])
    np.testing.assert_array_equal(volume.array, ct["hu"])
    np.testing.assert_allclose(volume.spacing, SPACING, atol=1e-6)
    np.testing.assert_allclose(volume.origin, ORIGIN, atol=1e-6)
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-9)


# --- RTSTRUCT ---------------------------------------------------------------------------------------------------
def _structures() -> Dict[str, np.ndarray]:
    """A lung-like ellipsoid filling most of the field, a small tumour, and an ellipsoidal shell (a hole per slice)."""
    lung = _ellipsoid((-20.0, -12.0, -6.0), (20.0, 34.0, 20.0))
    tumour = _ellipsoid((22.0, -20.0, -8.0), (7.0, 7.0, 6.0))
    outer, inner = _ellipsoid((20.0, -10.0, -6.0), (16.0, 22.0, 18.0)), _ellipsoid((20.0, -10.0, -6.0), (8.0, 11.0, 30.0))
    return {"Lung_L": lung, "GTV": tumour, "Shell": outer & ~inner}


def test_slice_contours_give_back_the_exact_mask_and_holes_follow_the_even_odd_rule():
    rng = np.random.default_rng(3)
    for mask in (rng.random((30, 40)) > 0.5, np.ones((12, 9), bool), np.pad(np.ones((5, 5), bool), 3)):
        np.testing.assert_array_equal(polygons_to_mask(mask_to_polygons(mask), mask.shape), mask)
    outer = np.array([[5.0, 5.0], [5.0, 30.0], [30.0, 30.0], [30.0, 5.0]])
    hole = np.array([[10.0, 10.0], [20.0, 10.0], [20.0, 20.0], [10.0, 20.0]])
    separate = polygons_to_mask([outer, hole], (40, 40))
    keyhole = polygons_to_mask([np.concatenate([outer, outer[:1], hole, hole[:1]])], (40, 40))  # one polygon, a cut
    for mask in (separate, keyhole):
        assert mask[7, 7] and not mask[15, 15] and mask.sum() == 25 * 25 - 10 * 10


def test_masks_survive_rtstruct_round_trip_within_the_acceptance_tolerances(ct, tmp_path):
    masks = _structures()
    assert (masks["Shell"].sum(axis=(1, 2)) > 0).sum() > 5 and not masks["Shell"][10, 24, 34]  # a hole in the middle
    colours = {"Lung_L": (0, 151, 206), "GTV": (255, 0, 0)}
    path = write_rtstruct(masks, colours, ct["folder"], tmp_path / "out" / "RS.dcm")
    back = read_rtstruct(path, read_ct_series(ct["folder"]), frame_of_reference_uid=ct["frame_uid"])
    assert set(back) == set(masks)
    for name, mask in masks.items():
        assert back[name].shape == SHAPE and back[name].dtype == bool
        assert abs(back[name].sum() - mask.sum()) <= 0.03 * mask.sum(), name
        assert _dice(back[name], mask) >= 0.95, name
    assert not back["Shell"][10, 24, 34]  # the hole stays a hole (even-odd rule)
    infos = {i.name: i for i in list_structures(path)}
    assert infos["Lung_L"].colour == (0, 151, 206) and infos["GTV"].colour == (255, 0, 0)
    assert infos["Shell"].colour is not None and infos["Shell"].contour_types == ("CLOSED_PLANAR",)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["RS.dcm"]  # no temporary file left


def test_the_rtstruct_references_the_ct_study_series_frame_and_slices(ct, tmp_path):
    path = write_rtstruct(_structures(), None, ct["folder"], tmp_path / "RS.dcm")
    ds = pydicom.dcmread(str(path))  # the independent reader
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" and ds.Modality == "RTSTRUCT"
    assert ds.StudyInstanceUID == ct["study_uid"] and ds.PatientID == "PH-001"
    assert ds.SeriesInstanceUID != ct["series_uid"]
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == ct["frame_uid"]
    study = frame.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == ct["study_uid"]
    series = study.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ct["series_uid"]
    assert {c.ReferencedSOPInstanceUID for c in series.ContourImageSequence} == set(ct["sop_uids"])
    assert all(roi.ReferencedFrameOfReferenceUID == ct["frame_uid"] for roi in ds.StructureSetROISequence)
    z_of = {uid: ORIGIN[2] + k * SPACING[2] for k, uid in enumerate(ct["sop_uids"])}
    n = 0
    for roi in ds.ROIContourSequence:
        for contour in roi.ContourSequence:
            ref = contour.ContourImageSequence[0]
            assert ref.ReferencedSOPClassUID == CT_SOP_CLASS
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            assert len(points) == contour.NumberOfContourPoints
            np.testing.assert_allclose(points[:, 2], z_of[ref.ReferencedSOPInstanceUID], atol=1e-3)
            n += 1
    assert n > 20


def test_an_empty_structure_is_written_without_contours_and_reported_on_reading(ct, tmp_path):
    masks = {"GTV": _structures()["GTV"], "Empty": np.zeros(SHAPE, bool)}
    with pytest.warns(UserWarning, match="Empty"):
        path = write_rtstruct(masks, None, ct["folder"], tmp_path / "RS.dcm")
    with pytest.warns(UserWarning, match="no closed contours.*Empty"):
        back = read_rtstruct(path, _ct_volume())
    assert set(back) == {"GTV"}


def test_rtstruct_of_another_frame_of_reference_is_refused(ct, tmp_path):
    other = write_ct_series(tmp_path / "other", frame_uid="1.2.826.0.1.3680043.8.498.99")
    path = write_rtstruct({"GTV": _structures()["GTV"]}, None, other["folder"], tmp_path / "RS.dcm")
    with pytest.raises(UserError) as exc:
        read_rtstruct(path, _ct_volume(), frame_of_reference_uid=ct["frame_uid"])
    assert "frame of reference" in _one_line(exc)


def test_masks_not_on_the_ct_grid_are_refused(ct, tmp_path):
    with pytest.raises(UserError, match="CT grid"):
        write_rtstruct({"GTV": np.zeros((20, 48, 47), bool)}, None, ct["folder"], tmp_path / "RS.dcm")
    shifted = Volume(np.zeros(SHAPE, bool), SPACING, (0.0, 0.0, 0.0), np.eye(3))
    with pytest.raises(UserError, match="not on the CT grid"):
        write_rtstruct({"GTV": shifted}, None, ct["folder"], tmp_path / "RS.dcm")


def test_bad_structure_names_and_colours_are_refused(ct, tmp_path):
    gtv = _structures()["GTV"]
    with pytest.raises(UserError, match="1 to 64 characters"):
        write_rtstruct({"x" * 65: gtv}, None, ct["folder"], tmp_path / "RS.dcm")
    with pytest.raises(UserError, match="three integers 0-255"):
        write_rtstruct({"GTV": gtv}, {"GTV": (300, 0, 0)}, ct["folder"], tmp_path / "RS.dcm")


def test_contours_between_the_ct_slices_are_refused(ct, tmp_path):
    path = write_rtstruct({"GTV": _structures()["GTV"]}, None, ct["folder"], tmp_path / "RS.dcm")
    half_slice_off = Volume(np.zeros(SHAPE, np.float32), SPACING, (ORIGIN[0], ORIGIN[1], ORIGIN[2] + 1.25), np.eye(3))
    with pytest.raises(UserError) as exc:
        read_rtstruct(path, half_slice_off)
    assert "between two CT slices" in _one_line(exc)


# --- RTDOSE -----------------------------------------------------------------------------------------------------
def _dose() -> Volume:
    """A smooth dose (Gy) on a coarser grid than the CT, inside its extent: 3 x 3 x 5 mm, 26 x 24 x 9."""
    shape, spacing, origin = (9, 24, 26), (3.0, 3.0, 5.0), (-40.0, -50.0, -25.0)
    grid = Volume(np.zeros(shape), spacing, origin, np.eye(3))
    k, j, i = np.mgrid[: shape[0], : shape[1], : shape[2]]
    points = grid.index_to_lps(np.stack([i, j, k], axis=-1))
    r2 = (((points - np.array([-5.0, -15.0, -5.0])) / np.array([25.0, 20.0, 15.0])) ** 2).sum(axis=-1)
    return grid.with_array((62.0 * np.exp(-r2) + 0.37).astype(np.float32))


def test_dose_survives_rtdose_round_trip_within_0_1_percent(ct, tmp_path):
    dose = _dose()
    path = write_rtdose(dose, ct["folder"], tmp_path / "RD.dcm", summation_type="PLAN", description="Lu-177 cycle 1")
    back = read_rtdose(path, frame_of_reference_uid=ct["frame_uid"])
    assert back.same_geometry(dose, tol_mm=1e-3)
    peak = float(dose.array.max())
    assert np.max(np.abs(back.array - dose.array)) <= 1e-3 * peak
    info = rtdose_info(path)
    assert (info.dose_units, info.dose_type, info.summation_type, info.comment) == ("GY", "PHYSICAL", "PLAN", "Lu-177 cycle 1")


def test_the_rtdose_header_references_the_ct_and_is_read_by_simpleitk_too(ct, tmp_path):
    dose = _dose()
    path = write_rtdose(dose, ct["folder"], tmp_path / "RD.dcm")
    ds = pydicom.dcmread(str(path))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2" and ds.Modality == "RTDOSE"
    assert ds.StudyInstanceUID == ct["study_uid"] and ds.FrameOfReferenceUID == ct["frame_uid"]
    assert ds.SeriesInstanceUID != ct["series_uid"]
    assert (ds.DoseUnits, ds.DoseType, ds.BitsAllocated, ds.PixelRepresentation) == ("GY", "PHYSICAL", 32, 0)
    assert int(ds.NumberOfFrames) == 9 and ds.FrameIncrementPointer == 0x3004000C
    np.testing.assert_allclose([float(v) for v in ds.GridFrameOffsetVector], np.arange(9) * 5.0)
    scaling = float(ds.DoseGridScaling)
    assert scaling <= 1e-3 * float(dose.array.max())
    np.testing.assert_allclose(ds.pixel_array * scaling, dose.array, atol=1e-3 * float(dose.array.max()))
    image = sitk.ReadImage(str(path))  # GDCM: a second reader of the geometry and of the counts
    np.testing.assert_allclose(image.GetOrigin(), dose.origin, atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), dose.spacing, atol=1e-3)
    gdcm_scaling = float(image.GetMetaData("3004|000e"))  # ITK leaves DoseGridScaling to the reader
    gy = sitk.GetArrayFromImage(image).astype(np.float64) * gdcm_scaling
    np.testing.assert_allclose(gy, dose.array, atol=1e-3 * float(dose.array.max()))


def test_a_dose_grid_from_head_to_feet_is_written_along_the_ct_normal(ct, tmp_path):
    dose = _dose()
    nz = dose.shape[0]
    flipped = Volume(dose.array[::-1], dose.spacing, dose.index_to_lps(np.array([0.0, 0.0, nz - 1.0])),
                     np.diag([1.0, 1.0, -1.0]))
    back = read_rtdose(write_rtdose(flipped, ct["folder"], tmp_path / "RD.dcm"))
    assert back.same_geometry(dose, tol_mm=1e-3)
    np.testing.assert_allclose(back.array, dose.array, atol=1e-3 * float(dose.array.max()))


def test_a_rotated_or_disjoint_dose_grid_is_refused(ct, tmp_path):
    dose = _dose()
    c, s = np.cos(0.3), np.sin(0.3)
    rotated = Volume(dose.array, dose.spacing, dose.origin, np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]))
    with pytest.raises(UserError, match="CT's rows and columns"):
        write_rtdose(rotated, ct["folder"], tmp_path / "RD.dcm")
    far = Volume(dose.array, dose.spacing, (500.0, 500.0, 500.0), np.eye(3))
    with pytest.raises(UserError, match="does not overlap"):
        write_rtdose(far, ct["folder"], tmp_path / "RD.dcm")
    assert not list(tmp_path.iterdir())


def _hand_made_rtdose(path: Path, offsets: Sequence[float], ipp_z: float = -20.0, units: str = "GY",
                      orientation=(1, 0, 0, 0, 1, 0)) -> np.ndarray:
    """An RTDOSE written directly with pydicom (not by the project): 4 x 5 pixels, one frame per offset; frame f holds
    (f + 1) x 1000 + pixel index counts, scaling 0.001 Gy."""
    counts = (np.arange(len(offsets))[:, None, None] + 1) * 1000 + np.arange(20).reshape(1, 4, 5)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "RTDOSE", generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [10.0, -5.0, ipp_z], list(orientation)
    ds.PixelSpacing = [3.0, 2.0]  # row spacing (y), column spacing (x)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 4, 5
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.NumberOfFrames, ds.FrameIncrementPointer = len(offsets), 0x3004000C
    ds.GridFrameOffsetVector = list(offsets)
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType, ds.DoseGridScaling = units, "PHYSICAL", "PLAN", 0.001
    ds.PixelData = counts.astype("<u4").tobytes()
    _save(ds, path)
    return counts * 0.001


@pytest.mark.parametrize("offsets", [[0.0, 2.5, 5.0, 7.5], [-20.0, -17.5, -15.0, -12.5]], ids=["relative", "absolute"])
def test_multi_frame_rtdose_with_relative_or_absolute_frame_offsets(tmp_path, offsets):
    expected = _hand_made_rtdose(tmp_path / "RD.dcm", offsets)
    dose = read_rtdose(tmp_path / "RD.dcm")
    np.testing.assert_allclose(dose.array, expected, rtol=1e-6)
    np.testing.assert_allclose(dose.spacing, (2.0, 3.0, 2.5))
    np.testing.assert_allclose(dose.origin, (10.0, -5.0, -20.0))
    np.testing.assert_allclose(dose.direction, np.eye(3))


def test_frames_stored_from_head_to_feet_are_reordered(tmp_path):
    expected = _hand_made_rtdose(tmp_path / "RD.dcm", [0.0, -2.5, -5.0])
    dose = read_rtdose(tmp_path / "RD.dcm")
    np.testing.assert_allclose(dose.array, expected[::-1], rtol=1e-6)
    np.testing.assert_allclose(dose.origin, (10.0, -5.0, -25.0))
    np.testing.assert_allclose(dose.direction, np.eye(3))


@pytest.mark.parametrize("kind, kwargs, words", [
    ("relative units", {"offsets": [0.0, 2.5], "units": "RELATIVE"}, "not GY"),
    ("uneven frames", {"offsets": [0.0, 2.5, 6.0]}, "unevenly spaced"),
    ("absolute offsets, oblique", {"offsets": [-20.0, -17.5], "orientation": (0.8, 0.6, 0, -0.6, 0.8, 0)}, "axial"),
    ("inconsistent absolute offsets", {"offsets": [3.0, 5.5]}, "neither 0 nor"),
])
def test_bad_rtdose_is_a_one_line_user_error(tmp_path, kind, kwargs, words):
    _hand_made_rtdose(tmp_path / "RD.dcm", **kwargs)
    with pytest.raises(UserError) as exc:
        read_rtdose(tmp_path / "RD.dcm")
    assert words in _one_line(exc), kind


def test_rtdose_of_another_frame_of_reference_is_refused(tmp_path):
    _hand_made_rtdose(tmp_path / "RD.dcm", [0.0, 2.5])
    with pytest.raises(UserError, match="another frame of reference"):
        read_rtdose(tmp_path / "RD.dcm", frame_of_reference_uid="1.2.3")


def test_a_truncated_rtdose_is_a_one_line_user_error(ct, tmp_path):
    path = write_rtdose(_dose(), ct["folder"], tmp_path / "RD.dcm")
    data = path.read_bytes()
    for size in (len(data) - 1000, 600, 100):
        bad = tmp_path / f"cut{size}.dcm"
        bad.write_bytes(data[:size])
        with pytest.raises(UserError) as exc:
            read_rtdose(bad)
        assert "damaged" in _one_line(exc) or "not an RT Dose" in _one_line(exc)


def test_negative_doses_are_written_as_zero_with_a_warning(ct, tmp_path):
    dose = _dose()
    array = dose.array.copy()
    array[0, 0, :3] = -0.2
    with pytest.warns(UserWarning, match="negative"):
        path = write_rtdose(dose.with_array(array), ct["folder"], tmp_path / "RD.dcm")
    assert read_rtdose(path).array.min() == 0.0


# --- derived image series ---------------------------------------------------------------------------------------
def _perfusion() -> Volume:
    lungs = _ellipsoid((-20.0, -12.0, -6.0), (20.0, 34.0, 20.0)) | _ellipsoid((22.0, -12.0, -6.0), (16.0, 30.0, 18.0))
    k = np.arange(SHAPE[0])[:, None, None]
    return _ct_volume().with_array((lungs * (0.2 + 0.05 * k)).astype(np.float32))  # a gravity-like gradient


@pytest.mark.parametrize("modality, sop_class", [("PT", "1.2.840.10008.5.1.4.1.1.128"), ("CT", CT_SOP_CLASS)])
def test_a_derived_series_is_on_the_ct_frame_and_keeps_its_values(ct, tmp_path, modality, sop_class):
    perfusion = _perfusion()
    files = write_secondary_series(perfusion, ct["folder"], tmp_path / "perfusion", modality=modality)
    assert len(files) == SHAPE[0] and sorted(p.name for p in (tmp_path / "perfusion").iterdir()) == sorted(f.name for f in files)
    headers = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    assert {h.SOPClassUID for h in headers} == {sop_class} and {h.Modality for h in headers} == {modality}
    assert {h.StudyInstanceUID for h in headers} == {ct["study_uid"]}
    assert {h.FrameOfReferenceUID for h in headers} == {ct["frame_uid"]}
    series = {h.SeriesInstanceUID for h in headers}
    assert len(series) == 1 and ct["series_uid"] not in series
    assert len({h.SOPInstanceUID for h in headers}) == SHAPE[0]
    assert float(headers[0].RescaleIntercept) == 0.0 and headers[0].PatientPosition == "HFS"
    assert "DERIVED" in headers[0].ImageType
    reader = sitk.ImageSeriesReader()  # GDCM: a second reader of geometry and rescaling
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "perfusion")))
    image = reader.Execute()
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), SPACING, atol=1e-3)
    slope = float(headers[0].RescaleSlope)
    assert slope <= 1e-4 * float(perfusion.array.max())
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), perfusion.array, atol=slope)


def test_outputs_are_never_written_into_the_ct_folder(ct):
    before = sorted(p.name for p in ct["folder"].iterdir())
    with pytest.raises(UserError, match="inside the CT folder"):
        write_secondary_series(_perfusion(), ct["folder"], ct["folder"])
    with pytest.raises(UserError, match="inside the CT folder"):
        write_secondary_series(_perfusion(), ct["folder"], ct["folder"] / "perfusion")
    with pytest.raises(UserError, match="inside the CT folder"):
        write_rtstruct({"GTV": _structures()["GTV"]}, None, ct["folder"], ct["folder"] / "RS.dcm")
    with pytest.raises(UserError, match="inside the CT folder"):
        write_rtdose(_dose(), ct["folder"], ct["folder"] / "RD.dcm")
    assert sorted(p.name for p in ct["folder"].iterdir()) == before


def test_a_derived_series_is_not_written_over_an_existing_folder(ct, tmp_path):
    (tmp_path / "perfusion").mkdir()
    (tmp_path / "perfusion" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not an empty folder"):
        write_secondary_series(_perfusion(), ct["folder"], tmp_path / "perfusion")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["perfusion"]


# --- bad inputs -------------------------------------------------------------------------------------------------
def test_a_folder_without_ct_is_a_one_line_user_error(ct, tmp_path):
    folder = tmp_path / "no_ct"
    folder.mkdir()
    write_rtdose(_dose(), ct["folder"], folder / "RD.dcm")
    (folder / "notes.txt").write_text("not DICOM")
    with pytest.raises(UserError) as exc:
        read_ct_series(folder)
    message = _one_line(exc)
    assert "no CT series" in message and "RTDOSE" in message


def test_a_ct_with_a_truncated_slice_is_a_one_line_user_error(ct, tmp_path):
    folder = tmp_path / "ct"
    shutil.copytree(ct["folder"], folder)
    victim = sorted(folder.iterdir())[7]
    victim.write_bytes(victim.read_bytes()[:-2000])  # pixel data cut short
    with pytest.raises(UserError) as exc:
        read_ct_series(folder)
    _one_line(exc)
    victim.write_bytes(victim.read_bytes()[:300])  # header cut short
    with pytest.raises(UserError) as exc:
        read_ct_series(folder)
    assert "damaged" in _one_line(exc)


def test_a_ct_with_a_missing_slice_is_a_one_line_user_error(ct, tmp_path):
    folder = tmp_path / "ct"
    shutil.copytree(ct["folder"], folder)
    headers = {p: pydicom.dcmread(str(p), stop_before_pixels=True) for p in folder.iterdir()}
    middle = [p for p, h in headers.items() if int(h.InstanceNumber) == 10][0]
    middle.unlink()
    with pytest.raises(UserError) as exc:
        read_ct_series(folder)
    assert "unevenly spaced" in _one_line(exc)


def test_a_truncated_or_foreign_rtstruct_is_a_one_line_user_error(ct, tmp_path):
    path = write_rtstruct({"GTV": _structures()["GTV"]}, None, ct["folder"], tmp_path / "RS.dcm")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(UserError) as exc:
        read_rtstruct(cut, _ct_volume())
    assert "damaged" in _one_line(exc)
    with pytest.raises(UserError, match="not an RT Structure Set"):
        read_rtstruct(sorted(ct["folder"].iterdir())[0], _ct_volume())
