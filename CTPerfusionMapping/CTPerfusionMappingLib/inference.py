"""Running a trained network: device choice, batched prediction, mixed precision, Monte-Carlo dropout, OOM fallback.

numpy in, numpy out: :func:`predict` takes pre-processed lungs ``(N, 1, D, H, W)`` float32 and returns the
predicted maps ``(N, D, H, W)``. On a GPU that runs out of memory it warns and finishes on the CPU.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Dict, Optional

import numpy as np

from .errors import UserError

#: Signature of the progress callback: ``progress(done_steps, total_steps)``; a step is one batch of one pass.
ProgressFn = Callable[[int, int], None]


def select_device(requested: str = "auto") -> str:
    """Resolve "auto" / "cpu" / "cuda" / "cuda:N" / "gpu" / "mps" to an available torch device string.

    "auto" picks CUDA, then Apple MPS, then the CPU. An unavailable GPU that was asked for raises UserError.
    """
    import torch

    req = str(requested or "auto").strip().lower()
    if req == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if req == "cpu":
        return "cpu"
    if req in ("gpu", "cuda") or req.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"device {requested!r} was requested but no CUDA GPU is available to torch; use 'cpu' or 'auto'")
        if req.startswith("cuda:"):
            index = req.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UserError(f"no CUDA device {requested!r}: this machine has {torch.cuda.device_count()} GPU(s)")
            return req
        return "cuda"
    if req == "mps":
        if not _mps_available():
            raise UserError("device 'mps' was requested but Apple MPS is not available; use 'cpu' or 'auto'")
        return "mps"
    raise UserError(f"unknown device {requested!r}; use 'auto', 'cpu', 'cuda' (or 'cuda:N') or 'mps'")


def _mps_available() -> bool:
    """True when torch has a usable Apple-silicon (MPS) backend."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def describe_device(device: str) -> str:
    """Human-readable device, e.g. "CUDA: NVIDIA H100 80GB HBM3 (79 GB)", "Apple MPS", "CPU (2 threads)"."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev.index or 0)
        return f"CUDA: {props.name} ({props.total_memory / 1024**3:.0f} GB)"
    if dev.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def device_report() -> Dict[str, Any]:
    """What torch can compute on here: torch and CUDA versions, every CUDA GPU, and what "auto" picks.

    For ``ctpm devices`` and the Slicer module's device line ("GPU not detected" is the most common question).
    """
    import torch

    gpus = [describe_device(f"cuda:{i}") for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "gpus": gpus, "mps_available": _mps_available(), "auto": describe_device(select_device("auto"))}


def _is_oom(exc: BaseException) -> bool:
    """True for a GPU out-of-memory error (CUDA's own class, or MPS's RuntimeError message)."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _run_with_oom_fallback(fn: Callable[[str], Any], device: str) -> Any:
    """Return ``fn(device)``; if a GPU device runs out of memory, warn once and return ``fn("cpu")``."""
    import torch

    try:
        return fn(device)
    except Exception as exc:
        if device == "cpu" or not _is_oom(exc):
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    warnings.warn(f"out of GPU memory on {device}; running on the CPU instead (slower)", RuntimeWarning, stacklevel=2)
    return fn("cpu")


