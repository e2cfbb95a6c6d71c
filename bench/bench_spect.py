"""Benchmark: one simulated Lu-177 SPECT of a dose phantom (`dosecnn phantom`), image-domain Gaussian model vs
projections + OSEM (DoseCNNLib.phantoms.spect_sim / spect_projection), in-process, median of several runs.

    .venv/bin/python bench/bench_spect.py [--runs 3] [--size small] [--device cpu] [--models gaussian osem]

The anatomy and activity (24 h) of one phantom are made once; each run simulates its SPECT (128 x 128 grid of
4.8 mm voxels; OSEM: 128 views, 16 iterations x 4 subsets). Also prints the projection counts and how the two
models recover the mean of the phantom's lesions (SPECT mean / true mean on the SPECT grid).

Timings on a shared machine drift, so each run is paired with the fixed reference computation of
``bench/bench_mc.py`` (:func:`reference_work`, one thread) measured just before it; besides seconds the script prints
the reference units per second and their product, the SPECT's length in reference units: the figure to compare
between machines and between versions of the code (run this script with ``PYTHONPATH`` pointing at another
checkout's packages to time that version of the SPECT simulation in the same session).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_demo import reference_units_per_second  # noqa: E402
from bench_mc import cpu_model  # noqa: E402


def lesion_recovery(spect, activity, labels, model) -> float:
    from DoseCNNLib.phantoms.spect_sim import sample_on_grid
    from DoseCNNLib.phantoms.torso import LESION_LABEL_START

    truth = sample_on_grid(activity, spect).array / model.bq_per_count
    lesion = labels.with_array((labels.array >= LESION_LABEL_START).astype(np.float32))
    ratio = float(np.prod(spect.spacing)) / float(np.prod(labels.spacing))
    inside = sample_on_grid(lesion, spect).array / ratio > 0.5  # SPECT voxels at least half inside a lesion
    return float(spect.array[inside].mean() / truth[inside].mean())


def main() -> None:
    from DoseCNNLib.phantoms.case import generate_case
    from DoseCNNLib.phantoms.spect_sim import SpectModel, simulate_spect

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", default="small", choices=["small", "full"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=["gaussian", "osem"], choices=["gaussian", "osem"],
                    help="SPECT models to time (default both)")
    args = ap.parse_args()
    import torch

    device = args.device
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"machine: {platform.node()}, {cpu_model()}, {os.cpu_count()} cores; device: {name}; "
          f"torch {torch.__version__}; load {os.getloadavg()[0]:.2f}")
    case = generate_case(21, size=args.size, times_h=(24.0,), mc_decays=0)
    activity, ct, labels = case.activity_bq[0], case.ct, case.labels
    print(f"phantom: CT {ct.shape[::-1]} at {ct.spacing} mm")
    for reconstruction in args.models:
        model = SpectModel(reconstruction=reconstruction)
        times, rates, spect, info = [], [], None, None
        for run in range(args.runs):
            rates.append(reference_units_per_second())
            t0 = time.perf_counter()
            spect, info = simulate_spect(activity, model, np.random.default_rng(run), ct=ct, device=device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        extra = f", projection counts {info['projection_counts']:.3g}" if "projection_counts" in info else ""
        units = statistics.median(t * r for t, r in zip(times, rates))
        print(f"{reconstruction}: median {statistics.median(times):.2f} s over {args.runs} runs "
              f"({', '.join(f'{t:.2f}' for t in times)}); reference {statistics.median(rates):.2f} units/s; "
              f"{units:.1f} reference units; image counts {info['counts']:.3g}{extra}; "
              f"lesion mean recovery {lesion_recovery(spect, activity, labels, model):.2f}")


if __name__ == "__main__":
    main()
