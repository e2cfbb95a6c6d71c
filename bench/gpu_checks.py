"""The prepared GPU check (issue 19): every torch code path of both cores on a CUDA device, timed and compared with
the CPU, in one run that writes one Markdown report. Started by ``bench/gpu_checks.sh`` (see there for the usage).

Checks, in this order (each timed; on CUDA each also records its peak GPU memory):

1. ``agree: ctpm run``: the perfusion map of ``ctpm run`` (bundled ARNN, mixed precision on CUDA, 4 Monte Carlo
   dropout passes, a SPECT registered) on the device and on the CPU agree: Spearman >= 0.99 over the lungs, mean
   absolute difference <= 0.02; the run reports the device it used (no silent fallback to the CPU);
2. ``agree: ctpm train``: 1 epoch of ``ctpm train`` on 3 phantoms on each device: ``best.pt`` written, validation
   loss finite;
3. ``agree: dosecnn mc``: ``dosecnn mc`` (Lu-177, 200,000 decays): mean dose rate in the activity's voxels within 3 %
   (a Monte Carlo estimate: the devices draw different random numbers);
4. ``agree: dosecnn run``: VDK and bundled residual CNN dose-rate maps: relative difference of the means below 1 %,
   voxelwise 99th percentile of the difference below 5 % of the maximum;
5. ``agree: dosecnn kernel``: ``dosecnn kernel`` at 4 mm (20,000 decays) finishes with finite kernels;
6. ``Monte Carlo decays/s``: ``run_mc`` on bench/bench_mc.py's 512 x 512 x 130 patient at 200,000 and 2,000,000
   decays, each run paired with bench_mc's reference computation on the same device (the ratio decays per reference
   unit is the figure to compare between machines);
7. ``VDK time``: ``vdk_dose_rate`` of a 512 x 512 x 130 CT with the bundled 9^3 + 99^3 kernels (median of 3 after a
   warm-up);
8. ``dose CNN time``: ``cnn_dose_rate`` with a default-size network (random weights) on the same grid, float32 and
   mixed precision (median of 3 after a warm-up);
9. ``ARNN inference``: ``ctpm run`` (lungs given, no SPECT) on a full-size phantom (512 x 512 x 235) with the bundled
   ARNN: its step times and peak GPU memory, then ``predict`` on both lungs alone, warm (median of 3);
10. ``ARNN training step``: one optimiser step of :func:`CTPerfusionMappingLib.training.trainer.train` (default
    network, two 128 x 64 x 64 hemi-lungs, automatic mixed precision as the trainer chooses it: bfloat16, or float16
    with loss scaling): training and validation losses finite;
11. ``dose CNN training step``: one optimiser step of :func:`DoseCNNLib.cnn.training.train` (default network, 8 whole
    512 x 512 slices, mixed precision): losses finite;
12. ``OOM fallback``: an out-of-memory error during ARNN and dose CNN inference (on CUDA a real one: the process's
    GPU memory capped with ``torch.cuda.set_per_process_memory_fraction`` just above what it holds; in the dry run a
    simulated ``torch.cuda.OutOfMemoryError``) ends in :func:`ImagingBasics.devices.run_with_oom_fallback`'s
    documented path: one RuntimeWarning, the result computed on the CPU.

The GPU is the first one that ``CUDA_VISIBLE_DEVICES`` leaves visible. Estimated time on one H200 with 16 cores,
from the sizes and the recorded CPU and H100 timings: about 6 minutes (phantoms 45 s, the agreement checks 3 min
with their CPU runs, Monte Carlo up to 1 min, the rest 1.5 min); the report gives the total against the 8-minute
budget.

``--dry-run``: everything on the CPU at tiny sizes (a few-voxel grids, networks of 2-4 channels, a few thousand
decays), to check the script itself in CI; the device-against-CPU comparisons then compare the CPU with itself.
``agree: ctpm train`` is skipped there: the command trains at its fixed 128 x 64 x 64 input, about a CPU-minute per
step even for a tiny network; the trainer itself runs in ``ARNN training step``.

Writes ``gpu_checks.md`` and ``gpu_checks.json`` into ``--out`` (rewritten after every check, so that an interrupted
run leaves what it did). Exit status 0 when every check passed, 1 when one failed, 2 when CUDA was asked for and is
not there (one ``error:`` line, nothing written).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (HERE, ROOT / "DoseCNN", ROOT / "CTPerfusionMapping", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

#: the time the whole run should take on a CUDA machine (issue 19)
BUDGET_S = 480.0
PATIENT_SPACING = (0.98, 0.98, 3.0)  # mm (x, y, z): bench_mc's, bench_vdk's and bench_dose_cnn's patient grid


@dataclass(frozen=True)
class Sizes:
    """How big each check is: :data:`FULL` on the GPU, :data:`DRY` for the dry run on the CPU."""

    ctpm_cohort: int = 3  # small phantoms for ctpm run / ctpm train
    ctpm_acquisition: str = "random"
    ctpm_run_spect: bool = True  # ctpm run with the SPECT (registration, evaluation) and labels from segmentation
    mc_dropout: int = 4
    ctpm_train: bool = True
    agree_mc_decays: int = 200_000
    kernel_decays: int = 20_000
    bench_decays: Tuple[int, ...] = (200_000, 2_000_000)
    bench_repeats: Tuple[int, ...] = (2, 1)
    bench_stride: Tuple[int, int, int] = (1, 1, 1)  # (z, y, x) subsampling of bench_mc's patient
    warm_up: bool = True  # an untimed first run before the timed ones (CUDA context, cuDNN and FFT plans)
    patient_shape: Tuple[int, int, int] = (130, 512, 512)
    repeats: int = 3
    arnn_phantom: str = "full"  # the ARNN inference phantom; "" reuses the first small ctpm phantom
    arnn: Dict[str, Any] = field(default_factory=dict)  # NetworkConfig overrides; {} with the bundled weights
    arnn_train: Dict[str, Any] = field(default_factory=dict)
    dose_net: Dict[str, Any] = field(default_factory=dict)  # DoseNetConfig overrides; {} with the bundled weights
    dose_train_shape: Tuple[int, int, int] = (16, 512, 512)
    dose_train_batch: int = 8
    oom_shape: Tuple[int, int, int] = (24, 256, 256)


FULL = Sizes(arnn_train={"coordinates": True})  # the training step of the bundled kind of network
TINY_ARNN = {"base_channels": 2, "max_channels": 4}
TINY_DOSE = {"depth_channels": (2, 2, 2), "base_filters": 2, "levels": 2, "max_filters": 4}
DRY = Sizes(ctpm_cohort=1, ctpm_acquisition="none", ctpm_run_spect=False, mc_dropout=2, ctpm_train=False,
            agree_mc_decays=4_000, kernel_decays=1_000, bench_decays=(2_000, 10_000), bench_repeats=(1, 1),
            bench_stride=(2, 8, 8), warm_up=False, patient_shape=(16, 64, 64), repeats=1, arnn_phantom="",
            arnn=TINY_ARNN, arnn_train=dict(TINY_ARNN, input_shape=(32, 16, 16), coordinates=True), dose_net=TINY_DOSE,
            dose_train_shape=(14, 32, 32), dose_train_batch=2, oom_shape=(12, 32, 32))


class Skipped(Exception):
    """A check that does not run in this mode (the reason is reported)."""


@dataclass
class Context:
    work: Path
    device: str  # where the checks run: "cuda", or "cpu" in the dry run
    dry: bool
    sizes: Sizes
    cache: Dict[str, Any] = field(default_factory=dict)  # phantoms and weights made once, shared by the checks

    @property
    def devices(self) -> List[str]:
        """The devices of an agreement check: the CPU first (the reference), then the device (the CPU alone once in
        the dry run)."""
        return ["cpu"] if self.device == "cpu" else ["cpu", self.device]

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


# --- helpers ------------------------------------------------------------------------------------------------------
def _call(command: Callable, argv: List[str]) -> float:
    """Run one command of the ``ctpm`` / ``dosecnn`` command line in this process; its seconds. A non-zero status is
    an error naming the command."""
    started = time.perf_counter()
    status = command(argv)
    if status != 0:
        raise RuntimeError(f"{argv[0]} exited with {status}: {' '.join(argv)}")
    return time.perf_counter() - started


def _ctpm(argv: List[str]) -> float:
    from CTPerfusionMappingLib.cli import main

    return _call(main, argv)


def _dosecnn(argv: List[str]) -> float:
    from DoseCNNLib.cli import main

    return _call(main, argv)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str) -> Tuple[float, Any]:
    """(seconds, result) of ``fn()``, the device's queued work included."""
    _sync(device)
    t0 = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - t0, result


