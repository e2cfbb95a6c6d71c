"""The physiological plausibility of a map (CTPerfusionMappingLib.plausibility) and its warnings in `ctpm run`'s
metrics: on maps whose answer is known by construction (either voxel order), and through the whole pipeline on real
CTs (the HU-only baseline, so that the answers do not depend on the bundled weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from CTPerfusionMappingLib import plausibility as P
from CTPerfusionMappingLib.pipeline import run_pipeline
from CTPerfusionMappingLib.report import _plausibility_text, write_run_outputs
from ImagingBasics.validation import read_ct
from ImagingBasics.volume import Volume


def _lungs(direction=None):
    """Two box lungs (right at low x = patient right in LPS when ``direction`` is the identity), their CT at
    -850 HU, and each voxel's LPS y (mm, larger toward the back)."""
    shape = (20, 16, 24)  # z, y, x
    labels = np.zeros(shape, np.uint8)
    labels[2:18, 3:13, 2:10] = 1
    labels[2:18, 3:13, 14:22] = 2
    lungs = Volume(labels, (2.0, 2.0, 3.0), direction=np.eye(3) if direction is None else direction)
    k, j, i = np.indices(shape)
    lps = lungs.index_to_lps(np.stack([i, j, k], -1).reshape(-1, 3).astype(float)).reshape(shape + (3,))
    ct = lungs.with_array(np.where(labels > 0, -850.0, 40.0).astype(np.float32))
    return lungs, ct, lps[..., 1]


def _map(lungs, values):
    return lungs.with_array(np.where(lungs.array > 0, values, 0.0).astype(np.float32))


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0])], ids=["LPS", "RAS voxel order"])
def test_the_gradient_is_measured_toward_the_patients_back(direction):
    lungs, _, posterior_mm = _lungs(direction)
    rising = posterior_mm - posterior_mm.min() + 10.0  # perfusion rising toward the back
    for side in (1, 2):
        forward, backward = P.posterior_to_anterior(rising, lungs, side), P.posterior_to_anterior(1.0 / rising, lungs, side)
        assert forward > 1.2 and backward < 1 / 1.2  # in both voxel orders: the halves are the patient's, not rows'
    assert P.posterior_to_anterior(np.ones(lungs.array.shape), lungs, 1) == pytest.approx(1.0)
    assert np.isnan(P.posterior_to_anterior(rising, lungs.with_array(np.zeros_like(lungs.array)), 1))


def test_a_map_with_the_supine_features_gives_no_warning():
    lungs, ct, posterior_mm = _lungs()
    result = P.map_plausibility(_map(lungs, posterior_mm - posterior_mm.min() + 10.0), ct, lungs)
    assert result["lungs"]["right"]["judged"] and result["right_share_judged"]
    assert result["right_share"] == pytest.approx(0.5)  # two equal boxes, the same gradient
    assert np.isnan(result["lungs"]["left"]["emphysema_to_rest"])  # no lung below -950 HU: not judged
    assert P.plausibility_warnings(result) == []


def test_a_flat_map_is_within_the_margin():
    """A map 3 % higher in front (P/A ~0.97): no gradient, but within the margin that keeps weak true gradients
    (phantom truths down to 0.90) from warning on noise; 8 % higher in front warns."""
    lungs, ct, posterior_mm = _lungs()
    depth = (posterior_mm - posterior_mm.min()) / np.ptp(posterior_mm)  # 0 front .. 1 back
    for slope, warned in ((0.06, False), (0.16, True)):
        result = P.map_plausibility(_map(lungs, 1.0 - slope * depth), ct, lungs)
        ratio = result["lungs"]["right"]["posterior_to_anterior"]
        assert (ratio < P.MIN_POSTERIOR_TO_ANTERIOR) == warned and 0.85 < ratio < 1.0
        assert bool(P.plausibility_warnings(result)) == warned


