"""Time integration: each model recovers known kinetics (exact and noisy samples), integrals against analytic values,
the physical-decay clamp, the fallback for failed fits, and per-voxel fits equal to the per-organ fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from DoseCNNLib.dosimetry.time_integration import (
    MGY_S_H_TO_GY,
    absorbed_dose_gy,
    bi_exponential_batch,
    fit_bi_exponential,
    fit_mono_exponential,
    integrate_curve,
    integrate_voxels,
    mono_exponential_batch,
    physical_decay_constant_per_h,
    trapezoid_integral,
)
from ImagingBasics.errors import UserError

LAM_P = physical_decay_constant_per_h("Lu-177")
TIMES = np.array([4.0, 24.0, 96.0, 168.0])  # a clinical Lu-177 schedule (h)


def test_physical_decay_constant_and_units():
    assert LAM_P == pytest.approx(math.log(2) / (6.647 * 24), rel=1e-3)
    assert MGY_S_H_TO_GY == 3.6
    assert absorbed_dose_gy(1.0) == pytest.approx(3.6)  # 1 mGy/s for 1 h = 3600 mGy
    np.testing.assert_allclose(absorbed_dose_gy(np.array([0.5, 2.0])), [1.8, 7.2])


def test_mono_exponential_recovers_exact_kinetics():
    a0, lam = 250.0, math.log(2) / 50.0
    fit = fit_mono_exponential(TIMES, a0 * np.exp(-lam * TIMES), LAM_P)
    assert fit.model == "mono" and not fit.fallback and not fit.clamped
    assert fit.params["a0"] == pytest.approx(a0, rel=1e-10)
    assert fit.lambda_eff_per_h == pytest.approx(lam, rel=1e-10)
    assert fit.effective_half_life_h == pytest.approx(50.0, rel=1e-10)
    assert fit.integral == pytest.approx(a0 / lam, rel=1e-10)  # integral 0..inf of A0 exp(-lambda t)
    np.testing.assert_allclose(fit.evaluate(TIMES), a0 * np.exp(-lam * TIMES), rtol=1e-10)


def test_mono_exponential_from_noisy_samples():
    rng = np.random.default_rng(1)
    a0, lam = 100.0, 0.02
    noisy = a0 * np.exp(-lam * TIMES)[None, :] * (1 + 0.05 * rng.standard_normal((4000, TIMES.size)))
    a, lam_fit, ok, _ = mono_exponential_batch(TIMES, noisy, LAM_P)
    assert ok.all()
    assert np.median(lam_fit) == pytest.approx(lam, rel=0.02)
    assert np.median(a / lam_fit) == pytest.approx(a0 / lam, rel=0.02)
    one = fit_mono_exponential(TIMES, noisy[0], LAM_P)
    assert one.integral == pytest.approx(a0 / lam, rel=0.15)


def test_bi_exponential_recovers_exact_kinetics():
    t = np.array([1.0, 4.0, 24.0, 72.0, 168.0])
    a0, lw, lu = 80.0, 0.03, 0.4
    fit = fit_bi_exponential(t, a0 * (np.exp(-lw * t) - np.exp(-lu * t)), LAM_P)
    assert fit.model == "bi" and not fit.fallback
    assert fit.params["a0"] == pytest.approx(a0, rel=1e-5)
    assert fit.params["lambda_washout_per_h"] == pytest.approx(lw, rel=1e-5)
    assert fit.params["lambda_uptake_per_h"] == pytest.approx(lu, rel=1e-5)
    assert fit.integral == pytest.approx(a0 * (1 / lw - 1 / lu), rel=1e-6)
    assert fit.evaluate(0.0) == pytest.approx(0.0, abs=1e-9)  # no activity at administration


def test_bi_exponential_from_noisy_samples():
    rng = np.random.default_rng(2)
    t = np.array([1.0, 4.0, 24.0, 72.0, 168.0])
    a0, lw, lu = 80.0, 0.03, 0.4
    truth = a0 * (1 / lw - 1 / lu)
    noisy = (a0 * (np.exp(-lw * t) - np.exp(-lu * t)))[None, :] * (1 + 0.03 * rng.standard_normal((2000, t.size)))
    a, w, u, ok, _ = bi_exponential_batch(t, noisy, LAM_P)
    assert ok.mean() > 0.99
    assert np.median(a * (1 / w - 1 / u)) == pytest.approx(truth, rel=0.02)
    assert np.median(w) == pytest.approx(lw, rel=0.05)


def test_trapezoid_against_hand_computed_integrals():
    t, y = [2.0, 4.0, 8.0], [3.0, 5.0, 1.0]
    middle = 2 * (3 + 5) / 2 + 4 * (5 + 1) / 2
    constant = trapezoid_integral(t, y, LAM_P, start="constant", tail="physical")
    assert constant.integral == pytest.approx(2 * 3 + middle + 1 / LAM_P, rel=1e-12)
    zero = trapezoid_integral(t, y, LAM_P, start="zero", tail="physical")
    assert zero.integral == pytest.approx(2 * 3 / 2 + middle + 1 / LAM_P, rel=1e-12)
    assert zero.evaluate(1.0) == pytest.approx(1.5) and constant.evaluate(1.0) == pytest.approx(3.0)
    # the fitted tail: from the maximum on the points fall by exp(-0.05 t) -> tail y_n / 0.05
    t2 = np.array([1.0, 10.0, 20.0, 40.0])
    y2 = np.array([2.0, 10.0, 10 * math.exp(-0.5), 10 * math.exp(-1.5)])
    fitted = trapezoid_integral(t2, y2, LAM_P, start="constant", tail="fit")
    assert fitted.lambda_eff_per_h == pytest.approx(0.05, rel=1e-9)
    assert fitted.integral == pytest.approx(2.0 + 9 * 6 + 10 * (10 + y2[2]) / 2 + 20 * (y2[2] + y2[3]) / 2 + y2[3] / 0.05)


def test_trapezoid_with_dense_points_approaches_the_analytic_integral():
    t = np.linspace(0.5, 300.0, 600)
    fit = trapezoid_integral(t, 50.0 * np.exp(-0.015 * t), LAM_P)
    assert fit.integral == pytest.approx(50.0 / 0.015, rel=2e-3)
    assert fit.lambda_eff_per_h == pytest.approx(0.015, rel=1e-6)


def test_clearance_slower_than_physical_decay_is_clamped():
    y = 40.0 * np.exp(-0.5 * LAM_P * TIMES)  # impossible: half the physical decay constant
    fit = fit_mono_exponential(TIMES, y, LAM_P)
    assert fit.clamped and fit.lambda_eff_per_h == LAM_P and "clamped" in fit.note
    assert fit.integral == pytest.approx(fit.params["a0"] / LAM_P)
    assert fit.integral < 40.0 / (0.5 * LAM_P)  # the unclamped integral would be twice as large
    tail = trapezoid_integral(TIMES, y, LAM_P)
    assert tail.clamped and tail.lambda_eff_per_h == LAM_P
    a, lw, lu, ok, clamped = bi_exponential_batch(np.r_[1.0, TIMES], 40.0 * (np.exp(-0.5 * LAM_P * np.r_[1.0, TIMES])
                                                                            - np.exp(-1.0 * np.r_[1.0, TIMES]))[None], LAM_P)
    assert ok[0] and clamped[0] and lw[0] == pytest.approx(LAM_P, rel=1e-3)


def test_failed_fits_fall_back_to_the_trapezoid_with_a_physical_tail():
    rising = [1.0, 2.0, 3.0, 4.0]
    for model in ("mono", "bi"):
        fit = integrate_curve(TIMES, rising, model, LAM_P)
        assert fit.fallback and fit.model == "trapezoid" and fit.requested == model
        expected = trapezoid_integral(TIMES, rising, LAM_P, tail="physical").integral
        assert fit.integral == pytest.approx(expected) and fit.lambda_eff_per_h == LAM_P
    assert integrate_curve(TIMES, [0.0, 0.0, 5.0, 0.0], "mono", LAM_P).fallback  # one positive point


def test_bad_times_are_user_errors():
    for times in ([5.0], [4.0, 4.0, 8.0], [-1.0, 2.0], [8.0, 4.0]):
        with pytest.raises(UserError):
            fit_mono_exponential(times, np.ones(len(times)), LAM_P)
    with pytest.raises(UserError, match="unknown fit model"):
        integrate_curve(TIMES, np.ones(4), "spline", LAM_P)


def test_voxel_fits_equal_the_organ_fit_on_a_uniform_region_and_count_failures():
    rng = np.random.default_rng(3)
    curve = 5.0 * np.exp(-0.03 * TIMES) * (1 + 0.04 * rng.standard_normal(TIMES.size))
    maps = [np.zeros((4, 5, 6)) for _ in TIMES]
    for m, v in zip(maps, curve):
        m[1:3, 1:4, 1:5] = v  # a uniform organ of 24 voxels
    for m, v in zip(maps, [1.0, 2.0, 3.0, 4.0]):
        m[0, 0, :2] = v  # two rising voxels: fallback
    for model in ("mono", "bi", "trapezoid"):
        organ = integrate_curve(TIMES, curve, model, LAM_P)
        for chunk in (7, 1 << 18):  # chunking does not change the result
            v = integrate_voxels(TIMES, maps, model, LAM_P, chunk_voxels=chunk)
            np.testing.assert_allclose(v.integral[1:3, 1:4, 1:5], organ.integral, rtol=1e-9)
            assert v.counts["voxels"] == 120 and v.counts["zero"] == 120 - 26
            assert v.counts["fallback"] == (0 if model == "trapezoid" else 2)
            assert v.counts["fitted"] == 26 - v.counts["fallback"]
        tail = "physical" if model != "trapezoid" else "fit"
        assert v.integral[0, 0, 0] == pytest.approx(trapezoid_integral(TIMES, [1.0, 2.0, 3.0, 4.0], LAM_P, tail=tail).integral)
        assert v.integral[3].max() == 0.0


def test_integrate_voxels_checks_its_inputs():
    with pytest.raises(UserError, match="maps"):
        integrate_voxels(TIMES, [np.ones(3)] * 3, "mono", LAM_P)
    with pytest.raises(UserError, match="same shape"):
        integrate_voxels(TIMES[:2], [np.ones(3), np.ones(4)], "mono", LAM_P)


def test_bi_exponential_survives_curves_that_fall_to_zero():
    """A voxel of the demo phantom's SPECTs (4, 24, 96, 168 h) that falls to 0 made the normal equations singular and
    `dosecnn integrate --fit bi` crashed with numpy's 'Singular matrix'. Such rows, and random ones with zeros, tiny
    and equal values, now end with finite results."""
    times = np.array([4.0, 24.0, 96.0, 168.0])
    lam = physical_decay_constant_per_h("Lu-177")
    rng = np.random.default_rng(11)
    rows = rng.choice([0.0, 1e-30, 1e-4, 0.03, 1.0, 7.5], size=(4000, 4))
    rows[0] = (0.02871909, 0.0275885, 0.00013261, 0.0)  # the demo's voxel
    rows[1] = (0.1, 0.5, 0.9, 1.0)
    a0, lw, lu, ok, clamped = bi_exponential_batch(times, rows, lam)
    assert np.all(np.isfinite(a0[ok]) & np.isfinite(lw[ok]) & np.isfinite(lu[ok]))
    assert np.all(lu[ok] >= lw[ok]) and np.all(lw[ok] >= lam * (1 - 1e-9))
    assert ok[0] and not ok[1]  # a rising curve shows no washout: not fitted (the caller falls back to the trapezoid)
    integral = a0[0] * (1 / lw[0] - 1 / lu[0])
    trapezoid = np.trapezoid(np.r_[rows[0, 0], rows[0]], np.r_[0.0, times])
    assert 0.5 * trapezoid < integral < 1.5 * trapezoid
