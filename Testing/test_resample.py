"""The one resampler (ImagingBasics/resample.py): intensive values, amounts per voxel, label maps, transforms."""

import numpy as np
import pytest
import SimpleITK as sitk

from ImagingBasics.errors import UserError
from ImagingBasics.resample import resample, resample_amount, resample_labels
from ImagingBasics.volume import Volume


def _ramp(shape=(6, 8, 10), spacing=(2.0, 2.0, 3.0), origin=(-9.0, -7.0, -7.5)) -> Volume:
    k, j, i = np.indices(shape, dtype=np.float64)
    return Volume((i * spacing[0] + j * spacing[1] + k * spacing[2]).astype(np.float32), spacing, origin)


def test_a_linear_field_is_reproduced_on_a_finer_grid_and_default_fills_outside():
    coarse = _ramp()
    fine = Volume(np.zeros((12, 16, 20), np.uint8), (1.0, 1.0, 1.5), (-9.5, -7.5, -8.25))
    out = resample(coarse, fine, default=-5.0)
    assert out.array.dtype == np.float32 and out.same_geometry(fine)
    # inside the coarse grid's voxel centres a linear function is interpolated exactly
    lps = fine.index_to_lps(np.stack(np.indices(fine.size), -1).reshape(-1, 3))
    ijk = coarse.lps_to_index(lps)
    inside = np.all((ijk >= 0) & (ijk <= np.array(coarse.size) - 1), axis=1)
    expected = (lps - np.array(coarse.origin)) @ np.ones(3)  # i*2 + j*2 + k*3 = (x-x0) + (y-y0) + (z-z0)
    got = out.array.transpose(2, 1, 0).reshape(-1)
    np.testing.assert_allclose(got[inside], expected[inside], atol=1e-4)
    far = Volume(np.zeros((2, 2, 2)), (1.0, 1.0, 1.0), (500.0, 500.0, 500.0))
    assert np.all(resample(coarse, far, default=-5.0).array == -5.0)
    held = resample(coarse, far, extrapolate=True).array  # the nearest edge voxel's value instead
    assert np.all(held == coarse.array[-1, -1, -1])


def test_a_transform_maps_reference_points_to_input_points():
    ramp = _ramp()
    shift = sitk.TranslationTransform(3, (2.0, 0.0, 0.0))  # reference point x -> input point x + 2 mm (one voxel)
    out = resample(ramp, ramp, shift, default=np.nan)
    np.testing.assert_allclose(out.array[:, :, :-1], ramp.array[:, :, 1:], atol=1e-5)
    assert np.all(np.isnan(out.array[:, :, -1]))


def test_amounts_per_voxel_keep_a_region_total_and_can_keep_the_whole_total():
    rng = np.random.default_rng(3)
    activity = Volume(rng.uniform(0, 100, (8, 8, 8)), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    fine = Volume(np.zeros((16, 16, 16)), (1.0, 1.0, 1.0), (-0.5, -0.5, -0.5))
    out = resample_amount(activity, fine)
    assert out.array.dtype == np.float64
    # a uniform map is the sharpest check: every fine voxel holds an eighth of a coarse voxel's amount
    uniform = resample_amount(activity.with_array(np.full((8, 8, 8), 8.0)), fine).array
    np.testing.assert_allclose(uniform[1:-1, 1:-1, 1:-1], 1.0, rtol=1e-12)
    assert out.array.sum() == pytest.approx(activity.array.sum(), rel=1e-9)  # the same field of view
    half = Volume(np.zeros((16, 16, 8)), (1.0, 1.0, 1.0), (-0.5, -0.5, -0.5))  # x < 7.5 mm: half the map
    assert resample_amount(activity.with_array(np.full((8, 8, 8), 8.0)), half).array.sum() == pytest.approx(2048.0)
    kept = resample_amount(activity, half, keep_total=True)
    assert kept.array.sum() == pytest.approx(activity.array.sum(), rel=1e-12)
    with pytest.raises(UserError, match="does not overlap"):
        resample_amount(activity, Volume(np.zeros((2, 2, 2)), origin=(900.0, 0.0, 0.0)), keep_total=True)


def test_label_maps_keep_their_type_and_values_and_refuse_maps_of_another_patient():
    labels = Volume(np.zeros((4, 4, 4), np.uint16), (2.0, 2.0, 2.0))
    labels.array[1:3, 1:3, 1:3] = 7
    fine = Volume(np.zeros((8, 8, 8), np.int16), (1.0, 1.0, 1.0), (-0.5, -0.5, -0.5))
    out = resample_labels(labels, fine)
    assert out.array.dtype == np.uint16 and set(np.unique(out.array)) == {0, 7}
    assert np.count_nonzero(out.array) == 8 * np.count_nonzero(labels.array)
    assert resample_labels(labels, labels) is labels
    with pytest.raises(UserError, match="do not overlap in space"):
        resample_labels(labels, Volume(np.zeros((2, 2, 2)), origin=(300.0, 0.0, 0.0)))
    with pytest.raises(UserError, match="none of the labels"):
        resample_labels(labels, Volume(np.zeros((2, 2, 2)), origin=(-1.0, -1.0, -1.0)))
    boolean = resample_labels(labels.with_array(labels.array > 0), fine)
    assert boolean.array.dtype == np.uint8


def test_unknown_interpolation_is_refused():
    with pytest.raises(ValueError, match="interpolation"):
        resample(_ramp(), _ramp(), interpolation="cubic")