def test_a_reversed_gradient_warns_for_each_judged_lung_of_a_supine_patient():
    lungs, ct, posterior_mm = _lungs()
    reversed_map = _map(lungs, posterior_mm.max() - posterior_mm + 10.0)
    warnings = P.plausibility_warnings(P.map_plausibility(reversed_map, ct, lungs))
    assert [(w.code, w.values["lung"]) for w in warnings] == [("no_gravity_gradient", "right"),
                                                              ("no_gravity_gradient", "left")]
    assert all(w.values["posterior_to_anterior"] < 1.0 and "caution" in w.message for w in warnings)
    cut_left = P.plausibility_warnings(P.map_plausibility(reversed_map, ct, lungs, truncated=("left",)))
    assert [w.values["lung"] for w in cut_left] == ["right"]  # the part in view of a cut lung is not judged
    assert P.plausibility_warnings(P.map_plausibility(reversed_map, ct, lungs, supine=False)) == []  # prone


def test_emphysema_in_the_posterior_half_is_named_as_a_cause():
    lungs, ct, posterior_mm = _lungs()
    hu = ct.array.copy()
    left = lungs.array == 2
    hu[left & (posterior_mm > np.median(posterior_mm[left]))] = -980.0  # the left lung's back is emphysematous
    flat = _map(lungs, np.where(hu < -950, 0.2, 1.0))  # and poorly perfused: the map is right to lack the gradient
    result = P.map_plausibility(flat, ct.with_array(hu), lungs)
    left_m = result["lungs"]["left"]
    assert left_m["emphysema_posterior"] == pytest.approx(1.0) and left_m["emphysema_anterior"] == 0.0
    assert left_m["emphysema_to_rest"] == pytest.approx(0.2)
    (warning,) = [w for w in P.plausibility_warnings(result) if w.values.get("lung") == "left"]
    assert warning.code == "no_gravity_gradient" and "posterior half holds more emphysema-like lung" in warning.message
    assert warning.values["emphysema_posterior_percent"] == 100.0


def test_perfused_emphysema_and_a_lopsided_share_warn():
    lungs, ct, posterior_mm = _lungs()
    hu = ct.array.copy()
    hu[(lungs.array == 1) & (np.indices(hu.shape)[0] < 4)] = -980.0  # 2 of the right lung's 16 slices
    values = posterior_mm - posterior_mm.min() + 10.0
    values = np.where(hu < -950, values * 3.0, values)  # emphysema-like lung perfused more than the rest
    values = np.where(lungs.array == 2, values * 0.25, values)  # and most of the perfusion on the right
    result = P.map_plausibility(_map(lungs, values), ct.with_array(hu), lungs)
    codes = {w.code: w for w in P.plausibility_warnings(result)}
    assert set(codes) == {"emphysema_perfused", "right_share_unusual"}
    assert codes["emphysema_perfused"].values["lung"] == "right" and codes["emphysema_perfused"].values[
        "emphysema_to_rest"] > 1.0
    assert codes["right_share_unusual"].values["right_share_percent"] > 65.0
    cut = P.plausibility_warnings(P.map_plausibility(_map(lungs, values), ct.with_array(hu), lungs, truncated=("left",)))
    assert "right_share_unusual" not in {w.code for w in cut}  # a share with a cut lung says nothing


def test_the_overview_lists_the_maps_and_the_spects_features():
    lungs, ct, posterior_mm = _lungs()
    rising = _map(lungs, posterior_mm - posterior_mm.min() + 10.0)
    result = P.map_plausibility(rising, ct, lungs, truncated=("left",))
    text = "\n".join(_plausibility_text(result))
    assert "right 1.50, left 1.50 (cut)" in text and "the SPECT's" not in text
    flat = P.with_reference_spect(result, _map(lungs, np.ones(lungs.array.shape)), ct, lungs)
    assert flat["spect"]["lungs"]["right"]["posterior_to_anterior"] == pytest.approx(1.0)
    flat_text = "\n".join(_plausibility_text(flat))
    assert "(SPECT 1.00, 1.00)" in flat_text and "the SPECT's right lung share 50.0 %" in flat_text


