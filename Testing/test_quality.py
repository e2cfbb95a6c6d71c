"""Quality warnings (ImagingBasics/quality.py) and the lung checks (CTPerfusionMappingLib/quality.py) on real CTs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from CTPerfusionMappingLib.lungseg import segment_lungs
from CTPerfusionMappingLib.quality import lung_sides, lung_truncation, lung_volume, patient_orientation
from ImagingBasics.files import write_json
from ImagingBasics.imageio import read_volume
from ImagingBasics.quality import QualityWarning, warning_dicts
from ImagingBasics.volume import Volume


def test_a_warning_has_a_code_a_line_and_numbers(tmp_path):
    w = QualityWarning("lung_truncated", "the right lung is cut", {"area_cm2": 55.1})
    assert str(w) == "the right lung is cut"
    write_json({"warnings": warning_dicts([w, w])}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["warnings"] == [
        {"code": "lung_truncated", "message": "the right lung is cut", "values": {"area_cm2": 55.1}}]
    for code, message in (("Lung", "x"), ("lung truncated", "x"), ("ok", "two\nlines")):
        with pytest.raises(ValueError):
            QualityWarning(code, message)


def test_only_a_known_position_that_is_not_supine_warns():
    for quiet in (None, "", "HFS", "FFS", "hfs"):
        assert patient_orientation(quiet) == []
    for position, words in (("HFP", "head first, prone"), ("FFP", "feet first, prone"),
                            ("HFDR", "lying on the right side"), ("FFDL", "lying on the left side"), ("AFDR", "not supine")):
        (w,) = patient_orientation(position)
        assert w.code == "patient_not_supine" and w.values == {"patient_position": position}
        assert words in w.message and position in w.message and "\n" not in w.message


@pytest.fixture(scope="module")
def real_lungs(shared_data):
    folder = shared_data / "real"
    return {name: segment_lungs(read_volume(folder / path)).lungs for name, path in (
        ("cip", "cip_chest_ct/ct-64.nrrd"),
        ("ts_pulmonary", "totalsegmentator_chest_ct/pulmonary_report_ct_cropped_chestCTA_1p5mm.nii.gz"),
        ("ts_aorta", "totalsegmentator_chest_ct/aorta_report_ct_cropped_chestCTA_1p5mm.nii.gz"))}


def test_whole_lungs_carry_no_truncation_warning_and_cropped_ones_do(real_lungs):
    assert lung_truncation(real_lungs["cip"]) == [] and lung_volume(real_lungs["cip"]) == []
    for name in ("ts_pulmonary", "ts_aorta"):
        warnings = lung_truncation(real_lungs[name])
        assert [w.values["lung"] for w in warnings] == ["right", "left"], name  # one warning per lung
        assert "right side" in warnings[0].values["ends_cm2"] and "left side" in warnings[1].values["ends_cm2"], name
        assert all(w.code == "lung_truncated" and min(w.values["ends_cm2"].values()) > 5 for w in warnings)
        assert all(w.values["area_cm2"] == pytest.approx(sum(w.values["ends_cm2"].values()), abs=0.2) for w in warnings)
        assert "right side" in warnings[0].message and "top (apex)" in warnings[0].message  # all ends in one line
    small = lung_volume(real_lungs["ts_pulmonary"])  # 1.9 L in view
    assert [w.code for w in small] == ["lung_volume_unusual"] and small[0].values["volume_ml"] < 2000
    assert lung_volume(real_lungs["ts_aorta"]) == []  # 2.8 L in view: a plausible volume, the truncation says the rest


def test_a_real_ct_mirrored_left_to_right_is_flagged_and_the_true_one_is_not(shared_data, real_lungs):
    """A header that swaps left and right (the voxels mirrored, the geometry kept): the anatomical right lung is then
    labelled left, and the larger left lung gives the warning."""
    assert lung_sides(real_lungs["cip"]) == []
    ct = read_volume(shared_data / "real" / "cip_chest_ct" / "ct-64.nrrd")
    mirrored = segment_lungs(ct.with_array(np.ascontiguousarray(ct.array[:, :, ::-1]))).lungs
    warnings = lung_sides(mirrored)
    assert [w.code for w in warnings] == ["lung_sides_unusual"]
    values = warnings[0].values
    assert values["right_to_left"] < 0.95 and values["left_ml"] > values["right_ml"]
    assert "swapped in the image header" in warnings[0].message and "right-lung surgery" in warnings[0].message


def test_the_side_check_skips_cut_lungs():
    from CTPerfusionMappingLib.labels import LungLabels
    from CTPerfusionMappingLib.quality import lung_quality

    a = np.zeros((12, 12, 14), np.uint8)
    a[2:10, 3:9, 1:5] = 1  # right lung: 192 voxels
    a[2:10, 3:9, 8:13] = 2  # left lung: 240 voxels, larger
    whole = Volume(a, (10.0, 10.0, 10.0))
    ct = whole.with_array(np.where(a > 0, -850.0, 40.0).astype(np.float32))
    assert [w.code for w in lung_sides(whole)] == ["lung_sides_unusual"]
    assert "lung_sides_unusual" in [w.code for w in lung_quality(LungLabels(whole, whole, "thirds"), ct, given=False)]
    cut = a.copy()
    cut[2:10, 3:9, 12:14] = 2  # the left lung now on the image's left face
    cut_labels = LungLabels(whole.with_array(cut), whole.with_array(cut), "thirds")
    codes = [w.code for w in lung_quality(cut_labels, ct, given=False)]
    assert "lung_truncated" in codes and "lung_sides_unusual" not in codes


def test_the_end_follows_the_patient_axes_of_a_flipped_image():
    a = np.zeros((10, 12, 14), np.uint8)
    a[0:4, 3:9, 2:6] = 1  # the right lung on the first slice
    a[2:8, 3:9, 8:12] = 2
    lps = Volume(a, (2.0, 2.0, 3.0))
    flipped = Volume(a, (2.0, 2.0, 3.0), direction=np.diag([1.0, 1.0, -1.0]))  # slices run toward the feet
    assert [list(w.values["ends_cm2"]) for w in lung_truncation(lps, min_area_cm2=0.1)] == [["bottom (base)"]]
    assert [list(w.values["ends_cm2"]) for w in lung_truncation(flipped, min_area_cm2=0.1)] == [["top (apex)"]]


@pytest.mark.parametrize("name, truncated", [("cip_chest_ct/ct-64.nrrd", False),
                                             ("totalsegmentator_chest_ct/pulmonary_report_ct_cropped_chestCTA_1p5mm.nii.gz",
                                              True)])
def test_ctpm_run_reports_truncated_lungs_in_metrics_and_on_stderr(shared_data, tmp_path, capsys, name, truncated):
    from CTPerfusionMappingLib.cli import main as ctpm

    out = tmp_path / "run"
    assert ctpm(["run", "--ct", str(shared_data / "real" / name), "--out", str(out), "--baseline", "--quiet"]) == 0
    warnings = json.loads((out / "metrics.json").read_text())["warnings"]
    assert all(set(w) == {"code", "message", "values"} for w in warnings)
    codes = [w["code"] for w in warnings]
    assert "baseline_predictor" in codes and ("lung_truncated" in codes) == truncated
    err = capsys.readouterr().err
    assert all(f"warning: {w['message']}" in err for w in warnings)


def test_a_ct_outside_the_bundled_models_training_domain_is_flagged():
    from CTPerfusionMappingLib.quality import BUNDLED_TRAINING_DOMAIN, model_domain

    a = np.full((20, 30, 30), 40.0, np.float32)
    lungs = np.zeros(a.shape, np.uint8)
    lungs[5:15, 5:25, 5:14], lungs[5:15, 5:25, 16:25] = 1, 2
    a[lungs > 0] = -850.0
    inside = Volume(a, (0.98, 0.98, 2.5))
    assert model_domain(inside, inside.with_array(lungs)) == []
    coarse = Volume(a, (5.28, 5.28, 6.99))  # CIP's TestInput
    warnings = model_domain(coarse, coarse.with_array(lungs))
    assert [w.code for w in warnings] == ["outside_training_domain"] * 2
    assert warnings[0].values == {"in_plane_mm": 5.28} and warnings[1].values == {"slice_mm": 6.99}
    dense = inside.with_array(np.where(lungs > 0, -700.0, a).astype(np.float32))  # expiration, or a soft kernel?
    assert [w.values for w in model_domain(dense, dense.with_array(lungs))] == [{"lung_median_hu": -700.0}]
    assert BUNDLED_TRAINING_DOMAIN["slice_mm"] == (1.25, 5.0)


def test_a_spect_that_covers_part_of_the_lungs_is_flagged():
    from CTPerfusionMappingLib.quality import spect_coverage

    lungs = Volume(np.zeros((40, 30, 30), np.uint8), (2.0, 2.0, 2.0))
    lungs.array[5:35, 5:25, 5:25] = 1
    whole = Volume(np.zeros((50, 40, 40), np.float32), (2.0, 2.0, 2.0), (-10.0, -10.0, -10.0))
    assert spect_coverage(lungs, whole) == []
    upper = Volume(np.zeros((32, 40, 40), np.float32), (2.0, 2.0, 2.0), (-10.0, -10.0, 40.0))  # z 40-102 mm only
    [w] = spect_coverage(lungs, upper)
    assert w.code == "spect_partial_coverage" and 45 < w.values["covered_percent"] < 60
    shift = np.eye(4)
    shift[2, 3] = 30.0  # the registration: CT point -> SPECT point 30 mm higher (the lungs at z 40-98 mm there)
    assert spect_coverage(lungs, upper, shift) == []


def test_the_bundled_models_own_training_domain_comes_before_the_recorded_one(tmp_path, monkeypatch):
    """Weights that carry a training_domain (scripts/train_bundled_model.py writes one) are judged by it when they are
    the bundled model; older bundled weights without one by quality.BUNDLED_TRAINING_DOMAIN; other weights by their own
    metadata only (pipeline.training_domain)."""
    import CTPerfusionMappingLib.weights as W
    from CTPerfusionMappingLib.network import NetworkConfig, build_model
    from CTPerfusionMappingLib.pipeline import training_domain
    from CTPerfusionMappingLib.quality import BUNDLED_TRAINING_DOMAIN
    from CTPerfusionMappingLib.run_cli import load_model

    config = NetworkConfig(base_channels=2, max_channels=4, levels=2)
    own = {"in_plane_mm": [0.6, 5.5], "slice_mm": [0.625, 7.0], "lung_median_hu": [-950.0, -780.0]}
    with_domain = W.save_weights(build_model(config), config, tmp_path / "new.pt", metadata={"training_domain": own})
    without = W.save_weights(build_model(config), config, tmp_path / "old.pt")
    monkeypatch.delenv("CTPM_WEIGHTS", raising=False)
    monkeypatch.setattr(W, "bundled_weights", lambda: with_domain)
    assert training_domain(load_model(None, False, "cpu")[1]) == own
    monkeypatch.setattr(W, "bundled_weights", lambda: without)
    assert training_domain(load_model(None, False, "cpu")[1]) == BUNDLED_TRAINING_DOMAIN
    assert training_domain(load_model(str(without), False, "cpu")[1]) is None
