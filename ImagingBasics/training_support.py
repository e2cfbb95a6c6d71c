"""Bookkeeping shared by the two trainings (the perfusion ARNN and the dose CNN): per-epoch seeding that makes a
resumed run repeat an uninterrupted one, and the learning-curve figure."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .files import save_figure


def seed_epoch(seed: int, epoch: int) -> np.random.Generator:
    """Seed torch for one epoch of a run with ``seed`` and return numpy's generator for it (reproducible shuffling and
    augmentation that does not depend on how many epochs ran before a resume)."""
    import torch

    torch.manual_seed(seed * 100003 + epoch)
    return np.random.default_rng([seed, epoch])


def plot_learning_curve(log_csv: Path, png: Path, loss_label: str = "BCE over lung voxels",
                        metrics: Sequence[str] = ("val_spearman",), metric_label: str = "validation Spearman R",
                        losses: Sequence[str] = ("train_loss", "val_loss"),
                        labels: Optional[Dict[str, str]] = None) -> None:
    """Per epoch (PNG): the ``losses`` columns of ``log_csv`` (left) and the ``metrics`` columns (right), with legend
    ``labels`` per column.

    The defaults are ``ctpm train``'s log; ``dosecnn train`` passes its own columns and labels.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows: List[Dict[str, str]] = list(csv.DictReader(open(log_csv, encoding="utf-8"))) if Path(log_csv).exists() else []
    if not rows:
        return
    epoch = [int(r["epoch"]) for r in rows]
    names = {"train_loss": "training", "val_loss": "validation", **(labels or {})}
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for column in losses:
        ax[0].plot(epoch, [float(r[column]) for r in rows], label=names.get(column, column))
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel(loss_label)
    ax[0].legend()
    for i, column in enumerate(metrics):
        ax[1].plot(epoch, [float(r[column]) for r in rows], color=f"C{i + 2}", label=names.get(column, column))
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel(metric_label)
    if len(metrics) > 1:
        ax[1].legend()
    fig.tight_layout()
    save_figure(fig, png, dpi=80)
