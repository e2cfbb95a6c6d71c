"""Lu-177 Monte Carlo throughput (decays per second) on a patient-size grid: 512 x 512 x 130 at 0.98 x 0.98 x 3 mm.

    python bench/bench_mc.py [--decays 20000] [--repeats 3] [--device cpu|cuda]

The CT is soft tissue (0 HU) with a lung block (-800 HU) and a bone slab (+1000 HU); the activity fills a 6 cm cube
(a tumour/organ-sized source). Times the whole run_mc call (sampling, electrons, photons, dose), median of repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decays", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    from DoseCNNLib.physics.monte_carlo import run_mc
    from ImagingBasics.volume import Volume

    shape = (130, 512, 512)
    hu = np.zeros(shape, np.int16)
    hu[30:100, 100:400, 60:220] = -800
    hu[:, 380:400, :] = 1000
    ct = Volume(hu, (0.98, 0.98, 3.0))
    activity = np.zeros(shape, np.float32)
    activity[55:75, 226:286, 226:286] = 1.0
    act = ct.with_array(activity)
    device = args.device
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; device: {name}; torch {torch.__version__}")
    run_mc(act, ct, n_decays=2000, batches=2, device=device)  # warm-up (tables, allocations)
    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        run_mc(act, ct, n_decays=args.decays, batches=2, device=device, seed=r)
        times.append(time.perf_counter() - t0)
        print(f"run {r + 1}: {times[-1]:.2f} s ({args.decays / times[-1]:.0f} decays/s)", flush=True)
    median = statistics.median(times)
    print(f"median {median:.2f} s: {args.decays / median:.0f} Lu-177 decays/s on a 512x512x130 grid ({name})")


if __name__ == "__main__":
    main()
