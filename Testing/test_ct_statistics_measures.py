"""The measures of bench/ct_statistics.py on images whose answer is known by construction: noise of a known standard
deviation, white against smoothed noise, and a skin edge of a known blur."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
stats = pytest.importorskip("ct_statistics")


def test_global_noise_level_recovers_the_noise_of_uniform_tissue():
    rng = np.random.default_rng(0)
    hu = 50.0 + 20.0 * rng.standard_normal((6, 96, 96))
    mask = np.ones(hu.shape, bool)
    # the mode of 3 x 3 sample standard deviations lies a little below sigma (chi distribution, 8 degrees of freedom)
    assert stats.global_noise_level_hu(hu, mask) == pytest.approx(20.0, rel=0.12)
    assert np.isnan(stats.global_noise_level_hu(hu, np.zeros(hu.shape, bool)))


def test_smoothed_noise_has_a_lower_nps_mean_frequency_than_white_noise():
    rng = np.random.default_rng(1)
    white = rng.standard_normal((4, 128, 128))
    smooth = ndimage.gaussian_filter(white, (0, 1.5, 1.5))
    mask = np.ones(white.shape, bool)
    f_white = stats.nps_mean_frequency(white, mask, 0.8)
    f_smooth = stats.nps_mean_frequency(smooth, mask, 0.8)
    nyquist = 0.5 / 0.8
    assert 0.5 * nyquist < f_white < nyquist and f_smooth < 0.6 * f_white


@pytest.mark.parametrize("sigma_mm", [0.6, 1.2])
def test_skin_edge_width_of_a_gaussian_blurred_step(sigma_mm):
    pixel = 0.5
    x = (np.arange(400) - 100) * pixel  # a body (40 HU) from x = 0 to 100 mm in air (-1000 HU)
    row = np.where((x >= 0) & (x < 100), 40.0, -1000.0)
    row = ndimage.gaussian_filter1d(row, sigma_mm / pixel)
    hu = np.tile(row, (5, 60, 1))
    width, overshoot = stats.skin_edge(hu, pixel)
    assert width == pytest.approx(2.563 * sigma_mm, rel=0.1)  # 10-90 % of an erf: 2.563 sigma
    assert overshoot < 5.0


def test_lung_histogram_percentiles_and_emphysema_share():
    hu = np.full((10, 10, 10), -850.0)
    hu[:2] = -970.0
    lungs = np.ones(hu.shape, np.uint8)
    h = stats.lung_histogram(hu, lungs)
    assert h["below_950_percent"] == pytest.approx(20.0) and h["p50"] == -850.0 and h["p5"] == -970.0
