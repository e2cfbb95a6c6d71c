"""A PNG montage of a synthetic case: CT (lung window), truth perfusion over the CT, and the SPECT as acquired
(resampled onto the CT grid without correcting its misalignment), in an axial and a coronal slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ImagingBasics.files import save_figure

from .spect import resample_to_reference


def _slices(case):
    lungs = case.lungs.array > 0
    if not lungs.any():
        return lungs.shape[0] // 2, lungs.shape[1] // 2
    k = int(np.round(np.nonzero(lungs.any(axis=(1, 2)))[0].mean()))
    j = int(np.round(np.nonzero(lungs.any(axis=(0, 2)))[0].mean()))
    return k, j


def write_preview(case, path: Path) -> Path:
    """Write the montage to ``path`` (PNG, written to a temporary name and renamed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    spect_on_ct = resample_to_reference(case.spect, case.ct).array
    k, j = _slices(case)
    sx, sy, sz = case.ct.spacing
    nz, ny, nx = case.ct.shape
    views = {
        "axial": (lambda a: a[k], [0, nx * sx, ny * sy, 0]),
        "coronal": (lambda a: a[::-1, j, :], [0, nx * sx, 0, nz * sz]),
    }
    truth_max = float(np.percentile(case.truth.array[case.lungs.array > 0], 99.5)) if (case.lungs.array > 0).any() else 1.0
    spect_max = float(np.percentile(spect_on_ct, 99.9)) or 1.0
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.5), facecolor="black")
    for row, (name, (cut, extent)) in enumerate(views.items()):
        ct = cut(case.ct.array)
        axes[row, 0].imshow(ct, cmap="gray", vmin=-1000, vmax=200, extent=extent)
        axes[row, 1].imshow(ct, cmap="gray", vmin=-1000, vmax=200, extent=extent)
        truth = np.ma.masked_where(cut(case.lungs.array) == 0, cut(case.truth.array))
        im1 = axes[row, 1].imshow(truth, cmap="jet", vmin=0, vmax=truth_max, alpha=0.8, extent=extent)
        im2 = axes[row, 2].imshow(cut(spect_on_ct), cmap="hot", vmin=0, vmax=spect_max, extent=extent)
        for col, title in enumerate(("CT (lung window)", "truth perfusion", "SPECT as acquired")):
            axes[row, col].set_title(f"{title}, {name}", color="white", fontsize=10)
            axes[row, col].axis("off")
        if row == 0:
            for im, label, col in ((im1, "relative perfusion", 1), (im2, "counts", 2)):
                bar = fig.colorbar(im, ax=axes[row, col], fraction=0.046, pad=0.02)
                bar.set_label(label, color="white")
                bar.ax.tick_params(colors="white")
    pathologies = ", ".join(sorted(case.meta["pathologies"])) or "none"
    fig.suptitle(f"{case.meta['case_id']} (seed {case.meta['seed']}, {case.meta['size']}): pathologies {pathologies}",
                 color="white")
    fig.tight_layout()
    save_figure(fig, path, dpi=80, facecolor="black")
    return path
