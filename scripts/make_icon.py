"""Draw the extension icon (Resources/LungFunctionDosimetry.png, 128x128): two lungs coloured by perfusion."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def draw(path: Path) -> None:
    y, x = np.mgrid[-1:1:256j, -1:1:256j]
    lungs = np.zeros_like(x, dtype=bool)
    for cx in (-0.45, 0.45):
        u, v = (x - cx) / 0.36, (y - 0.05) / 0.8
        lungs |= (u**2 + v**2 < 1) & (np.abs(x) > 0.1)
    perfusion = np.ma.masked_where(~lungs, 0.5 + 0.5 * y + 0.15 * np.sin(6 * x) * np.cos(5 * y))
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(np.ones_like(x), cmap="gray", vmin=0, vmax=1)
    ax.imshow(perfusion, cmap="jet", vmin=0, vmax=1)
    ax.plot([128, 128], [10, 90], color="#666666", lw=6, solid_capstyle="round")
    ax.axis("off")
    fig.savefig(path, transparent=True)
    plt.close(fig)


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1] / "Resources" / "LungFunctionDosimetry.png"
    draw(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
