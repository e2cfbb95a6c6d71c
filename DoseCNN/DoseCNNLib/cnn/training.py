"""Training the residual dose CNN (Li 2020): weighted MSE against Monte Carlo dose rates, Adam, a checkpoint every epoch.

Li 2020's settings are the defaults (:class:`DoseTrainConfig`): Adam with lr 1e-3 and ReduceLROnPlateau (on the validation
loss; factor 0.5 after 10 epochs without improvement: the paper names the strategy, not its parameters), MSE, batch 32,
200 epochs, 20 % of the slices for validation (Li 2020 holds out random slices; ``val_by="patient"`` holds out whole
patients, the stricter test, since neighbouring slices of one patient are nearly alike).

* Loss (the public follow-up, DblurDoseNet): 0.7 x mean squared error over the body's voxels + 0.3 x over the voxels
  outside it, divided by the weights of the parts present in the batch (a crop inside the body has no outside part);
  padding added to batch slices of different sizes is left out. Training uses the network's raw output (VDK +
  correction, unclamped, so that no voxel loses its gradient); validation scores what users get
  (:func:`.network.physical_dose`: clamped at >= 0, zero in air) and also the VDK map alone, the baseline that the
  correction should beat, and both NRMSE over the body (Li 2020 equation 2, normalised units).
* Best weights by validation loss (``best.pt``, loadable by ``dosecnn run --method cnn --weights``); optional early
  stopping after ``patience`` epochs without a better validation loss (off by default: Li 2020 trains 200 epochs).
* Reproducible and resumable: torch and numpy are reseeded from ``(seed, epoch)`` at every epoch (shuffling, crops,
  augmentation), and ``checkpoint.pt`` (written every epoch) holds the model, the optimiser, the scheduler and the
  history, so that a killed run resumed with ``resume=True`` ends with the same weights as an uninterrupted one (CPU).
  Resumed with another ``lr`` than the run started with, it continues at that learning rate (``lr_changes``).
* Fine-tuning: ``init`` starts from the weights of an earlier model (a ``best.pt`` or the bundled float16 file, loaded
  as float32; same network configuration); the optimiser, schedule and normalisation start anew (the normalisation is
  that of the training cases' voxel size). A resumed run ignores ``init`` (the checkpoint holds the weights). The
  initial weights are validated first, as epoch 0 (a row of ``log.csv`` without a training loss): an epoch is "best"
  only when it beats them, so ``best.pt`` is never worse on the validation patients than the model one started from
  (``best_epoch`` 0: no epoch improved on it, and ``best.pt`` holds the initial weights).
* Time budgets: ``stop(epoch)`` is asked after every epoch (after the checkpoint is written); when it answers True the
  run ends there, unfinished (``finished`` False in the summary), and a later ``resume=True`` run continues it.
* Mixed precision (bfloat16 autocast) on CUDA only; the loss is computed in float32.
* Outputs in ``out_dir``: ``checkpoint.pt``, ``best.pt``, ``log.csv``, ``learning_curve.png``, ``train_summary.json``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ImagingBasics.devices import amp_dtype
from ImagingBasics.errors import UserError

from .data import DoseCase, Normalisation, SliceRef, check_common_spacing, make_batch

VAL_BY = ("slice", "patient")


@dataclass(frozen=True)
class DoseTrainConfig:
    epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    lr_patience: int = 10
    lr_factor: float = 0.5
    patience: int = 0  # early stopping after this many epochs without a better validation loss; 0: never
    val_fraction: float = 0.2
    val_by: str = "slice"
    crop: Optional[int] = None  # random in-plane crops of this size (pixels) for training; None: whole slices
    augment: bool = True
    body_weight: float = 0.7
    seed: int = 0
    amp: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise UserError("epochs and batch size must be at least 1")
        if not (self.lr > 0 and 0.0 < self.val_fraction < 1.0 and 0.0 <= self.body_weight <= 1.0):
            raise UserError("the learning rate must be positive and the validation fraction between 0 and 1")
        if self.val_by not in VAL_BY:
            raise UserError(f"unknown validation split {self.val_by!r}; use 'slice' or 'patient'")
        if self.crop is not None and self.crop < 16:
            raise UserError("crops must be at least 16 pixels")
        if self.patience < 0:
            raise UserError("the early-stopping patience must be 0 (off) or positive")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def weighted_mse(pred, target, body, valid, body_weight: float = 0.7):
    """``body_weight`` x MSE inside the body + (1 - ``body_weight``) x MSE outside it (valid voxels only), divided by
    the weights of the parts that have voxels."""
    err = (pred - target) ** 2
    inside = (body & valid).to(err.dtype)
    outside = (~body & valid).to(err.dtype)
    n_in, n_out = inside.sum(), outside.sum()
    num = body_weight * (err * inside).sum() / n_in.clamp_min(1.0) + \
        (1.0 - body_weight) * (err * outside).sum() / n_out.clamp_min(1.0)
    den = body_weight * (n_in > 0).to(err.dtype) + (1.0 - body_weight) * (n_out > 0).to(err.dtype)
    return num / den.clamp_min(1e-12)


def _to_device(batch, device: str) -> Dict[str, Any]:
    import torch

    return {k: torch.from_numpy(getattr(batch, k)).to(device) for k in ("pack", "vdk", "reference", "body", "air", "valid")}


def _validation_batches(refs: Sequence[SliceRef], batch_size: int) -> List[List[SliceRef]]:
    """Validation slices in order, in batches that never mix cases (whole slices of one case have one size)."""
    batches: List[List[SliceRef]] = []
    for ref in sorted(refs):
        if batches and len(batches[-1]) < batch_size and batches[-1][0][0] == ref[0]:
            batches[-1].append(ref)
        else:
            batches.append([ref])
    return batches


def validate(model, cases: Sequence[DoseCase], refs: Sequence[SliceRef], norm: Normalisation, device: str,
             batch_size: int, body_weight: float = 0.7, amp: bool = False) -> Dict[str, float]:
    """Validation loss, body NRMSE and body dose bias of the CNN (as users get it) and of the VDK map alone, whole
    slices. The bias is the summed dose rate in the body relative to the truth's, minus 1: a smoothing network can
    lower the voxel loss while adding dose to the low-dose tissue, which the loss, dominated by the hot organs,
    hardly sees."""
    import torch

    from ImagingBasics.devices import autocast_context

    from .network import physical_dose

    model.eval()
    half = model.config.half_window
    sums = {"loss": 0.0, "loss_vdk": 0.0, "err": 0.0, "err_vdk": 0.0, "ref": 0.0, "sum": 0.0, "sum_vdk": 0.0,
            "sum_ref": 0.0}
    n = 0
    with torch.inference_mode():
        for group in _validation_batches(refs, batch_size):
            b = _to_device(make_batch(cases, group, norm, half), device)
            with autocast_context(device, amp):
                raw = model(b["pack"], b["vdk"])
            pred = physical_dose(raw.float(), b["air"])
            inside = (b["body"] & b["valid"]).float()
            sums["loss"] += float(weighted_mse(pred, b["reference"], b["body"], b["valid"], body_weight)) * len(group)
            sums["loss_vdk"] += float(weighted_mse(b["vdk"], b["reference"], b["body"], b["valid"], body_weight)) * len(group)
            sums["err"] += float((((pred - b["reference"]) ** 2) * inside).sum())
            sums["err_vdk"] += float((((b["vdk"] - b["reference"]) ** 2) * inside).sum())
            sums["ref"] += float(((b["reference"] ** 2) * inside).sum())
            sums["sum"] += float((pred * inside).sum())
            sums["sum_vdk"] += float((b["vdk"] * inside).sum())
            sums["sum_ref"] += float((b["reference"] * inside).sum())
            n += len(group)
    ref, total = max(sums["ref"], 1e-30), max(sums["sum_ref"], 1e-30)
    return {"val_loss": sums["loss"] / max(n, 1), "val_loss_vdk": sums["loss_vdk"] / max(n, 1),
            "val_nrmse": math.sqrt(sums["err"] / ref), "val_nrmse_vdk": math.sqrt(sums["err_vdk"] / ref),
            "val_body_bias": sums["sum"] / total - 1.0, "val_body_bias_vdk": sums["sum_vdk"] / total - 1.0}


def _save_checkpoint(path: Path, model, optimiser, scheduler, state: Dict[str, Any], network, config: DoseTrainConfig,
                     norm: Normalisation, spacing) -> None:
    import torch

    from ImagingBasics.files import atomic_output

    payload = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
               "state": dict(state, best_val_loss=float(state["best_val_loss"])), "network": network.to_dict(),
               "train": config.to_dict(), "normalisation": norm.to_dict(), "spacing_mm": list(spacing)}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path: Path, network, device: str) -> Dict[str, Any]:
    import torch

    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception:
        raise UserError(f"{path} is not a readable checkpoint (corrupt, or written by another program)") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "network" not in ckpt:
        raise UserError(f"{path} is not a dosecnn train checkpoint")
    if ckpt["network"] != network.to_dict():
        raise UserError(f"--resume: {path} holds another network configuration than the one requested")
    return ckpt


def load_initial_weights(model, network, init) -> Dict[str, Any]:
    """Copy the weights of ``init`` (a weights file of :mod:`.weights`, or a loaded ``DoseModel``) into ``model``;
    a one-line UserError when its network configuration differs from ``network``. Returns what the card needs to know
    (source, configuration, training voxel size, the epoch it came from)."""
    from .weights import resolve_weights

    if init is None:
        raise UserError("no initial weights given")
    dm = resolve_weights(init)
    if dm.config.to_dict() != network.to_dict():
        raise UserError(f"--init: {dm.source} holds another network configuration ({dm.config.to_dict()}) than the one "
                        f"to train ({network.to_dict()}); give the same --base-filters, --levels and --depth-channels")
    model.load_state_dict(dm.model.state_dict())  # copied onto the model's device
    return {"init_weights": dm.source, "init_spacing_mm": list(dm.spacing_mm), "init_epoch": dm.metadata.get("epoch")}


def _apply_new_learning_rate(optimiser, checkpoint_lr: Optional[float], lr: float, state: Dict[str, Any]) -> None:
    """A run resumed with another learning rate than the one it was started with continues at the new one (from the
    next epoch; recorded in ``state["lr_changes"]`` and so in the summary); with the same one, the optimiser's own
    (possibly reduced by the schedule) is kept, so that a resumed run ends as an uninterrupted one."""
    if checkpoint_lr is None or math.isclose(checkpoint_lr, lr, rel_tol=1e-9):
        return
    for group in optimiser.param_groups:
        group["lr"] = lr
    state["lr_changes"] = list(state.get("lr_changes", [])) + [{"after_epoch": state["epoch"], "lr": lr}]


def _validate_initial_weights(model, cases, val_refs, norm, device: str, config: DoseTrainConfig, amp: bool,
                              state: Dict[str, Any], network, spacing, out_dir: Path, metadata: dict) -> None:
    """Epoch 0 of a fine-tuning run: the initial weights on the validation slices become the best so far (``best.pt``)
    and the first row of the history (no training loss: nothing was trained)."""
    from .weights import save_dose_weights

    val = validate(model, cases, val_refs, norm, device, config.batch_size, config.body_weight, amp)
    state.update(best_val_loss=val["val_loss"], best_epoch=0)
    save_dose_weights(model, network, norm, spacing, out_dir / "best.pt",
                      metadata={**metadata, "epoch": 0, **val, "train": config.to_dict()})
    state["history"] = [{"epoch": 0, "train_loss": float("nan"), **val, "lr": config.lr, "seconds": 0.0,
                         "slices_per_second": float("nan")}]


def train(network, cases: Sequence[DoseCase], train_refs: Sequence[SliceRef], val_refs: Sequence[SliceRef],
          out_dir: Path, config: DoseTrainConfig = DoseTrainConfig(), resume: bool = False,
          progress: Optional[Callable[[int, int, Dict[str, float]], None]] = None,
          step_progress: Optional[Callable[[int, int], None]] = None, metadata: Optional[dict] = None,
          init=None, stop: Optional[Callable[[int], bool]] = None) -> Dict[str, Any]:
    """Train a :class:`.network.ResidualDoseNet` of configuration ``network``; returns the summary.

    ``progress(epoch, epochs, log row)`` after every epoch; ``step_progress(step, steps per epoch)`` after every
    optimiser step; ``metadata`` is stored in ``best.pt`` (with the epoch, metrics and training settings);
    ``init``: initial weights (a weights file or a loaded ``DoseModel``; not used when resuming); ``stop(epoch)``:
    end the run after this epoch when True (module docstring).
    """
    import torch

    from ImagingBasics.devices import autocast_context, select_device
    from ImagingBasics.files import write_csv
    from ImagingBasics.training_support import seed_epoch

    from .network import build_dose_network
    from .weights import save_dose_weights

    if not train_refs or not val_refs:
        raise UserError("training needs at least one training and one validation slice")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = select_device(config.device)
    spacing = check_common_spacing(cases)
    norm = Normalisation.for_spacing(spacing)
    torch.manual_seed(config.seed)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # one crop size: let cuDNN pick the fastest convolutions
    model = build_dose_network(network).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", factor=config.lr_factor,
                                                           patience=config.lr_patience)
    amp = bool(config.amp and device.startswith("cuda"))
    # float16 autocast needs loss scaling; asked of the training device itself (cuda:N), not of the current GPU
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype(device) is torch.float16)
    state: Dict[str, Any] = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0, "epochs_without_improvement": 0,
                             "steps": 0, "history": [], "init": None, "early_stopped": False, "lr_changes": []}
    ckpt_path = out_dir / "checkpoint.pt"
    if init is not None and not resume:
        state["init"] = load_initial_weights(model, network, init)
    if resume:
        if not ckpt_path.is_file():
            raise UserError(f"--resume: no checkpoint in {out_dir}")
        ckpt = _load_checkpoint(ckpt_path, network, device)
        model.load_state_dict(ckpt["model"])
        optimiser.load_state_dict(ckpt["optimiser"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state.update({k: ckpt["state"][k] for k in state if k in ckpt["state"]})  # older checkpoints lack some keys
        state["early_stopped"] = False  # set again below if the patience still runs out
        _apply_new_learning_rate(optimiser, ckpt.get("train", {}).get("lr"), config.lr, state)
    metadata = {**(metadata or {}), **({"init": state["init"]} if state["init"] else {})}
    half = network.slices // 2
    train_list = list(train_refs)
    steps = math.ceil(len(train_list) / config.batch_size)
    if state["init"] is not None and not resume:
        _validate_initial_weights(model, cases, val_refs, norm, device, config, amp, state, network, spacing,
                                  out_dir, metadata)
        _save_checkpoint(ckpt_path, model, optimiser, scheduler, state, network, config, norm, spacing)
        write_csv(state["history"], out_dir / "log.csv")
        if progress is not None:
            progress(0, config.epochs, state["history"][0])
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        rng = seed_epoch(config.seed, epoch)
        model.train()
        order = rng.permutation(len(train_list))
        t0 = time.perf_counter()
        losses = []
        for s in range(steps):
            refs = [train_list[i] for i in order[s * config.batch_size:(s + 1) * config.batch_size]]
            b = _to_device(make_batch(cases, refs, norm, half, rng, config.crop, config.augment), device)
            optimiser.zero_grad(set_to_none=True)
            with autocast_context(device, amp):
                raw = model(b["pack"], b["vdk"])
            loss = weighted_mse(raw.float(), b["reference"], b["body"], b["valid"], config.body_weight)
            if not torch.isfinite(loss):
                raise UserError(f"the training loss became {float(loss)} in epoch {epoch}: lower the learning rate")
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            losses.append(float(loss.detach()))
            state["steps"] += 1
            if step_progress is not None:
                step_progress(s + 1, steps)
        seconds = time.perf_counter() - t0
        val = validate(model, cases, val_refs, norm, device, config.batch_size, config.body_weight, amp)
        improved = val["val_loss"] < state["best_val_loss"]
        if improved:
            state.update(best_val_loss=val["val_loss"], best_epoch=epoch, epochs_without_improvement=0)
            save_dose_weights(model, network, norm, spacing, out_dir / "best.pt",
                              metadata={**(metadata or {}), "epoch": epoch, **val, "train": config.to_dict()})
        else:
            state["epochs_without_improvement"] += 1
        scheduler.step(val["val_loss"])
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), **val, "lr": optimiser.param_groups[0]["lr"],
               "seconds": seconds, "slices_per_second": len(train_list) / max(seconds, 1e-9)}
        state["epoch"] = epoch
        state["history"] = state["history"] + [row]
        _save_checkpoint(ckpt_path, model, optimiser, scheduler, state, network, config, norm, spacing)
        write_csv(state["history"], out_dir / "log.csv")  # rewritten from the checkpoint's history: never disagree
        if progress is not None:
            progress(epoch, config.epochs, row)
        if config.patience and state["epochs_without_improvement"] >= config.patience:
            state["early_stopped"] = True
            _save_checkpoint(ckpt_path, model, optimiser, scheduler, state, network, config, norm, spacing)
            break
        if stop is not None and epoch < config.epochs and stop(epoch):
            break
    plot_dose_learning_curve(out_dir)
    last = state["history"][-1] if state["history"] else {}
    return {"best_epoch": state["best_epoch"], "best_val_loss": state["best_val_loss"], "epochs": state["epoch"],
            "finished": bool(state["epoch"] >= config.epochs or state["early_stopped"]),
            "early_stopped": bool(state["early_stopped"]), "init": state["init"], "lr_changes": state["lr_changes"],
            "last": last, "weights": str(out_dir / "best.pt"), "device": device, "training_spacing_mm": list(spacing),
            "normalisation": norm.to_dict()}


def plot_dose_learning_curve(out_dir: Path) -> None:
    """``learning_curve.png`` from ``log.csv``: losses (with the VDK-only validation loss) and validation NRMSE."""
    from ImagingBasics.training_support import plot_learning_curve

    plot_learning_curve(out_dir / "log.csv", out_dir / "learning_curve.png",
                        loss_label="weighted MSE (0.7 body, 0.3 outside)", metrics=("val_nrmse", "val_nrmse_vdk"),
                        metric_label="validation NRMSE in the body", losses=("train_loss", "val_loss", "val_loss_vdk"),
                        labels={"val_loss_vdk": "validation, VDK alone", "val_nrmse": "CNN", "val_nrmse_vdk": "VDK alone"})


def train_from_manifest(manifest: Path, out_dir: Path, network=None, config: DoseTrainConfig = DoseTrainConfig(),
                        cache_dir: Optional[Path] = None, kernel_cache: Optional[Path] = None, nuclide: str = "Lu-177",
                        resume: bool = False, prep_progress: Optional[Callable[[int, int, str], None]] = None,
                        progress: Optional[Callable[[int, int, Dict[str, float]], None]] = None, init=None,
                        stop: Optional[Callable[[int], bool]] = None,
                        step_progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """``dosecnn train``: prepare (or read from the cache) every case of ``manifest``, split, train (``init``,
    ``stop``, ``step_progress``: see :func:`train`); the summary is also written to ``out_dir/train_summary.json``."""
    from ImagingBasics.files import write_json

    from .data import load_cases, split_slices
    from .network import DoseNetConfig

    network = network or DoseNetConfig()
    out_dir = Path(out_dir)
    cases = load_cases(manifest, cache_dir or out_dir / "cache", nuclide, kernel_cache, progress=prep_progress)
    train_refs, val_refs = split_slices(cases, config.val_fraction, config.seed, config.val_by)
    metadata = {"manifest": str(manifest), "cases": [c.case_id for c in cases], "nuclide": nuclide,
                "note": "residual dose CNN (Li 2020) trained with dosecnn train; research use only"}
    summary = train(network, cases, train_refs, val_refs, out_dir, config, resume, progress, step_progress,
                    metadata=metadata, init=init, stop=stop)
    summary.update(cases=len(cases), training_slices=len(train_refs), validation_slices=len(val_refs),
                   validation_by=config.val_by,
                   validation_cases=sorted({cases[c].case_id for c, _ in val_refs}) if config.val_by == "patient" else None)
    write_json(summary, out_dir / "train_summary.json")
    return summary
