"""Benchmark: end-to-end `ctpm run` on a full-size synthetic chest CT, whole process, median of several runs.

The network is the default-size ARNN (7.6 M parameters) with random weights: the timing is what is measured,
not accuracy. Runs without SPECT (the issue's target: <= 20 s on 2 CPU cores) and with SPECT (registration
included). Prints the machine and device.

    .venv/bin/python bench/bench_run.py [--runs 3] [--device auto] [--seed 2026]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "ctpm_bench_cache"
CTPM = [sys.executable, "-m", "CTPerfusionMappingLib.cli"]  # works without the console script too (GPU servers)


def ensure_inputs(seed: int) -> tuple:
    """A full-size phantom case and default-size random ARNN weights, cached between runs."""
    CACHE.mkdir(exist_ok=True)
    case = CACHE / f"full_{seed}" / "case000"
    if not (case / "meta.json").is_file():
        subprocess.run(CTPM + ["phantom", "--out", str(case.parent), "--n", "1", "--seed", str(seed), "--size", "full",
                               "--quiet"], check=True, stdout=subprocess.DEVNULL)
    weights = CACHE / "arnn_default_random.pt"
    if not weights.is_file():
        import torch

        from CTPerfusionMappingLib.network import NetworkConfig, build_model
        from CTPerfusionMappingLib.weights import save_weights

        torch.manual_seed(0)
        save_weights(build_model(NetworkConfig()), NetworkConfig(), weights, metadata={"note": "random, for timing"})
    return case, weights


def one_run(case: Path, weights: Path, device: str, spect: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench_run_"))
    cmd = CTPM + ["run", "--ct", str(case / "ct.nrrd"), "--weights", str(weights), "--device", device, "--out", str(out),
                  "--quiet"]
    if spect:
        cmd += ["--spect", str(case / "spect.nrrd")]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    return {"seconds": seconds, "steps": metrics["timings_s"], "device": metrics["model"]["device"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    case, weights = ensure_inputs(args.seed)
    meta = json.loads((case / "meta.json").read_text())
    from ImagingBasics.devices import describe_device, select_device

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; device: "
          f"{describe_device(select_device(args.device))}")
    print(f"CT {meta['ct']['size']} at {meta['ct']['spacing_mm']} mm")
    for spect in (False, True):
        runs = [one_run(case, weights, args.device, spect) for _ in range(args.runs)]
        label = "with SPECT (registration)" if spect else "without SPECT"
        steps = {k: statistics.median(r["steps"][k] for r in runs) for k in runs[0]["steps"]}
        each = ", ".join(format(r["seconds"], ".1f") for r in runs)
        print(f"ctpm run {label}: median {statistics.median(r['seconds'] for r in runs):.1f} s (runs: {each}); "
              "in-process steps (median s): " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))


if __name__ == "__main__":
    main()
