"""Training the CT-to-perfusion networks (Ren 2021 IJROBP and Ren 2022 Front Oncol): BCE over lung voxels against the
discretised SPECT, Adam, validation Spearman for the learning-rate schedule and early stopping, a checkpoint every
epoch, resumable.

* Loss (Ren 2021 IJROBP equation 3): binary cross-entropy between the network output and the 11-level SPECT target over the
  lung parenchyma voxels only (:func:`masked_bce_with_logits`; computed on logits, which is the numerically stable
  form and allowed under mixed precision).
* Optimiser: Adam (lr 1e-3 by default); ReduceLROnPlateau (x0.5 after ``lr_patience`` epochs without a better
  validation Spearman); early stopping after ``patience`` such epochs; at most ``epochs`` epochs (500 in Ren 2021 IJROBP).
* Validation metric: the mean over validation hemi-lungs of the voxel Spearman R between prediction and the
  normalised SPECT inside the parenchyma (the papers' headline metric).
* Reproducible and resumable: every epoch reseeds torch and numpy from ``(seed, epoch)``, so an interrupted run
  resumed from its last checkpoint ends with the same weights as an uninterrupted one (on the CPU).
* Several GPUs or nodes: started under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in
  DistributedDataParallel (NCCL on CUDA, gloo on the CPU); each process trains on its share of every epoch's shuffled
  samples, rank 0 validates (its result is broadcast so all ranks schedule and stop alike) and writes every file.
* Transfer learning (Ren 2022 Front Oncol): ``init_weights`` starts from a pre-trained model; ``freeze_encoder_epochs`` keeps the
  encoder (the ``enc`` and ``down`` blocks) fixed for the first epochs. The pre-trained weights are validated first,
  as epoch 0 (a row of ``log.csv`` without a training loss): an epoch is "best" only when it beats them, so a
  fine-tuned ``best.pt`` is never worse on the validation patients than the model it started from (``best_epoch`` 0:
  no epoch improved on it, and ``best.pt`` holds the pre-trained weights).
* Light augmentation that respects anatomy (our choice; the papers do not describe any): a random shift of up to
  ``shift_voxels`` voxels along each axis (the lung box moves a little, as segmentations differ) and a random gamma
  of the enhanced CT in 0.9..1.1 (scanner and reconstruction differences). No flips or rotations: gravity (front to
  back) and the apex-to-base gradient are real anatomy the network should learn.
* ``density_ramp`` r > 0 (off by default; the bundled recipe uses 0.2): a linear ramp ``a`` x the anterior-posterior
  position (-1 at the sample's front row to +1 at its back row), ``a`` drawn from -r..r, added to the enhanced CT
  inside the lung (clipped to 0..1). It makes the dependent density a useless cue for the supine perfusion
  gradient, which the network should take from the position (``NetworkConfig.coordinates``): real emphysematous CTs
  have a front-to-back slope of the enhanced CT down to -0.10 (CIP ct-64, left lung) where the phantoms span -0.01
  to +0.36 (median +0.15), and a network trained without it had no gradient there (``bench/gravity_cue.py``).
* Outputs in ``out_dir``: ``checkpoint.pt`` (every epoch), ``best.pt`` (weights file of the best validation epoch,
  loadable by ``ctpm run --weights``), ``log.csv``, ``learning_curve.png``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.files import atomic_output, write_csv
from ImagingBasics.training_support import plot_learning_curve, seed_epoch

from .dataset import TrainSample

if TYPE_CHECKING:  # annotations only: network.py imports torch, and `ctpm --help` reaches this module
    from ..network import NetworkConfig

ENCODER_PREFIXES = ("enc.", "down.")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 500
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_patience: int = 10
    patience: int = 50
    seed: int = 0
    amp: bool = True
    augment: bool = True
    shift_voxels: int = 4
    density_ramp: float = 0.0
    freeze_encoder_epochs: int = 0
    device: str = "auto"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def masked_bce_with_logits(logits, target, mask):
    """Equation (3) of Ren 2021 IJROBP restricted to lung voxels: mean BCE over the voxels where ``mask`` is true."""
    import torch.nn.functional as F

    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    m = mask.to(loss.dtype)
    return (loss * m).sum() / m.sum().clamp_min(1.0)


def random_augmentation(rng: np.random.Generator, shift_voxels: int) -> tuple:
    """A random integer shift (voxels along z, y, x; applied with zero fill) and a random gamma for the CT channel."""
    shifts = rng.integers(-shift_voxels, shift_voxels + 1, size=3) if shift_voxels > 0 else np.zeros(3, int)
    gamma = float(rng.uniform(0.9, 1.1))
    return tuple(int(v) for v in shifts), gamma


def add_density_ramp(x: np.ndarray, slope: float) -> np.ndarray:
    """``x`` (an enhanced CT ``[z, y, x]``, 0 outside the lung) plus ``slope`` x the y position across the sample
    (-1 first row .. +1 last row) where ``x > 0``, clipped to 1e-3..1 there (the lung stays lung); 0 elsewhere."""
    y = np.linspace(-1.0, 1.0, x.shape[-2], dtype=np.float32)[:, None]
    return np.where(x > 0, np.clip(x + np.float32(slope) * y, 1e-3, 1.0), 0.0).astype(np.float32)


def _shift(a: np.ndarray, shifts) -> np.ndarray:
    out = np.zeros_like(a)
    src = [slice(max(0, -s), a.shape[-3 + i] - max(0, s)) for i, s in enumerate(shifts)]
    dst = [slice(max(0, s), a.shape[-3 + i] - max(0, -s)) for i, s in enumerate(shifts)]
    out[(...,) + tuple(dst)] = a[(...,) + tuple(src)]
    return out


def make_batch(samples: Sequence[TrainSample], rng: Optional[np.random.Generator], shift_voxels: int,
               density_ramp: float = 0.0):
    """(x (B,1,D,H,W), target (B,1,D,H,W), mask (B,1,D,H,W)) as numpy arrays, augmented when ``rng`` is given
    (``density_ramp``: the half-range of the ramp's slope, module docstring; 0 draws nothing)."""
    xs, ts, ms = [], [], []
    for s in samples:
        x, t, m = s.ct_input, s.target, s.mask
        if rng is not None:
            shifts, gamma = random_augmentation(rng, shift_voxels)
            x = np.power(np.clip(x, 0.0, 1.0), gamma)
            if density_ramp > 0:
                x = add_density_ramp(x, float(rng.uniform(-density_ramp, density_ramp)))
            x = _shift(x, shifts)
            t, m = _shift(t, shifts), _shift(m, shifts)
            m = m & (x > 0)
        xs.append(x[None])
        ts.append(t[None])
        ms.append(m[None])
    return np.stack(xs).astype(np.float32), np.stack(ts).astype(np.float32), np.stack(ms)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (world 1, rank 0 when not distributed)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Distributed:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1): NCCL on CUDA, gloo on the CPU."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Distributed(world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))


