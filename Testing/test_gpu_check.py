"""scripts/gpu_check.py, the prepared GPU check, kept working without a GPU: one of its steps CPU against CPU through
the real command, and its refusal of a device that is not there."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_step_runs_on_both_devices_and_is_reported(tmp_path, capsys):
    assert _script().main(["--device", "cpu", "--quick", "--steps", "dosecnn kernel", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    step = report["steps"]["dosecnn kernel"]
    assert step["passed"] is True and set(step["seconds"]) == {"cpu"} and step["seconds"]["cpu"] > 0
    assert report["device"] == "cpu" and report["torch"] == torch.__version__
    assert capsys.readouterr().out.splitlines()[-1].startswith("dosecnn kernel: passed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_no_cuda_is_a_one_line_refusal(tmp_path, capsys):
    assert _script().main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no CUDA device is available") and not any(tmp_path.iterdir())
