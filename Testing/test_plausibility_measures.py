"""The measures of bench/real_ct_plausibility.py on maps whose answer is known by construction: a perfusion that rises
toward the patient's back and base, in files of either voxel order."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
plausibility = pytest.importorskip("real_ct_plausibility")

from ImagingBasics.volume import Volume  # noqa: E402


def _case(direction):
    """Two box lungs (right at low x = patient right in LPS) with perfusion = posterior mm + 100, and 10 % of the
    right lung at -980 HU with half the perfusion."""
    shape = (20, 16, 24)  # z, y, x
    lungs = np.zeros(shape, np.uint8)
    lungs[2:18, 3:13, 2:10] = 1
    lungs[2:18, 3:13, 14:22] = 2
    volume = Volume(lungs, (2.0, 2.0, 3.0), direction=direction)
    k, j, i = np.indices(shape)
    lps = volume.index_to_lps(np.stack([i, j, k], -1).reshape(-1, 3).astype(float)).reshape(shape + (3,))
    perfusion = np.where(lungs > 0, lps[..., 1] - lps[..., 1].min() + 10.0, 0.0)
    ct = np.where(lungs > 0, -850.0, 40.0)
    emphysema = (lungs == 1) & (k < 4)
    ct[emphysema] = -980.0
    perfusion[emphysema] *= 0.5
    return volume, perfusion, ct


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0])], ids=["LPS", "RAS voxel order"])
def test_the_posterior_gradient_follows_the_patient_not_the_voxel_order(direction):
    lungs, perfusion, ct = _case(direction)
    left = plausibility.lung_measures(perfusion, ct, lungs, 2)
    assert left["posterior_to_anterior"] > 1.1 and left["spearman_posterior"] == pytest.approx(1.0)
    assert np.all(np.diff(left["ap_profile"]) > 0)  # anterior first, rising
    assert left["ap_thirds"][0] < left["ap_thirds"][1] < left["ap_thirds"][2]
    assert np.isnan(left["emphysema_to_rest"])  # no lung below -950 HU
    right = plausibility.lung_measures(perfusion, ct, lungs, 1)
    assert right["emphysema_share"] == pytest.approx(2 / 16) and right["emphysema_to_rest"] < 1.0
    assert right["emphysema_anterior"] == right["emphysema_posterior"] == pytest.approx(2 / 16)  # bottom slices
    assert left["emphysema_anterior"] == left["emphysema_posterior"] == 0.0
    ok = plausibility.acceptance({"right": right, "left": left}, plausibility.right_lung_share(perfusion, lungs))
    assert ok == {"gradient": True, "right_share": True, "emphysema": True}


def test_emphysema_by_half_follows_the_patient():
    """Emphysema-like lung in the posterior rows only (rows at larger LPS y): the posterior half's share, whatever
    the voxel order; the report marks it."""
    for direction in (np.eye(3), np.diag([-1.0, -1.0, 1.0])):
        lungs, perfusion, ct = _case(direction)
        ct = np.where(lungs.array > 0, -850.0, 40.0)
        k, j, i = np.indices(ct.shape)
        posterior_y = lungs.index_to_lps(np.stack([i, j, k], -1).reshape(-1, 3).astype(float))[:, 1].reshape(ct.shape)
        ct[(lungs.array == 2) & (posterior_y > np.median(posterior_y[lungs.array == 2]))] = -980.0
        left = plausibility.lung_measures(perfusion, ct, lungs, 2)
        assert left["emphysema_anterior"] == 0.0 and left["emphysema_posterior"] == pytest.approx(1.0)
    case = plausibility.Case(name="synthetic behind", what="test", maps={"baseline": perfusion})
    case.measures = {"baseline": {"right": plausibility.lung_measures(perfusion, ct, lungs, 1), "left": left}}
    case.shares = {"baseline": plausibility.right_lung_share(perfusion, lungs)}
    case.passed = {"baseline": plausibility.acceptance(case.measures["baseline"], case.shares["baseline"])}
    case.warnings = ["lung_truncated", "no_gravity_gradient", "lung_truncated"]
    text = plausibility.markdown([case], "machine", "network", "figures")
    assert "| synthetic behind | 0 / 0 | 0 / 100 (**more behind**) |" in text
    assert "| synthetic behind | `lung_truncated` x2, `no_gravity_gradient` |" in text


def test_a_reversed_gradient_and_a_lopsided_share_fail():
    lungs, perfusion, ct = _case(np.eye(3))
    reversed_map = np.where(lungs.array > 0, perfusion.max() + 1.0 - perfusion, 0.0)
    reversed_map[lungs.array == 2] *= 4.0  # most of it in the left lung
    measures = {side: plausibility.lung_measures(reversed_map, ct, lungs, v) for side, v in plausibility.SIDES.items()}
    share = plausibility.right_lung_share(reversed_map, lungs)
    assert share < 0.42 and measures["left"]["posterior_to_anterior"] < 1.0
    assert plausibility.acceptance(measures, share)["gradient"] is False
    assert plausibility.acceptance(measures, share)["right_share"] is False


def test_lobar_shares_sum_to_one():
    regions = np.zeros((4, 4, 5), np.uint8)
    for n, value in enumerate((4, 5, 6, 7, 8)):
        regions[..., n] = value
    shares = plausibility.lobar_shares(np.ones(regions.shape), Volume(regions, (1.0, 1.0, 1.0)))
    assert list(shares) == ["RUL", "RML", "RLL", "LUL", "LLL"] and sum(shares.values()) == pytest.approx(1.0)
    assert all(v == pytest.approx(0.2) for v in shares.values())
