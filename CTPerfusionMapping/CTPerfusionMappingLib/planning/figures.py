"""The figures of a plan evaluation (PNG, written atomically): DVHs per plan and the side-by-side plan comparison.

* :func:`plot_dvh` -- one column per plan; the top panel holds the lungs (right, left, both), the lower one the lobes
  (when given). Anatomical DVHs dashed, function-weighted DVHs solid, in the structure's colour; the reference
  cut-points (:mod:`.cutpoints`) drawn on the lungs panel: fV5 and fV20 as marked points, fMLD as a dotted line.
* :func:`plot_comparison` -- bars of MLD/fMLD (Gy), V20/fV20 and V5/fV5 (%) of both lungs per plan, the reference
  cut-points as horizontal lines over the function-weighted bars.

matplotlib is imported inside the functions (the Agg backend, as every figure of the project).
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from ImagingBasics.files import save_figure

from .cutpoints import FMLD, FV5, FV20
from .evaluation import PlanningResult

#: colours of the lungs panel (right, left, both) and of the regions (in the order they appear)
LUNG_COLOURS = {"right lung": "tab:blue", "left lung": "tab:orange", "both lungs": "black"}
REGION_COLOURS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
#: both lungs: the structure the headline numbers, the comparison and the cut-points refer to
BOTH_LUNGS = "both lungs"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _number(value: float, digits: int = 1) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _subtitle(result: PlanningResult) -> str:
    excluded = result.settings.get("excluded") or []
    what = "lungs" + (f" minus {', '.join(excluded)}" if excluded else "")
    weights = ("weights: perfusion in the high-function volume" if result.lung.weights_thresholded
               else "weights: normalised perfusion")
    return f"{what}; {weights} (research use only, not for clinical use)"


#: a white box behind the labels of the cut-points, so that curves do not hide them
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}


def _draw_cut_points(ax) -> None:
    for cut in (FV5, FV20):
        ax.plot([cut.dose_gy], [cut.value], marker="D", color="crimson", markersize=6, linestyle="none", zorder=5)
        ax.annotate(f"{cut.label} (ref.)", (cut.dose_gy, cut.value), textcoords="offset points", xytext=(6, 6),
                    fontsize=7, color="crimson", bbox=_LABEL_BOX)
    ax.axvline(FMLD.value, color="crimson", linestyle=":", linewidth=1)
    ax.annotate(f"{FMLD.label} (ref.)", (FMLD.value, 97), textcoords="offset points", xytext=(3, 0), fontsize=7,
                color="crimson", va="top", bbox=_LABEL_BOX)


def plot_dvh(result: PlanningResult, path: Path) -> Path:
    """DVHs of every plan and structure (module docstring); returns ``path``."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    lungs = [s.name for s in result.lung.structures if s.kind in ("lung", "lungs")]
    regions = [s.name for s in result.lung.structures if s.kind not in ("lung", "lungs")]
    rows = 2 if regions else 1
    cols = len(result.plans)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols + 0.6, 4.0 * rows + 0.6), squeeze=False, sharex=True,
                             sharey=True, facecolor="white")
    x = result.dose_levels_gy
    for col, plan in enumerate(result.plans):
        groups: List[List[str]] = [lungs] + ([regions] if regions else [])
        for row, names in enumerate(groups):
            ax = axes[row][col]
            for i, name in enumerate(names):
                colour = LUNG_COLOURS.get(name, REGION_COLOURS[i % len(REGION_COLOURS)])
                volume, function = plan.dvh[name]
                ax.plot(x, 100 * volume, linestyle="--", color=colour, linewidth=1.2)
                ax.plot(x, 100 * function, linestyle="-", color=colour, linewidth=1.6, label=name)
            if row == 0:
                _draw_cut_points(ax)
                both = plan.row(BOTH_LUNGS)
                ax.set_title(f"{plan.name}: MLD {_number(both['mld_gy'])} Gy, fMLD {_number(both['fmld_gy'])} Gy, "
                             f"fV20 {_number(both['fv20_percent'])} %", fontsize=9)
            ax.set_ylim(0, 101)
            ax.set_xlim(0, float(x[-1]))
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("volume or function receiving >= D (%)", fontsize=8)
            if row == rows - 1:
                ax.set_xlabel("dose D (Gy)", fontsize=8)
            handles, _ = ax.get_legend_handles_labels()
            style = [Line2D([], [], color="grey", linestyle="--", label="volume (DVH)"),
                     Line2D([], [], color="grey", linestyle="-", label="function (fDVH)")]
            ax.legend(handles=handles + style, fontsize=7, loc="upper right")
    fig.suptitle(f"Function-weighted DVHs -- {_subtitle(result)}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return Path(path)


#: the bar groups of the comparison: (title, y-axis label, [(metrics key, label), ...], cut-point of the f-metric)
COMPARISON_GROUPS = (
    ("mean dose", "mean dose (Gy)", (("mld_gy", "MLD"), ("fmld_gy", "fMLD")), FMLD),
    ("dose >= 20 Gy", "volume or function receiving >= 20 Gy (%)", (("v20_percent", "V20"), ("fv20_percent", "fV20")),
     FV20),
    ("dose >= 5 Gy", "volume or function receiving >= 5 Gy (%)", (("v5_percent", "V5"), ("fv5_percent", "fV5")), FV5),
)


def plot_comparison(result: PlanningResult, path: Path) -> Path:
    """Side-by-side bars of MLD/fMLD, V20/fV20 and V5/fV5 of both lungs per plan (module docstring); returns
    ``path``."""
    plt = _pyplot()

    names = [plan.name for plan in result.plans]
    fig, axes = plt.subplots(1, len(COMPARISON_GROUPS), figsize=(4.2 * len(COMPARISON_GROUPS), 4.2), squeeze=False,
                             facecolor="white")
    width = 0.8 / len(names)
    for ax, (title, ylabel, metrics, cut) in zip(axes[0], COMPARISON_GROUPS):
        centres = np.arange(len(metrics), dtype=float)
        for i, plan in enumerate(result.plans):
            values = [plan.row(BOTH_LUNGS)[key] for key, _ in metrics]
            xs = centres - 0.4 + width * (i + 0.5)
            bars = ax.bar(xs, [v if np.isfinite(v) else 0.0 for v in values], width, label=plan.name,
                          color=f"C{i % 10}")
            for bar, value in zip(bars, values):
                ax.annotate(_number(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        ax.hlines(cut.value, centres[1] - 0.45, centres[1] + 0.45, colors="crimson", linestyles=":")
        ax.annotate(f"{cut.label} (ref.)", (centres[1] + 0.45, cut.value), textcoords="offset points", xytext=(-2, 3),
                    ha="right", fontsize=7, color="crimson")
        ax.set_xticks(centres)
        ax.set_xticklabels([label for _, label in metrics])
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(f"{title}, both lungs", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Plan comparison -- {_subtitle(result)}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return Path(path)
