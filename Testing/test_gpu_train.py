"""bench/gpu_train.sh, the one-call retraining of a bundled model on a lent GPU machine, kept working without a GPU:
its dry run (the same training scripts on the CPU at tiny sizes), the files it sends back, resuming a stopped call, and
finishing the returned run here (scripts/train_bundled_model.py --finish-from: real CTs, acceptance, install)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_train.sh"
TRAIN = ROOT / "scripts" / "train_bundled_model.py"
CTPM_FILES = {"ctpm_arnn.pt", "model_card.json", "MODEL_CARD.md", "scores.csv", "held_out.png", "run.log"}
DOSE_FILES = {"dosecnn_residual.pt", "model_card.json", "MODEL_CARD.md", "run.log", "timings.json"}


def _env(work: Path) -> dict:
    env = dict(os.environ, GPU_TRAIN_WORK=str(work), PYTHON=sys.executable, GPU_SITE=str(work / "no-site"))
    env.pop("PYTHONPATH", None)  # the script sets its own
    return env


def _gpu_train(*args, work: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=_env(work), cwd=str(work))


def _finish(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("", "CTPerfusionMapping", "DoseCNN")),
               MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(TRAIN), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env=env, cwd=str(cwd))


@pytest.fixture(scope="module")
def ctpm_run(tmp_path_factory):
    """One dry run of the ctpm job (tiny cohorts and network, one epoch per stage): its work folder and what it sent
    back."""
    work = tmp_path_factory.mktemp("gpu_train_work")
    sent = work / "sent"
    done = _gpu_train("--dry-run", "ctpm", sent, work=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return work, sent, done


def test_dry_run_trains_the_whole_recipe_and_sends_back_its_files(ctpm_run):
    work, sent, done = ctpm_run
    assert {p.name for p in sent.iterdir()} == CTPM_FILES
    card = json.loads((sent / "model_card.json").read_text())
    assert card["recipe"]["cohorts"] == {"pretrain": 3, "finetune": 3, "test": 2}
    assert set(card["held_out"]) == {"arnn", "arnn_pretrained", "unet", "hu_baseline"}
    assert -1.0 <= card["held_out"]["arnn"]["spearman"]["mean"] <= 1.0
    assert set(card["held_out_by_size"]) == {"small"}  # --sizes small: no full-size row to fill
    assert "real_ct" not in card  # no real CTs on the GPU machine: finished here
    assert "n/a" in (sent / "MODEL_CARD.md").read_text()  # the full-size column of the by-size table
    from CTPerfusionMappingLib.weights import load_weights

    model, config, meta = load_weights(sent / "ctpm_arnn.pt")
    assert config.base_channels == 4 and meta["held_out_spearman_mean"] == card["held_out"]["arnn"]["spearman"]["mean"]
    log = (sent / "run.log").read_text()
    assert "arnn_pretrain epoch 1/1" in log and "synthetic acceptance" in log


def test_a_second_call_resumes_from_the_work_folder(ctpm_run):
    work, sent, _ = ctpm_run
    again = _gpu_train("--dry-run", "ctpm", work / "sent_again", work=work)
    assert again.returncode == 0, again.stdout[-3000:]
    for stage in ("arnn_pretrain", "arnn_finetune", "unet_pretrain", "unet_finetune"):
        assert f"{stage}: already trained" in again.stdout
    assert "phantoms in" not in again.stdout  # the cohorts were made once
    from CTPerfusionMappingLib.weights import load_weights

    first, second = (load_weights(folder / "ctpm_arnn.pt")[0].state_dict() for folder in (sent, work / "sent_again"))
    assert first.keys() == second.keys() and all(bool((first[k] == second[k]).all()) for k in first)


def test_finish_from_installs_only_when_the_synthetic_acceptance_holds(ctpm_run, tmp_path):
    _, sent, _ = ctpm_run
    card = json.loads((sent / "model_card.json").read_text())
    models = tmp_path / "models"
    no_data = tmp_path / "no-real-data"
    # the tiny one-epoch network does not meet the acceptance (DSC >= 0.75 and more): nothing installed
    held = card["held_out"]
    meets = (held["arnn"]["dsc_high"]["mean"] >= 0.75 and held["arnn"]["dsc_low"]["mean"] >= 0.75
             and held["arnn"]["spearman"]["mean"] >= held["hu_baseline"]["spearman"]["mean"] + 0.10
             and held["arnn"]["spearman"]["mean"] >= held["unet"]["spearman"]["mean"])
    done = _finish("--out", tmp_path / "finished", "--finish-from", sent, "--real-data", no_data, "--install",
                   "--models-dir", models, cwd=tmp_path)
    assert done.returncode == (0 if meets else 1), done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "finished" / "MODEL_CARD.md").is_file() and (tmp_path / "finished" / "scores.csv").is_file()
    assert models.is_dir() == meets
    # the same run with held-out numbers that meet the acceptance: installed, card and weights as sent back
    passing = tmp_path / "passing"
    shutil.copytree(sent, passing)
    for name in ("arnn", "unet", "hu_baseline", "arnn_pretrained"):
        card["held_out"][name]["spearman"]["mean"] = {"arnn": 0.8, "unet": 0.7}.get(name, 0.3)
    card["held_out"]["arnn"]["dsc_high"]["mean"] = card["held_out"]["arnn"]["dsc_low"]["mean"] = 0.8
    (passing / "model_card.json").write_text(json.dumps(card))
    done = _finish("--out", tmp_path / "finished2", "--finish-from", passing, "--real-data", no_data, "--install",
                   "--models-dir", models, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert {p.name for p in models.iterdir()} == {"ctpm_arnn.pt", "MODEL_CARD.md", "model_card.json"}
    assert (models / "ctpm_arnn.pt").read_bytes() == (sent / "ctpm_arnn.pt").read_bytes()
    installed = json.loads((models / "model_card.json").read_text())
    assert installed["acceptance"]["synthetic"]["holds"] is True


def test_finish_from_an_incomplete_run_is_one_error_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model_card.json").write_text("{}")
    done = _finish("--out", tmp_path / "out", "--finish-from", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {tmp_path / 'run'} is not a finished training run " \
                                                          "(missing ctpm_arnn.pt)"
    (tmp_path / "run" / "ctpm_arnn.pt").write_bytes(b"")
    done = _finish("--out", tmp_path / "out", "--finish-from", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 2 and "is not a model card of this script" in done.stderr
    assert "Traceback" not in done.stderr


def test_dose_dry_run_sends_back_a_run_that_install_from_judges(tmp_path):
    sent = tmp_path / "sent"
    done = _gpu_train("--dry-run", "dose", sent, work=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in sent.iterdir()} == DOSE_FILES
    card = json.loads((sent / "model_card.json").read_text())
    assert card["recipe"]["device"] == "cpu" and card["training"]["phantoms"] == 2
    assert "acceptance NOT met" in (sent / "run.log").read_text()  # one epoch of a tiny network
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("", "CTPerfusionMapping", "DoseCNN")))
    install = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_dose_model.py"), "--install-from", str(sent),
                              "--models-dir", str(tmp_path / "models")], capture_output=True, text=True, env=env,
                             timeout=300)
    assert install.returncode == 1 and "not installed" in install.stdout and not (tmp_path / "models").exists()


def test_site_bundles_are_unpacked_before_the_training_starts(tmp_path):
    """--site DIR: every *.tar.xz in DIR (bench/gpu_bundle.sh's packages) is unpacked into $GPU_SITE, with Python's
    tarfile (no xz program needed on the machine), before the training script starts (here it stops at once on an
    option it does not know)."""
    import tarfile

    package = tmp_path / "pkg" / "gpu_site_probe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 41\n")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    with tarfile.open(bundles / "site.tar.xz", "w:xz") as tar:
        tar.add(package, arcname="gpu_site_probe")
    env = dict(_env(tmp_path), GPU_SITE=str(tmp_path / "site"))
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "ctpm", str(tmp_path / "o"), "--site", str(bundles), "--",
                           "--no-such-option"], capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert done.returncode == 2 and "--no-such-option" in done.stdout + done.stderr
    assert (tmp_path / "site" / "gpu_site_probe" / "__init__.py").read_text() == "VALUE = 41\n"


def test_wrong_command_lines_and_no_gpu_are_one_error_line(tmp_path):
    for args in ((), ("ctpm",), ("train", tmp_path / "o"), ("ctpm", "--site")):
        done = _gpu_train(*args, work=tmp_path)
        assert done.returncode == 2 and done.stderr.startswith("error: usage: bash bench/gpu_train.sh"), args
    done = _gpu_train("ctpm", tmp_path / "o", "--site", tmp_path, work=tmp_path)
    assert done.returncode == 2 and "no *.tar.xz bundle" in done.stderr
    import torch

    if not torch.cuda.is_available():
        done = _gpu_train("ctpm", tmp_path / "o", work=tmp_path)
        assert done.returncode == 2 and done.stderr.startswith("error: no CUDA device")
        assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
