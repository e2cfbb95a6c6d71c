"""scripts/train_dose_model.py (issue 19: the dose CNN on OSEM SPECTs) end to end at a tiny budget, and what it needs
from the training: initial weights (``init``) and pausing a run (``stop``) that a resumed run finishes."""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnn_synthetic import learnable_reference, tiny_ct_and_activity, tiny_kernels  # noqa: E402

from DoseCNNLib.cnn.data import case_from_volumes, split_slices  # noqa: E402
from DoseCNNLib.cnn.network import DoseNetConfig  # noqa: E402
from DoseCNNLib.cnn.training import DoseTrainConfig, train  # noqa: E402
from DoseCNNLib.cnn.weights import bundled_weights, load_dose_weights  # noqa: E402
from DoseCNNLib.physics.vdk import vdk_dose_rate  # noqa: E402
from ImagingBasics.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = DoseNetConfig(depth_channels=(4, 4, 4), base_filters=8, levels=2)
SPACING = (8.0, 8.0, 8.0)
#: 2 training phantoms (2 workers), 1 held-out phantom, one time point, on a 196 x 164 x 12 grid of the bundled
#: kernels' voxel size (1.96 x 1.96 x 3 mm: the whole body cross-section, a 36 mm slab with liver, kidneys, spleen);
#: a small camera (80 x 80, 8 views, OSEM 2 x 2), few decays, a tiny network, one epoch
TINY_RUN = ["--n-train", "2", "--n-heldout", "1", "--times", "24", "--train-decays", "5000", "--heldout-decays", "5000",
            "--mix", "0.5", "--epochs", "1", "--crop", "32", "--batch-size", "8", "--base-filters", "8", "--levels", "2",
            "--depth-channels", "4", "4", "4", "--grid", "196", "164", "12", "1.96", "1.96", "3.0",
            "--spect-matrix", "80", "--osem", "8", "2", "2", "--workers", "2", "--threads", "1"]


