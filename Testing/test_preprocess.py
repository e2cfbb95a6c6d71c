"""Preprocessing of Ren 2021 IJROBP and Ren 2022 Front Oncol: hemi-lung samples, equation (1) CT enhancement,
equation (2) SPECT standardisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from CTPerfusionMappingLib.preprocess import (
    PreprocessParams,
    combine_lungs,
    ct_enhancement,
    high_intensity_region,
    histogram_equalise,
    masked_median,
    preprocess_case,
    sample_grid,
    sample_to_ct,
    spect_standardisation,
)
from CTPerfusionMappingLib.synthetic import cohort
from CTPerfusionMappingLib.synthetic.spect import resample_to_reference, transform_from_meta
from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume


def test_histogram_equalisation_is_equation_1():
    rng = np.random.default_rng(0)
    hu = rng.normal(-850, 60, size=(20, 20, 20))
    hu[0, 0, :5] = [-1200, -1000, -300, 50, 400]  # outliers are clipped to the window's ends
    mask = np.ones(hu.shape, bool)
    eq = histogram_equalise(hu, mask)
    assert eq.min() == 0.0 and eq.max() == pytest.approx(1.0)
    assert eq[0, 0, 0] == eq[0, 0, 1] == 0.0 and eq[0, 0, 2] == eq[0, 0, 3] == eq[0, 0, 4] == pytest.approx(1.0)
    inside = (hu > -1000) & (hu < -300)
    assert stats.spearmanr(eq[inside], hu[inside])[0] > 0.999  # monotone
    # equalised: the output is close to uniform on 0..1 (the empirical CDF)
    np.testing.assert_allclose(np.percentile(eq[inside], [25, 50, 75]), [0.25, 0.5, 0.75], atol=0.02)
    # voxels outside the mask do not count and come out 0
    half = mask.copy()
    half[:10] = False
    assert (histogram_equalise(hu, half)[:10] == 0).all()


def test_filters_respect_the_mask():
    values = np.full((16, 16, 16), 0.7, np.float32)
    mask = np.zeros(values.shape, bool)
    mask[2:14, 2:14, 2:14] = True
    med = masked_median(values, mask, 10)
    assert np.allclose(med[mask], round(0.7 * 255) / 255) and (med[~mask] == 0).all()  # no darkening at the border
    hu = np.where(mask, -850.0, 0.0)
    enhanced = ct_enhancement(hu + np.random.default_rng(1).normal(0, 30, hu.shape), mask)
    assert (enhanced[~mask] == 0).all() and 0.0 <= enhanced.min() and enhanced.max() <= 1.0


def test_spect_standardisation_is_equation_2():
    spect = np.linspace(0, 200, 1000).reshape(10, 10, 10)
    mask = np.ones(spect.shape, bool)
    hir = high_intensity_region(spect, mask)
    assert hir == pytest.approx(np.percentile(spect, 75))
    normalised, target = spect_standardisation(spect, hir)
    assert normalised.max() == 1.0 and (normalised[spect >= hir] == 1.0).all()
    np.testing.assert_allclose(normalised[spect < hir], spect[spect < hir] / hir, rtol=1e-6)
    assert np.allclose(target * 10, np.round(target * 10), atol=1e-5) and len(np.unique(target)) == 11
    assert np.abs(target - normalised).max() <= 0.05 + 1e-6
    with pytest.raises(UserError, match="zero over most"):
        high_intensity_region(np.zeros((4, 4, 4)), np.ones((4, 4, 4), bool))


@pytest.fixture(scope="module")
def case():
    c = cohort.generate_case(cohort.case_seed(3, 0))
    return c, resample_to_reference(c.spect, c.ct, transform_from_meta(c.meta))


def test_samples_cover_each_lung_and_map_back(case):
    c, spect = case
    samples = preprocess_case(c.ct, c.lungs, spect)
    assert [s.name for s in samples] == ["right", "left"]
    for s in samples:
        assert s.ct_input.shape == (128, 64, 64) and s.ct_input.dtype == np.float32
        assert 0.0 <= s.ct_input.min() and s.ct_input.max() <= 1.0
        assert (s.ct_input[~s.parenchyma] == 0).all()
        assert s.lung.mean() > 0.3  # cropped to the lung
        # every lung voxel of the CT falls inside the sample's box
        pts = c.ct.index_to_lps(np.argwhere(c.lungs.array == s.side)[:, ::-1].astype(float))
        idx = s.grid.lps_to_index(pts)
        assert (idx > -0.51).all() and (idx < np.array(s.grid.size) - 0.49).all()
        assert np.allclose(s.spect_target * 10, np.round(s.spect_target * 10), atol=1e-5)
        assert s.spect_eval.max() == 1.0 and np.abs(s.spect_target - s.spect_eval).max() <= 0.05 + 1e-6
    back = combine_lungs({s.side: sample_to_ct(s.spect_eval, s.grid, c.ct) for s in samples}, c.lungs)
    lung = c.lungs.array > 0
    hir = np.percentile(spect.array[lung], 75)
    assert stats.spearmanr(back[lung], np.clip(spect.array[lung] / hir, 0, 1))[0] > 0.97
    assert (back[~lung] == 0).all()


def test_orientation_does_not_change_the_samples(case):
    """The same patient stored with x flipped (another direction matrix) gives the same samples."""
    c, _ = case
    flip = np.diag([-1.0, 1.0, 1.0])
    far_x = c.ct.index_to_lps(np.array([c.ct.size[0] - 1, 0, 0], float))
    ct_f = Volume(c.ct.array[:, :, ::-1].copy(), c.ct.spacing, tuple(far_x), flip)
    lungs_f = Volume(c.lungs.array[:, :, ::-1].copy(), c.ct.spacing, tuple(far_x), flip)
    a = preprocess_case(c.ct, c.lungs)
    b = preprocess_case(ct_f, lungs_f)
    for sa, sb in zip(a, b):
        np.testing.assert_allclose(sa.grid.origin, sb.grid.origin, atol=1e-6)
        assert np.array_equal(sa.lung, sb.lung)
        np.testing.assert_allclose(sa.ct_hu, sb.ct_hu, atol=1e-3)


def test_geometry_mismatch_and_empty_lungs_are_user_errors(case):
    c, spect = case
    shifted = Volume(c.lungs.array, c.lungs.spacing, (0.0, 0.0, 0.0))
    with pytest.raises(UserError, match="not on the CT grid"):
        preprocess_case(c.ct, shifted)
    with pytest.raises(UserError, match="empty"):
        sample_grid(c.lungs.with_array(np.zeros_like(c.lungs.array)), 1)
    with pytest.raises(UserError, match="no lung labels"):
        preprocess_case(c.ct, c.lungs.with_array(np.zeros_like(c.lungs.array)))
    assert PreprocessParams().to_dict()["shape"] == [128, 64, 64]
