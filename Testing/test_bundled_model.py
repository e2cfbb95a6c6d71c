"""The bundled demonstration model: present, loadable, documented, and found in every kind of installation."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from CTPerfusionMappingLib import weights
from CTPerfusionMappingLib.network import NetworkConfig
from CTPerfusionMappingLib.run_cli import load_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "CTPerfusionMapping" / "Resources" / "Models"


def test_bundled_weights_load_as_the_default_arnn(monkeypatch):
    monkeypatch.delenv("CTPM_WEIGHTS", raising=False)
    path = weights.bundled_weights()
    assert path == MODELS / "ctpm_arnn.pt"
    assert path.stat().st_size <= 20 * 1024 * 1024
    model, config, meta = weights.load_weights(path)
    assert config == NetworkConfig()  # the default ARNN of network.py
    assert "not for clinical use" in meta["trained_on"] and meta["card"] == "MODEL_CARD.md"
    assert all(p.dtype.is_floating_point and str(p.dtype) == "torch.float32" for p in model.parameters())
    _, info = load_model(None, baseline=False, device="cpu")  # ctpm run without --weights
    assert info["predictor"] == "network" and info["weights"] == str(path)


def test_model_card_holds_the_held_out_numbers():
    card = json.loads((MODELS / "model_card.json").read_text())
    text = (MODELS / "MODEL_CARD.md").read_text()
    assert "Not for clinical use" in text and "synthetic" in text
    held = card["held_out"]
    assert held["arnn"]["spearman"]["n"] >= 10
    for predictor in ("arnn", "arnn_pretrained", "unet", "hu_baseline"):
        assert f"{held[predictor]['spearman']['mean']:.3f} +- {held[predictor]['spearman']['sd']:.3f}" in text
    assert f"p = {card['tests']['arnn_vs_pretrained']['p_value']:.3g}" in text
    assert f"p = {card['transfer_cv']['test']['p_value']:.3g}" in text
    meta = weights.load_weights(MODELS / "ctpm_arnn.pt")[2]
    assert meta["held_out_spearman_mean"] == pytest.approx(held["arnn"]["spearman"]["mean"])


def test_environment_variable_overrides_the_bundled_model(monkeypatch, tmp_path, capsys):
    from CTPerfusionMappingLib.cli import main as ctpm

    monkeypatch.setenv("CTPM_WEIGHTS", str(tmp_path / "mine.pt"))
    assert weights.bundled_weights() == tmp_path / "mine.pt"
    assert ctpm(["run", "--ct", str(tmp_path / "ct.nrrd"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CTPM_WEIGHTS points to") and "mine.pt" in err and len(err.strip().splitlines()) == 1


def test_without_a_bundled_model_run_asks_for_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("CTPM_WEIGHTS", raising=False)
    monkeypatch.setattr(weights, "__file__", str(tmp_path / "lib" / "weights.py"))  # an install without Resources
    monkeypatch.setattr(weights, "MODELS_PACKAGE", "NoSuchModelsPackage")
    assert weights.bundled_weights() is None
    from ImagingBasics.errors import UserError

    with pytest.raises(UserError, match="--weights"):
        load_model(None, baseline=False, device="cpu")


def test_a_pip_installed_wheel_carries_and_finds_the_model(tmp_path):
    """A non-editable install: the wheel holds Resources/Models and the dose kernels as package data."""
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info/ beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("CTPerfusionMapping", "DoseCNN"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel")], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1:]}")
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    env.pop("CTPM_WEIGHTS", None)
    found = subprocess.run([sys.executable, "-c", "from CTPerfusionMappingLib import weights; "
                            "print(weights.__file__); print(weights.bundled_weights())"],
                           capture_output=True, text=True, env=env, check=True, cwd=tmp_path).stdout.split()
    assert found[0].startswith(str(tmp_path / "site"))  # the installed copy, not the checkout
    assert found[1] == str(tmp_path / "site" / "CTPerfusionMappingModels" / "ctpm_arnn.pt")
    kernels = subprocess.run([sys.executable, "-c", "from DoseCNNLib.physics import kernel_library as k; "
                              "print(k.kernel_roots()); print(k.bundled_kernel_pair((1.96, 1.96, 3.0))[1].shape)"],
                             capture_output=True, text=True, env=env, check=True, cwd=tmp_path).stdout
    assert str(tmp_path / "site" / "DoseCNNKernels") in kernels and "(53, 53, 53)" in kernels  # dose kernels too
