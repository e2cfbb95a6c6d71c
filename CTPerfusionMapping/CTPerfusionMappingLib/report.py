"""Writing the results of a run: volumes, metrics.json, the region CSV and the overview figure (PNG)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ImagingBasics.display import centre_slices, label_orientation, radiological_view
from ImagingBasics.files import save_figure, write_json
from ImagingBasics.imageio import write_volume

from .metrics import write_region_csv
from .plausibility import summary_text

OUTPUT_FILES = {
    "perfusion": "perfusion.nrrd",
    "functional": "functional.nrrd",
    "lungs": "lungs.nrrd",
    "regions": "lobes.nrrd",
    "spect_on_ct": "spect_on_ct.nrrd",
    "uncertainty": "perfusion_std.nrrd",
    "metrics": "metrics.json",
    "table": "lobes.csv",
    "figure": "overview.png",
}


def write_run_outputs(result, out_dir: Path, ct=None) -> Dict[str, Path]:
    """Write every output of a :class:`~.pipeline.RunResult` into ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Path] = {}
    volumes = {"perfusion": result.perfusion, "functional": result.functional, "lungs": result.labels.lungs,
               "regions": result.labels.regions, "spect_on_ct": result.spect_on_ct, "uncertainty": result.uncertainty}
    for key, volume in volumes.items():
        if volume is not None:
            write_volume(volume, out_dir / OUTPUT_FILES[key])
            written[key] = out_dir / OUTPUT_FILES[key]
    write_region_csv(result.regions, out_dir / OUTPUT_FILES["table"])
    written["table"] = out_dir / OUTPUT_FILES["table"]
    if ct is not None:
        write_overview(ct, result, out_dir / OUTPUT_FILES["figure"])
        written["figure"] = out_dir / OUTPUT_FILES["figure"]
    write_json(result.metrics, out_dir / OUTPUT_FILES["metrics"])  # last: its presence marks a finished run
    written["metrics"] = out_dir / OUTPUT_FILES["metrics"]
    return written


def _table_text(rows: List[Dict[str, Any]]) -> str:
    has_ref = any(r.get("mean_reference") is not None for r in rows)
    head = f"{'region':<20}{'mL':>7}{'mean':>7}{'share%':>8}" + (f"{'SPECT':>7}{'share%':>8}" if has_ref else "")
    lines = [head]
    for r in rows:
        line = (f"{r['name'][:19]:<20}{_f(r['volume_ml'], 0):>7}{_f(r['mean_perfusion'], 2):>7}"
                f"{_f(r['perfusion_share_percent'], 1):>8}")
        if has_ref:
            line += f"{_f(r.get('mean_reference'), 2):>7}{_f(r.get('reference_share_percent'), 1):>8}"
        lines.append(line)
    return "\n".join(lines)


def _f(v: Optional[float], digits: int) -> str:
    return "-" if v is None or not math.isfinite(float(v)) else f"{float(v):.{digits}f}"


def _plausibility_text(plausibility: Optional[Dict[str, Any]]) -> List[str]:
    """The map's supine-MAA features (:mod:`.plausibility`) as lines of the overview: posterior/anterior ratio per
    lung and the right-lung share ("cut": a lung the field of view cuts is not judged)."""
    if not plausibility:
        return []
    low, high = plausibility["limits"]["right_share"]
    lines = ["", "supine MAA features of the map:", f"{summary_text(plausibility)} (supine: > 1)",
             f"right lung share {_percent(plausibility['right_share'])} (normal 52.5 +- 2.1 %; warning outside "
             f"{100 * low:.0f}-{100 * high:.0f} %)"]
    if plausibility.get("spect"):
        lines.append(f"the SPECT's right lung share {_percent(plausibility['spect']['right_share'])}")
    return lines


def _percent(share: Optional[float]) -> str:
    return "-" if share is None or not math.isfinite(float(share)) else f"{100 * float(share):.1f} %"


def write_overview(ct, result, path: Path) -> Path:
    """CT, synthetic perfusion and (when given) the normalised SPECT side by side, axial and coronal, with the
    region table and the headline metrics; PNG written to a temporary name and renamed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    lungs = radiological_view(result.labels.lungs)
    panels = [("CT", None), ("synthetic perfusion", radiological_view(result.perfusion))]
    if result.spect_normalised is not None:
        panels.append(("SPECT (normalised)", radiological_view(result.spect_normalised)))
    ct_view = radiological_view(ct)
    slices = centre_slices(lungs.array > 0)
    fig = plt.figure(figsize=(4.2 * len(panels) + 5.5, 8.5), facecolor="white")
    grid = fig.add_gridspec(2, len(panels) + 1, width_ratios=[1] * len(panels) + [1.3])
    for row, name in enumerate(("axial", "coronal")):
        extent = ct_view.extent(name)
        for col, (title, data) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(ct_view.cut(name, slices[name]), cmap="gray", vmin=-1000, vmax=200, extent=extent)
            if data is not None:
                lung_cut = lungs.cut(name, slices[name]) > 0
                im = ax.imshow(np.ma.masked_where(~lung_cut, data.cut(name, slices[name])), cmap="jet", vmin=0, vmax=1,
                               alpha=0.75, extent=extent)
            ax.set_title(f"{title} ({name})", fontsize=10)
            ax.axis("off")
            label_orientation(ax, name)
    fig.colorbar(im, ax=fig.axes[-1], fraction=0.046, pad=0.02).set_label("relative perfusion (0..1)")
    text_ax = fig.add_subplot(grid[:, -1])
    text_ax.axis("off")
    lines = [_table_text(result.regions)]
    evaluation = result.metrics.get("evaluation")
    if evaluation:
        lines.append("")
        lines.append(f"{'vs SPECT':<12}{'Spearman':>9}{'SSIM':>7}{'DSC hi':>8}{'DSC lo':>8}")
        for key, label in (("prediction", "prediction"), ("hu_baseline", "HU baseline")):
            e = evaluation[key]["patient"]
            lines.append(f"{label:<12}{_f(e['spearman'], 3):>9}{_f(e['ssim'], 3):>7}{_f(e['dsc_high'], 3):>8}"
                         f"{_f(e['dsc_low'], 3):>8}")
    lines += _plausibility_text(result.metrics.get("plausibility"))
    for w in result.metrics.get("warnings", []):
        lines.append("")
        lines.append(f"warning: {w['message']}")
    text_ax.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=8, va="top", wrap=True)
    fig.suptitle("CT perfusion mapping (research use only, not for clinical use)")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path
