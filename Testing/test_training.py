"""Training (plumbing with tiny networks on small phantoms; nothing here claims accuracy): data caching, the masked
BCE of Ren 2021 IJROBP, resuming bit-identically, transfer learning with a frozen encoder, and `ctpm train` end to end."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from CTPerfusionMappingLib.cli import main as ctpm  # noqa: E402
from CTPerfusionMappingLib.network import NetworkConfig  # noqa: E402
from CTPerfusionMappingLib.training import dataset
from CTPerfusionMappingLib.training.trainer import ENCODER_PREFIXES, TrainConfig, masked_bce_with_logits, train
from ImagingBasics.errors import UserError  # noqa: E402

TINY = NetworkConfig(base_channels=2, max_channels=4)
FAST = TrainConfig(epochs=2, batch_size=2, seed=3, device="cpu", amp=False)


@pytest.fixture(scope="module")
def cohort_csv(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train_cohort")
    assert ctpm(["phantom", "--out", str(out), "--n", "3", "--seed", "8", "--quiet"]) == 0
    return out / "cohort.csv"


@pytest.fixture(scope="module")
def samples(cohort_csv, tmp_path_factory):
    return dataset.load_samples(cohort_csv, tmp_path_factory.mktemp("cache"))


def test_samples_are_cached_and_reused(cohort_csv, samples, tmp_path, monkeypatch):
    assert len(samples) == 6 and {s.side for s in samples} == {1, 2}
    for s in samples:
        assert s.ct_input.shape == s.target.shape == s.mask.shape == (128, 64, 64)
        assert np.allclose(s.target * 10, np.round(s.target * 10), atol=2e-3)  # 11 levels (stored as float16)
    cache = tmp_path / "cache"
    first = dataset.load_samples(cohort_csv, cache, workers=2)  # preprocessed in two processes: the same samples
    assert len(list(cache.glob("*.npz"))) == 3
    for a, b in zip(samples, first):  # ITK's filters round differently with another thread count: 1e-4 at most
        assert a.key == b.key and np.array_equal(a.ct_input, b.ct_input) and np.array_equal(a.target, b.target)
        np.testing.assert_allclose(a.reference, b.reference, atol=1e-3)

    def fail(*args, **kwargs):
        raise AssertionError("preprocessed again instead of reading the cache")

    monkeypatch.setattr(dataset, "preprocess_row", fail)
    again = dataset.load_samples(cohort_csv, cache)
    for a, b in zip(first, again):
        assert a.key == b.key and np.array_equal(a.ct_input, b.ct_input) and np.array_equal(a.mask, b.mask)
    with pytest.raises(AssertionError):  # other parameters -> another key -> preprocessed again
        dataset.load_samples(cohort_csv, cache, params=replace(dataset.PreprocessParams(), median_size=5))


def test_split_keeps_both_lungs_of_a_patient_together(samples):
    train_s, val_s = dataset.split_by_patient(samples, 0.34, seed=0)
    assert {s.case_id for s in train_s}.isdisjoint({s.case_id for s in val_s})
    assert len(train_s) + len(val_s) == len(samples) and len(val_s) == 2


def test_the_density_ramp_tilts_the_lung_front_to_back_and_nothing_else(samples):
    from CTPerfusionMappingLib.training.trainer import add_density_ramp, make_batch

    s = samples[0]
    x = np.clip(s.ct_input, 0.0, 1.0)
    tilted = add_density_ramp(x, 0.2)
    lung = x > 0
    assert np.array_equal(tilted > 0, lung) and tilted.max() <= 1.0  # the lung stays lung, still 0..1
    y = np.broadcast_to(np.linspace(-1, 1, x.shape[1])[None, :, None], x.shape)
    inside = lung & (x > 0.25) & (x < 0.75)  # away from the clipping
    np.testing.assert_allclose((tilted - x)[inside], 0.2 * y[inside], atol=1e-6)
    slopes = []
    for seed in range(40):  # drawn symmetric about 0 within the half-range
        xb, tb, mb = make_batch([s], np.random.default_rng(seed), 0, density_ramp=0.3)
        diff = (xb[0, 0] - np.power(x, _gamma(seed)))[inside]
        slopes.append(float(np.polyfit(y[inside], diff, 1)[0]))
        np.testing.assert_array_equal(tb[0, 0], s.target)  # the target is not touched
    assert min(slopes) < -0.1 and max(slopes) > 0.1 and max(abs(v) for v in slopes) <= 0.3 + 1e-3
    plain = make_batch([s], np.random.default_rng(5), 2)  # off: the same draws and batch as before the option
    again = make_batch([s], np.random.default_rng(5), 2, density_ramp=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))


def _gamma(seed: int) -> float:
    """The gamma make_batch draws first for a sample with this seed (no shift)."""
    from CTPerfusionMappingLib.training.trainer import random_augmentation

    return random_augmentation(np.random.default_rng(seed), 0)[1]


def test_masked_bce_is_equation_3_over_lung_voxels():
    logits = torch.tensor([[0.0, 2.0, -1.0, 5.0]])
    target = torch.tensor([[0.5, 1.0, 0.0, 0.3]])
    mask = torch.tensor([[True, True, True, False]])
    p = torch.sigmoid(logits[0, :3])
    t = target[0, :3]
    expected = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()
    assert float(masked_bce_with_logits(logits, target, mask)) == pytest.approx(float(expected), rel=1e-6)


def _state(path: Path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_resume_after_a_kill_mid_epoch_gives_the_same_weights(samples, tmp_path):
    train_s, val_s = dataset.split_by_patient(samples, 0.34, seed=0)  # 4 hemi-lungs: 2 steps per epoch
    straight = train(TINY, train_s, val_s, tmp_path / "a", FAST)
    assert straight["epochs"] == 2
    killed = train(TINY, train_s, val_s, tmp_path / "b", FAST, stop_after_batches=3)  # in the middle of epoch 2
    assert killed["interrupted"] and killed["epoch"] == 2
    train(TINY, train_s, val_s, tmp_path / "b", FAST, resume=True)
    a, b = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True), torch.load(tmp_path / "b" / "checkpoint.pt",
                                                                                     weights_only=True)
    assert a["state"]["epoch"] == b["state"]["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    rows = list(csv.DictReader(open(tmp_path / "b" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert (tmp_path / "a" / "learning_curve.png").is_file()


def test_fine_tuning_starts_from_the_pretrained_weights_with_a_frozen_encoder(samples, tmp_path):
    train_s, val_s = dataset.split_by_patient(samples, 0.34, seed=0)
    train(TINY, train_s, val_s, tmp_path / "pre", replace(FAST, epochs=1))
    pre = _state(tmp_path / "pre" / "best.pt")
    train(TINY, train_s, val_s, tmp_path / "fine", replace(FAST, epochs=1, freeze_encoder_epochs=1),
          init_weights=tmp_path / "pre" / "best.pt")
    fine = torch.load(tmp_path / "fine" / "checkpoint.pt", weights_only=True)["model"]
    frozen = [k for k in fine if k.startswith(ENCODER_PREFIXES) and "running" not in k and "num_batches" not in k]
    moved = [k for k in fine if not k.startswith(ENCODER_PREFIXES) and fine[k].dtype.is_floating_point
             and "running" not in k and not torch.equal(fine[k], pre[k].float())]
    assert frozen and all(torch.equal(fine[k], pre[k].float()) for k in frozen)  # encoder unchanged
    assert moved  # the rest was trained
    with pytest.raises(UserError, match="another configuration"):
        train(replace(TINY, base_channels=4, max_channels=8), train_s, val_s, tmp_path / "x", FAST,
              init_weights=tmp_path / "pre" / "best.pt")


def test_fine_tuning_never_ends_worse_than_the_pretrained_model(samples, tmp_path):
    """The pre-trained weights are validated as epoch 0: when no fine-tuning epoch beats them on the validation
    patients, best.pt is the pre-trained model (best epoch 0); a killed and resumed fine-tuning keeps that row."""
    train_s, val_s = dataset.split_by_patient(samples, 0.34, seed=0)
    pre = train(TINY, train_s, val_s, tmp_path / "pre", replace(FAST, epochs=1))
    wrecking = replace(FAST, epochs=1, lr=5.0)
    killed = train(TINY, train_s, val_s, tmp_path / "fine", wrecking, init_weights=tmp_path / "pre" / "best.pt",
                   stop_after_batches=1)
    assert killed["interrupted"]
    fine = train(TINY, train_s, val_s, tmp_path / "fine", wrecking, resume=True)
    rows = list(csv.DictReader(open(tmp_path / "fine" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1] and rows[0]["train_loss"] == "nan"
    assert float(rows[0]["val_spearman"]) == pytest.approx(pre["best_val_spearman"], abs=1e-6)
    assert not float(rows[1]["val_spearman"]) >= float(rows[0]["val_spearman"])  # wrecked (a constant map: NaN)
    assert fine["best_epoch"] == 0 and fine["best_val_spearman"] == pytest.approx(pre["best_val_spearman"], abs=1e-6)
    assert fine["init_val_spearman"] == pytest.approx(pre["best_val_spearman"], abs=1e-6)
    assert pre["init_val_spearman"] is None  # from random weights: no epoch 0
    best, start = _state(tmp_path / "fine" / "best.pt"), _state(tmp_path / "pre" / "best.pt")
    assert all(torch.equal(best[k], start[k]) for k in start)


def test_ctpm_train_then_run_with_the_trained_weights(cohort_csv, tmp_path, capsys):
    out = tmp_path / "train"
    assert ctpm(["train", str(cohort_csv), "--out", str(out), "--epochs", "1", "--base-channels", "2",
                 "--max-channels", "4", "--val-fraction", "0.34", "--device", "cpu", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_hemilungs"] == 4 and summary["validation_hemilungs"] == 2
    case = cohort_csv.parent / "case000"
    assert ctpm(["run", "--ct", str(case / "ct.nrrd"), "--weights", str(out / "best.pt"), "--out", str(tmp_path / "run"),
                 "--quiet"]) == 0
    assert ctpm(["train", str(cohort_csv), "--out", str(tmp_path / "none"), "--resume", "--quiet"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_ctpm_train_init_takes_the_network_of_the_weights(cohort_csv, samples, tmp_path, capsys):
    """Fine-tuning the bundled kind of model (position channels, other widths) needs no network flags; a flag that
    contradicts the weights is refused before any case is preprocessed, naming it."""
    from CTPerfusionMappingLib.weights import load_weights

    train_s, val_s = dataset.split_by_patient(samples, 0.34, seed=0)
    pretrained = replace(TINY, base_channels=3, max_channels=6, coordinates=True)
    train(pretrained, train_s, val_s, tmp_path / "pre", replace(FAST, epochs=1))
    init = str(tmp_path / "pre" / "best.pt")
    out = tmp_path / "fine"
    assert ctpm(["train", str(cohort_csv), "--out", str(out), "--epochs", "1", "--val-fraction", "0.34",
                 "--device", "cpu", "--init", init, "--quiet"]) == 0
    assert load_weights(out / "best.pt")[1] == pretrained
    capsys.readouterr()
    refused = tmp_path / "refused"
    assert ctpm(["train", str(cohort_csv), "--out", str(refused), "--epochs", "1", "--base-channels", "2",
                 "--coordinates", "--device", "cpu", "--init", init, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "base_channels is 3" in err and "leave out --base-channels" in err and "--coordinates" not in err
    assert not refused.exists()
    assert ctpm(["train", str(cohort_csv), "--out", str(tmp_path / "plain"), "--epochs", "1", "--base-channels", "2",
                 "--max-channels", "4", "--coordinates", "--density-ramp", "0.2", "--val-fraction", "0.34",
                 "--device", "cpu", "--quiet"]) == 0
    _, config, meta = load_weights(tmp_path / "plain" / "best.pt")
    assert config == replace(TINY, coordinates=True) and meta["train"]["density_ramp"] == 0.2


def test_distributed_data_parallel_with_two_cpu_processes(cohort_csv, samples, tmp_path):
    """`torchrun --nproc_per_node 2 ... ctpm train` (gloo on the CPU): one log and one set of weights, written by rank 0."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "CTPerfusionMappingLib.cli", "train", str(cohort_csv), "--out", str(out), "--epochs", "1",
           "--base-channels", "2", "--max-channels", "4", "--val-fraction", "0.34", "--device", "cpu", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"best_epoch"') == 1  # only rank 0 reports
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 1 and rows[0]["processes"] == "2"
    from CTPerfusionMappingLib.weights import load_weights

    model, config, meta = load_weights(out / "best.pt")
    assert config.base_channels == 2 and meta["epoch"] == 1


