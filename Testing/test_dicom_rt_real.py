"""DICOM RT in and out on a real CT series: LIDC-IDRI-0001 (512 x 512 x 133, 0.70 mm pixels, 2.5 mm slices, feet first)
from ``../shared/data/real`` (skipped when that folder is absent).

The lungs are segmented by a plain threshold (real, irregular contours with vessels as holes), written as an RTSTRUCT
on the real series with a tumour-sized sphere, and read back; a dose on a coarser grid goes through RTDOSE. The
acceptance tolerances are those of the synthetic tests (Testing/test_dicom_rt.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from ImagingBasics.dicom_rt import find_series, read_ct_series, read_rtdose, read_rtstruct, write_rtdose, write_rtstruct
from ImagingBasics.imageio import read_dicom_folder
from ImagingBasics.volume import Volume

LIDC = "lidc_idri_0001_dicom"


@pytest.fixture(scope="module")
def lidc(shared_data) -> Path:
    folder = shared_data / "real" / LIDC
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.fixture(scope="module")
def ct(lidc) -> Volume:
    return read_ct_series(lidc)


def _lungs(ct: Volume) -> np.ndarray:
    """Air inside the body: HU < -400, without the components that touch the in-plane border (the air around)."""
    air = ct.array < -400
    labels, n = ndimage.label(air)
    border = np.unique(np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(), labels[:, :, 0].ravel(),
                                       labels[:, :, -1].ravel()]))
    sizes = ndimage.sum(air, labels, index=np.arange(1, n + 1))
    keep = [i + 1 for i in np.argsort(sizes)[::-1][:3] if i + 1 not in border and sizes[i] > 1000]
    return np.isin(labels, keep)


def _sphere(ct: Volume, centre_ijk: np.ndarray, radius_mm: float) -> np.ndarray:
    """A ball around the voxel position ``centre_ijk`` (i, j, k), computed in its bounding box only."""
    sphere = np.zeros(ct.shape, dtype=bool)
    half = np.ceil(radius_mm / np.asarray(ct.spacing)).astype(int) + 1
    low = np.maximum(np.round(centre_ijk).astype(int) - half, 0)
    high = np.minimum(np.round(centre_ijk).astype(int) + half + 1, ct.size)
    k, j, i = np.mgrid[low[2]: high[2], low[1]: high[1], low[0]: high[0]]
    points = ct.index_to_lps(np.stack([i, j, k], axis=-1))
    inside = np.linalg.norm(points - ct.index_to_lps(centre_ijk), axis=-1) <= radius_mm
    sphere[low[2]: high[2], low[1]: high[1], low[0]: high[0]] = inside
    return sphere


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_the_real_series_is_found_and_read_as_the_folder_reader_reads_it(lidc, ct):
    series = find_series(lidc)
    assert [(s.modality, s.n_files) for s in series] == [("CT", 133)]
    assert ct.shape == (133, 512, 512)
    reference = read_dicom_folder(lidc)  # GDCM's own grouping and sorting
    assert ct.same_geometry(reference, tol_mm=1e-3)
    np.testing.assert_array_equal(ct.array, reference.array)


def test_the_real_series_is_feet_first_supine_and_gets_no_position_warning(lidc):
    from CTPerfusionMappingLib.quality import patient_orientation
    from ImagingBasics.dicom_inputs import ct_patient_position

    assert ct_patient_position(lidc) == "FFS"  # PROVENANCE.md: feet-first supine
    assert patient_orientation(ct_patient_position(lidc)) == []


def test_real_lungs_and_a_sphere_survive_the_rtstruct_round_trip(lidc, ct, tmp_path):
    lungs = _lungs(ct)
    assert 2000 < lungs.sum() * ct.voxel_volume_ml < 8000  # lung-sized (ml)
    sphere = _sphere(ct, np.argwhere(lungs).mean(axis=0)[::-1], radius_mm=25.0)
    masks = {"Lungs": lungs, "Sphere": sphere}
    path = write_rtstruct(masks, {"Lungs": (0, 151, 206)}, lidc, tmp_path / "RS.dcm")
    frame = pydicom.dcmread(str(path)).ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    assert frame == find_series(lidc)[0].frame_of_reference_uid
    back = read_rtstruct(path, ct, frame_of_reference_uid=frame)
    for name, mask in masks.items():
        assert abs(back[name].sum() - mask.sum()) <= 0.03 * mask.sum(), name
        assert _dice(back[name], mask) >= 0.95, name


def test_a_dose_on_the_real_ct_survives_the_rtdose_round_trip(lidc, ct, tmp_path):
    nz, ny, nx = ct.shape
    extent = np.array([nx * ct.spacing[0], ny * ct.spacing[1], nz * ct.spacing[2]])
    spacing = (4.0, 4.0, 5.0)
    shape = tuple(int(n) for n in (extent[::-1] // np.array(spacing[::-1])) - 1)
    grid = Volume(np.zeros(shape), spacing, ct.origin, ct.direction)
    k, j, i = np.mgrid[: shape[0], : shape[1], : shape[2]]
    points = grid.index_to_lps(np.stack([i, j, k], axis=-1))
    centre = grid.index_to_lps(np.array(shape[::-1]) / 2.0)
    dose = grid.with_array((45.0 * np.exp(-((points - centre) ** 2).sum(axis=-1) / (2 * 40.0**2))).astype(np.float32))
    frame = find_series(lidc)[0].frame_of_reference_uid
    back = read_rtdose(write_rtdose(dose, lidc, tmp_path / "RD.dcm"), frame_of_reference_uid=frame)
    assert back.same_geometry(dose, tol_mm=1e-3)
    assert np.max(np.abs(back.array - dose.array)) <= 1e-3 * float(dose.array.max())
