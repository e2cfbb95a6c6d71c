"""Running a trained perfusion network: batched prediction, mixed precision, Monte-Carlo dropout, OOM fallback.

numpy in, numpy out: :func:`predict` takes pre-processed lungs ``(N, 1, D, H, W)`` float32 and returns the
predicted maps ``(N, D, H, W)``. On a GPU that runs out of memory it warns and finishes on the CPU. Device choice,
mixed precision and the out-of-memory fallback are the foundation's (:mod:`ImagingBasics.devices`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Optional

import numpy as np

from ImagingBasics.devices import autocast_context, run_with_oom_fallback, select_device
from ImagingBasics.errors import UserError

#: Signature of the progress callback: ``progress(done_steps, total_steps)``; a step is one batch of one pass.
ProgressFn = Callable[[int, int], None]








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

    res = run_with_oom_fallback(run, select_device(device))
    mean = res["sum"] / passes
    std = np.sqrt(np.maximum(res["sum2"] / passes - mean * mean, 0.0)) if passes > 1 else None
    if mean.shape[1] == 1:
        mean = mean[:, 0]
        std = None if std is None else std[:, 0]
    return {"mean": mean.astype(np.float32), "std": None if std is None else std.astype(np.float32), "device": res["device"]}
