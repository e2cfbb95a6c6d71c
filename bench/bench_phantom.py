"""Benchmark: wall time of one synthetic case (`ctpm phantom --n 1`), whole process, on ONE core.

Each run is a fresh process pinned to one CPU (taskset when available) with every thread pool set to one
thread (OMP/MKL/OpenBLAS and ITK), so the numbers are the single-core cost the issue asks for. Reports the
median over several seeds per size, the slice thickness drawn for each full-size case, and the machine.

    .venv/bin/python bench/bench_phantom.py [--runs 5] [--sizes small full]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(size: str, seed: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench_phantom_"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1")
    ctpm = str(Path(sys.executable).with_name("ctpm"))
    cmd = [ctpm, "phantom", "--out", str(out), "--n", "1", "--seed", str(seed), "--size", size, "--quiet"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0"] + cmd
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    meta = json.loads((out / "case000" / "meta.json").read_text())
    shutil.rmtree(out)
    return {"seconds": seconds, "shape": meta["ct"]["size"], "slice_mm": meta["ct"]["spacing_mm"][2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", nargs="+", default=["small", "full"])
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for size in args.sizes:
        runs = [one_run(size, seed) for seed in range(args.runs)]
        for r in runs:
            print(f"  {size}: {r['seconds']:.1f} s  CT {r['shape'][0]}x{r['shape'][1]}x{r['shape'][2]} "
                  f"slices {r['slice_mm']} mm")
        times = [r["seconds"] for r in runs]
        print(f"{size}: median {statistics.median(times):.1f} s, max {max(times):.1f} s over {len(times)} cases (1 core)")


if __name__ == "__main__":
    main()