def test_the_status_line_names_both_ratios():
    lungs, ct, posterior_mm = _lungs()
    rising = _map(lungs, posterior_mm - posterior_mm.min() + 10.0)
    result = P.map_plausibility(rising, ct, lungs, truncated=("left",))
    assert P.summary_text(result) == "posterior/anterior right 1.50, left 1.50 (cut)"
    flat = P.with_reference_spect(result, _map(lungs, np.ones(lungs.array.shape)), ct, lungs)
    assert P.summary_text(flat).endswith("(SPECT 1.00, 1.00)")
    stored = json.loads(json.dumps(dict(flat, lungs={s: dict(m, posterior_to_anterior=None)
                                                     for s, m in flat["lungs"].items()})))  # NaN stored as null
    assert P.summary_text(stored).startswith("posterior/anterior right n/a, left n/a (cut)")


def test_too_little_emphysema_is_not_judged():
    lungs, ct, posterior_mm = _lungs()
    hu = ct.array.copy()
    hu[3, 5, 5] = -990.0  # one voxel of 1280 in the right lung: under 0.5 %
    assert np.isnan(P.emphysema_to_rest(np.ones(hu.shape), hu, lungs.array == 1))


# --- through the pipeline, on real CTs ----------------------------------------------------------------------------------
def test_ctpm_run_reports_the_missing_gradient_of_an_emphysematous_real_ct(shared_data, tmp_path):
    """CIP ct-64 (COPD): its HU-only map is flat front to back in the right lung (no warning: within the margin) and
    runs against the gradient in the left lung, whose posterior half holds more lung below -950 HU: the warning
    names that cause. The numbers reach metrics.json and the
    overview figure's text."""
    ct = read_ct(shared_data / "real" / "cip_chest_ct" / "ct-64.nrrd")
    result = run_pipeline(ct)
    plaus = result.metrics["plausibility"]
    assert plaus["supine"] and plaus["lungs"]["right"]["judged"] and plaus["lungs"]["left"]["judged"]
    left = plaus["lungs"]["left"]
    assert left["posterior_to_anterior"] < 0.9 and left["emphysema_posterior"] > left["emphysema_anterior"]
    assert 0.42 <= plaus["right_share"] <= 0.65
    gradient = {w["values"]["lung"]: w["message"] for w in result.metrics["warnings"] if w["code"] == "no_gravity_gradient"}
    assert set(gradient) == {"left"} and "emphysema-like" in gradient["left"]
    assert 0.95 <= plaus["lungs"]["right"]["posterior_to_anterior"] < 1.05  # flat, within the margin: no warning
    written = write_run_outputs(result, tmp_path / "out", ct)
    stored = json.loads(written["metrics"].read_text())
    assert stored["plausibility"]["lungs"]["left"]["posterior_to_anterior"] == pytest.approx(left["posterior_to_anterior"])
    prone = run_pipeline(ct, patient_position="HFP").metrics["warnings"]
    assert "patient_not_supine" in {w["code"] for w in prone} and "no_gravity_gradient" not in {w["code"] for w in prone}


def test_a_real_ct_that_cuts_the_lungs_is_not_judged(shared_data):
    ct = read_ct(shared_data / "real" / "totalsegmentator_chest_ct" / "pulmonary_report_ct_cropped_chestCTA_1p5mm.nii.gz")
    result = run_pipeline(ct)
    plaus = result.metrics["plausibility"]
    assert not plaus["lungs"]["right"]["judged"] and not plaus["lungs"]["left"]["judged"]
    assert not plaus["right_share_judged"]
    codes = {w["code"] for w in result.metrics["warnings"]}
    assert "lung_truncated" in codes and not codes & {"no_gravity_gradient", "right_share_unusual", "emphysema_perfused"}