def _logits_module(model):
    """A module whose forward gives the logits, so DistributedDataParallel synchronises the gradients of them."""
    import torch.nn as nn

    class Logits(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_logits(x)

    return Logits(model)


def _broadcast(value: float, dd: Distributed, device: str = "cpu") -> float:
    """Rank 0's value on every rank (through a tensor on ``device``: NCCL, the CUDA backend, has no CPU tensors)."""
    if dd.world == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t[0])


def _set_encoder_trainable(model, trainable: bool) -> None:
    for name, param in model.named_parameters():
        if name.startswith(ENCODER_PREFIXES):
            param.requires_grad_(trainable)


def validate(model, samples: Sequence[TrainSample], device: str, amp: bool) -> Dict[str, float]:
    """Mean validation loss and mean per-hemi-lung Spearman R (prediction vs normalised SPECT, parenchyma)."""
    import torch

    from ImagingBasics.devices import autocast_context

    from ..metrics import spearman_r

    model.eval()
    losses, rs = [], []
    with torch.inference_mode():
        for s in samples:
            x, t, m = make_batch([s], None, 0)
            with autocast_context(device, amp):
                logits = model.forward_logits(torch.from_numpy(x).to(device))
            logits = logits.float()
            losses.append(float(masked_bce_with_logits(logits, torch.from_numpy(t).to(device),
                                                       torch.from_numpy(m).to(device))))
            pred = torch.sigmoid(logits)[0, 0].cpu().numpy()
            r = spearman_r(pred, s.reference, s.mask)
            if math.isfinite(r):
                rs.append(r)
    return {"val_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_spearman": float(np.mean(rs)) if rs else float("nan")}


