"""scripts/train_bundled_model.py's acceptance and real-CT card sections: the acceptance decision on held-out means
at and around its thresholds, and the real-CT table built from a real run of the plausibility measures."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("train_bundled_model", ROOT / "scripts" / "train_bundled_model.py")
tbm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tbm)


def _held_out(arnn=0.75, baseline=0.60, unet=0.70, dsc_high=0.80, dsc_low=0.76) -> dict:
    def stats(v):
        return {"mean": v, "sd": 0.05, "min": v - 0.1, "n": 12}

    out = {"arnn": {"spearman": stats(arnn), "dsc_high": stats(dsc_high), "dsc_low": stats(dsc_low)},
           "hu_baseline": {"spearman": stats(baseline)}}
    if unet is not None:
        out["unet"] = {"spearman": stats(unet)}
    return out


def test_synthetic_acceptance_at_and_around_its_thresholds():
    assert tbm.synthetic_acceptance(_held_out())["holds"]
    assert tbm.synthetic_acceptance(_held_out(arnn=0.70, baseline=0.60, unet=0.70))["holds"]  # margin and U-Net exact
    refused = {
        "spearman_at_least_baseline_plus_0.10": _held_out(arnn=0.69, baseline=0.60, unet=0.65),
        "spearman_not_below_unet": _held_out(unet=0.76),
        "dsc_high_at_least_0.75": _held_out(dsc_high=0.74),
        "dsc_low_at_least_0.75": _held_out(dsc_low=0.749),
    }
    for check, held_out in refused.items():
        result = tbm.synthetic_acceptance(held_out)
        assert not result["holds"] and [k for k, v in result["checks"].items() if not v] == [check]
    no_unet = tbm.synthetic_acceptance(_held_out(unet=None))
    assert all(no_unet["checks"].values()) and not no_unet["holds"]  # "not below the U-Net" cannot be judged
    text = "\n".join(tbm._acceptance_lines({"synthetic": no_unet, "real_ct": None}))
    assert "does not hold" in text and "no U-Net trained, not judged" in text


def test_real_ct_table_of_the_card_from_a_real_run(shared_data, tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    plausibility = pytest.importorskip("real_ct_plausibility")
    from CTPerfusionMappingLib.run_cli import load_model

    model, info = load_model(None, False, "cpu")
    cases = plausibility.plausibility_cases(shared_data, model, info, names=["cip ct-64", "TotalSegmentator abdomen"],
                                            say=lambda m: None)
    monkeypatch.setattr(plausibility, "plausibility_cases", lambda *a, **k: cases)
    weights = load_model(None, False, "cpu")[1]["weights"]
    real = tbm.real_ct_card(Path(weights), shared_data, tmp_path)
    assert (tmp_path / "real_ct_plausibility.md").is_file() and (tmp_path / "plausibility" / "cip_ct_64.png").is_file()
    ct64, abdomen = real["rows"]
    assert "no lungs found" in abdomen["error"]
    measured = cases[0].measures["network"]
    assert ct64["posterior_to_anterior"] == [measured[s]["posterior_to_anterior"] for s in ("right", "left")]
    assert 0.0 < ct64["right_share"] < 1.0 and not any(math.isnan(v) for v in ct64["posterior_to_anterior"])
    flags = ct64["passed"]
    assert real["acceptance"]["holds"] == all(v is not False for v in flags.values())
    lines = "\n".join(tbm._real_ct_lines(real))
    assert f"{ct64['posterior_to_anterior'][0]:.2f} / {ct64['posterior_to_anterior'][1]:.2f}" in lines
    assert "| TotalSegmentator abdomen | refused |" in lines


def test_gravity_cue_table_of_the_card_from_a_real_run(shared_data, monkeypatch):
    """The card's gravity-cue rows are bench/gravity_cue.py's measures of the weights on the real COPD CTs."""
    sys.path.insert(0, str(ROOT / "bench"))
    gravity_cue = pytest.importorskip("gravity_cue")
    from CTPerfusionMappingLib.run_cli import load_model

    monkeypatch.setattr(tbm, "GRAVITY_CASES", ("cip ct-64",))
    weights = load_model(None, False, "cpu")[1]["weights"]
    tables = tbm.gravity_card(Path(weights), shared_data)
    (rows,) = tables.values()
    assert [r["ramp_hu"] for r in rows] == list(tbm.GRAVITY_RAMPS_HU) + [None]  # the last: the uniform lung
    assert rows[1]["baseline_right"] > rows[0]["baseline_right"]  # the HU baseline follows the added density
    assert abs(rows[2]["baseline_right"] - 1.0) < abs(rows[1]["baseline_right"] - 1.0)  # and has none without it
    assert all(0.3 < r[f"{m}_{s}"] < 3.0 for r in rows for m in gravity_cue.MAPS for s in ("right", "left"))
    lines = "\n".join(tbm._gravity_lines(tables))
    assert f"| cip ct-64 | +80 | {rows[1]['network_right']:.2f} / {rows[1]['network_left']:.2f} |" in lines
    assert f"| cip ct-64 | uniform lung, -870 HU | {rows[2]['network_right']:.2f} / " in lines
    assert tbm._gravity_lines({}) == []