def _repeat(fn: Callable[[], Any], device: str, repeats: int, warm_up: bool) -> Tuple[List[float], Any]:
    """Seconds of ``repeats`` calls of ``fn`` after one untimed warm-up call (when ``warm_up``), and the last result."""
    if warm_up:
        fn()
    seconds, result = [], None
    for _ in range(repeats):
        s, result = _timed(fn, device)
        seconds.append(s)
    return seconds, result


def _gb(n_bytes: float) -> float:
    return round(n_bytes / 1024 ** 3, 3)


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: str) -> Optional[float]:
    import torch

    return _gb(torch.cuda.max_memory_allocated(device)) if device.startswith("cuda") else None


def _peak_text(gb: Optional[float]) -> str:
    return "" if gb is None else f", peak GPU memory {gb:.2f} GB"


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _amp_dtype(device: str) -> str:
    """The autocast type the training and inference code choose on ``device``
    (:func:`ImagingBasics.devices.amp_dtype`)."""
    import torch

    from ImagingBasics.devices import amp_dtype

    dtype = amp_dtype(device)
    if dtype is None:
        return "none (float32: autocast is for CUDA only)"
    return "bfloat16" if dtype is torch.bfloat16 else "float16 (with loss scaling in training)"


def synthetic_patient(shape: Tuple[int, int, int], spacing=PATIENT_SPACING):
    """(activity in Bq, CT in HU) Volumes of bench_dose_cnn.py's patient at ``shape``: an elliptic body of 40 HU in
    air with a lung block, and a random activity block in its middle."""
    from ImagingBasics.volume import Volume

    nz, ny, nx = shape
    hu = np.full(shape, -1000, np.int16)
    yy, xx = np.mgrid[:ny, :nx]
    hu[:, ((xx - nx / 2) / (0.35 * nx)) ** 2 + ((yy - ny / 2) / (0.25 * ny)) ** 2 <= 1] = 40
    hu[nz // 4: 3 * nz // 4, ny // 5: 2 * ny // 5, nx // 5: 2 * nx // 5] = -800
    activity = np.zeros(shape, np.float32)
    box = (slice(nz // 3, max(nz // 3 + 1, 2 * nz // 3)), slice(3 * ny // 10, 7 * ny // 10), slice(3 * nx // 10, 7 * nx // 10))
    activity[box] = np.random.default_rng(0).uniform(0, 1e3, activity[box].shape)
    ct = Volume(hu, spacing)
    return ct.with_array(activity), ct


def _dose_weights(ctx: Context, spacing, overrides: Dict[str, Any], name: str) -> Path:
    """A dose CNN weights file (random weights: times and code paths do not depend on the values) for ``spacing``."""
    from DoseCNNLib.cnn.data import Normalisation
    from DoseCNNLib.cnn.network import DoseNetConfig, build_dose_network
    from DoseCNNLib.cnn.weights import save_dose_weights

    key = ("dose_weights", name)
    if key not in ctx.cache:
        import torch

        torch.manual_seed(0)
        config = DoseNetConfig(**overrides)
        path = ctx.work / "weights" / f"{name}.pt"
        save_dose_weights(build_dose_network(config), config, Normalisation.for_spacing(spacing), spacing, path,
                          metadata={"note": "random weights of the GPU check (timing only)"})
        ctx.cache[key] = path
    return ctx.cache[key]


def _arnn_weights(ctx: Context) -> Optional[Path]:
    """The ARNN weights of the ctpm checks: None (the bundled model) on the GPU, a tiny random network in the dry
    run."""
    if not ctx.sizes.arnn:
        return None
    if "arnn_weights" not in ctx.cache:
        import torch

        from CTPerfusionMappingLib.network import NetworkConfig, build_model
        from CTPerfusionMappingLib.weights import save_weights

        torch.manual_seed(0)
        config = NetworkConfig(**ctx.sizes.arnn)
        ctx.cache["arnn_weights"] = save_weights(build_model(config), config, ctx.work / "weights" / "arnn.pt",
                                                 metadata={"note": "random weights of the GPU check"})
    return ctx.cache["arnn_weights"]


def _ctpm_cohort(ctx: Context) -> Path:
    folder = ctx.work / "ctpm_cohort"
    if not (folder / "cohort.csv").is_file():
        _ctpm(["phantom", "--out", str(folder), "--n", str(ctx.sizes.ctpm_cohort), "--size", "small",
               "--acquisition", ctx.sizes.ctpm_acquisition, "--workers", str(min(ctx.sizes.ctpm_cohort, 4)), "--quiet"])
    return folder


def _dose_cohort(ctx: Context) -> Path:
    folder = ctx.work / "dose_cohort"
    if not (folder / "cohort.csv").is_file():
        _dosecnn(["phantom", "--out", str(folder), "--n", "1", "--times", "24", "--mc-decays", "0", "--quiet"])
    return folder


def _weights_args(path: Optional[Path]) -> List[str]:
    return [] if path is None else ["--weights", str(path)]


# --- 1-5: the commands on the device and on the CPU, compared --------------------------------------------------------
def check_ctpm_run(ctx: Context) -> Dict[str, Any]:
    from ImagingBasics.imageio import read_volume

    case = _ctpm_cohort(ctx) / "case000"
    inputs = ["--spect", str(case / "spect.nrrd")] if ctx.sizes.ctpm_run_spect else \
        ["--lungs", str(case / "lungs.nrrd"), "--lobes", str(case / "lobes.nrrd")]
    maps, seconds, used = {}, {}, {}
    for device in ctx.devices:
        out = ctx.work / f"ctpm_run_{device}"
        seconds[device] = _ctpm(["run", "--ct", str(case / "ct.nrrd"), *inputs, "--out", str(out), "--device", device,
                                 "--mc-dropout", str(ctx.sizes.mc_dropout), "--quiet", *_weights_args(_arnn_weights(ctx))])
        maps[device] = read_volume(out / "perfusion.nrrd").array
        used[device] = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["model"]["device"]
    lungs = read_volume(ctx.work / f"ctpm_run_{ctx.devices[0]}" / "lungs.nrrd").array > 0
    a, b = maps[ctx.devices[0]][lungs], maps[ctx.devices[-1]][lungs]
    rho, mad = _spearman(a, b), float(np.abs(a - b).mean())
    on_device = all(str(used[d]).split(":")[0] == d.split(":")[0] for d in ctx.devices)  # no fallback to the CPU
    return {"seconds_per_device": seconds, "device_used": used, "spearman": rho, "mean_abs_difference": mad,
            "passed": rho >= 0.99 and mad <= 0.02 and on_device,
            "summary": f"Spearman {rho:.4f}, mean absolute difference {mad:.4f}; " + _per_device(seconds)}


def check_ctpm_train(ctx: Context) -> Dict[str, Any]:
    import csv

    if not ctx.sizes.ctpm_train:
        raise Skipped("dry run: ctpm train trains at its fixed 128x64x64 input, about a CPU-minute per step even for a "
                      "tiny network; the trainer runs in 'ARNN training step'")
    seconds, losses = {}, {}
    for device in ctx.devices:
        out = ctx.work / f"ctpm_train_{device}"
        seconds[device] = _ctpm(["train", str(_ctpm_cohort(ctx) / "cohort.csv"), "--epochs", "1", "--device", device,
                                 "--out", str(out), "--quiet", "--base-channels", "8"])
        with open(out / "log.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        losses[device] = float(rows[-1]["val_loss"]) if rows and "val_loss" in rows[-1] else float("nan")
    written = all((ctx.work / f"ctpm_train_{d}" / "best.pt").is_file() for d in ctx.devices)
    finite = bool(np.all(np.isfinite(list(losses.values()))))
    return {"seconds_per_device": seconds, "val_loss": losses, "passed": written and finite,
            "summary": "validation loss " + ", ".join(f"{d} {v:.4f}" for d, v in losses.items()) + "; " + _per_device(seconds)}


def check_dosecnn_mc(ctx: Context) -> Dict[str, Any]:
    from ImagingBasics.imageio import read_volume

    case = _dose_cohort(ctx) / "case000"
    activity = sorted(case.glob("activity_*h.nrrd"))[0]
    mask = read_volume(activity).array > 0
    means, seconds = {}, {}
    for device in ctx.devices:
        out = ctx.work / f"dose_mc_{device}"
        seconds[device] = _dosecnn(["mc", "--activity", str(activity), "--ct", str(case / "ct.nrrd"), "--decays",
                                    str(ctx.sizes.agree_mc_decays), "--device", device, "--seed", "1", "--quiet",
                                    "--out", str(out)])
        means[device] = float(read_volume(out / "dose_rate.nrrd").array[mask].mean())
    ratio = means[ctx.devices[-1]] / means[ctx.devices[0]]
    return {"seconds_per_device": seconds, "decays": ctx.sizes.agree_mc_decays, "mean_dose_rate_mGy_s": means,
            "ratio": ratio, "passed": bool(abs(ratio - 1.0) <= 0.03),
            "summary": f"mean dose rate ratio {ratio:.4f} ({ctx.sizes.agree_mc_decays} decays); " + _per_device(seconds)}


def check_dosecnn_run(ctx: Context) -> Dict[str, Any]:
    from ImagingBasics.imageio import read_volume

    case = _dose_cohort(ctx) / "case000"
    spect = sorted(case.glob("spect_*h.nrrd"))[0]
    weights = _dose_weights(ctx, read_volume(case / "ct.nrrd").spacing, ctx.sizes.dose_net, "dose_tiny") \
        if ctx.sizes.dose_net else None
    result: Dict[str, Any] = {}
    for method in ("vdk", "cnn"):
        maps, seconds, used = {}, {}, {}
        for device in ctx.devices:
            out = ctx.work / f"dose_run_{method}_{device}"
            seconds[device] = _dosecnn(["run", "--spect", str(spect), "--ct", str(case / "ct.nrrd"), "--activity-mbq",
                                        "5000", "--method", method, "--device", device, "--out", str(out),
                                        *(_weights_args(weights) if method == "cnn" else [])])
            maps[device] = read_volume(out / "dose_rate.nrrd").array
            used[device] = json.loads((out / "run.json").read_text(encoding="utf-8")).get("cnn_device")
        a, b = maps[ctx.devices[0]], maps[ctx.devices[-1]]
        scale = float(np.abs(a).max()) or 1.0
        result[method] = {"seconds_per_device": seconds, "mean_relative_difference": abs(float(b.mean()) / float(a.mean()) - 1.0),
                          "p99_abs_difference_of_max": float(np.percentile(np.abs(a - b), 99)) / scale}
        if method == "cnn":
            result[method]["device_used"] = used
    cnn_used = result["cnn"]["device_used"].get(ctx.devices[-1]) or ""
    result["passed"] = all(r["mean_relative_difference"] < 0.01 and r["p99_abs_difference_of_max"] < 0.05
                           for r in (result["vdk"], result["cnn"])) and cnn_used.lower().startswith(ctx.device[:3])
    result["summary"] = "; ".join(f"{m}: mean {r['mean_relative_difference']:.2%}, p99 {r['p99_abs_difference_of_max']:.2%} "
                                  f"of max, {_per_device(r['seconds_per_device'])}"
                                  for m, r in ((m, result[m]) for m in ("vdk", "cnn")))
    return result


def check_dosecnn_kernel(ctx: Context) -> Dict[str, Any]:
    from ImagingBasics.imageio import read_volume

    seconds, finite = {}, {}
    for device in ctx.devices:
        out = ctx.work / f"dose_kernel_{device}"
        seconds[device] = _dosecnn(["kernel", "--spacing", "4", "4", "4", "--decays", str(ctx.sizes.kernel_decays),
                                    "--device", device, "--out", str(out)])
        kernels = sorted(out.glob("*.nrrd"))
        finite[device] = bool(kernels) and all(np.isfinite(read_volume(p).array).all() for p in kernels)
    return {"seconds_per_device": seconds, "finite": finite, "passed": bool(finite) and all(finite.values()),
            "summary": f"kernels finite ({ctx.sizes.kernel_decays} decays); " + _per_device(seconds)}


def _per_device(seconds: Dict[str, float]) -> str:
    return ", ".join(f"{d} {s:.1f} s" for d, s in seconds.items())


# --- 6-8: speed on the patient grid ----------------------------------------------------------------------------------
def check_mc_speed(ctx: Context) -> Dict[str, Any]:
    from bench_mc import patient_case, reference_work, timed

    from DoseCNNLib.physics.monte_carlo import run_mc
    from ImagingBasics.volume import Volume

    act, ct = patient_case()
    sz, sy, sx = ctx.sizes.bench_stride
    if (sz, sy, sx) != (1, 1, 1):  # the dry run: the same patient on a coarser grid
        coarse = Volume(np.ascontiguousarray(ct.array[::sz, ::sy, ::sx]),
                        tuple(s * k for s, k in zip(ct.spacing, (sx, sy, sz))))
        act, ct = coarse.with_array(np.ascontiguousarray(act.array[::sz, ::sy, ::sx])), coarse
    device = ctx.device
    if ctx.sizes.warm_up:
        reference_work(device)
        run_mc(act, ct, n_decays=2000, batches=2, device=device)
    runs = {}
    for decays, repeats in zip(ctx.sizes.bench_decays, ctx.sizes.bench_repeats):
        rates, references, ratios, finite = [], [], [], True
        for r in range(repeats):
            reference_s = timed(reference_work, device)
            mc_s, result = _timed(lambda r=r, decays=decays: run_mc(act, ct, n_decays=decays, batches=2, device=device,
                                                                    seed=r), device)
            dose = result.dose_rate_mgy_s.array
            finite = finite and bool(np.isfinite(dose).all() and dose.max() > 0)
            rates.append(decays / mc_s)
            references.append(1.0 / reference_s)
            ratios.append(rates[-1] / references[-1])
        runs[str(decays)] = {"decays_per_second": statistics.median(rates), "reference_units_per_second":
                             statistics.median(references), "decays_per_reference_unit": statistics.median(ratios),
                             "runs": repeats, "dose_finite": finite}
    passed = all(v["dose_finite"] and v["decays_per_second"] > 0 for v in runs.values())
    return {"grid": list(ct.shape), "runs": runs, "passed": passed,
            "summary": "; ".join(f"{d} decays: {v['decays_per_second']:.0f} decays/s, {v['decays_per_reference_unit']:.0f} "
                                 f"per reference unit" for d, v in runs.items()) + f" (grid {'x'.join(map(str, ct.shape))})"}


def check_vdk_speed(ctx: Context) -> Dict[str, Any]:
    from DoseCNNLib.physics.kernel_library import bundled_kernel_pair
    from DoseCNNLib.physics.vdk import vdk_dose_rate

    pair = bundled_kernel_pair(PATIENT_SPACING)
    if pair is None:
        raise RuntimeError(f"no bundled Lu-177 kernels for {PATIENT_SPACING} mm")
    electron, photon = pair
    act, ct = synthetic_patient(ctx.sizes.patient_shape)
    seconds, (dose, _) = _repeat(lambda: vdk_dose_rate(act, ct, electron, photon, device=ctx.device), ctx.device,
                                 ctx.sizes.repeats, ctx.sizes.warm_up)
    ok = bool(np.isfinite(dose.array).all() and dose.array.max() > 0)
    return {"grid": list(ct.shape), "kernels": [int(electron.shape[0]), int(photon.shape[0])], "seconds": seconds,
            "median_s": statistics.median(seconds), "passed": ok,
            "summary": f"{statistics.median(seconds):.2f} s for {'x'.join(map(str, ct.shape[::-1]))} "
                       f"({electron.shape[0]}^3 + {photon.shape[0]}^3 kernels)"}


def check_cnn_speed(ctx: Context) -> Dict[str, Any]:
    from DoseCNNLib.cnn.inference import cnn_dose_rate

    act, ct = synthetic_patient(ctx.sizes.patient_shape)
    vdk = ct.with_array(act.array * 1e-6)
    weights = _dose_weights(ctx, PATIENT_SPACING, ctx.sizes.dose_net, "dose_patient")
    result: Dict[str, Any] = {"grid": list(ct.shape)}
    for label, amp in (("float32", False), ("amp", True)):
        seconds, (dose, info) = _repeat(lambda amp=amp: cnn_dose_rate(act, ct, vdk, weights=weights, device=ctx.device,
                                                                      amp=amp), ctx.device, ctx.sizes.repeats,
                                                ctx.sizes.warm_up)
        result[label] = {"seconds": seconds, "median_s": statistics.median(seconds), "device_used": info["cnn_device"],
                         "finite": bool(np.isfinite(dose.array).all())}
    result["amp_dtype"] = _amp_dtype(ctx.device)
    result["passed"] = all(result[k]["finite"] and result[k]["device_used"].lower().startswith(ctx.device[:3])
                           for k in ("float32", "amp"))
    result["summary"] = (f"float32 {result['float32']['median_s']:.2f} s, mixed precision {result['amp']['median_s']:.2f} s "
                         f"for {'x'.join(map(str, ct.shape[::-1]))} on {result['float32']['device_used']}")
    return result


# --- 9-11: the networks ----------------------------------------------------------------------------------------------
def check_arnn_inference(ctx: Context) -> Dict[str, Any]:
    from CTPerfusionMappingLib.inference import predict
    from CTPerfusionMappingLib.weights import bundled_weights, load_weights
    from ImagingBasics.imageio import read_volume

    if ctx.sizes.arnn_phantom:
        folder = ctx.work / "ctpm_full"
        phantom_s = _ctpm(["phantom", "--out", str(folder), "--n", "1", "--size", ctx.sizes.arnn_phantom, "--seed",
                           "2026", "--acquisition", "none", "--workers", "1", "--quiet"])
        case = folder / "case000"
    else:
        phantom_s, case = 0.0, _ctpm_cohort(ctx) / "case000"
    out = ctx.work / "arnn_run"
    _peak_reset(ctx.device)
    run_s = _ctpm(["run", "--ct", str(case / "ct.nrrd"), "--lungs", str(case / "lungs.nrrd"), "--lobes",
                   str(case / "lobes.nrrd"), "--out", str(out), "--device", ctx.device, "--quiet",
                   *_weights_args(_arnn_weights(ctx))])
    run_peak = _peak_gb(ctx.device)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    ct_shape = list(read_volume(case / "lungs.nrrd").shape)
    weights = _arnn_weights(ctx) or bundled_weights()
    model, config, _ = load_weights(weights, ctx.device)
    lungs = np.random.default_rng(0).uniform(0, 1, (2, 1, *config.input_shape)).astype(np.float32)
    _peak_reset(ctx.device)
    seconds, res = _repeat(lambda: predict(model, lungs, device=ctx.device), ctx.device, ctx.sizes.repeats,
                           ctx.sizes.warm_up)
    predict_peak = _peak_gb(ctx.device)
    used = str(metrics["model"]["device"])
    passed = used.startswith(ctx.device[:3]) and res["device"].startswith(ctx.device[:3]) \
        and bool(np.isfinite(res["mean"]).all())
    timings = {k: round(float(v), 3) for k, v in metrics["timings_s"].items()}
    return {"ct_shape": ct_shape, "phantom_seconds": phantom_s, "ctpm_run_seconds": run_s, "pipeline_timings_s": timings,
            "device_used": used, "pipeline_peak_gpu_gb": run_peak, "predict_seconds": seconds,
            "predict_median_s": statistics.median(seconds), "predict_peak_gpu_gb": predict_peak,
            "weights": str(weights), "passed": passed,
            "summary": f"ctpm run on {'x'.join(map(str, ct_shape[::-1]))}: {run_s:.1f} s (network "
                       f"{timings.get('prediction', float('nan')):.2f} s{_peak_text(run_peak)}); predict both lungs"
                       f"{' warm' if ctx.sizes.warm_up else ''} {statistics.median(seconds):.3f} s"
                       f"{_peak_text(predict_peak)} on {used}"}


def synthetic_hemi_lungs(shape: Tuple[int, int, int], n: int, seed: int = 0):
    """``n`` TrainSamples of ``shape``: an ellipsoid of parenchyma, a CT input with noise, a front-to-back perfusion
    gradient as reference and its 11-level target."""
    from CTPerfusionMappingLib.training.dataset import TrainSample

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    mask = z ** 2 + y ** 2 + x ** 2 < 0.8
    samples = []
    for i in range(n):
        ct = (np.clip(0.3 + 0.1 * rng.standard_normal(shape), 0, 1) * mask).astype(np.float32)
        reference = (np.clip(0.5 + 0.4 * y + 0.05 * rng.standard_normal(shape), 0, 1) * mask).astype(np.float32)
        samples.append(TrainSample(f"synthetic{i}", 1 + i % 2, ct, np.round(reference * 10) / 10, reference, mask))
    return samples


def check_arnn_training_step(ctx: Context) -> Dict[str, Any]:
    import csv

    from CTPerfusionMappingLib.network import NetworkConfig
    from CTPerfusionMappingLib.training.trainer import TrainConfig, train

    network = NetworkConfig(**ctx.sizes.arnn_train)
    samples = synthetic_hemi_lungs(network.input_shape, 3)
    out = ctx.work / "arnn_train_step"
    seconds, summary = _timed(lambda: train(network, samples[:2], samples[2:], out,
                                            TrainConfig(epochs=1, batch_size=2, amp=True, device=ctx.device)), ctx.device)
    with open(out / "log.csv", newline="", encoding="utf-8") as f:
        row = list(csv.DictReader(f))[-1]
    losses = {k: float(row[k]) for k in ("train_loss", "val_loss")}
    passed = all(math.isfinite(v) for v in losses.values()) and (out / "best.pt").is_file() \
        and str(summary["device"]).startswith(ctx.device[:3])
    return {"network": {k: v for k, v in network.to_dict().items() if k in ("arch", "base_channels", "max_channels",
                                                                            "input_shape")},
            "batch": 2, "amp_dtype": _amp_dtype(ctx.device), "seconds": seconds, "losses": losses,
            "step_seconds": float(row["seconds"]), "device_used": summary["device"], "passed": passed,
            "summary": f"train loss {losses['train_loss']:.4f}, validation {losses['val_loss']:.4f}; autocast "
                       f"{_amp_dtype(ctx.device).split(' ')[0]}; step {float(row['seconds']):.2f} s, with validation and "
                       f"saving {seconds:.1f} s"}


def check_dose_training_step(ctx: Context) -> Dict[str, Any]:
    from DoseCNNLib.cnn.data import case_from_volumes
    from DoseCNNLib.cnn.network import DoseNetConfig
    from DoseCNNLib.cnn.training import DoseTrainConfig, train

    act, ct = synthetic_patient(ctx.sizes.dose_train_shape)
    vdk = ct.with_array(act.array * 1e-6)
    reference = ct.with_array(act.array * 1.1e-6)
    case = case_from_volumes("synthetic", ct, act, vdk, reference)
    batch = ctx.sizes.dose_train_batch
    first = ct.shape[0] // 2 - batch // 2  # slices through the activity
    train_refs = [(0, k) for k in range(first, first + batch)]
    val_refs = [(0, first + batch)]
    network = DoseNetConfig(**ctx.sizes.dose_net)
    out = ctx.work / "dose_train_step"
    seconds, summary = _timed(lambda: train(network, [case], train_refs, val_refs, out,
                                            DoseTrainConfig(epochs=1, batch_size=batch, amp=True, device=ctx.device)),
                              ctx.device)
    last = summary["last"]
    losses = {k: float(last[k]) for k in ("train_loss", "val_loss")}
    passed = all(math.isfinite(v) for v in losses.values()) and (out / "best.pt").is_file() \
        and str(summary["device"]).startswith(ctx.device[:3])
    return {"slices": [batch, *ct.shape[1:]], "amp_dtype": _amp_dtype(ctx.device), "seconds": seconds, "losses": losses,
            "step_seconds": float(last["seconds"]), "device_used": summary["device"], "passed": passed,
            "summary": f"{batch} slices of {ct.shape[2]}x{ct.shape[1]}: train loss {losses['train_loss']:.4g}, validation "
                       f"{losses['val_loss']:.4g}; autocast {_amp_dtype(ctx.device).split(' ')[0]}; step "
                       f"{float(last['seconds']):.2f} s"}


# --- 12: out of GPU memory -------------------------------------------------------------------------------------------
@contextmanager
def gpu_memory_cap(device: str):
    """On CUDA: this process may hold only a few MB more GPU memory than it does now (then the cap is lifted)."""
    import gc

    import torch

    index = torch.device(device).index or 0
    gc.collect()  # tensors of earlier checks kept alive by reference cycles
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(index).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_reserved(index) + 4 * 1024 ** 2) / total), index)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, index)
        torch.cuda.empty_cache()


