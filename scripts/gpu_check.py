"""The prepared GPU check: every torch code path of both cores run through the real commands on a device and on the
CPU, and compared (no GPU has been lent to this project since the ARNN training; run this when one is).

Steps (each timed on both devices, all on small synthetic phantoms generated here):

1. ``ctpm run`` with the bundled ARNN (mixed precision on CUDA) and with 4 Monte Carlo dropout passes: the perfusion
   maps of the device and the CPU must agree (Spearman >= 0.99 over the lungs, mean absolute difference <= 0.02);
2. ``ctpm train`` for 1 epoch on 3 phantoms: finishes, writes ``best.pt``, and its validation loss is finite;
3. ``dosecnn mc`` (Lu-177, 200,000 decays): the mean dose rate in the activity's voxels agrees within 3 % (a Monte
   Carlo estimate: the devices draw different random numbers);
4. ``dosecnn run`` with VDK and with the bundled residual CNN: the dose-rate maps agree (relative difference of the
   mean below 1 %, voxelwise 99th percentile below 5 %);
5. ``dosecnn kernel`` for a small voxel size (20,000 decays): finishes, kernels finite.

Writes ``gpu_check.json`` (per step: seconds per device, the comparison, passed) into ``--out`` and prints one line
per step; exit status 0 when every step passed, 1 otherwise, 2 when the device is not available.

    python scripts/gpu_check.py --device cuda --out "$OUT"     # on the GPU machine
    python scripts/gpu_check.py --device cpu --quick            # here: the script itself works (CPU against CPU)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "CTPerfusionMapping", ROOT / "DoseCNN"):
    sys.path.insert(0, str(_p))

from CTPerfusionMappingLib.cli import main as ctpm  # noqa: E402
from DoseCNNLib.cli import main as dosecnn  # noqa: E402
from ImagingBasics.imageio import read_volume  # noqa: E402


def _call(command: Callable, argv: List[str]) -> float:
    """Run one command, return its seconds; a non-zero status is an error naming the command."""
    started = time.perf_counter()
    status = command(argv)
    if status != 0:
        raise RuntimeError(f"{' '.join(argv[:1])} exited with {status}: {' '.join(argv)}")
    return time.perf_counter() - started


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def check_ctpm_run(work: Path, devices: List[str], quick: bool) -> Dict:
    case = work / "ctpm_cohort" / "case000"
    maps, seconds = {}, {}
    for device in devices:
        out = work / f"ctpm_run_{device}"
        argv = ["run", "--ct", str(case / "ct.nrrd"), "--spect", str(case / "spect.nrrd"), "--out", str(out),
                "--device", device, "--quiet"] + ([] if quick else ["--mc-dropout", "4"])
        seconds[device] = _call(ctpm, argv)
        maps[device] = read_volume(out / "perfusion.nrrd").array
    lungs = read_volume(work / f"ctpm_run_{devices[0]}" / "lungs.nrrd").array > 0
    a, b = maps[devices[0]][lungs], maps[devices[-1]][lungs]
    rho, mad = _spearman(a, b), float(np.abs(a - b).mean())
    return {"seconds": seconds, "spearman": rho, "mean_abs_difference": mad, "passed": rho >= 0.99 and mad <= 0.02}


def check_ctpm_train(work: Path, devices: List[str], quick: bool) -> Dict:
    import csv

    seconds, losses = {}, {}
    for device in devices:
        out = work / f"ctpm_train_{device}"
        seconds[device] = _call(ctpm, ["train", str(work / "ctpm_cohort" / "cohort.csv"), "--epochs", "1",
                                       "--device", device, "--out", str(out), "--quiet", "--base-channels", "8"])
        with open(out / "log.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        losses[device] = float(rows[-1]["val_loss"]) if rows and "val_loss" in rows[-1] else float("nan")
    written = all((work / f"ctpm_train_{d}" / "best.pt").is_file() for d in devices)
    return {"seconds": seconds, "val_loss": losses, "passed": written and all(np.isfinite(list(losses.values())))}


def check_dosecnn_mc(work: Path, devices: List[str], quick: bool) -> Dict:
    case = work / "dose_cohort" / "case000"
    decays = "50000" if quick else "200000"
    means, seconds = {}, {}
    activity = sorted(case.glob("activity_*h.nrrd"))[0]
    mask = read_volume(activity).array > 0
    for device in devices:
        out = work / f"dose_mc_{device}"
        seconds[device] = _call(dosecnn, ["mc", "--activity", str(activity), "--ct", str(case / "ct.nrrd"),
                                          "--decays", decays, "--device", device, "--seed", "1", "--quiet",
                                          "--out", str(out)])
        means[device] = float(read_volume(out / "dose_rate.nrrd").array[mask].mean())
    ratio = means[devices[-1]] / means[devices[0]]
    return {"seconds": seconds, "mean_dose_rate_mGy_s": means, "ratio": ratio, "passed": abs(ratio - 1.0) <= 0.03}


def check_dosecnn_run(work: Path, devices: List[str], quick: bool) -> Dict:
    case = work / "dose_cohort" / "case000"
    spect = sorted(case.glob("spect_*h.nrrd"))[0]
    result = {}
    for method in ("vdk", "cnn"):
        maps, seconds = {}, {}
        for device in devices:
            out = work / f"dose_run_{method}_{device}"
            seconds[device] = _call(dosecnn, ["run", "--spect", str(spect), "--ct", str(case / "ct.nrrd"),
                                              "--activity-mbq", "5000", "--method", method, "--device", device,
                                              "--out", str(out)])
            maps[device] = read_volume(out / "dose_rate.nrrd").array
        a, b = maps[devices[0]], maps[devices[-1]]
        scale = float(np.abs(a).max()) or 1.0
        result[method] = {"seconds": seconds, "mean_relative_difference": abs(float(b.mean()) / float(a.mean()) - 1.0),
                          "p99_abs_difference_of_max": float(np.percentile(np.abs(a - b), 99)) / scale}
    result["passed"] = all(r["mean_relative_difference"] < 0.01 and r["p99_abs_difference_of_max"] < 0.05
                           for r in result.values())
    return result


def check_dosecnn_kernel(work: Path, devices: List[str], quick: bool) -> Dict:
    seconds, finite = {}, {}
    for device in devices:
        out = work / f"dose_kernel_{device}"
        seconds[device] = _call(dosecnn, ["kernel", "--spacing", "4", "4", "4", "--decays", "20000", "--device", device,
                                          "--out", str(out)])
        finite[device] = all(np.isfinite(read_volume(p).array).all() for p in out.glob("*.nrrd"))
    return {"seconds": seconds, "passed": all(finite.values()) and bool(finite)}


STEPS = {"ctpm run": check_ctpm_run, "ctpm train": check_ctpm_train, "dosecnn mc": check_dosecnn_mc,
         "dosecnn run": check_dosecnn_run, "dosecnn kernel": check_dosecnn_kernel}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device to check against the CPU (default cuda)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--quick", action="store_true", help="fewer decays, no dropout passes (a check of the script)")
    parser.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS))
    args = parser.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: no CUDA device is available to torch {torch.__version__}", file=sys.stderr)
        return 2
    devices = ["cpu"] if args.device == "cpu" else ["cpu", args.device]  # cpu alone: the script checked, once
    report: Dict = {"device": args.device, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "steps": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        work = Path(folder)
        if {"ctpm run", "ctpm train"} & set(args.steps):
            _call(ctpm, ["phantom", "--out", str(work / "ctpm_cohort"), "--n", "3", "--size", "small", "--quiet"])
        if {"dosecnn mc", "dosecnn run"} & set(args.steps):
            _call(dosecnn, ["phantom", "--out", str(work / "dose_cohort"), "--n", "1", "--times", "24",
                            "--mc-decays", "0", "--quiet"])
        for name in args.steps:
            try:
                report["steps"][name] = STEPS[name](work, devices, args.quick)
            except Exception as exc:  # a failed step is reported, the others still run
                report["steps"][name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
            step = report["steps"][name]
            print(f"{name}: {'passed' if step['passed'] else 'FAILED'} "
                  f"{json.dumps({k: v for k, v in step.items() if k != 'passed'}, default=float)}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    return 0 if all(s["passed"] for s in report["steps"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
