"""bench/gpu_checks.sh, the one prepared GPU check, kept working without a GPU: its dry run (every check on the CPU at
tiny sizes, through the same device-generic code) passes and reports real numbers; it refuses CUDA where there is
none. Also the device fix the review of the torch code made: a Monte Carlo asked to run on Apple MPS (no float64)
runs on the CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_checks.sh"
CHECKS = ["agree: ctpm run", "agree: ctpm train", "agree: dosecnn mc", "agree: dosecnn run", "agree: dosecnn kernel",
          "Monte Carlo decays/s", "VDK time", "dose CNN time", "ARNN inference", "ARNN training step",
          "dose CNN training step", "OOM fallback"]


def _gpu_checks(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=1200)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_the_dry_run_passes_every_check_with_real_numbers(tmp_path):
    out = tmp_path / "report"
    done = _gpu_checks("--dry-run", str(out))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((out / "gpu_checks.json").read_text(encoding="utf-8"))
    markdown = (out / "gpu_checks.md").read_text(encoding="utf-8")
    checks = report["checks"]
    assert list(checks) == CHECKS and report["dry_run"] and report["finished"] and report["passed"]
    assert report["machine"]["torch"] == torch.__version__ and _positive(report["total_seconds"])
    for name, check in checks.items():
        expected = "skipped" if name == "agree: ctpm train" else "pass"  # the CLI trains at full size: not in a dry run
        assert check["status"] == expected, (name, check.get("summary"), check.get("traceback"))
        assert f"| {name} | {expected} |" in markdown
        assert expected == "skipped" or _positive(check["check_seconds"])
    assert "11 passed, 0 failed, 1 skipped" in markdown
    # the CPU against itself: identical results, each command timed
    assert checks["agree: ctpm run"]["spearman"] == pytest.approx(1.0)
    assert checks["agree: dosecnn mc"]["ratio"] == pytest.approx(1.0)
    for step in ("agree: ctpm run", "agree: dosecnn mc", "agree: dosecnn kernel"):
        assert _positive(checks[step]["seconds_per_device"]["cpu"])
    for method in ("vdk", "cnn"):
        assert _positive(checks["agree: dosecnn run"][method]["seconds_per_device"]["cpu"])
    runs = checks["Monte Carlo decays/s"]["runs"]
    assert len(runs) == 2 and all(_positive(r["decays_per_second"]) and _positive(r["decays_per_reference_unit"])
                                  for r in runs.values())
    assert _positive(checks["VDK time"]["median_s"])
    assert all(_positive(checks["dose CNN time"][k]["median_s"]) for k in ("float32", "amp"))
    arnn = checks["ARNN inference"]
    assert _positive(arnn["predict_median_s"]) and _positive(arnn["ctpm_run_seconds"])
    assert _positive(arnn["pipeline_timings_s"]["prediction"]) and arnn["device_used"] == "cpu"
    for step in ("ARNN training step", "dose CNN training step"):
        losses = checks[step]["losses"]
        assert all(_positive(v) for v in losses.values()) and _positive(checks[step]["step_seconds"]), (step, losses)
    oom = checks["OOM fallback"]
    assert oom["arnn_device_used"] == "cpu" and oom["dose_cnn_device_used"].startswith("CPU")
    assert len(oom["warnings"]) == 2 and all("out of GPU memory on cuda" in w for w in oom["warnings"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_no_cuda_is_a_one_line_refusal(tmp_path):
    done = _gpu_checks(str(tmp_path / "report"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: no CUDA device is available") and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "report").exists()


def test_a_wrong_command_line_is_refused():
    done = _gpu_checks("--dry-run")
    assert done.returncode == 2 and done.stderr.startswith("error: usage: bash bench/gpu_checks.sh")


def test_monte_carlo_asked_for_mps_runs_on_the_cpu():
    from DoseCNNLib.physics.monte_carlo import run_mc
    from ImagingBasics.volume import Volume

    ct = Volume(np.zeros((6, 8, 8), np.int16), (4.0, 4.0, 4.0))
    activity = np.zeros(ct.shape, np.float32)
    activity[3, 4, 4] = 1e6
    with pytest.warns(RuntimeWarning, match="MPS has no float64"):
        result = run_mc(ct.with_array(activity), ct, n_decays=400, batches=2, device="mps", seed=1)
    dose = result.dose_rate_mgy_s.array
    assert np.isfinite(dose).all() and dose[3, 4, 4] > 0


def test_no_autocast_off_cuda():
    from ImagingBasics.devices import amp_dtype, autocast_context

    assert amp_dtype("cpu") is None and amp_dtype("mps") is None
    with autocast_context("cpu", True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
