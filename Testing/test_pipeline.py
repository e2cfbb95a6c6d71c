"""`ctpm run`, `ctpm evaluate` and `ctpm batch` end to end, with a tiny randomly initialised network (plumbing only:
nothing here claims accuracy) and the HU-only baseline; bad inputs give one-line errors and exit status 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTPerfusionMappingLib.cli import main as ctpm
from CTPerfusionMappingLib.pipeline import RunOptions, run_pipeline
from CTPerfusionMappingLib.synthetic import cohort
from ImagingBasics.imageio import read_volume, write_volume
from ImagingBasics.volume import Volume

torch = pytest.importorskip("torch")

from CTPerfusionMappingLib.network import NetworkConfig, build_model  # noqa: E402
from CTPerfusionMappingLib.weights import save_weights  # noqa: E402

TINY = NetworkConfig(base_channels=2, max_channels=4, input_shape=(128, 64, 64))
RUN_FILES = {"perfusion.nrrd", "functional.nrrd", "lungs.nrrd", "lobes.nrrd", "spect_on_ct.nrrd", "metrics.json",
             "lobes.csv", "overview.png"}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cases")
    assert ctpm(["phantom", "--out", str(out), "--n", "2", "--seed", "21", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(build_model(TINY), TINY, path, metadata={"note": "random weights for tests"})
    return path


def test_run_with_spect_writes_every_output(cases, tiny_weights, tmp_path, capsys):
    case = cases / "case000"
    out = tmp_path / "run"
    assert ctpm(["run", "--ct", str(case / "ct.nrrd"), "--spect", str(case / "spect.nrrd"), "--lobes",
                 str(case / "lobes.nrrd"), "--weights", str(tiny_weights), "--out", str(out), "--quiet"]) == 0
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    ct = read_volume(case / "ct.nrrd")
    perfusion = read_volume(out / "perfusion.nrrd")
    lungs = read_volume(out / "lungs.nrrd").array
    assert perfusion.same_geometry(ct) and perfusion.array.dtype == np.float32
    assert perfusion.array.min() >= 0.0 and perfusion.array.max() <= 1.0
    assert (perfusion.array[lungs == 0] == 0).all() and perfusion.array[lungs > 0].std() > 0
    functional = read_volume(out / "functional.nrrd").array
    assert set(np.unique(functional)) == {0, 1, 2} and np.array_equal(functional > 0, lungs > 0)
    lobes = read_volume(out / "lobes.nrrd").array
    assert set(np.unique(lobes)) == {0, 4, 5, 6, 7, 8}  # the given lobes, as CIP regions
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["regions_kind"] == "lobes" and metrics["model"]["predictor"] == "network"
    assert metrics["registration"]["registered"] is True
    assert set(metrics["plausibility"]["spect"]) == {"lungs", "right_share"}  # the SPECT's features beside the map's
    for key in ("prediction", "hu_baseline"):
        for scope in ("right", "left", "patient"):
            assert -1.0 <= metrics["evaluation"][key][scope]["spearman"] <= 1.0
    rows = list(csv.DictReader(open(out / "lobes.csv")))
    names = [r["name"] for r in rows]
    assert names[:5] == ["RUL", "RML", "RLL", "LUL", "LLL"] and names[-1] == "both lungs"
    assert sum(float(r["perfusion_share_percent"]) for r in rows[:5]) == pytest.approx(100.0, abs=0.01)
    assert "Spearman" in capsys.readouterr().out


def test_run_without_spect_uses_builtin_lungs_and_thirds(cases, tmp_path):
    case = cases / "case001"
    assert ctpm(["run", "--ct", str(case / "ct.nrrd"), "--baseline", "--out", str(tmp_path), "--quiet"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert "spect_on_ct.nrrd" not in names and "perfusion.nrrd" in names
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["labels"]["lungs"] == "built-in segmentation" and metrics["regions_kind"] == "thirds"
    assert "evaluation" not in metrics and any("HU-only baseline" in w["message"] for w in metrics["warnings"])
    rows = list(csv.DictReader(open(tmp_path / "lobes.csv")))
    assert all("third" in r["name"] or "lung" in r["name"] for r in rows)  # thirds are never called lobes


def test_pipeline_mc_dropout_and_baseline_in_process(cases, tiny_weights):
    from CTPerfusionMappingLib.weights import load_weights

    case = cohort.load_case(cases / "case000")
    model, _, _ = load_weights(tiny_weights)
    result = run_pipeline(case.ct, lungs=case.lungs, lobes=case.lobes, model=model,
                          options=RunOptions(mc_dropout_passes=3))
    assert result.uncertainty is not None and result.uncertainty.array[case.lungs.array > 0].mean() > 0
    again = run_pipeline(case.ct, lungs=case.lungs, lobes=case.lobes, model=model, options=RunOptions(mc_dropout_passes=3))
    np.testing.assert_array_equal(result.perfusion.array, again.perfusion.array)  # seeded: repeatable
    assert np.array_equal(result.labels.lungs.array, case.lungs.array)
    baseline = run_pipeline(case.ct, lungs=case.lungs, model=None)
    np.testing.assert_array_equal(baseline.perfusion.array, baseline.baseline.array)


def test_evaluate_scores_the_truth_better_than_noise(cases, tmp_path):
    """`ctpm evaluate` on the phantom's truth perfusion (which the SPECT measures) vs a random map."""
    case = cases / "case000"
    truth = read_volume(case / "perfusion_truth.nrrd")
    noise = truth.with_array(np.random.default_rng(0).uniform(0, 1, truth.shape).astype(np.float32))
    write_volume(noise, tmp_path / "noise.nrrd")
    common = ["--spect", str(case / "spect.nrrd"), "--ct", str(case / "ct.nrrd"), "--lobes", str(case / "lobes.nrrd")]
    assert ctpm(["evaluate", "--perfusion", str(case / "perfusion_truth.nrrd"), "--out", str(tmp_path / "t")] + common) == 0
    assert ctpm(["evaluate", "--perfusion", str(tmp_path / "noise.nrrd"), "--out", str(tmp_path / "n")] + common) == 0
    good = json.loads((tmp_path / "t" / "metrics.json").read_text())["evaluation"]["patient"]
    bad = json.loads((tmp_path / "n" / "metrics.json").read_text())["evaluation"]["patient"]
    assert good["spearman"] > 0.6 and abs(bad["spearman"]) < 0.1
    # the top-50 % functional volume, not the 0.66-of-maximum one: that split hangs on the noise-free truth's single
    # hottest voxel, which the SPECT blurs away (the truth's high volume can be tiny)
    assert good["dsc_top50"] > bad["dsc_top50"] + 0.2
    # the maps' supine features beside the SPECT's own: the truth's follow the SPECT's, uniform noise has none
    truth_p, noise_p = (json.loads((tmp_path / k / "metrics.json").read_text())["plausibility"] for k in ("t", "n"))
    assert noise_p["spect"]["right_share"] == pytest.approx(truth_p["spect"]["right_share"], rel=1e-6)  # one SPECT
    for side in ("right", "left"):
        spect_ratio = truth_p["spect"]["lungs"][side]["posterior_to_anterior"]
        assert truth_p["lungs"][side]["posterior_to_anterior"] == pytest.approx(spect_ratio, abs=0.15)
        assert noise_p["lungs"][side]["posterior_to_anterior"] == pytest.approx(1.0, abs=0.03)
    assert truth_p["right_share"] == pytest.approx(truth_p["spect"]["right_share"], abs=0.03)


