"""Li 2020's metrics (MDE, NRMSE) against hand-computed values, the noise-corrected NRMSE, Dx values, DVHs and the
comparison of methods."""

from __future__ import annotations

import math

import numpy as np
import pytest

from DoseCNNLib.dosimetry.metrics import (
    compare_methods,
    comparison_figure,
    cumulative_dvh,
    dose_at_volume_percent,
    dose_statistics,
    dvh_figure,
    dvh_rows,
    mean_dose_error,
    nrmse,
    nrmse_noise_corrected,
)
from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume


def test_mde_and_nrmse_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    x_hat = np.array([1.5, 2.0, 2.0, 4.0])
    assert mean_dose_error(x_hat, x) == pytest.approx(abs(2.375 - 2.5) / 2.5)
    assert nrmse(x_hat, x) == pytest.approx(math.sqrt((0.25 + 1.0) / 4) / math.sqrt(30 / 4))
    mask = np.array([True, False, True, False])
    assert mean_dose_error(x_hat, x, mask) == pytest.approx(abs(1.75 - 2.0) / 2.0)
    assert nrmse(x_hat, x, mask) == pytest.approx(math.sqrt(1.25 / 2) / math.sqrt(10 / 2))
    assert mean_dose_error(x, x) == 0.0 and nrmse(x, x) == 0.0
    assert math.isnan(mean_dose_error(x, np.zeros(4)))
    with pytest.raises(UserError):
        nrmse(x, x, np.zeros(4, bool))


def test_noise_corrected_nrmse_is_unbiased_for_a_noisy_reference():
    rng = np.random.default_rng(0)
    truth = rng.uniform(1.0, 3.0, 200_000)
    estimate = truth * (1 + 0.1 * rng.standard_normal(truth.size))
    sigma = 0.2 * truth  # a Monte Carlo reference with 20 % relative standard error
    reference = truth + sigma * rng.standard_normal(truth.size)
    true_value = nrmse(estimate, truth)
    assert nrmse(estimate, reference) > true_value * 1.5  # the plain NRMSE counts the reference's noise
    assert nrmse_noise_corrected(estimate, reference, sigma) == pytest.approx(true_value, rel=0.03)
    assert nrmse_noise_corrected(reference, reference, sigma) == 0.0  # floored at zero


def test_dx_on_known_distributions():
    d = np.arange(1.0, 101.0)  # 100 voxels, doses 1..100
    assert dose_at_volume_percent(d, 2) == 99.0  # the hottest 2 voxels get at least 99
    assert dose_at_volume_percent(d, 50) == 51.0
    assert dose_at_volume_percent(d, 98) == 3.0
    assert dose_at_volume_percent(d, 100) == 1.0 and dose_at_volume_percent(d, 0.1) == 100.0
    u = np.random.default_rng(1).uniform(0.0, 10.0, 100_000)
    for x in (2, 50, 98):
        assert dose_at_volume_percent(u, x) == pytest.approx(10.0 * (1 - x / 100), abs=0.05)


def test_dose_statistics_per_label():
    dose = Volume(np.arange(2 * 5 * 10, dtype=np.float32).reshape(2, 5, 10), (2.0, 2.0, 5.0))
    labels = dose.with_array(np.zeros(dose.shape, np.uint8))
    labels.array[0] = 1  # values 0..49
    labels.array[1, :, :4] = 7
    rows = dose_statistics(dose, labels, {1: "liver"})
    assert [r["label"] for r in rows] == [1, 7] and rows[0]["name"] == "liver" and rows[1]["name"] == "label 7"
    r = rows[0]
    assert r["volume_ml"] == pytest.approx(50 * 0.02)
    assert (r["mean_gy"], r["min_gy"], r["max_gy"]) == (24.5, 0.0, 49.0)
    assert (r["d2_gy"], r["d50_gy"], r["d98_gy"]) == (49.0, 25.0, 1.0)  # the 1st, 25th and 49th hottest voxels
    with pytest.raises(UserError, match="grid"):
        dose_statistics(dose, Volume(labels.array, (1.0, 1.0, 1.0)))


def test_dvh_is_monotone_and_starts_at_100_percent(tmp_path):
    d = np.random.default_rng(2).gamma(2.0, 3.0, 5000)
    levels, percent = cumulative_dvh(d, 100)
    assert levels[0] == 0.0 and percent[0] == 100.0 and levels[-1] == pytest.approx(d.max())
    assert np.all(np.diff(percent) <= 0) and percent[-1] > 0
    assert percent[40] == pytest.approx(100.0 * np.mean(d >= levels[40]))
    dose = Volume(d.reshape(5, 10, 100))
    labels = dose.with_array(np.ones(dose.shape, np.uint8))
    labels.array[:2] = 2
    rows = dvh_rows(dose, labels, {2: "kidney"}, n_points=50)
    assert len(rows) == 100 and {r["name"] for r in rows} == {"label 1", "kidney"}
    assert all(r["volume_percent"] == 100.0 for r in rows if r["dose_gy"] == 0.0)
    dvh_figure(rows, tmp_path / "dvh.png")
    assert (tmp_path / "dvh.png").stat().st_size > 1000


def test_compare_methods_and_figure(tmp_path):
    ref = Volume(np.full((2, 4, 4), 2.0))
    labels = ref.with_array(np.zeros((2, 4, 4), np.uint8))
    labels.array[0] = 1
    labels.array[1, :2] = 2
    vdk = ref.with_array(np.full((2, 4, 4), 2.4))
    cnn = ref.with_array(ref.array * np.where(np.arange(4) % 2, 1.1, 0.9)[None, None, :])
    rows = compare_methods({"VDK": vdk, "CNN": cnn}, ref, labels, {1: "tumour", 2: "kidney"},
                           reference_sigma=ref.with_array(np.full((2, 4, 4), 0.01)))
    assert [(r["name"], r["method"]) for r in rows] == [("tumour", "VDK"), ("tumour", "CNN"), ("kidney", "VDK"),
                                                       ("kidney", "CNN")]
    assert rows[0]["mde"] == pytest.approx(0.2) and rows[0]["nrmse"] == pytest.approx(0.2)
    assert rows[1]["mde"] == pytest.approx(0.0, abs=1e-12) and rows[1]["nrmse"] == pytest.approx(0.1)
    assert rows[1]["nrmse_noise_corrected"] == pytest.approx(math.sqrt((0.04 - 1e-4) / (4 - 1e-4)))
    comparison_figure(rows, tmp_path / "compare.png", title="VDK vs CNN")
    assert (tmp_path / "compare.png").stat().st_size > 1000
    with pytest.raises(UserError, match="grid"):
        compare_methods({"VDK": Volume(np.ones((2, 2, 2)))}, ref, labels)
