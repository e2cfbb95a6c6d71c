"""Wall-clock time of ``dosecnn demo`` as a new user meets it: the whole process, from the shell prompt back.

    python bench/bench_demo.py [--repeats 3] [--workers N] [--out bench/results/demo_time.md]

Two cases, each run ``--repeats`` times in a fresh process (median reported):

* **computed**: the first run of a seed on a machine (an empty Monte Carlo truth cache in a temporary folder), the
  truth's compartments simulated in ``--workers`` processes (the command's default: one per core);
* **cached**: a second run of the same seed (the truth read from the cache).

Timings on a shared machine drift, so each demo is paired with the fixed reference computation of
``bench/bench_mc.py`` (:func:`reference_work`, one thread) run just before it; the table gives seconds, the reference
units per second measured beside them and their product (the demo's length in reference units), which is the figure
to compare between machines. The 1-minute load average before each run is recorded (it includes the previous demo
run; anything above ~2 on two cores means other work shared them). Issue 19's acceptance: <= 45 s on two idle cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mc import cpu_model, reference_work  # noqa: E402


def reference_units_per_second(rounds: int = 3) -> float:
    """The median rate of :func:`bench_mc.reference_work` (one thread), measured now."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        reference_work("cpu")
        times.append(time.perf_counter() - t0)
    return 1.0 / statistics.median(times)


def run_demo_process(out: Path, cache: Path, workers: int) -> float:
    """Seconds of one ``dosecnn demo`` process (its output discarded; a failure raises with its error text)."""
    env = dict(os.environ, DOSECNN_CACHE=str(cache))
    command = [sys.executable, "-m", "DoseCNNLib.cli", "demo", "--out", str(out), "--workers", str(workers)]
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"dosecnn demo failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return seconds


def measure(repeats: int, workers: int) -> dict:
    """{"computed": [(seconds, reference units/s, load)], "cached": [...]}."""
    rows = {"computed": [], "cached": []}
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        tmp = Path(tmp)
        for k in range(repeats):
            for kind in ("computed", "cached"):
                cache = tmp / f"cache{k}"  # empty for the computed run, filled by it for the cached one
                rate = reference_units_per_second()
                load = os.getloadavg()[0]
                seconds = run_demo_process(tmp / f"{kind}{k}", cache, workers)
                rows[kind].append((seconds, rate, load))
                print(f"{kind} {k + 1}/{repeats}: {seconds:.1f} s (reference {rate:.2f} units/s, load {load:.2f})",
                      flush=True)
    return rows


def report(rows: dict, workers: int) -> str:
    lines = [f"`python bench/bench_demo.py` on {platform.node() or 'this machine'} ({cpu_model()}, "
             f"{os.cpu_count()} cores), `--workers {workers}`; median of {len(rows['computed'])} runs each:", "",
             "| run | seconds (median) | runs | reference units/s | demo in reference units | load before |",
             "|---|---|---|---|---|---|"]
    for kind, runs in rows.items():
        seconds = [r[0] for r in runs]
        rates = [r[1] for r in runs]
        units = [r[0] * r[1] for r in runs]
        loads = [r[2] for r in runs]
        lines.append(f"| {kind} | {statistics.median(seconds):.1f} | {', '.join(f'{s:.1f}' for s in seconds)} | "
                     f"{statistics.median(rates):.2f} | {statistics.median(units):.0f} | "
                     f"{min(loads):.2f}-{max(loads):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, help="write the markdown table here too")
    args = ap.parse_args()
    text = report(measure(args.repeats, args.workers), args.workers)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