@contextmanager
def simulated_gpu_oom():
    """For the dry run: the ARNN and dose CNN inference select a pretend GPU ("cuda"), whose first computation
    raises ``torch.cuda.OutOfMemoryError``; everything between (run_with_oom_fallback, the CPU run) is the real code."""
    import torch

    import CTPerfusionMappingLib.inference as arnn_inference
    import DoseCNNLib.cnn.inference as dose_inference
    import ImagingBasics.devices as devices

    def failing(original, position: int):
        def run(*args, **kwargs):
            device = kwargs["device"] if "device" in kwargs else args[position]
            if str(device) != "cpu":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            return original(*args, **kwargs)
        return run

    saved = [(arnn_inference, "select_device"), (arnn_inference, "_predict_on"), (devices, "select_device"),
             (dose_inference, "predict_correction")]
    originals = [getattr(m, n) for m, n in saved]
    arnn_inference.select_device = devices.select_device = lambda requested="auto": "cuda"
    arnn_inference._predict_on = failing(originals[1], 2)  # (model, x, device, ...)
    dose_inference.predict_correction = failing(originals[3], 3)  # (model, activity, density, device, ...)
    try:
        yield
    finally:
        for (module, name), original in zip(saved, originals):
            setattr(module, name, original)


def check_oom_fallback(ctx: Context) -> Dict[str, Any]:
    from CTPerfusionMappingLib.inference import predict
    from CTPerfusionMappingLib.network import NetworkConfig, build_model
    from DoseCNNLib.cnn.inference import cnn_dose_rate

    config = NetworkConfig(**(ctx.sizes.arnn or {"base_channels": 4, "max_channels": 16}))
    model = build_model(config)
    lungs = np.random.default_rng(0).uniform(0, 1, (2, 1, *config.input_shape)).astype(np.float32)
    act, ct = synthetic_patient(ctx.sizes.oom_shape)
    vdk = ct.with_array(act.array * 1e-6)
    weights = _dose_weights(ctx, PATIENT_SPACING, ctx.sizes.dose_net or {"base_filters": 8}, "dose_oom")
    cap = gpu_memory_cap(ctx.device) if ctx.cuda else simulated_gpu_oom()
    target = ctx.device if ctx.cuda else "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cap:
            arnn = predict(model, lungs, device=target)
            dose, info = cnn_dose_rate(act, ct, vdk, weights=weights, device=target)
    messages = [str(w.message) for w in caught
                if issubclass(w.category, RuntimeWarning) and "out of GPU memory" in str(w.message)]
    result = {"mode": "real (GPU memory capped)" if ctx.cuda else "simulated torch.cuda.OutOfMemoryError",
              "arnn_device_used": arnn["device"], "dose_cnn_device_used": info["cnn_device"], "warnings": messages,
              "arnn_finite": bool(np.isfinite(arnn["mean"]).all()), "dose_finite": bool(np.isfinite(dose.array).all())}
    result["passed"] = (arnn["device"] == "cpu" and info["cnn_device"].startswith("CPU") and len(messages) == 2
                        and result["arnn_finite"] and result["dose_finite"])
    result["summary"] = (f"{result['mode']}: ARNN finished on {arnn['device']}, dose CNN on {info['cnn_device']}; "
                         f"{len(messages)} warning(s): {messages[0] if messages else 'none'}")
    return result


