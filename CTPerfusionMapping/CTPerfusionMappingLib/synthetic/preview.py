"""A PNG montage of a synthetic case: CT (lung window), truth perfusion over the CT, and the SPECT as acquired
(resampled onto the CT grid without correcting its misalignment), in an axial and a coronal slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ImagingBasics.display import centre_slices, label_orientation, radiological_view
from ImagingBasics.files import save_figure

from .spect import resample_to_reference


def write_preview(case, path: Path) -> Path:
    """Write the montage to ``path`` (PNG, written to a temporary name and renamed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    spect_on_ct = resample_to_reference(case.spect, case.ct)
    lungs = radiological_view(case.lungs)
    slices = centre_slices(lungs.array > 0)
    ct, truth, spect = radiological_view(case.ct), radiological_view(case.truth), radiological_view(spect_on_ct)
    truth_max = float(np.percentile(case.truth.array[case.lungs.array > 0], 99.5)) if (case.lungs.array > 0).any() else 1.0
    spect_max = float(np.percentile(spect_on_ct.array, 99.9)) or 1.0
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.5), facecolor="black")
    for row, name in enumerate(("axial", "coronal")):
        extent, index = ct.extent(name), slices[name]
        ct_cut = ct.cut(name, index)
        axes[row, 0].imshow(ct_cut, cmap="gray", vmin=-1000, vmax=200, extent=extent)
        axes[row, 1].imshow(ct_cut, cmap="gray", vmin=-1000, vmax=200, extent=extent)
        truth_cut = np.ma.masked_where(lungs.cut(name, index) == 0, truth.cut(name, index))
        im1 = axes[row, 1].imshow(truth_cut, cmap="jet", vmin=0, vmax=truth_max, alpha=0.8, extent=extent)
        im2 = axes[row, 2].imshow(spect.cut(name, index), cmap="hot", vmin=0, vmax=spect_max, extent=extent)
        for col, title in enumerate(("CT (lung window)", "truth perfusion", "SPECT as acquired")):
            axes[row, col].set_title(f"{title}, {name}", color="white", fontsize=10)
            axes[row, col].axis("off")
            label_orientation(axes[row, col], name)
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
