"""scripts/train_dose_model.py (issue 19: the dose CNN on OSEM SPECTs) end to end at a tiny budget, its --device in
every step, --install-from (a finished run's files, e.g. sent back from a GPU machine), and what it needs from the
training: initial weights (``init``) and pausing a run (``stop``) that a resumed run finishes."""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnn_synthetic import learnable_reference, tiny_ct_and_activity, tiny_kernels  # noqa: E402

from DoseCNNLib.cnn.data import case_from_volumes, split_slices  # noqa: E402
from DoseCNNLib.cnn.network import DoseNetConfig  # noqa: E402
from DoseCNNLib.cnn.training import DoseTrainConfig, train  # noqa: E402
from DoseCNNLib.cnn.weights import bundled_weights, load_dose_weights, save_dose_weights  # noqa: E402
from DoseCNNLib.physics.vdk import vdk_dose_rate  # noqa: E402
from ImagingBasics.devices import select_device  # noqa: E402
from ImagingBasics.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = DoseNetConfig(depth_channels=(4, 4, 4), base_filters=8, levels=2)
SPACING = (8.0, 8.0, 8.0)
#: 2 training phantoms (2 workers), 1 held-out phantom, one time point, on a 196 x 164 x 12 grid of the bundled
#: kernels' voxel size (1.96 x 1.96 x 3 mm: the whole body cross-section, a 36 mm slab with liver, kidneys, spleen);
#: a small camera (80 x 80, 8 views, OSEM 2 x 2), few decays, a tiny network, one epoch
TINY_RUN = ["--n-train", "2", "--n-heldout", "1", "--times", "24", "--train-decays", "5000", "--heldout-decays", "5000",
            "--mix", "0.5", "--epochs", "1", "--crop", "32", "--batch-size", "2", "--base-filters", "8", "--levels", "2",
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


def _devices_used(out: Path) -> dict:
    """What each worker and step reports it computed on: the phantoms' meta.json, timings.json, the card."""
    timings = json.loads((out / "timings.json").read_text())
    card = json.loads((out / "model_card.json").read_text())
    used = {f"meta {p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())["device"]
            for p in out.glob("cohorts/*/case*/meta.json")}
    for section in ("phantoms_train", "phantoms_heldout", "heldout_osem_spects", "training_preparation"):
        used.update({f"{section} {k}": v["device"] for k, v in timings[section].items()})
    used.update({"card recipe": card["recipe"]["device"], "card training": card["training"]["device"]})
    return used


def _install_from_checks(script, out: Path, tmp_path: Path, capsys) -> None:
    """--install-from with the files a run sends back (the top level of its --out): refused (status 1, nothing
    written) when its card records that the acceptance does not hold; installed when it holds; status 2 when a file
    is missing or corrupt or the weights are not the card's."""
    sent = tmp_path / "sent_back"
    sent.mkdir()
    for name in script.RESULT_FILES:
        shutil.copy2(out / name, sent / name)
    models = tmp_path / "models_from"
    capsys.readouterr()
    assert script.main(["--install-from", str(sent), "--models-dir", str(models)]) == 1
    message = capsys.readouterr().out.strip()
    assert len(message.splitlines()) == 1 and "acceptance does not hold" in message
    assert not models.exists()
    # the same run as if its acceptance held: weights and card say so (the card's SHA-256 of the weights updated)
    held = tmp_path / "held"
    held.mkdir()
    shutil.copy2(sent / "MODEL_CARD.md", held / "MODEL_CARD.md")
    dm = load_dose_weights(sent / script.WEIGHTS_NAME)
    save_dose_weights(dm.model, dm.config, dm.normalisation, dm.spacing_mm, held / script.WEIGHTS_NAME,
                      {**dm.metadata, "acceptance_met": True}, half=True)
    card = json.loads((sent / "model_card.json").read_text())
    card["acceptance_met"]["met"] = True
    card["weights_sha256"] = script.sha256(held / script.WEIGHTS_NAME)
    (held / "model_card.json").write_text(json.dumps(card))
    assert script.main(["--install-from", str(held), "--models-dir", str(models)]) == 0
    assert sorted(p.name for p in models.iterdir()) == sorted(script.MODEL_FILES)
    for name in script.MODEL_FILES:
        assert (models / name).read_bytes() == (held / name).read_bytes()
    assert load_dose_weights(models / script.WEIGHTS_NAME).metadata["acceptance_met"] is True
    # missing, corrupt or mismatched files: status 2, "error: ...", nothing (more) written
    before = {p.name: p.read_bytes() for p in models.iterdir()}
    broken = {"missing": lambda d: (d / "MODEL_CARD.md").unlink(),
              "corrupt card": lambda d: (d / "model_card.json").write_text("{not json"),
              "corrupt weights": lambda d: (d / script.WEIGHTS_NAME).write_bytes(b"PK\x03\x04 truncated"),
              "weights of another run": lambda d: shutil.copy2(sent / script.WEIGHTS_NAME, d / script.WEIGHTS_NAME),
              "corrupt weights, card without their SHA-256": lambda d: (
                  (d / script.WEIGHTS_NAME).write_bytes(b"PK\x03\x04 truncated"),
                  (d / "model_card.json").write_text(json.dumps({k: v for k, v in card.items()
                                                                 if k != "weights_sha256"})))}
    for what, damage in broken.items():
        folder = tmp_path / f"broken_{what.replace(' ', '_')}"
        shutil.copytree(held, folder)
        damage(folder)
        capsys.readouterr()
        assert script.main(["--install-from", str(folder), "--models-dir", str(models)]) == 2, what
        assert "error: " in capsys.readouterr().out, what
        assert {p.name: p.read_bytes() for p in models.iterdir()} == before, what


def test_the_whole_recipe_at_a_tiny_budget_and_a_resumed_run_that_redoes_nothing(script, tmp_path, capsys,
                                                                                    monkeypatch):
    out, models = tmp_path / "run", tmp_path / "models"
    # --install with an acceptance that cannot hold (1 held-out phantom, one time point): nothing is installed;
    # --device auto: resolved once (the CPU here, CUDA on a GPU machine), and every worker and step computes on it
    assert script.main(TINY_RUN + ["--out", str(out), "--install", "--models-dir", str(models), "--device",
                                   "auto"]) == 1
    assert not models.exists() or not any(models.iterdir())
    used = _devices_used(out)
    assert len(used) == 3 + 3 + 1 + 2 + 2  # 3 phantoms (meta, timings), 1 OSEM SPECT, 2 preparation parts, card
    assert set(used.values()) == {select_device("auto")}, used
    timings = json.loads((out / "timings.json").read_text())
    assert sum(v["cases"] for v in timings["training_preparation"].values()) == 3
    # the training found every case prepared by the workers (a cache miss would have prepared it again)
    assert len([d for d in (out / "cache").iterdir() if (d / "meta.json").is_file()]) == 3
    assert set(script.RESULT_FILES) <= {p.name for p in out.iterdir()}
    card = json.loads((out / "model_card.json").read_text())
    assert card["weights_sha256"] == script.sha256(out / script.WEIGHTS_NAME)
    assert card["training"]["best_epoch"] == 1 and card["training"]["epochs_run"] == 1
    steps = re.findall(r"training: (\d+) of (\d+) steps of the epoch", capsys.readouterr().out)
    total = -(-card["training"]["training_slices"] // 2)  # steps of batch size 2
    assert total >= 4 and steps == [(str(total * q // 4), str(total)) for q in (1, 2, 3)]  # each quarter once
    assert card["training"]["image_domain_phantoms"] == 1 and card["voxel_mm"] == [1.96, 1.96, 3.0]
    assert card["acceptance_met"]["met"] is False
    assert card["acceptance_met"]["held_out_size"] == {"cases": 1, "time_points": 1, "required_cases": 8,
                                                       "required_time_points": 4, "met": False}
    for key in ("held_out", "held_out_image_spect"):  # both held-out sets, new and bundled model, real numbers
        regions = {s["region"]: s for s in card[key]["summary"]}
        assert {"kidneys", "liver", "spleen"} <= set(regions)
        for s in regions.values():
            for role in ("VDK", "CNN"):  # the mean signed error: MDE is its absolute value per region
                assert abs(s[f"{role}_signed_error_mean"]) <= s[f"{role}_mde_mean"] + 1e-12
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
    _install_from_checks(script, out, tmp_path, capsys)


def test_the_device_reaches_the_phantom_osem_and_preparation_jobs(script, tmp_path):
    """Every job a worker gets carries the run's device (resolved in run(): here as if --device cuda was asked and
    found), and the workers pass it on (:func:`make_case` to generate_case, :func:`make_osem_spect` to osem_spect,
    :func:`prepare_cases` to load_cases; the tiny run above checks what they report)."""
    args = script.parse_args(TINY_RUN + ["--out", str(tmp_path / "run"), "--device", "cuda", "--workers", "3"])
    args.device = "cuda"
    spect = script.spect_models(args)["osem"]
    jobs = script.phantom_jobs(tmp_path / "cohort", 4, 21, 5000, spect, args)
    assert [j["seed"] for j in jobs] == [21000, 21001, 21002, 21003] and {j["device"] for j in jobs} == {"cuda"}
    assert {j["mc_device"] for j in jobs} == {"cuda"}  # the Monte Carlo on --device unless --mc-device says otherwise
    args.mc_device = "cpu"
    assert {(j["device"], j["mc_device"]) for j in script.phantom_jobs(tmp_path / "c", 2, 21, 5000, spect, args)} == \
        {("cuda", "cpu")}
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    (heldout / "cohort.csv").write_text("id,case,time_h,ct,spect,reference\n"
                                        "case000_t024h,case000,24,case000/ct.nrrd,case000/spect_t024h.nrrd,r.nrrd\n"
                                        "case001_t024h,case001,24,case001/ct.nrrd,case001/spect_t024h.nrrd,\n"
                                        "case002_t024h,case002,24,case002/ct.nrrd,case002/spect_t024h.nrrd,r.nrrd\n")
    jobs = script.osem_jobs(heldout, args)
    assert [(j["row"]["id"], j["seed"]) for j in jobs] == [("case000_t024h", 1000), ("case002_t024h", 1002)]
    assert {j["device"] for j in jobs} == {"cuda"}
    manifest = tmp_path / "train.csv"
    manifest.write_text("id,ct,spect,reference,bq_per_count\n" + "".join(
        f"c{i},c{i}/ct.nrrd,c{i}/spect.nrrd,c{i}/ref.nrrd,1.5\n" for i in range(7)))
    jobs = script.prepare_jobs(tmp_path / "run", manifest, args)
    assert len(jobs) == 3 and {j["device"] for j in jobs} == {"cuda"}
    parts = [list(csv.DictReader(Path(j["manifest"]).read_text().splitlines())) for j in jobs]
    assert [[r["id"] for r in p] for p in parts] == [["c0", "c3", "c6"], ["c1", "c4"], ["c2", "c5"]]
    assert all(Path(r["ct"]).is_absolute() for p in parts for r in p)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check is that CUDA, absent here, is asked for")
def test_the_workers_compute_on_their_jobs_device(script, tmp_path):
    """Without CUDA, a job on "cuda" fails in torch (the device reached it) and writes nothing; on "cpu" it works."""
    from DoseCNNLib.phantoms.case import load_meta, training_rows

    args = script.parse_args(TINY_RUN + ["--out", str(tmp_path / "run")])
    cohort = tmp_path / "cohort"
    job = script.phantom_jobs(cohort, 1, 5, 2000, script.spect_models(args)["osem"], args)[0]
    cuda_error = pytest.raises((AssertionError, RuntimeError, UserError), match="(?i)cuda")
    with cuda_error:  # the OSEM SPECTs come first, then the Monte Carlo
        script.make_case(dict(job, device="cuda"))
    with cuda_error:  # the SPECTs on the CPU, the Monte Carlo truth asks for CUDA: --mc-device reached it
        script.make_case(dict(job, device="cpu", mc_device="cuda"))
    assert not cohort.exists() or not any(cohort.iterdir())
    assert script.make_case(job)["device"] == "cpu"
    rows = training_rows(cohort / "case000", "case000", load_meta(cohort / "case000"))
    meta = load_meta(cohort / "case000")
    assert meta["device"] == "cpu" and meta["mc_device"] == "cpu" and len(rows) == 1
    osem = {"cohort": str(cohort), "row": rows[0], "seed": 1000, "cache": str(tmp_path / "osem"), "threads": 1}
    with cuda_error:
        script.make_osem_spect(dict(osem, device="cuda"))
    assert not (tmp_path / "osem").exists()
    assert script.make_osem_spect(dict(osem, device="cpu"))["device"] == "cpu"
    manifest = tmp_path / "train.csv"
    manifest.write_text("id,ct,spect,reference,bq_per_count\n" + ",".join(
        [rows[0]["id"]] + [str(cohort / rows[0][k]) for k in ("ct", "spect", "reference")] +
        [str(rows[0]["bq_per_count"])]) + "\n")
    prepare = script.prepare_jobs(tmp_path / "run", manifest, args)[0]
    with cuda_error:
        script.prepare_cases(dict(prepare, device="cuda"))
    assert not (tmp_path / "run" / "cache").exists() or not any((tmp_path / "run" / "cache").iterdir())
    result = script.prepare_cases(prepare)
    assert result["cases"] == 1 and result["device"] == "cpu" and any((tmp_path / "run" / "cache").iterdir())


def test_install_from_a_missing_folder_or_without_a_card_is_an_error(script, tmp_path, capsys):
    models = tmp_path / "models"
    assert script.main(["--install-from", str(tmp_path / "nothing"), "--models-dir", str(models)]) == 2
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and "error: " in out and "is not a folder" in out
    assert script.main(["--install-from", str(tmp_path), "--models-dir", str(models)]) == 2
    assert "error: " in capsys.readouterr().out and not models.exists()
    with pytest.raises(SystemExit) as exc:  # --install-from runs nothing: not with --out
        script.parse_args(["--install-from", str(tmp_path), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2


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


def test_fine_tuning_never_ends_worse_than_its_initial_weights(cases, tmp_path):
    """The initial weights are validated as epoch 0: an epoch that makes them worse on the validation patients is
    never "best", so best.pt is the initial model when no epoch beats it (and a resumed run keeps that row)."""
    import csv

    tr, va = split_slices(cases, 0.25, 0)
    trained = train(TINY_NET, cases, tr, va, tmp_path / "a", DoseTrainConfig(epochs=2, batch_size=4, crop=16,
                                                                             device="cpu", seed=1))
    start = tmp_path / "a" / "best.pt"
    wrecking = DoseTrainConfig(epochs=2, batch_size=4, crop=16, device="cpu", lr=0.3, seed=3)
    paused = train(TINY_NET, cases, tr, va, tmp_path / "b", wrecking, init=start, stop=lambda epoch: True)
    s = train(TINY_NET, cases, tr, va, tmp_path / "b", wrecking, resume=True)
    with open(tmp_path / "b" / "log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in log] == [0, 1, 2] and log[0]["train_loss"] == "nan"
    epoch0 = float(log[0]["val_loss"])
    assert epoch0 == pytest.approx(trained["best_val_loss"], rel=1e-3)  # the same weights on the same patients
    assert min(float(r["val_loss"]) for r in log[1:]) > epoch0  # this learning rate wrecks the model
    assert paused["best_epoch"] == s["best_epoch"] == 0 and s["best_val_loss"] == epoch0
    best = load_dose_weights(tmp_path / "b" / "best.pt")
    a = load_dose_weights(start).model.state_dict()
    assert best.metadata["epoch"] == 0 and all(torch.equal(v, a[k]) for k, v in best.model.state_dict().items())


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


def test_the_card_names_a_learning_rate_changed_on_resume(script):
    assert script._lr_text({"lr": 1e-3}) == "0.001"
    assert script._lr_text({"lr": 3e-4, "lr_first": 1e-3, "lr_changes": [{"after_epoch": 3, "lr": 3e-4}]}) == \
        "0.001, then 0.0003 from epoch 4"
