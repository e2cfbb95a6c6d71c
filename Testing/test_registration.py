"""Rigid SPECT-to-CT registration (CTPerfusionMappingLib.registration) on small synthetic phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from CTPerfusionMappingLib.registration import RegistrationResult, assess_registration, register_spect_to_ct, resample_spect_to_ct
from CTPerfusionMappingLib.synthetic.cohort import generate_case
from CTPerfusionMappingLib.synthetic.spect import resample_to_reference, transform_from_meta
from ImagingBasics.errors import UserError
from ImagingBasics.rigid import mean_displacement_mm, transform_to_matrix
from ImagingBasics.volume import Volume

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def cases():
    return {}


def get_case(cases, seed):
    if seed not in cases:
        cases[seed] = generate_case(seed, "small")
    return cases[seed]


@pytest.fixture(scope="module")
def registered(cases):
    """Registration (with the lung mask) of each seed, computed once."""
    return {seed: register_spect_to_ct(get_case(cases, seed).ct, get_case(cases, seed).spect, get_case(cases, seed).lungs)
            for seed in SEEDS}


def lung_points(case, n=2000):
    ijk = np.argwhere(case.lungs.array > 0)[:, ::-1]
    rng = np.random.default_rng(0)
    return case.lungs.index_to_lps(ijk[rng.choice(len(ijk), size=min(n, len(ijk)), replace=False)])


def identity():
    import SimpleITK as sitk

    return sitk.Euler3DTransform()


def one_line_user_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("seed", SEEDS)
def test_recovers_the_recorded_misalignment(cases, registered, seed):
    case = get_case(cases, seed)
    truth = transform_from_meta(case.meta)
    pts = lung_points(case)
    mean, worst = mean_displacement_mm(truth, registered[seed].transform, pts)
    before, _ = mean_displacement_mm(truth, identity(), pts)
    assert mean <= 3.0, f"mean error {mean:.2f} mm (misalignment {before:.2f} mm)"
    assert worst <= 6.0
    assert mean < before


def test_without_lung_mask_finds_the_lungs_itself(cases):
    case = get_case(cases, 0)
    r = register_spect_to_ct(case.ct, case.spect)
    mean, _ = mean_displacement_mm(transform_from_meta(case.meta), r.transform, lung_points(case))
    assert mean <= 3.0
    assert r.fraction_in_lungs_before is None and r.fraction_in_lungs_after is None


@pytest.mark.parametrize("initialise", ["geometry", "identity"])
def test_other_initialisations(cases, initialise):
    case = get_case(cases, 1)
    r = register_spect_to_ct(case.ct, case.spect, case.lungs, initialise=initialise)
    mean, _ = mean_displacement_mm(transform_from_meta(case.meta), r.transform, lung_points(case))
    assert mean <= 3.0


def test_deterministic(cases, registered):
    case = get_case(cases, 0)
    again = register_spect_to_ct(case.ct, case.spect, case.lungs)
    # the metric's threads may sum in another order: equal to far below a micrometre
    np.testing.assert_allclose(again.matrix_lps, registered[0].matrix_lps, atol=1e-6)
    other_seed = register_spect_to_ct(case.ct, case.spect, case.lungs, seed=7)
    mean, _ = mean_displacement_mm(other_seed.transform, registered[0].transform, lung_points(case))
    assert mean < 1.0  # another sampling, about the same answer


@pytest.mark.parametrize("seed", SEEDS)
def test_fraction_in_lungs_increases(registered, seed):
    r = registered[seed]
    assert 0.0 < r.fraction_in_lungs_before < r.fraction_in_lungs_after <= 1.0
    assert r.fraction_in_lungs == r.fraction_in_lungs_after
    assert not r.suspicious and r.warnings == []


def test_result_fields(cases, registered):
    case = get_case(cases, 0)
    r = registered[0]
    assert isinstance(r, RegistrationResult)
    assert r.matrix_lps.shape == (4, 4)
    np.testing.assert_allclose(r.matrix_lps, transform_to_matrix(r.transform))
    p = np.array([10.0, -20.0, 30.0])
    np.testing.assert_allclose(r.matrix_lps[:3, :3] @ p + r.matrix_lps[:3, 3], r.transform.TransformPoint(tuple(p)), atol=1e-9)
    assert np.allclose(r.matrix_lps[:3, :3].T @ r.matrix_lps[:3, :3], np.eye(3), atol=1e-9)  # rigid
    assert r.spect_on_ct.array.dtype == np.float32 and r.spect_on_ct.same_geometry(case.ct)
    assert r.iterations > 0 and r.seconds > 0 and np.isfinite(r.metric_value)
    expected = resample_spect_to_ct(case.ct, case.spect, r.transform)
    np.testing.assert_allclose(r.spect_on_ct.array, expected.array)


def test_resample_with_recorded_transform_matches_the_phantom(cases):
    case = get_case(cases, 0)
    truth = transform_from_meta(case.meta)
    ours = resample_spect_to_ct(case.ct, case.spect, truth)
    ref = resample_to_reference(case.spect, case.ct, truth)
    assert ours.same_geometry(case.ct) and ours.array.dtype == np.float32
    np.testing.assert_allclose(ours.array, ref.array, rtol=1e-6, atol=1e-6)
    plain = resample_spect_to_ct(case.ct, case.spect)  # identity: one frame of reference
    np.testing.assert_allclose(plain.array, resample_to_reference(case.spect, case.ct).array, rtol=1e-6, atol=1e-6)


def test_progress_messages(cases):
    case = get_case(cases, 2)
    messages = []
    register_spect_to_ct(case.ct, case.spect, case.lungs, levels=(2, 1), progress=messages.append)
    assert any("level 2/2" in m for m in messages)


def test_inputs_not_modified(cases):
    case = get_case(cases, 1)
    ct, spect, lungs = case.ct.array.copy(), case.spect.array.copy(), case.lungs.array.copy()
    register_spect_to_ct(case.ct, case.spect, case.lungs, levels=(2,), max_iterations=5)
    resample_spect_to_ct(case.ct, case.spect, transform_from_meta(case.meta))
    np.testing.assert_array_equal(case.ct.array, ct)
    np.testing.assert_array_equal(case.spect.array, spect)
    np.testing.assert_array_equal(case.lungs.array, lungs)


def test_bad_inputs_raise_one_line_user_errors(cases):
    case = get_case(cases, 0)
    sp = case.spect
    nan = sp.array.copy()
    nan[10, 20, 30] = np.nan
    with pytest.raises(UserError) as e:
        register_spect_to_ct(case.ct, sp.with_array(nan), case.lungs)
    assert "NaN" in one_line_user_error(e)
    with pytest.raises(UserError) as e:
        resample_spect_to_ct(case.ct, sp.with_array(nan))
    assert "NaN" in one_line_user_error(e)
    ct_inf = case.ct.array.astype(np.float32)
    ct_inf[5, 5, 5] = np.inf
    with pytest.raises(UserError) as e:
        register_spect_to_ct(case.ct.with_array(ct_inf), sp)
    assert "CT" in one_line_user_error(e)

    far = Volume(sp.array, sp.spacing, tuple(np.asarray(sp.origin) + np.array([0.0, 0.0, 2000.0])), sp.direction)
    with pytest.raises(UserError) as e:
        register_spect_to_ct(case.ct, far, case.lungs)
    assert "overlap" in one_line_user_error(e)

    for value in (0.0, 5.0):
        with pytest.raises(UserError) as e:
            register_spect_to_ct(case.ct, sp.with_array(np.full(sp.shape, value, np.float32)), case.lungs)
        assert "SPECT" in one_line_user_error(e)

    with pytest.raises(UserError) as e:
        register_spect_to_ct(case.ct, sp, case.lungs.with_array(np.zeros(case.lungs.shape, np.uint8)))
    one_line_user_error(e)
    with pytest.raises(UserError) as e:
        register_spect_to_ct(case.ct, sp, initialise="magic")
    one_line_user_error(e)


def test_sitk_failure_becomes_a_user_error(cases):
    # the SPECT overlaps only a sliver at the CT's edge, away from the lungs, and no initialisation moves it
    case = get_case(cases, 0)
    sp = case.spect
    x_shift = (case.ct.size[0] * case.ct.spacing[0] + sp.size[0] * sp.spacing[0]) / 2.0 - 20.0
    sliver = Volume(sp.array, sp.spacing, tuple(np.asarray(sp.origin) + np.array([x_shift, 0.0, 0.0])), sp.direction)
    with pytest.raises(UserError) as e:
        register_spect_to_ct(case.ct, sliver, case.lungs, initialise="identity")
    assert "registration failed" in one_line_user_error(e)


def test_mean_displacement_helper():
    import SimpleITK as sitk

    shifted = sitk.Euler3DTransform()
    shifted.SetTranslation((3.0, 4.0, 0.0))
    pts = np.random.default_rng(1).normal(scale=50.0, size=(100, 3))
    mean, worst = mean_displacement_mm(shifted, identity(), pts)
    assert mean == pytest.approx(5.0) and worst == pytest.approx(5.0)
    rotated = sitk.Euler3DTransform()
    rotated.SetRotation(0.0, 0.0, np.deg2rad(90.0))
    mean, worst = mean_displacement_mm(rotated, identity(), np.array([[10.0, 0.0, 0.0], [0.0, 0.0, 7.0]]))
    assert mean == pytest.approx(np.sqrt(200.0) / 2.0) and worst == pytest.approx(np.sqrt(200.0))


def test_assess_registration_flags_a_drop():
    suspicious, warnings = assess_registration(0.80, 0.70, 5.0, 2.0, -0.5)
    assert suspicious and "dropped" in warnings[0]
    suspicious, warnings = assess_registration(0.80, 0.82, 5.0, 2.0, -0.5)
    assert not suspicious and warnings == []
    suspicious, warnings = assess_registration(None, None, 60.0, 2.0, -0.5)
    assert not suspicious and "large correction" in warnings[0]
