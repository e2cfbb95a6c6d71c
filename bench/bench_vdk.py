"""VDK dose rate (Li 2020's kernels and density scaling) on a 512 x 512 x 130 grid at 0.98 x 0.98 x 3 mm.

    python bench/bench_vdk.py [--repeats 5] [--device cpu|cuda]

Uses the bundled 9^3 electron and 99^3 photon kernels; times vdk_dose_rate (one FFT convolution with the summed
kernels, density scaling), the median of the repeats after one warm-up run.
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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    from DoseCNNLib.physics.kernel_library import bundled_kernel_pair
    from DoseCNNLib.physics.vdk import vdk_dose_rate
    from ImagingBasics.volume import Volume

    electron, photon = bundled_kernel_pair((0.98, 0.98, 3.0))
    shape = (130, 512, 512)
    hu = np.zeros(shape, np.int16)
    hu[30:100, 100:400, 60:220] = -800
    ct = Volume(hu, (0.98, 0.98, 3.0))
    activity = np.zeros(shape, np.float32)
    activity[40:90, 150:350, 150:350] = np.random.default_rng(0).uniform(0, 1e3, (50, 200, 200))
    act = ct.with_array(activity)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; device: {name}; torch {torch.__version__}")
    vdk_dose_rate(act, ct, electron, photon, device=args.device)
    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        vdk_dose_rate(act, ct, electron, photon, device=args.device)
        times.append(time.perf_counter() - t0)
        print(f"run {r + 1}: {times[-1]:.2f} s", flush=True)
    print(f"median {statistics.median(times):.2f} s for 512x512x130 with 9^3 + 99^3 kernels ({name})")


if __name__ == "__main__":
    main()