def test_patient_folds_and_scores_with_known_answers(samples):
    from CTPerfusionMappingLib.training.crossval import paired_test, patient_folds, score_samples, summarise

    folds = patient_folds(samples, 3, seed=1)
    assert sorted(sum(folds, [])) == sorted({s.case_id for s in samples}) and all(len(f) == 1 for f in folds)
    with pytest.raises(UserError, match="at least 4 patients"):
        patient_folds(samples, 4, seed=1)
    perfect = score_samples([s.reference for s in samples], samples, "truth")
    assert len(perfect) == 6 + 3
    for r in perfect:
        assert r["spearman"] == pytest.approx(1.0) and r["dsc_high"] == pytest.approx(1.0)
        assert r["ssim"] == pytest.approx(1.0, abs=1e-6)
    noise = [np.random.default_rng(i).uniform(0, 1, s.reference.shape) for i, s in enumerate(samples)]
    rows = perfect + score_samples(noise, samples, "noise")
    summary = summarise(rows)
    assert summary["truth"]["patient"]["spearman"]["mean"] == pytest.approx(1.0)
    assert abs(summary["noise"]["hemilung"]["spearman"]["mean"]) < 0.1
    test = paired_test(rows, "noise", "truth")
    assert test["patients"] == 3 and test["b_better"] == 3 and test["mean_difference"] > 0.8
    assert test["p_value"] == pytest.approx(0.25)  # exact two-sided Wilcoxon, n = 3, all differences positive


