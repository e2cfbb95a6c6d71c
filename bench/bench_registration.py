"""Benchmark: rigid SPECT-to-CT registration on full-size synthetic phantoms (accuracy and time).

For N full-size cases (seeds ``cohort.case_seed(seed, i)``) it registers the SPECT to the CT with
``register_spect_to_ct`` (once with the phantom's lung mask, once without: crude lungs found in the CT) and compares
the recovered transform with the misalignment recorded in the case's meta over all lung voxel centres: mean and max
displacement (mm). Time is the in-process wall time of one ``register_spect_to_ct`` call (input checks, downsampling,
registration, resampling of the SPECT onto the full CT grid and the quality check included), with the lung mask.

Prints a Markdown table for bench/RESULTS.md and writes bench/results/registration.png.

    .venv/bin/python bench/bench_registration.py [--n 10] [--seed 2026] [--cache /tmp/ctpm_registration_cases]

Generating a full-size case takes ~20-75 s; ``--cache DIR`` keeps the generated cases (pickles) between runs.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from CTPerfusionMappingLib.registration import register_spect_to_ct
from CTPerfusionMappingLib.synthetic.cohort import GENERATOR_VERSION, case_seed, generate_case
from CTPerfusionMappingLib.synthetic.spect import transform_from_meta
from ImagingBasics.rigid import mean_displacement_mm

HERE = Path(__file__).resolve().parent
MEAN_TARGET_MM = 3.0
MAX_TARGET_MM = 6.0
TIME_TARGET_S = 15.0


def load_case(seed: int, cache: Optional[Path]) -> Dict:
    """ct, spect, lungs and meta of the full-size case ``seed`` (from ``cache`` when there, generated otherwise)."""
    path = None if cache is None else cache / f"full_{seed}.pkl"
    if path is not None and path.exists():
        with open(path, "rb") as f:
            case = pickle.load(f)
        if case["meta"].get("generator_version") == GENERATOR_VERSION:
            return case
    c = generate_case(seed, "full")
    case = {"ct": c.ct, "spect": c.spect, "lungs": c.lungs, "meta": c.meta}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(case, f, protocol=4)
        os.replace(tmp, path)
    return case


def lung_points(lungs) -> np.ndarray:
    """LPS centres of all lung voxels."""
    ijk = np.argwhere(lungs.array > 0)[:, ::-1]
    return lungs.index_to_lps(ijk)


def run_case(index: int, seed: int, cache: Optional[Path]) -> Dict:
    import SimpleITK as sitk

    case = load_case(seed, cache)
    truth = transform_from_meta(case["meta"])
    pts = lung_points(case["lungs"])
    mis_mean, mis_max = mean_displacement_mm(truth, sitk.Euler3DTransform(), pts)
    m = case["meta"]["spect"]["misalignment"]
    row = {
        "index": index, "seed": seed, "shape": case["ct"].size, "slice_mm": case["ct"].spacing[2],
        "misalignment_mean": mis_mean, "misalignment_max": mis_max,
        "rotation_deg": float(np.linalg.norm(m["rotation_deg"])), "translation_mm": float(np.linalg.norm(m["translation_mm"])),
    }
    t0 = time.perf_counter()
    r = register_spect_to_ct(case["ct"], case["spect"], case["lungs"])
    row["seconds"] = time.perf_counter() - t0
    row["mean"], row["max"] = mean_displacement_mm(truth, r.transform, pts)
    row["iterations"] = r.iterations
    row["fraction_before"], row["fraction_after"] = r.fraction_in_lungs_before, r.fraction_in_lungs_after
    row["warnings"] = r.warnings
    t0 = time.perf_counter()
    r2 = register_spect_to_ct(case["ct"], case["spect"], None)
    row["seconds_nomask"] = time.perf_counter() - t0
    row["mean_nomask"], row["max_nomask"] = mean_displacement_mm(truth, r2.transform, pts)
    return row


def write_figure(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4.6))
    ax.bar(x - 0.2, [r["misalignment_mean"] for r in rows], 0.2, color="0.8", label="recorded misalignment (mean)")
    ax.bar(x, [r["mean"] for r in rows], 0.2, color="tab:blue", label="error, lung mask (mean)")
    ax.scatter(x, [r["max"] for r in rows], marker="v", color="tab:blue", zorder=3, label="error, lung mask (max)")
    ax.bar(x + 0.2, [r["mean_nomask"] for r in rows], 0.2, color="tab:orange", label="error, no mask (mean)")
    ax.scatter(x + 0.2, [r["max_nomask"] for r in rows], marker="v", color="tab:orange", zorder=3, label="error, no mask (max)")
    ax.axhline(MEAN_TARGET_MM, color="tab:green", ls="--", lw=1, label=f"{MEAN_TARGET_MM:g} mm (mean target)")
    ax.axhline(MAX_TARGET_MM, color="tab:red", ls="--", lw=1, label=f"{MAX_TARGET_MM:g} mm (worst case target)")
    ax.set_xticks(x)
    ax.set_xticklabels([str(r["index"]) for r in rows])
    ax.set_xlabel("case")
    ax.set_ylabel("displacement over the lung (mm)")
    ax.set_title("SPECT-to-CT rigid registration, full-size phantoms")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--cache", type=Path, default=None, help="folder keeping generated cases between runs")
    ap.add_argument("--figure", type=Path, default=HERE / "results" / "registration.png")
    args = ap.parse_args()
    import SimpleITK as sitk

    machine = (f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"SimpleITK {sitk.Version.VersionString()}, ITK threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")
    print(f"machine: {machine}", flush=True)
    rows = []
    for i in range(args.n):
        row = run_case(i, case_seed(args.seed, i), args.cache)
        rows.append(row)
        print(f"case {i}: misaligned {row['misalignment_mean']:.1f} mm -> error {row['mean']:.2f} (max {row['max']:.2f}) mm "
              f"with mask, {row['mean_nomask']:.2f} (max {row['max_nomask']:.2f}) mm without; {row['seconds']:.1f} s "
              f"{' '.join(row['warnings'])}", file=sys.stderr, flush=True)

    print()
    print("| case | CT grid (x y z) | misalignment: mean over lung (rotation, translation) | error mean / max, lung mask "
          "| error mean / max, no mask | time (s) | iterations | SPECT share in lungs before -> after |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        nx, ny, nz = r["shape"]
        print(f"| {r['index']} | {nx}x{ny}x{nz} ({r['slice_mm']:g} mm) | {r['misalignment_mean']:.1f} mm "
              f"({r['rotation_deg']:.1f} deg, {r['translation_mm']:.1f} mm) | {r['mean']:.2f} / {r['max']:.2f} mm "
              f"| {r['mean_nomask']:.2f} / {r['max_nomask']:.2f} mm | {r['seconds']:.1f} | {r['iterations']} "
              f"| {r['fraction_before']:.3f} -> {r['fraction_after']:.3f} |")
    means = [r["mean"] for r in rows]
    maxes = [r["max"] for r in rows]
    times = [r["seconds"] for r in rows]
    print(f"| **all {len(rows)}** | | {statistics.mean(r['misalignment_mean'] for r in rows):.1f} mm (mean) "
          f"| {statistics.mean(means):.2f} (mean) / {max(maxes):.2f} (worst) mm "
          f"| {statistics.mean(r['mean_nomask'] for r in rows):.2f} / {max(r['max_nomask'] for r in rows):.2f} mm "
          f"| median {statistics.median(times):.1f}, max {max(times):.1f} | | |")
    print()
    ok = statistics.mean(means) <= MEAN_TARGET_MM and max(maxes) <= MAX_TARGET_MM and statistics.median(times) <= TIME_TARGET_S
    print(f"targets (mean <= {MEAN_TARGET_MM:g} mm, none worse than {MAX_TARGET_MM:g} mm, <= {TIME_TARGET_S:g} s): "
          f"{'met' if ok else 'NOT met'}; median time without mask {statistics.median(r['seconds_nomask'] for r in rows):.1f} s")
    print(f"machine: {machine}")
    write_figure(rows, args.figure)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
