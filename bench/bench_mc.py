"""Lu-177 Monte Carlo throughput (decays per second) on a patient-size grid: 512 x 512 x 130 at 0.98 x 0.98 x 3 mm.

    python bench/bench_mc.py [--decays 200000 2000000] [--repeats 5 3] [--device cpu|cuda] [--threads N]

The CT is soft tissue (0 HU) with a lung block (-800 HU) and a bone slab (+1000 HU); the activity fills a 6 cm cube
(a tumour/organ-sized source). Times the whole run_mc call (CT to media, sampling, electrons, photons, dose and
uncertainty), 2 batches, median of the repeats (one warm-up run first).

Timings on a shared or throttled machine drift by a factor of two and more, so each Monte Carlo run is paired with
a fixed reference computation run just before it on the same device: :func:`reference_work`, a transport-like mix
of small tensor operations on one thread. The ratio (decays/s) / (reference units/s), i.e. decays per reference
unit, is the figure to compare between runs and machines; decays/s alone depends on the machine and its load.
Threads: run_mc runs each tensor operation on one thread and, when torch is allowed two threads or more (its
default on two cores; --threads 1 to forbid), the photons on a second thread beside the electrons.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what the platform module knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reference_work(device: str = "cpu") -> None:
    """One reference unit: a fixed amount of work shaped like Monte Carlo transport steps. 40 rounds on 2^17
    particles of: uniform random numbers, float64 arithmetic with exp and log, a compaction (nonzero and gathers) and
    a scattered add into a 128^3 float64 grid. The same work on every machine, so its rate measures the machine; on
    the CPU on one thread (torch's intra-op threads set to 1 while it runs), as the Monte Carlo runs each operation."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _reference_rounds(device)
    finally:
        torch.set_num_threads(threads)


def _reference_rounds(device: str) -> None:
    import torch

    generator = torch.Generator(device=device).manual_seed(12345)
    grid = torch.zeros(128 ** 3, dtype=torch.float64, device=device)
    strides = torch.tensor([1, 128, 128 * 128], device=device)
    n = 1 << 17
    for _ in range(40):
        position = torch.rand(n, 3, generator=generator, device=device, dtype=torch.float64) * 63.0
        energy = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        reach = torch.exp(1.7 * torch.log(energy + 1e-3)) / (0.5 + position[:, 2])
        kept = (reach > 0.01).nonzero().squeeze(1)
        voxel = (torch.floor(position.index_select(0, kept) / 0.5).long() * strides).sum(-1)
        grid.index_add_(0, voxel, reach.index_select(0, kept))
    if grid.device.type == "cuda":
        torch.cuda.synchronize()


def patient_case():
    """(activity, CT) of the benchmark patient (see the module docstring)."""
    from ImagingBasics.volume import Volume

    shape = (130, 512, 512)
    hu = np.zeros(shape, np.int16)
    hu[30:100, 100:400, 60:220] = -800
    hu[:, 380:400, :] = 1000
    ct = Volume(hu, (0.98, 0.98, 3.0))
    activity = np.zeros(shape, np.float32)
    activity[55:75, 226:286, 226:286] = 1.0
    return ct.with_array(activity), ct


def timed(fn, *args, **kwargs) -> float:
    """Wall-clock seconds of ``fn(*args, **kwargs)``."""
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decays", type=int, nargs="+", default=[200_000, 2_000_000])
    ap.add_argument("--repeats", type=int, nargs="+", default=[5, 3], help="runs per --decays entry (the last repeats)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's own choice)")
    args = ap.parse_args()
    import torch

    from DoseCNNLib.physics.monte_carlo import run_mc

    if args.threads:
        torch.set_num_threads(args.threads)
    act, ct = patient_case()
    device = args.device
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU"
    threads = torch.get_num_threads()
    layout = ("one thread per operation, photons on a second thread beside the electrons" if threads >= 2 else
              "one thread") if device == "cpu" else "the GPU"
    print(f"machine: {platform.node()}; CPU {cpu_model()}, {os.cpu_count()} cores ({cores} usable); "
          f"device {name}; torch {torch.__version__}, {threads} threads allowed; Monte Carlo on {layout}", flush=True)
    reference_work(device)  # warm-up
    run_mc(act, ct, n_decays=2000, batches=2, device=device)  # warm-up (tables, allocations)
    for k, decays in enumerate(args.decays):
        repeats = args.repeats[min(k, len(args.repeats) - 1)]
        rates, references, ratios = [], [], []
        for r in range(repeats):
            reference_s = timed(reference_work, device)
            mc_s = timed(run_mc, act, ct, n_decays=decays, batches=2, device=device, seed=r)
            rates.append(decays / mc_s)
            references.append(1.0 / reference_s)
            ratios.append(rates[-1] / references[-1])
            print(f"  {decays} decays, run {r + 1}: {mc_s:.2f} s, {rates[-1]:.0f} decays/s; reference "
                  f"{reference_s:.3f} s ({references[-1]:.2f} units/s); ratio {ratios[-1]:.0f} decays/unit", flush=True)
        print(f"{decays} decays: median {statistics.median(rates):.0f} Lu-177 decays/s, reference "
              f"{statistics.median(references):.2f} units/s, ratio {statistics.median(ratios):.0f} decays per "
              f"reference unit (median of {repeats})", flush=True)


if __name__ == "__main__":
    main()