def test_ctpm_cv_with_transfer_learning(cohort_csv, samples, tmp_path, capsys):
    train_s, val_s = dataset.split_by_patient(samples, 0.34, seed=0)
    train(TINY, train_s, val_s, tmp_path / "pre", replace(FAST, epochs=1))
    out = tmp_path / "cv"
    assert ctpm(["cv", str(cohort_csv), "--out", str(out), "--folds", "3", "--epochs", "1", "--base-channels", "2",
                 "--max-channels", "4", "--device", "cpu", "--init", str(tmp_path / "pre" / "best.pt"), "--quiet"]) == 0
    result = json.loads((out / "cv_summary.json").read_text())
    assert set(result["summary"]) == {"model", "hu_baseline", "pretrained"}
    assert result["fine_tuned_vs_pretrained"]["patients"] == 3 and (out / "transfer.png").is_file()
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert {r["fold"] for r in rows} == {"1", "2", "3"}
    assert len(rows) == 3 * (6 + 3)  # three predictors x (6 hemi-lungs + 3 patients), every patient held out once
    assert "fine_tuned_vs_pretrained" in capsys.readouterr().out


def test_ctpm_ablate_writes_the_table(cohort_csv, tmp_path, capsys):
    out = tmp_path / "ablate"
    assert ctpm(["ablate", str(cohort_csv), "--out", str(out), "--folds", "3", "--epochs", "1", "--base-channels", "2",
                 "--max-channels", "4", "--device", "cpu", "--variants", "arnn", "arnn_without_ct_enhancement",
                 "--quiet"]) == 0
    table = list(csv.DictReader(open(out / "ablation.csv")))
    assert [r["variant"] for r in table] == ["arnn", "arnn_without_ct_enhancement", "hu_baseline"]
    assert all(-1.0 <= float(r["spearman_mean"]) <= 1.0 for r in table)
    assert (out / "ablation.png").is_file() and (out / "arnn" / "scores.csv").is_file()
    printed = capsys.readouterr().out
    assert "arnn_without_ct_enhancement" in printed and "hu_baseline" in printed