CHECKS: Dict[str, Callable[[Context], Dict[str, Any]]] = {
    "agree: ctpm run": check_ctpm_run,
    "agree: ctpm train": check_ctpm_train,
    "agree: dosecnn mc": check_dosecnn_mc,
    "agree: dosecnn run": check_dosecnn_run,
    "agree: dosecnn kernel": check_dosecnn_kernel,
    "Monte Carlo decays/s": check_mc_speed,
    "VDK time": check_vdk_speed,
    "dose CNN time": check_cnn_speed,
    "ARNN inference": check_arnn_inference,
    "ARNN training step": check_arnn_training_step,
    "dose CNN training step": check_dose_training_step,
    "OOM fallback": check_oom_fallback,
}


# --- the run and its report ------------------------------------------------------------------------------------------
def run_check(name: str, ctx: Context) -> Dict[str, Any]:
    """One check, timed, with its peak GPU memory; an exception is a failed check (the others still run)."""
    _peak_reset(ctx.device)
    t0 = time.perf_counter()
    try:
        result = CHECKS[name](ctx)
        result["status"] = "pass" if result["passed"] else "FAIL"
    except Skipped as exc:
        result = {"status": "skipped", "passed": None, "summary": str(exc)}
    except Exception as exc:  # reported, and the next check runs
        result = {"status": "FAIL", "passed": False, "summary": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(limit=8)}
    result["check_seconds"] = time.perf_counter() - t0
    result["peak_gpu_gb"] = _peak_gb(ctx.device)
    return result


