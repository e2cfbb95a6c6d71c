"""Tests of the evaluation metrics (CTPerfusionMappingLib.metrics)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats
from skimage.metrics import structural_similarity

from CTPerfusionMappingLib.labels import lung_thirds, normalise_labels
from CTPerfusionMappingLib.metrics import (
    dice,
    dsc_high_low,
    evaluate,
    functional_volumes,
    pearson_r,
    percentile_functional_volumes,
    region_table,
    spearman_r,
    ssim,
    write_region_csv,
)
from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume


@pytest.fixture()
def rng():
    return np.random.default_rng(1234)


# --- correlations ------------------------------------------------------------------------------------
def test_correlations_equal_scipy(rng):
    a = rng.random((10, 12, 14))
    b = 0.5 * a + rng.random(a.shape)
    mask = rng.random(a.shape) > 0.4
    assert spearman_r(a, b, mask) == pytest.approx(stats.spearmanr(a[mask], b[mask])[0], abs=1e-12)
    assert pearson_r(a, b, mask) == pytest.approx(stats.pearsonr(a[mask], b[mask])[0], abs=1e-12)
    assert spearman_r(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    # ranks: a monotone transform has Spearman 1 but Pearson below 1
    assert spearman_r(a, np.exp(8 * a), mask) == pytest.approx(1.0)
    assert pearson_r(a, np.exp(8 * a), mask) < 0.95
    assert spearman_r(a, -a**3, mask) == pytest.approx(-1.0)
    # Volumes are accepted
    assert spearman_r(Volume(a), Volume(b), mask) == pytest.approx(spearman_r(a, b, mask))


def test_correlations_undefined_cases(rng):
    a = rng.random((5, 5, 5))
    mask = np.ones(a.shape, bool)
    assert math.isnan(spearman_r(a, np.full(a.shape, 3.0), mask))
    assert math.isnan(pearson_r(np.zeros(a.shape), a, mask))
    assert math.isnan(spearman_r(a, a, np.zeros(a.shape, bool)))
    b = a.copy()
    b[0, 0, 0] = np.nan  # non-finite voxels are left out
    m = mask.copy()
    m[0, 0, 0] = False
    assert spearman_r(a, b, mask) == pytest.approx(stats.spearmanr(a[m], b[m])[0])
    with pytest.raises(UserError, match="differ in shape"):
        spearman_r(a, a[:4], None)


# --- SSIM ---------------------------------------------------------------------------------------------
def test_ssim_equals_skimage_without_mask(rng):
    a = rng.random((16, 18, 20))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    assert ssim(a, b, data_range=1.0) == pytest.approx(structural_similarity(a, b, data_range=1.0), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)


def test_ssim_masked_is_mean_of_full_map(rng):
    a = rng.random((20, 24, 26))
    b = np.clip(a + 0.3 * rng.standard_normal(a.shape), 0, 1)
    mask = np.zeros(a.shape, bool)
    mask[6:12, 5:15, 9:20] = True
    _, smap = structural_similarity(a, b, data_range=1.0, full=True)
    # computed on a crop of the mask's box, it still equals the whole volume's SSIM map at the mask voxels
    assert ssim(a, b, mask) == pytest.approx(float(smap[mask].mean()), abs=1e-12)
    small = np.zeros(a.shape, bool)
    small[0, 0, 0] = True
    assert ssim(a, b, small) == pytest.approx(float(smap[0, 0, 0]), abs=1e-12)
    with pytest.raises(UserError, match="at least 7"):
        ssim(a[:, :, :5], b[:, :, :5])


# --- functional volumes and DSC ----------------------------------------------------------------------------
def test_functional_volumes_ramp_split_at_066_of_max():
    ramp = np.tile(np.arange(101, dtype=float).reshape(1, 1, 101) / 100.0, (2, 3, 1))  # 0, 0.01, .., 1
    mask = np.ones(ramp.shape, bool)
    fv = functional_volumes(ramp, mask)
    np.testing.assert_array_equal(fv, np.where(ramp >= 0.66, 2, 1))
    assert int((fv[0, 0] == 2).sum()) == 35  # 0.66 .. 1.00: the split value itself is high
    assert functional_volumes(3 * ramp, mask).tolist() == fv.tolist()
    # the maximum inside the mask is what counts: mask out the top half
    mask[..., 51:] = False
    fv = functional_volumes(ramp, mask)
    np.testing.assert_array_equal(fv[..., 51:], 0)
    np.testing.assert_array_equal(fv[..., :51], np.where(ramp[..., :51] >= 0.33, 2, 1))
    assert int((fv[0, 0] == 2).sum()) == 18  # 0.33 .. 0.50
    with pytest.raises(UserError, match="no positive value"):
        functional_volumes(np.zeros((3, 3, 3)), None)
    with pytest.raises(UserError, match="empty"):
        functional_volumes(ramp, np.zeros(ramp.shape, bool))


def test_percentile_functional_volumes():
    values = np.arange(1, 301, dtype=float).reshape(3, 10, 10)
    t = percentile_functional_volumes(values, None)
    assert [int((t == k).sum()) for k in (1, 2, 3)] == [100, 100, 100]
    assert values[t == 3].min() > values[t == 2].max() > values[t == 1].max()
    half = percentile_functional_volumes(values, values > 100, (50,))
    assert int((half == 2).sum()) == 100 and int((half == 1).sum()) == 100 and int((half == 0).sum()) == 100
    assert values[half == 2].min() > 200
    with pytest.raises(UserError, match="increase strictly"):
        percentile_functional_volumes(values, None, (60, 40))


def test_dice_known_cases():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[0:4, 0:4, 0:4] = True
    b[0:4, 0:4, 2:6] = True  # half of each cube overlaps
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, ~a & b & False) == 0.0
    assert math.isnan(dice(np.zeros_like(a), np.zeros_like(a)))


def test_dsc_high_low_known_case():
    x = np.arange(10, dtype=float).reshape(1, 1, 10) / 9.0  # normalised ramp, high where >= 0.66: x index 6..9
    pred = np.tile(x, (2, 2, 1))
    ref = np.roll(pred, 1, axis=2)  # high at 7..9 and 0 (value 1.0 at index 0), low at 1..6
    d = dsc_high_low(pred, ref, None)
    # pred high {6,7,8,9}, ref high {0,7,8,9}: 2*3/8; pred low {0..5}, ref low {1..6}: 2*5/12
    assert d["high"] == pytest.approx(6 / 8)
    assert d["low"] == pytest.approx(10 / 12)
    # scale invariance: each map normalised by its own maximum
    assert dsc_high_low(5 * pred, 0.1 * ref, None) == pytest.approx(d)


# --- region table ----------------------------------------------------------------------------------------
def _table_case():
    regions = np.zeros((4, 5, 6), np.uint8)
    regions[0, :, :] = 4  # 30 voxels RUL
    regions[1, :, :3] = 5  # 15 voxels RML
    regions[2, :, :] = 7  # 30 voxels LUL
    perf = np.zeros(regions.shape)
    perf[regions == 4] = 1.0
    perf[regions == 5] = 2.0
    perf[regions == 7] = 3.0
    perf[3] = 100.0  # outside the regions: not counted
    return regions, perf


def test_region_table_known_means_shares_volumes(tmp_path):
    regions, perf = _table_case()
    ref = np.where(regions > 0, 1.0, 0.0)
    rows = region_table(perf, Volume(regions, spacing=(2.0, 2.0, 2.5)), None, reference=ref)
    by_name = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows] == ["RUL", "RML", "LUL", "right lung", "left lung", "both lungs"]
    total = 30 * 1 + 15 * 2 + 30 * 3  # 150
    assert by_name["RUL"]["volume_ml"] == pytest.approx(30 * 0.01)
    assert by_name["RML"]["mean_perfusion"] == pytest.approx(2.0)
    assert by_name["LUL"]["perfusion_share_percent"] == pytest.approx(100 * 90 / total)
    assert by_name["right lung"]["perfusion_share_percent"] == pytest.approx(100 * 60 / total)
    assert by_name["right lung"]["mean_perfusion"] == pytest.approx(60 / 45)
    assert by_name["both lungs"]["perfusion_share_percent"] == pytest.approx(100.0)
    assert by_name["both lungs"]["voxels"] == 75 and by_name["both lungs"]["region_id"] == 1
    assert by_name["RML"]["reference_share_percent"] == pytest.approx(100 * 15 / 75)
    assert by_name["LUL"]["mean_reference"] == pytest.approx(1.0)
    assert by_name["RUL"]["kind"] == "lobe" and by_name["RUL"]["side"] == "right"
    # thirds are called thirds
    lungs = Volume(np.where(regions == 7, 2, np.where(regions > 0, 1, 0)).astype(np.uint8))
    third_rows = region_table(perf, lung_thirds(lungs), 0.001)
    assert all("lobe" not in r["name"] and r["kind"] in ("third", "lung", "lungs") for r in third_rows)
    path = tmp_path / "out" / "regions.csv"
    write_region_csv(rows, path)
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert len(read) == 6 and read[0]["name"] == "RUL" and float(read[2]["mean_perfusion"]) == pytest.approx(3.0)
    assert not list(path.parent.glob(".*tmp*"))
    with pytest.raises(UserError, match="no lung regions"):
        region_table(perf, np.zeros_like(regions), 1.0)


# --- evaluate -----------------------------------------------------------------------------------------------
def test_evaluate_realistic_random_case(rng):
    shape = (24, 20, 32)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    lungs = np.zeros(shape, np.uint8)
    lungs[((z - 12) / 10.0) ** 2 + ((y - 10) / 8.0) ** 2 + ((x - 8) / 6.5) ** 2 <= 1] = 1
    lungs[((z - 12) / 10.0) ** 2 + ((y - 10) / 8.0) ** 2 + ((x - 24) / 6.5) ** 2 <= 1] = 2
    gradient = 0.3 + 0.7 * (shape[1] - y) / shape[1]  # posterior-dependent perfusion
    ref = np.where(lungs > 0, gradient + 0.1 * rng.standard_normal(shape), 0.0)
    pred = np.where(lungs > 0, gradient + 0.15 * rng.standard_normal(shape), 0.0)
    hu = np.where(rng.random(shape) < 0.05, 40.0, -800.0)  # 5 % "vessels"
    labels = normalise_labels(Volume(lungs, spacing=(3.0, 3.0, 3.0)), "lungmask_r231")
    result = evaluate(Volume(pred, spacing=(3.0, 3.0, 3.0)), ref, labels, hu=hu)
    json.dumps(result, allow_nan=False)  # strict JSON
    for scope in ("right", "left", "patient"):
        entry = result[scope]
        for key in ("spearman", "pearson", "ssim", "dsc_high", "dsc_low"):
            assert isinstance(entry[key], float) and math.isfinite(entry[key]), (scope, key)
        assert 0.3 < entry["spearman"] < 1.0 and 0 < entry["dsc_high"] <= 1
    assert result["patient"]["voxels"] == result["right"]["voxels"] + result["left"]["voxels"]
    assert result["patient"]["voxels"] == int(((lungs > 0) & (hu <= -300)).sum())
    m = (lungs == 1) & (hu <= -300)
    assert result["right"]["spearman"] == pytest.approx(stats.spearmanr(pred[m], ref[m])[0])
    names = [r["name"] for r in result["regions"]]
    assert "right upper third" in names and names[-1] == "both lungs"
    assert result["regions"][-1]["volume_ml"] == pytest.approx(result["patient"]["voxels"] * 0.027)
    # a perfect prediction scores 1 everywhere
    perfect = evaluate(ref, ref, lungs)
    for key in ("spearman", "pearson", "ssim", "dsc_high", "dsc_low"):
        assert perfect["patient"][key] == pytest.approx(1.0)
    # a missing lung gives None, not an error
    one = evaluate(pred, ref, np.where(lungs == 1, 1, 0))
    assert one["left"]["voxels"] == 0 and one["left"]["spearman"] is None and one["right"]["ssim"] is not None


def test_percentile_class_dice_known_answers():
    from CTPerfusionMappingLib.metrics import dsc_percentile_classes

    ramp = np.arange(3 * 4 * 5, dtype=float).reshape(3, 4, 5)
    assert dsc_percentile_classes(ramp, ramp) == [1.0, 1.0, 1.0]
    assert dsc_percentile_classes(ramp, 2 * ramp + 7) == [1.0, 1.0, 1.0]  # ranks only
    low, middle, high = dsc_percentile_classes(ramp, -ramp)
    assert low == 0.0 and high == 0.0 and middle == pytest.approx(1.0, abs=0.15)
    assert dsc_percentile_classes(ramp, -ramp, percentiles=(50.0,)) == [0.0, 0.0]


def test_evaluate_reports_percentile_splits():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 1, (10, 12, 14))
    lungs = np.zeros(ref.shape, np.uint8)
    lungs[:, :, :7] = 1
    lungs[:, :, 7:] = 2
    out = evaluate(ref, ref, lungs)
    for scope in ("right", "left", "patient"):
        assert out[scope]["dsc_top50"] == 1.0 and out[scope]["dsc_tertiles"] == [1.0, 1.0, 1.0]


def test_evaluate_reports_the_agreement_inside_each_region():
    """Per-lobe agreement (Ren 2022 Front Oncol): a lobe where the prediction follows the SPECT and one where it is inverted."""
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.1, 1.0, (20, 20, 20))
    lungs = np.zeros(ref.shape, np.uint8)
    lungs[:, :, :10] = 1
    lungs[:, :, 10:] = 2
    regions = np.where(lungs == 1, 4, 7).astype(np.uint8)
    regions[:10, :, :10] = 5
    pred = ref.copy()
    pred[regions == 5] = 1.1 - ref[regions == 5]  # RML inverted
    result = evaluate(pred, ref, lungs, regions)
    rows = {r["name"]: r for r in result["regions"]}
    assert rows["RUL"]["spearman"] == pytest.approx(1.0) and rows["LUL"]["dsc_high"] == pytest.approx(1.0)
    assert rows["RML"]["spearman"] == pytest.approx(-1.0)
    assert rows["left lung"]["spearman"] == pytest.approx(result["left"]["spearman"])
    assert rows["right lung"]["spearman"] == pytest.approx(result["right"]["spearman"])
    assert rows["both lungs"]["spearman"] == pytest.approx(result["patient"]["spearman"])
