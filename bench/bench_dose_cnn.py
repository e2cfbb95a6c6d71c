"""Residual dose CNN inference (Li 2020's network) on a 512 x 512 x 130 grid at 0.98 x 0.98 x 3 mm.

    python bench/bench_dose_cnn.py [--repeats 3] [--device cpu|cuda] [--weights W]

Times :func:`DoseCNNLib.cnn.inference.cnn_dose_rate` (the CNN correction of a whole volume in slabs, after the VDK,
which bench_vdk.py times): the median of the repeats after one warm-up run. Without --weights a default-size network
with random weights (the speed does not depend on the values) is saved to a temporary file and used.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights", type=Path)
    args = ap.parse_args()
    import torch

    from DoseCNNLib.cnn.data import Normalisation
    from DoseCNNLib.cnn.inference import cnn_dose_rate
    from DoseCNNLib.cnn.network import DoseNetConfig, build_dose_network
    from DoseCNNLib.cnn.weights import save_dose_weights
    from ImagingBasics.volume import Volume

    spacing = (0.98, 0.98, 3.0)
    shape = (130, 512, 512)
    hu = np.full(shape, -1000, np.int16)
    yy, xx = np.mgrid[:512, :512]
    hu[:, ((xx - 256) / 180.0) ** 2 + ((yy - 256) / 130.0) ** 2 <= 1] = 40
    ct = Volume(hu, spacing)
    activity = np.zeros(shape, np.float32)
    activity[40:90, 150:350, 150:350] = np.random.default_rng(0).uniform(0, 1e3, (50, 200, 200))
    act = ct.with_array(activity)
    vdk = ct.with_array(activity * 1e-6)
    weights = args.weights
    if weights is None:
        config = DoseNetConfig()
        weights = Path(tempfile.mkdtemp()) / "random.pt"
        save_dose_weights(build_dose_network(config), config, Normalisation.for_spacing(spacing), spacing, weights)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; device: {name}; torch {torch.__version__}")
    cnn_dose_rate(act, ct, vdk, weights=weights, device=args.device)
    times = []
    for _ in range(args.repeats):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        cnn_dose_rate(act, ct, vdk, weights=weights, device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print(f"CNN correction of 512x512x130: median {statistics.median(times):.2f} s over {args.repeats} runs "
          f"({', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