def test_batch_continues_after_a_failure_and_skips_finished_cases(cases, tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,ct,spect\n"
                        f"a,{cases / 'case000' / 'ct.nrrd'},{cases / 'case000' / 'spect.nrrd'}\n"
                        "broken,missing_ct.nrrd,\n"
                        f"b,{cases / 'case001' / 'ct.nrrd'},\n")
    out = tmp_path / "out"
    assert ctpm(["batch", str(manifest), "--baseline", "--no-register", "--out", str(out), "--quiet"]) == 1
    rows = {r["id"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["a"]["status"] == "ok" and rows["b"]["status"] == "ok"
    assert rows["broken"]["status"] == "failed" and "not found" in rows["broken"]["error"]
    assert float(rows["a"]["prediction_spearman"]) == pytest.approx(float(rows["a"]["hu_baseline_spearman"]))
    stored = json.loads((out / "a" / "metrics.json").read_text())
    for side in ("right", "left"):  # the map's plausibility and the warnings' codes, one row per case
        assert float(rows["a"][f"posterior_to_anterior_{side}"]) == pytest.approx(
            stored["plausibility"]["lungs"][side]["posterior_to_anterior"])
    assert 40 < float(rows["b"]["right_share_percent"]) < 65
    assert rows["a"]["warnings"].split(";") == [w["code"] for w in stored["warnings"]]
    assert "baseline_predictor" in rows["b"]["warnings"].split(";") and rows["broken"]["warnings"] == ""
    mtime = (out / "a" / "metrics.json").stat().st_mtime
    assert ctpm(["batch", str(manifest), "--baseline", "--no-register", "--out", str(out), "--quiet"]) == 1
    rows = {r["id"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["a"]["status"] == "skipped (done)" and (out / "a" / "metrics.json").stat().st_mtime == mtime
    manifest.write_text(manifest.read_text().replace("broken,missing_ct.nrrd,\n", ""))
    assert ctpm(["batch", str(manifest), "--baseline", "--out", str(out), "--quiet"]) == 0


def _errors(capsys) -> list:
    return [line for line in capsys.readouterr().err.strip().splitlines() if line]


def test_bad_inputs_give_one_line_errors(cases, tmp_path, capsys):
    case = cases / "case000"
    ct = read_volume(case / "ct.nrrd")
    out = str(tmp_path / "o")
    (tmp_path / "corrupt.nrrd").write_bytes(b"NRRD0004\ngarbage")
    write_volume(Volume(np.zeros((1, 8, 8), np.int16)), tmp_path / "one_slice.nrrd")
    sitk.WriteImage(sitk.Image(16, 16, sitk.sitkInt16), str(tmp_path / "flat2d.nrrd"))
    nan_ct = ct.with_array(ct.array.astype(np.float32))
    nan_ct.array[5, 5, 5] = np.nan
    write_volume(nan_ct, tmp_path / "nan_ct.nrrd")
    far = read_volume(case / "spect.nrrd")
    far = Volume(far.array, far.spacing, (3000.0, 0.0, 0.0))
    write_volume(far, tmp_path / "far_spect.nrrd")
    wrong = NetworkConfig(base_channels=2, max_channels=4, input_shape=(128, 64, 64))
    torch.manual_seed(0)
    model = build_model(NetworkConfig(base_channels=4, max_channels=8))
    save_weights(model, NetworkConfig(base_channels=4, max_channels=8), tmp_path / "w.pt")
    payload = torch.load(tmp_path / "w.pt", weights_only=True)
    payload["config"] = wrong.to_dict()  # weights of the wrong shape for their declared architecture
    torch.save(payload, tmp_path / "wrong.pt")
    cases_and_words = [
        (["--ct", str(tmp_path / "missing.nrrd"), "--baseline"], "not found"),
        (["--ct", str(tmp_path / "corrupt.nrrd"), "--baseline"], "could not read"),
        (["--ct", str(tmp_path / "flat2d.nrrd"), "--baseline"], "2D"),
        (["--ct", str(tmp_path / "nan_ct.nrrd"), "--baseline"], "NaN"),
        (["--ct", str(case / "ct.nrrd"), "--spect", str(tmp_path / "far_spect.nrrd"), "--baseline"], "overlap"),
        (["--ct", str(case / "ct.nrrd"), "--weights", str(tmp_path / "wrong.pt")], "match"),
        (["--ct", str(case / "ct.nrrd"), "--weights", str(tmp_path / "nothing.pt")], "not found"),
        (["--ct", str(case / "spect.nrrd"), "--baseline"], "CT"),  # a SPECT given as the CT
    ]
    for extra, word in cases_and_words:
        assert ctpm(["run", "--out", out, "--quiet"] + extra) == 2, extra
        err = _errors(capsys)
        assert len(err) == 1 and err[0].startswith("error: ") and word in err[0], (extra, err)


def test_abdominal_ct_is_refused(shared_data, tmp_path, capsys):
    ct = shared_data / "real" / "totalsegmentator_chest_ct" / "example_ct_sm_3mm.nii.gz"
    assert ctpm(["run", "--ct", str(ct), "--baseline", "--out", str(tmp_path), "--quiet"]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and "no lungs found" in err[0]


@pytest.mark.parametrize("name", ["cip_chest_ct/ct-64.nrrd", "cip_chest_ct/TestInput.nrrd",
                                  "totalsegmentator_chest_ct/aorta_report_ct_cropped_chestCTA_1p5mm.nii.gz",
                                  "totalsegmentator_chest_ct/pulmonary_report_ct_cropped_chestCTA_1p5mm.nii.gz"])
def test_run_completes_on_real_chest_cts(shared_data, tiny_weights, tmp_path, name):
    assert ctpm(["run", "--ct", str(shared_data / "real" / name), "--weights", str(tiny_weights), "--out",
                 str(tmp_path), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["lung_volume_ml"]["right"] > 500 and metrics["lung_volume_ml"]["left"] > 500


def test_evaluation_grid_defaults_to_the_spect_voxel_size(cases):
    case = cohort.load_case(cases / "case000")
    coarse = run_pipeline(case.ct, spect=case.spect, lungs=case.lungs, model=None)
    assert coarse.metrics["evaluation"]["grid_spacing_mm"] == pytest.approx(4.42)
    fine = run_pipeline(case.ct, spect=case.spect, lungs=case.lungs, model=None,
                        options=RunOptions(evaluation_spacing_mm=0))
    assert fine.metrics["evaluation"]["grid_spacing_mm"] == list(case.ct.spacing)
    a = coarse.metrics["evaluation"]["hu_baseline"]["patient"]["spearman"]
    b = fine.metrics["evaluation"]["hu_baseline"]["patient"]["spearman"]
    assert -1.0 <= a <= 1.0 and -1.0 <= b <= 1.0
    voxels = coarse.metrics["evaluation"]["hu_baseline"]["patient"]["voxels"]
    assert voxels < fine.metrics["evaluation"]["hu_baseline"]["patient"]["voxels"]


def test_ctpm_devices_reports_what_auto_picks(capsys):
    import torch

    assert ctpm(["devices"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "auto -> " in out
    assert ctpm(["devices", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cuda_available"] == torch.cuda.is_available() and len(report["gpus"]) == torch.cuda.device_count()


def test_functional_split_at_a_percentile_or_a_fraction_of_the_maximum():
    from CTPerfusionMappingLib.pipeline import functional_split

    rng = np.random.default_rng(2)
    perfusion = rng.uniform(0.0, 1.0, (10, 20, 20))
    lungs = np.zeros(perfusion.shape, bool)
    lungs[:, 2:18, 2:18] = True
    half = functional_split(perfusion, lungs, RunOptions(high_percentile=50.0))
    assert (half[~lungs] == 0).all() and abs((half == 2).sum() - (half == 1).sum()) <= 2  # the better half
    top = functional_split(perfusion, lungs, RunOptions(high_percentile=80.0))
    assert (top == 2).sum() == pytest.approx(0.2 * lungs.sum(), abs=3)
    fraction = functional_split(perfusion, lungs, RunOptions(threshold=0.66))
    vmax = perfusion[lungs].max()
    assert ((fraction == 2) == (lungs & (perfusion >= 0.66 * vmax))).all()


def test_high_percentile_option_is_checked_and_reported(cases, tmp_path, capsys):
    case = cases / "case000"
    assert ctpm(["run", "--ct", str(case / "ct.nrrd"), "--baseline", "--high-percentile", "150", "--out",
                 str(tmp_path), "--quiet"]) == 2
    assert "--high-percentile must be from 1 to 99, got 150" in capsys.readouterr().err
    assert ctpm(["run", "--ct", str(case / "ct.nrrd"), "--lungs", str(case / "lungs.nrrd"), "--baseline",
                 "--high-percentile", "50", "--out", str(tmp_path), "--quiet"]) == 0
    assert "split at the 50th percentile" in capsys.readouterr().out
    vol = json.loads((tmp_path / "metrics.json").read_text())["functional_volume_ml"]
    assert vol["high_percentile"] == 50.0 and vol["high"] == pytest.approx(vol["low"], rel=0.02)