def _check_inputs(inputs: np.ndarray) -> np.ndarray:
    """Validate ``(N, C, D, H, W)`` finite numbers and return a float32 copy (the caller's array is never touched)."""
    arr = np.asarray(inputs)
    if arr.ndim != 5 or arr.shape[0] == 0:
        raise UserError(f"network input must be (N, channels, z, y, x) with N >= 1, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise UserError(f"network input must be real numbers, got dtype {arr.dtype}")
    out = np.array(arr, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(out)):
        raise UserError("network input contains NaN or infinite values; check the CT pre-processing")
    return out


def _set_mc_dropout(model, enabled: bool) -> None:
    """Put the model in eval mode, with only its dropout modules in train mode when ``enabled``."""
    import torch.nn as nn

    model.eval()
    if enabled:
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.train()


def autocast_context(device: str, amp: bool):
    """Mixed-precision context: bfloat16 (or float16) autocast on CUDA when ``amp``, else a no-op."""
    import torch

    if not (amp and device.startswith("cuda")):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


@contextlib.contextmanager
def _seeded(device: str, seed: int):
    """A context with torch's RNG seeded to ``seed``; the caller's RNG state is restored afterwards."""
    import torch

    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _predict_on(model, x: np.ndarray, device: str, amp: bool, passes: int, batch_size: int,
                progress: Optional[ProgressFn], seed: int) -> Dict[str, Any]:
    """Run ``passes`` (>= 1) forward passes on ``device``; return float64 sum and sum of squares (N, C, D, H, W)."""
    import torch

    model.to(device)
    _set_mc_dropout(model, passes > 1)
    n, done = x.shape[0], 0
    total = passes * ((n + batch_size - 1) // batch_size)
    acc = acc2 = None
    try:
        with torch.inference_mode(), _seeded(device, seed), autocast_context(device, amp):
            for _ in range(passes):
                out = []
                for start in range(0, n, batch_size):
                    batch = torch.from_numpy(x[start:start + batch_size]).to(device)
                    out.append(model(batch).float().cpu().numpy().astype(np.float64))
                    done += 1
                    if progress is not None:
                        progress(done, total)
                y = np.concatenate(out, axis=0)
                acc, acc2 = (y, y * y) if acc is None else (acc + y, acc2 + y * y)
    finally:
        model.eval()
    return {"sum": acc, "sum2": acc2}


def predict(model, inputs: np.ndarray, device: str = "cpu", amp: bool = True, mc_dropout_passes: int = 0,
            batch_size: Optional[int] = None, progress: Optional[ProgressFn] = None, seed: int = 0) -> Dict[str, Any]:
    """Predict maps for pre-processed lungs.

    inputs: ``(N, C_in, D, H, W)`` (z, y, x) numbers, not modified. device: as for :func:`select_device`; the model is
    moved there (and left there, or on the CPU after an out-of-memory fallback). amp: mixed precision on CUDA only.
    mc_dropout_passes: 0 or 1 for one deterministic pass; k >= 2 for k passes with the dropout layers active
    (BatchNorm stays in eval mode), giving the mean and the per-voxel standard deviation (population, ddof 0);
    the dropout masks come from ``seed`` so results repeat, and the caller's RNG state is left untouched.
    batch_size: lungs per forward pass (default all N). progress: called as ``progress(done, total)``.

    Returns ``{"mean": float32 (N, D, H, W), "std": float32 (N, D, H, W) or None, "device": device used}``;
    with more than one output channel the arrays keep the channel axis, ``(N, C_out, D, H, W)``.
    """
    x = _check_inputs(inputs)
    config = getattr(model, "config", None)
    if config is not None and x.shape[1] != config.in_channels:
        raise UserError(f"the network expects {config.in_channels} input channel(s), got {x.shape[1]}")
    passes = max(int(mc_dropout_passes), 1)
    batch = x.shape[0] if batch_size is None else int(batch_size)
    if batch < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")

    def run(dev: str) -> Dict[str, Any]:
        result = _predict_on(model, x, dev, amp, passes, batch, progress, seed)
        result["device"] = dev
        return result

    res = _run_with_oom_fallback(run, select_device(device))
    mean = res["sum"] / passes
    std = np.sqrt(np.maximum(res["sum2"] / passes - mean * mean, 0.0)) if passes > 1 else None
    if mean.shape[1] == 1:
        mean = mean[:, 0]
        std = None if std is None else std[:, 0]
    return {"mean": mean.astype(np.float32), "std": None if std is None else std.astype(np.float32), "device": res["device"]}