def machine(device: str) -> Dict[str, Any]:
    import torch
    from bench_mc import cpu_model

    info = {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda_build": torch.version.cuda, "torch_threads": torch.get_num_threads(),
            "device": device}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device).index or 0)
        info.update(gpu=props.name, gpu_memory_gb=_gb(props.total_memory), cudnn=torch.backends.cudnn.version(),
                    bf16=torch.cuda.is_bf16_supported())
    return info


def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def write_report(out: Path, report: Dict[str, Any]) -> None:
    """``gpu_checks.json`` (everything) and ``gpu_checks.md`` (the summary table, then each check's figures)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_checks.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    m, checks = report["machine"], report["checks"]
    failed = [n for n, c in checks.items() if c["status"] == "FAIL"]
    skipped = [n for n, c in checks.items() if c["status"] == "skipped"]
    gpu = f"{m['gpu']} ({m['gpu_memory_gb']:.0f} GB, bfloat16 {'yes' if m['bf16'] else 'no'})" if m.get("gpu") else "none"
    mode = ("dry run on the CPU at tiny sizes (checks the script; the figures are not GPU figures)" if report["dry_run"]
            else f"device {m['device']}")
    lines = [
        "# GPU checks (bench/gpu_checks.sh)", "",
        f"- when: {report['started']}; mode: {mode}",
        f"- machine: {m['host']}, {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']} "
        f"(CUDA build {m['cuda_build'] or 'none'}, {m['torch_threads']} threads); GPU: {gpu}",
        f"- total: {report['total_seconds']:.0f} s (budget on the GPU: {BUDGET_S:.0f} s)"
        + ("" if report.get("finished") else " - UNFINISHED (the run stopped here)"),
        f"- result: {len(checks) - len(failed) - len(skipped)} passed, {len(failed)} failed, {len(skipped)} skipped"
        + (f" (failed: {', '.join(failed)})" if failed else ""), "",
        "| check | result | seconds | peak GPU memory (GB) | figures |",
        "|---|---|---|---|---|",
    ]
    for name, c in checks.items():
        peak = "-" if c.get("peak_gpu_gb") is None else f"{c['peak_gpu_gb']:.2f}"
        lines.append(f"| {name} | {c['status']} | {c['check_seconds']:.1f} | {peak} | {_cell(c.get('summary', ''))} |")
    lines += ["", "## Details", ""]
    for name, c in checks.items():
        lines.append(f"### {name}")
        lines.append("")
        for key, value in c.items():
            if key in ("summary", "traceback", "passed"):
                continue
            lines.append(f"- {key}: `{json.dumps(value, default=str)}`")
        if c.get("traceback"):
            lines += ["", "```", c["traceback"].rstrip(), "```"]
        lines.append("")
    (out / "gpu_checks.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of gpu_checks.md and gpu_checks.json")
    parser.add_argument("--dry-run", action="store_true", help="everything on the CPU at tiny sizes (CI)")
    parser.add_argument("--checks", nargs="+", choices=list(CHECKS), metavar="CHECK", default=list(CHECKS),
                        help="run only these checks (names as in the report)")
    parser.add_argument("--work", type=Path, help="keep the phantoms and outputs in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    import torch

    if args.dry_run:
        device = "cpu"
    elif not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        print(f"error: no CUDA device is available to torch {torch.__version__} ({build}); "
              "bench/gpu_checks.sh --dry-run checks the script on the CPU", file=sys.stderr)
        return 2
    else:
        device = "cuda"  # the first GPU that CUDA_VISIBLE_DEVICES leaves visible (the commands take no cuda:N)
    started = time.perf_counter()
    report: Dict[str, Any] = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              "machine": machine(device), "budget_seconds": BUDGET_S, "checks": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-checks-") as folder:
        work = args.work or Path(folder)
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(work, device, args.dry_run, DRY if args.dry_run else FULL)
        for name in args.checks:
            print(f"{name} ...", flush=True)
            report["checks"][name] = result = run_check(name, ctx)
            report["total_seconds"] = time.perf_counter() - started
            write_report(args.out, report)
            print(f"{name}: {result['status']} ({result['check_seconds']:.1f} s) {result.get('summary', '')}", flush=True)
    report["total_seconds"] = time.perf_counter() - started
    report["finished"] = True
    report["passed"] = all(c["status"] != "FAIL" for c in report["checks"].values())
    write_report(args.out, report)
    print(f"{'all checks passed' if report['passed'] else 'SOME CHECKS FAILED'} in {report['total_seconds']:.0f} s; "
          f"report: {args.out / 'gpu_checks.md'}", flush=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