def train(
    network: NetworkConfig,
    train_samples: Sequence[TrainSample],
    val_samples: Sequence[TrainSample],
    out_dir: Path,
    config: TrainConfig = TrainConfig(),
    init_weights: Optional[Path] = None,
    resume: bool = False,
    progress: Optional[Callable[[int, int, Dict[str, float]], None]] = None,
    stop_after_batches: Optional[int] = None,
) -> Dict[str, Any]:
    """Train a network; returns the summary (best epoch and metrics, paths). See the module docstring.

    ``stop_after_batches`` interrupts the run after that many optimiser steps in total (tests of resuming).
    """
    import torch

    from ImagingBasics.devices import amp_dtype, autocast_context, select_device

    from ..network import build_model
    from ..weights import load_weights, save_weights

    if not train_samples:
        raise UserError("no training samples")
    if not val_samples:
        raise UserError("no validation samples")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = select_device(config.device)
    dd = init_distributed(device)
    if dd.world > 1 and device.startswith("cuda"):
        device = f"cuda:{dd.local_rank}"
        torch.cuda.set_device(device)  # NCCL's collectives (the broadcasts, the barrier) on this rank's GPU
    torch.manual_seed(config.seed)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest 3D convolutions
    model = build_model(network)
    if init_weights is not None:
        pre, pre_config, _ = load_weights(init_weights)
        if pre_config.to_dict() != network.to_dict():
            raise UserError(f"{init_weights} holds a {pre_config.arch} with another configuration than the one to train")
        model.load_state_dict(pre.state_dict())
    model.to(device)
    forward = _logits_module(model)
    if dd.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(forward, device_ids=[dd.local_rank] if device.startswith("cuda") else None)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # float16 autocast (GPUs without bfloat16) needs loss scaling; bfloat16 and float32 do not
    scaler = torch.amp.GradScaler("cuda", enabled=bool(config.amp and amp_dtype(device) is torch.float16))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="max", factor=0.5, patience=config.lr_patience)
    state: Dict[str, Any] = {"epoch": 0, "best_spearman": -math.inf, "best_epoch": 0, "epochs_without_improvement": 0,
                             "steps": 0, "history": []}
    ckpt_path = out_dir / "checkpoint.pt"
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimiser.load_state_dict(ckpt["optimiser"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state.update({k: ckpt["state"][k] for k in state})
    elif resume:
        raise UserError(f"--resume: no checkpoint in {out_dir}")
    elif init_weights is not None:  # epoch 0: the pre-trained model is the one to beat
        val = validate(model, val_samples, device, config.amp) if dd.main else {"val_loss": 0.0, "val_spearman": 0.0}
        val = {k: _broadcast(v, dd, device) for k, v in val.items()}
        if math.isfinite(val["val_spearman"]):
            state.update(best_spearman=val["val_spearman"], best_epoch=0)
        state["history"] = [{"epoch": 0, "train_loss": float("nan"), **val, "lr": config.lr, "seconds": 0.0,
                             "samples_per_second": float("nan"), "processes": dd.world}]
        if dd.main:
            save_weights(model, network, out_dir / "best.pt",
                         metadata={"epoch": 0, "val_spearman": val["val_spearman"], "train": config.to_dict(),
                                   "init_weights": str(init_weights)})
            _save_checkpoint(ckpt_path, model, optimiser, scheduler, state, network, config)
            write_csv(state["history"], out_dir / "log.csv")
        if progress is not None and dd.main:
            progress(0, config.epochs, state["history"][0])

    train_list = list(train_samples)
    steps_per_epoch = math.ceil(math.ceil(len(train_list) / dd.world) / config.batch_size)
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        rng = seed_epoch(config.seed, epoch)
        _set_encoder_trainable(model, epoch > config.freeze_encoder_epochs)
        model.train()
        order = rng.permutation(len(train_list))[dd.rank::dd.world]  # each rank its share, same shuffle everywhere
        t0 = time.perf_counter()
        losses = []
        for b in range(steps_per_epoch):
            batch = [train_list[i] for i in order[b * config.batch_size:(b + 1) * config.batch_size]]
            if not batch:
                break
            x, t, m = make_batch(batch, rng if config.augment else None, config.shift_voxels, config.density_ramp)
            x, t, m = (torch.from_numpy(a).to(device) for a in (x, t, m))
            optimiser.zero_grad(set_to_none=True)
            with autocast_context(device, config.amp):
                logits = forward(x)
            loss = masked_bce_with_logits(logits.float(), t, m)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            losses.append(float(loss.detach()))
            state["steps"] += 1
            if stop_after_batches is not None and state["steps"] >= stop_after_batches:
                return {"interrupted": True, "epoch": epoch, "steps": state["steps"]}
        seconds = time.perf_counter() - t0
        val = validate(model, val_samples, device, config.amp) if dd.main else {"val_loss": 0.0, "val_spearman": 0.0}
        val = {k: _broadcast(v, dd, device) for k, v in val.items()}  # every rank takes the same schedule and stopping steps
        improved = math.isfinite(val["val_spearman"]) and val["val_spearman"] > state["best_spearman"]
        if improved:
            state.update(best_spearman=val["val_spearman"], best_epoch=epoch, epochs_without_improvement=0)
            if dd.main:
                save_weights(model, network, out_dir / "best.pt",
                             metadata={"epoch": epoch, "val_spearman": val["val_spearman"], "train": config.to_dict()})
        else:
            state["epochs_without_improvement"] += 1
        scheduler.step(val["val_spearman"] if math.isfinite(val["val_spearman"]) else -1.0)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), **val,
               "lr": optimiser.param_groups[0]["lr"], "seconds": seconds,
               "samples_per_second": len(train_list) / max(seconds, 1e-9), "processes": dd.world}
        state["epoch"] = epoch
        state["history"] = state["history"] + [row]
        if dd.main:  # the log is rewritten from the checkpoint's history: a kill can never leave them disagreeing
            _save_checkpoint(ckpt_path, model, optimiser, scheduler, state, network, config)
            write_csv(state["history"], out_dir / "log.csv")
        if progress is not None and dd.main:
            progress(epoch, config.epochs, row)
        if state["epochs_without_improvement"] >= config.patience:
            break
    if dd.main:
        plot_learning_curve(out_dir / "log.csv", out_dir / "learning_curve.png")
    if dd.world > 1:
        import torch.distributed as dist

        dist.barrier()
    first = state["history"][0] if state["history"] else {}
    return {"best_epoch": state["best_epoch"], "best_val_spearman": state["best_spearman"], "epochs": state["epoch"],
            "weights": str(out_dir / "best.pt"), "device": device,
            "init_val_spearman": first.get("val_spearman") if first.get("epoch") == 0 else None}


def _save_checkpoint(path: Path, model, optimiser, scheduler, state: Dict[str, Any], network: NetworkConfig,
                     config: TrainConfig) -> None:
    import torch

    payload = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
               "state": dict(state, best_spearman=float(state["best_spearman"])), "network": network.to_dict(),
               "train": config.to_dict()}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