def test_linear_input_is_the_scaled_hu_window(samples):
    from CTPerfusionMappingLib.training.dataset import linear_ct_input

    hu = np.array([[[-1200.0, -1000.0, -650.0, -300.0, 40.0]]])
    mask = np.array([[[True, True, True, True, False]]])
    np.testing.assert_allclose(linear_ct_input(hu, mask), [[[0.0, 0.0, 0.5, 1.0, 0.0]]])
    for s in samples:
        assert s.ct_linear is not None and s.ct_linear.shape == s.ct_input.shape
        assert (s.ct_linear[~s.mask] == 0).all()


def test_ctpm_train_killed_mid_run_resumes_to_the_same_weights(cohort_csv, samples, tmp_path):
    """A real SIGKILL of `ctpm train` after its first checkpoint, then --resume: the same weights as a run left alone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["train", str(cohort_csv), "--epochs", "3", "--base-channels", "2", "--max-channels", "4", "--val-fraction",
            "0.34", "--device", "cpu", "--seed", "5", "--quiet"]
    base = [sys.executable, "-m", "CTPerfusionMappingLib.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # the same preprocessed cache for both (the first run fills it)
    assert subprocess.run(base + args + ["--out", str(whole), "--cache", str(tmp_path / "cache")], env=env,
                          capture_output=True, timeout=600).returncode == 0
    proc = subprocess.Popen(base + args + ["--out", str(killed), "--cache", str(tmp_path / "cache")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert subprocess.run(base + args + ["--out", str(killed), "--cache", str(tmp_path / "cache"), "--resume"], env=env,
                          capture_output=True, timeout=600).returncode == 0
    a = torch.load(whole / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert a["state"]["epoch"] == b["state"]["epoch"] == 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["epoch"] for r in csv.DictReader(open(killed / "log.csv"))] == ["1", "2", "3"]
