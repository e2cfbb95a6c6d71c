"""Benchmark: one simulated Lu-177 SPECT of a dose phantom (`dosecnn phantom`), image-domain Gaussian model vs
projections + OSEM (DoseCNNLib.phantoms.spect_sim / spect_projection), in-process, median of several runs.

    .venv/bin/python bench/bench_spect.py [--runs 3] [--size small] [--device cpu]

The anatomy and activity (24 h) of one phantom are made once; each run simulates its SPECT (128 x 128 grid of
4.8 mm voxels; OSEM: 128 views, 16 iterations x 4 subsets). Also prints the projection counts and how the two
models recover the mean of the phantom's lesions (SPECT mean / true mean on the SPECT grid).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


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
    args = ap.parse_args()
    import torch

    device = args.device
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; device: {name}; torch {torch.__version__}")
    case = generate_case(21, size=args.size, times_h=(24.0,), mc_decays=0)
    activity, ct, labels = case.activity_bq[0], case.ct, case.labels
    print(f"phantom: CT {ct.shape[::-1]} at {ct.spacing} mm")
    for reconstruction in ("gaussian", "osem"):
        model = SpectModel(reconstruction=reconstruction)
        times, spect, info = [], None, None
        for run in range(args.runs):
            t0 = time.perf_counter()
            spect, info = simulate_spect(activity, model, np.random.default_rng(run), ct=ct, device=device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        extra = f", projection counts {info['projection_counts']:.3g}" if "projection_counts" in info else ""
        print(f"{reconstruction}: median {statistics.median(times):.2f} s over {args.runs} runs "
              f"({', '.join(f'{t:.2f}' for t in times)}); image counts {info['counts']:.3g}{extra}; "
              f"lesion mean recovery {lesion_recovery(spect, activity, labels, model):.2f}")


if __name__ == "__main__":
    main()