@pytest.fixture
def script(monkeypatch):
    """The script as a module, importable by name (its worker processes import it again)."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    threads = torch.get_num_threads()
    yield importlib.import_module("train_dose_model")
    torch.set_num_threads(threads)


def _mtimes(out: Path) -> dict:
    paths = [*out.glob("cohorts/*/case*/meta.json"), *out.glob("cohorts/heldout/spects_osem/*.nrrd"),
             out / "train" / "best.pt", out / "train" / "checkpoint.pt", *out.glob("eval/*/rows.csv")]
    return {str(p): p.stat().st_mtime_ns for p in paths}


def test_the_whole_recipe_at_a_tiny_budget_and_a_resumed_run_that_redoes_nothing(script, tmp_path, capsys,
                                                                                    monkeypatch):
    out, models = tmp_path / "run", tmp_path / "models"
    # --install with an acceptance that cannot hold (1 held-out phantom, one time point): nothing is installed
    assert script.main(TINY_RUN + ["--out", str(out), "--install", "--models-dir", str(models)]) == 1
    assert not models.exists() or not any(models.iterdir())
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["best_epoch"] == 1 and card["training"]["epochs_run"] == 1
    assert card["training"]["image_domain_phantoms"] == 1 and card["voxel_mm"] == [1.96, 1.96, 3.0]
    assert card["acceptance_met"]["met"] is False
    assert card["acceptance_met"]["held_out_size"] == {"cases": 1, "time_points": 1, "required_cases": 8,
                                                       "required_time_points": 4, "met": False}
    for key in ("held_out", "held_out_image_spect"):  # both held-out sets, new and bundled model, real numbers
        regions = {s["region"]: s for s in card[key]["summary"]}
        assert {"kidneys", "liver", "spleen"} <= set(regions)
        for s in regions.values():
            assert s["n"] >= 1 and all(math.isfinite(s[k]) and s[k] >= 0 for k in ("VDK_mde_mean", "CNN_mde_mean",
                                                                                    "VDK_nrmse_mean", "CNN_nrmse_mean"))
        if bundled_weights() is not None:
            assert {s["region"] for s in card[key]["previous_model_summary"]} == set(regions)
    b = card["budget"]
    assert b["phantoms_train"]["n"] == 2 and b["phantoms_heldout"]["n"] == 1 and b["heldout_osem_spects"]["n"] == 1
    assert b["epoch_train_s_mean"] > 0 and b["evaluation"]["osem"]["case_time_points"] == 1
    # the two held-out sets: the same phantom, labels and truth; different SPECTs
    rows = {}
    for name in ("osem", "image"):
        with open(out / "eval" / name / "rows.csv", newline="") as f:
            rows[name] = list(csv.DictReader(f))
        assert {r["method"] for r in rows[name]} >= {"VDK", "CNN"}
    key = {(r["case"], r["label"], r["method"]) for r in rows["osem"]}
    assert key == {(r["case"], r["label"], r["method"]) for r in rows["image"]}
    ref = {name: {r["label"]: r["mean_reference"] for r in rows[name]} for name in rows}
    assert ref["osem"] == ref["image"]
    vdk = {name: [float(r["mde"]) for r in rows[name] if r["method"] == "VDK"] for name in rows}
    assert vdk["osem"] != vdk["image"]
    assert len(list((out / "cohorts" / "heldout" / "spects_osem").glob("*.nrrd"))) == 1
    with open(out / "cohorts" / "train" / "train.csv", newline="") as f:  # --mix: one phantom also image-domain
        train_rows = list(csv.DictReader(f))
    assert [r["id"] for r in train_rows] == ["case000_t024h", "case001_t024h", "case000_t024h_image"]
    meta = json.loads((out / "cohorts" / "train" / "case000" / "meta.json").read_text())
    assert meta["spect_model"]["reconstruction"] == "osem" and meta["monte_carlo"]["decays"] == 5000
    model = load_dose_weights(out / "dosecnn_residual.pt")
    assert model.config == TINY_NET and model.metadata["acceptance_met"] is False
    assert torch.load(out / "dosecnn_residual.pt", weights_only=True)["dtype"] == "float16"
    text = (out / "MODEL_CARD.md").read_text()
    assert "Not for clinical use" in text and "**Not met**" in text and "| kidneys | 2 |" in text
    assert text.count("| region | n | MDE VDK |") == 2
    # a second run: every step found done, nothing made again
    before = _mtimes(out)
    capsys.readouterr()
    assert script.main(TINY_RUN + ["--out", str(out)]) == 0
    assert _mtimes(out) == before
    log = capsys.readouterr().out
    for line in ("cohort train: 2 of 2 phantoms already made", "cohort heldout: 1 of 1 phantoms already made",
                 "held-out OSEM SPECTs: 1 of 1 already made", "training: already done",
                 "evaluation on the held-out osem set: already done", "evaluation on the held-out image set: already done"):
        assert line in log
    assert "made in" not in log and "epoch 1/1" not in log
    if bundled_weights() is not None:  # a rerun after --install still compares with the model it replaced
        original = hashlib.sha256(Path(bundled_weights()).read_bytes()).hexdigest()
        kept = out / script.PREVIOUS_MODEL
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == original
        card = json.loads((out / "model_card.json").read_text())
        assert card["previous_model"]["sha256"] == original
        import DoseCNNLib.cnn.weights as dose_weights

        monkeypatch.setattr(dose_weights, "bundled_weights", lambda: out / "dosecnn_residual.pt")  # as if installed
        assert script.main(TINY_RUN + ["--out", str(out)]) == 0
        card = json.loads((out / "model_card.json").read_text())
        assert card["previous_model"]["sha256"] == original and "evaluation on the held-out osem set: already done" \
            in capsys.readouterr().out


# --- the training's init and stop ---------------------------------------------------------------------------------------
def _cases():
    out = []
    for seed in (0, 1):
        ct, activity = tiny_ct_and_activity(seed, shape=(8, 24, 24), spacing=SPACING)
        vdk, _ = vdk_dose_rate(activity, ct, *tiny_kernels(SPACING))
        out.append(case_from_volumes(f"case{seed}", ct, activity, vdk, learnable_reference(activity, ct, vdk)))
    return out


@pytest.fixture(scope="module")
def cases():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _cases()
    torch.set_num_threads(threads)


def test_a_paused_run_is_finished_by_resuming_and_init_starts_from_given_weights(cases, tmp_path):
    tr, va = split_slices(cases, 0.25, 0)
    config = DoseTrainConfig(epochs=2, batch_size=4, crop=16, device="cpu", seed=1)
    paused = train(TINY_NET, cases, tr, va, tmp_path / "a", config, stop=lambda epoch: True)
    assert paused["finished"] is False and paused["epochs"] == 1
    done = train(TINY_NET, cases, tr, va, tmp_path / "a", config, resume=True, stop=lambda epoch: True)
    assert done["finished"] is True and done["epochs"] == 2  # the last epoch never asks
    straight = train(TINY_NET, cases, tr, va, tmp_path / "b", config)
    a, b = (load_dose_weights(p / "best.pt").model.state_dict() for p in (tmp_path / "a", tmp_path / "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # paused and resumed = uninterrupted
    assert straight["finished"] is True and straight["init"] is None

    start = tmp_path / "b" / "best.pt"
    tiny_lr = DoseTrainConfig(epochs=1, batch_size=4, crop=16, device="cpu", lr=1e-12, seed=2)
    s = train(TINY_NET, cases, tr, va, tmp_path / "c", tiny_lr, init=start)
    assert s["init"]["init_weights"] == str(start) and s["init"]["init_epoch"] >= 1
    c = load_dose_weights(tmp_path / "c" / "best.pt")
    assert c.metadata["init"]["init_weights"] == str(start)
    learned = dict(c.model.named_parameters())  # (batch-norm statistics move whatever the learning rate)
    assert all(np.allclose(v.detach().numpy(), b[k].numpy(), atol=1e-6) for k, v in learned.items())
    with pytest.raises(UserError, match="another network configuration"):
        train(DoseNetConfig(depth_channels=(4, 4, 4), base_filters=8, levels=3), cases, tr, va, tmp_path / "d",
              tiny_lr, init=start)


def test_dosecnn_train_init_is_checked_before_the_cases_are_prepared(tmp_path, capsys):
    from DoseCNNLib.cli import main

    manifest = tmp_path / "m.csv"
    manifest.write_text("id,ct,spect,reference,bq_per_count\n")
    assert main(["train", str(manifest), "--out", str(tmp_path / "o"), "--init", str(tmp_path / "none.pt"),
                 "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error:")
    if bundled_weights() is not None:  # the bundled model has 16 filters and 4 levels
        assert main(["train", str(manifest), "--out", str(tmp_path / "o"), "--init", "bundled", "--levels", "2",
                     "--quiet"]) == 2
        assert "another network" in capsys.readouterr().err


def test_a_stopped_runs_workers_make_and_write_nothing(script, tmp_path):
    """The workers of a stopped run (their parent gone) would take the calls already queued for them; each call checks
    that the run that asked for it is still its parent, before the work and before writing."""
    import os

    folder = tmp_path / "cohorts" / "train" / "case000"
    job = {"folder": str(folder), "parent": os.getpid()}
    script.require_parent(job)  # in the run's own process (--workers 1)
    script.require_parent({"folder": str(folder)})  # a job without a parent (older state): no check
    stopped = dict(job, parent=os.getpid() + 1_000_000)  # no such process: the run is gone
    with pytest.raises(script.Orphaned, match="has stopped"):
        script.require_parent(stopped)
    with pytest.raises(script.Orphaned):
        script.make_case(dict(stopped, threads=1, seed=0, size="small", times=[24.0], mc_decays=1000, spect={},
                              grid=None))
    assert not folder.parent.exists()
