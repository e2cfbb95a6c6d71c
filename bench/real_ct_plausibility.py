"""Report: is the predicted perfusion physiologically plausible on real CTs? (no perfusion SPECT comes with them)

Real Tc-99m MAA SPECT of a supine patient shows perfusion rising from anterior to posterior (gravity) and from apex to
base, a right lung share near 52.5 +- 2.1 % (Cheng et al., Congenit Heart Dis 2006, 206 normal scans), the lower lobes
with the largest lobar shares (Bailey et al., Semin Nucl Med 2019, supine normal subjects) and little perfusion in
emphysematous lung. This script measures those features on the map of the bundled network and on the HU-only
baseline, for every real chest CT in ``../shared/data`` and for synthetic controls whose true perfusion is known:

* per lung: mean perfusion in the anterior and posterior halves (split at the lung's median anterior-posterior
  coordinate) and thirds, their ratio, and the Spearman rank correlation of perfusion with the posterior coordinate;
* per lung: the apex-to-base profile (ten slabs of equal height) and the base/apex ratio (lowest third over highest
  third of the lung's height);
* the right lung's share of the total perfusion;
* lobar shares where lobes exist (the synthetic controls; the real CTs come without lobe labels);
* mean perfusion in voxels below -950 HU (emphysema-like) over the rest, and the share of such voxels in each lung's
  anterior and posterior half (a posterior half with more of them can make a faithful map's gradient fall short);
* the quality warnings ``ctpm run`` gives the case (the map's own plausibility checks among them);
* with ``--mc-dropout N``: the network's Monte Carlo dropout uncertainty (standard deviation over N passes), mean
  over each lung, where the real CTs can be compared with the synthetic controls the model knows.

The acceptance of the perfusion-model issue is checked per case and map: posterior-half mean >= 1.1 x anterior-half
in each lung, right share 0.42-0.65, voxels below -950 HU less perfused than the rest (only where at least 0.5 % of
the lung lies below -950 HU). Cases whose lungs the field of view cuts are marked: the same numbers hold only for the
part in view.

Writes ``real_ct_plausibility.md`` (tables) and one figure per case (the network's map over the CT, axial, coronal and
sagittal in the radiological convention, and the anterior-posterior and apex-to-base profiles of every map) to
``--out``/``plausibility/``.

    .venv/bin/python bench/real_ct_plausibility.py [--data ../shared/data] [--out bench/results] [--controls 2]
                                                   [--mc-dropout 8] [--weights W]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from real_data_report import CASES as REAL_CASES
from scipy.stats import spearmanr

from CTPerfusionMappingLib.labels import LOBE_IDS, REGION_NAMES, RIGHT_LUNG
from CTPerfusionMappingLib.pipeline import RunOptions, run_pipeline
from CTPerfusionMappingLib.plausibility import (
    RIGHT_SHARE_RANGE,
    SIDES,
    halves_and_thirds,
    lung_coordinates_mm,
    lung_plausibility,
    right_lung_share,
)
from CTPerfusionMappingLib.run_cli import load_model
from ImagingBasics.display import centre_slices, label_orientation, radiological_view
from ImagingBasics.errors import UserError
from ImagingBasics.files import save_figure
from ImagingBasics.volume import Volume

HERE = Path(__file__).resolve().parent
#: the acceptance of the perfusion-model issue (stricter than the warnings of ``ctpm run``: P/A >= 1.0)
MIN_POSTERIOR_TO_ANTERIOR = 1.1
#: slabs of the apex-to-base and anterior-posterior profiles
PROFILE_BINS = 10
#: CIP lobe id -> abbreviation (RUL ... LLL)
LOBE_NAMES = {value: REGION_NAMES[value] for value in LOBE_IDS}


# --- the measures -----------------------------------------------------------------------------------------------------
def profile(values: np.ndarray, coordinate: np.ndarray, bins: int = PROFILE_BINS) -> np.ndarray:
    """Mean of ``values`` in ``bins`` slabs of equal thickness along ``coordinate``, low end first (NaN: empty)."""
    edges = np.linspace(coordinate.min(), coordinate.max(), bins + 1)
    index = np.clip(np.digitize(coordinate, edges[1:-1]), 0, bins - 1)
    sums = np.bincount(index, weights=values, minlength=bins)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def lung_measures(perfusion: np.ndarray, ct_hu: np.ndarray, lungs: Volume, value: int) -> Dict[str, object]:
    """The measures of one lung (label ``value``) of one map: those ``ctpm run`` reports
    (:func:`~CTPerfusionMappingLib.plausibility.lung_plausibility`: posterior/anterior ratio, emphysema-like shares by
    half, emphysema-to-rest ratio) and the report's own (thirds, rank correlation, base/apex ratio, profiles)."""
    mask = np.asarray(lungs.array) == value
    p = perfusion[mask].astype(float)
    xyz = lung_coordinates_mm(lungs, mask)
    ap = halves_and_thirds(p, xyz["posterior"])  # low: anterior, high: posterior
    si = halves_and_thirds(p, xyz["superior"])  # low: base, high: apex
    rho = spearmanr(p, xyz["posterior"]).statistic if p.std() > 0 else float("nan")
    return dict(lung_plausibility(perfusion, ct_hu, lungs, value), **{
        "anterior": ap["low_half"], "posterior": ap["high_half"],
        "ap_thirds": (ap["low_third"], ap["mid_third"], ap["high_third"]),
        "spearman_posterior": float(rho),
        "base_to_apex": si["low_third"] / si["high_third"] if si["high_third"] > 0 else float("nan"),
        "ap_profile": profile(p, xyz["posterior"]),  # anterior first
        "si_profile": profile(p, xyz["superior"])[::-1],  # apex first
    })


def lobar_shares(perfusion: np.ndarray, regions: Volume) -> Dict[str, float]:
    """Each lobe's share of the perfusion over all lobes (CIP lobe labels 4-8)."""
    labels = np.asarray(regions.array)
    sums = {name: float(perfusion[labels == value].sum()) for value, name in LOBE_NAMES.items()}
    total = sum(sums.values()) or 1.0
    return {name: s / total for name, s in sums.items()}


def acceptance(measures: Dict[str, Dict[str, object]], share: float) -> Dict[str, Optional[bool]]:
    """The issue's three criteria for one map (None: not judged, too little emphysema-like lung)."""
    ratios = [m["emphysema_to_rest"] for m in measures.values() if np.isfinite(m["emphysema_to_rest"])]
    return {"gradient": all(m["posterior_to_anterior"] >= MIN_POSTERIOR_TO_ANTERIOR for m in measures.values()),
            "right_share": RIGHT_SHARE_RANGE[0] <= share <= RIGHT_SHARE_RANGE[1],
            "emphysema": all(r < 1.0 for r in ratios) if ratios else None}


# --- the cases --------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    what: str
    ct: Optional[Volume] = None
    lungs: Optional[Volume] = None
    regions: Optional[Volume] = None
    maps: Dict[str, np.ndarray] = field(default_factory=dict)  # "network", "baseline", "truth"
    truncated: bool = False
    error: Optional[str] = None
    seconds: float = 0.0
    measures: Dict[str, Dict[str, Dict[str, object]]] = field(default_factory=dict)  # map -> side -> measures
    shares: Dict[str, float] = field(default_factory=dict)
    lobes: Dict[str, Dict[str, float]] = field(default_factory=dict)
    passed: Dict[str, Dict[str, Optional[bool]]] = field(default_factory=dict)
    uncertainty: Dict[str, float] = field(default_factory=dict)  # lung side -> mean MC-dropout sd
    warnings: List[str] = field(default_factory=list)  # the codes of the quality warnings ctpm run gives


def run_case(case: Case, ct: Volume, model, info, lobes: Optional[Volume] = None,
             truth: Optional[Volume] = None, mc_dropout: int = 0) -> Case:
    t0 = time.perf_counter()
    result = run_pipeline(ct, lobes=lobes, model=model, model_info=info,
                          options=RunOptions(mc_dropout_passes=mc_dropout))
    case.seconds = time.perf_counter() - t0
    case.ct, case.lungs = ct, result.labels.lungs
    case.regions = result.labels.regions if result.labels.kind == "lobes" else None
    case.maps = {"network": result.perfusion.array, "baseline": result.baseline.array}
    if truth is not None:
        case.maps["truth"] = truth.array
    case.truncated = any(w["code"] == "lung_truncated" for w in result.metrics["warnings"])
    case.warnings = [w["code"] for w in result.metrics["warnings"]]
    if result.uncertainty is not None:
        case.uncertainty = {side: float(result.uncertainty.array[case.lungs.array == value].mean())
                            for side, value in SIDES.items()}
    for name, values in case.maps.items():
        case.measures[name] = {side: lung_measures(values, ct.array, case.lungs, value) for side, value in SIDES.items()}
        case.shares[name] = right_lung_share(values, case.lungs)
        case.passed[name] = acceptance(case.measures[name], case.shares[name])
        if case.regions is not None:
            case.lobes[name] = lobar_shares(values, case.regions)
    return case


def synthetic_controls(count: int):
    """(name, what, ct, lobes, truth) of ``count`` small synthetic phantoms (the generator's own truth)."""
    from CTPerfusionMappingLib.synthetic.cohort import generate_case

    for seed in range(count):
        case = generate_case(1000 + seed, "small")
        yield (f"synthetic control {seed + 1}", f"phantom seed {1000 + seed}, small, its lobes given", case.ct,
               case.lobes, case.truth)


# --- the report -------------------------------------------------------------------------------------------------------
def _mark(value: Optional[bool]) -> str:
    return "n/a" if value is None else ("yes" if value else "**no**")


def _codes(codes: List[str]) -> str:
    """Warning codes in order of first appearance, a repeated one with its count (one per lung, per measure)."""
    counts = {code: codes.count(code) for code in codes}
    return ", ".join(f"`{code}`" + (f" x{n}" if n > 1 else "") for code, n in counts.items()) or "none"


def markdown(cases: List[Case], machine: str, predictor: str, figures: str) -> str:
    lines = [
        "# Physiological plausibility of the perfusion maps on real CTs",
        "",
        f"`bench/real_ct_plausibility.py`, {date.today().isoformat()}, {machine}; maps: the bundled network "
        f"({predictor}) and the HU-only baseline. "
        "No perfusion SPECT comes with the real CTs: the numbers say whether the maps show the features of a supine "
        "MAA SPECT (see the script's docstring for the references), not that they are right. Synthetic controls: the "
        f"same measures on phantoms whose true perfusion is known. Figures: `{figures}/`.",
        "",
        "Columns: P/A = posterior-half over anterior-half mean (per lung, right / left); rho = Spearman rank correlation "
        "of perfusion with the posterior coordinate; B/A = base over apex (lowest over highest third of the lung's "
        "height); right % = the right lung's share; <-950 = mean perfusion below -950 HU over the rest (n/a: less "
        "than 0.5 % of the lung there). Pass: P/A >= 1.1 in each lung, right share 42-65 %, <-950 below 1.",
        "",
        "| case | lungs | map | P/A right / left | rho right / left | B/A right / left | right % | <-950 right / left "
        "| pass: gradient, share, <-950 |",
        "|---|---|---|---|---|---|---:|---|---|",
    ]
    for c in cases:
        if c.error is not None:
            lines.append(f"| {c.name} | refused | | | | | | | error: {c.error} |")
            continue
        for name in c.maps:
            m, ok = c.measures[name], c.passed[name]

            def pair(key: str, m=m) -> str:
                return " / ".join("n/a" if not np.isfinite(m[s][key]) else f"{m[s][key]:.2f}" for s in SIDES)

            lines.append(
                f"| {c.name} | {'cut by the field of view' if c.truncated else 'whole'} | {name} | "
                f"{pair('posterior_to_anterior')} | {pair('spearman_posterior')} | {pair('base_to_apex')} | "
                f"{100 * c.shares[name]:.1f} | {pair('emphysema_to_rest')} | "
                f"{_mark(ok['gradient'])}, {_mark(ok['right_share'])}, {_mark(ok['emphysema'])} |")
    with_baseline = [c for c in cases if c.error is None and "baseline" in c.measures]
    if with_baseline:
        lines += ["", "## Where the emphysema-like lung lies", "",
                  "Share of each lung's anterior and posterior half below -950 HU (the CT's, not a map's). A supine lung "
                  "perfuses more toward the back, and emphysematous lung perfuses little: where the posterior half "
                  "holds more emphysema-like lung than the anterior half (**more behind**), a faithful map may show "
                  "P/A below 1.1, and the gradient and emphysema criteria pull opposite ways.", "",
                  "| case | right: anterior / posterior % | left: anterior / posterior % |", "|---|---|---|"]
        for c in with_baseline:
            cells = []
            for side in SIDES:
                m = c.measures["baseline"][side]
                more = " (**more behind**)" if m["emphysema_posterior"] > m["emphysema_anterior"] + 0.02 else ""
                cells.append(f"{100 * m['emphysema_anterior']:.0f} / {100 * m['emphysema_posterior']:.0f}{more}")
            lines.append(f"| {c.name} | {cells[0]} | {cells[1]} |")
    with_lobes = [c for c in cases if c.lobes]
    if with_lobes:
        names = list(LOBE_NAMES.values())
        lines += ["", "## Lobar shares (cases with lobes)", "",
                  "Supine MAA SPECT gives the lower lobes the largest shares (Bailey et al., Semin Nucl Med 2019).", "",
                  "| case | map | " + " | ".join(names) + " | lower lobes > upper lobes |",
                  "|---|---|" + "---:|" * len(names) + "---|"]
        for c in with_lobes:
            for name, shares in c.lobes.items():
                lower = shares["RLL"] > shares["RUL"] and shares["LLL"] > shares["LUL"]
                lines.append(f"| {c.name} | {name} | " + " | ".join(f"{100 * shares[n]:.1f}" for n in names)
                             + f" | {_mark(lower)} |")
    measured = [c for c in cases if c.error is None]
    if measured:
        lines += ["", "## What `ctpm run` says of the network map", "",
                  "The codes of the quality warnings `ctpm run` gives each case (docs/METHODS.md): the map's own "
                  "plausibility checks (`no_gravity_gradient` below P/A 0.95, `right_share_unusual`, "
                  "`emphysema_perfused`; lungs cut by the field of view are not judged) beside those of the CT.", "",
                  "| case | warnings |", "|---|---|"]
        lines += [f"| {c.name} | {_codes(c.warnings)} |" for c in measured]
    with_sd = [c for c in cases if c.uncertainty]
    if with_sd:
        lines += ["", "## Monte Carlo dropout uncertainty of the network", "",
                  "Mean over each lung of the standard deviation over the dropout passes (perfusion units, 0..1); the "
                  "synthetic controls show what it is where the model is in its training domain.", "",
                  "| case | lungs | sd right | sd left |", "|---|---|---:|---:|"]
        for c in with_sd:
            lines.append(f"| {c.name} | {'cut' if c.truncated else 'whole'} | {c.uncertainty['right']:.3f} | "
                         f"{c.uncertainty['left']:.3f} |")
    lines += ["", "## Summary", ""]
    whole = [c for c in cases if c.error is None and not c.truncated and not c.name.startswith("synthetic")]
    for name in ("network", "baseline"):
        judged = [c.passed[name] for c in whole]
        counts = {k: sum(1 for p in judged if p[k]) for k in ("gradient", "right_share")}
        lines.append(f"- {name}, real CTs with both lungs in view ({len(whole)}): posterior gradient in "
                     f"{counts['gradient']}, right share in range in {counts['right_share']}, emphysema-like lung "
                     f"less perfused in {sum(1 for p in judged if p['emphysema'])} of "
                     f"{sum(1 for p in judged if p['emphysema'] is not None)} judged.")
    return "\n".join(lines) + "\n"


def case_figure(case: Case, path: Path) -> None:
    """The network's map over the CT (axial, coronal, sagittal; radiological convention) and the profiles of every
    map (anterior to posterior, apex to base; per lung)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), layout="constrained")
    ct, lungs = radiological_view(case.ct), radiological_view(case.lungs)
    perfusion = radiological_view(case.ct.with_array(case.maps["network"]))
    slices = centre_slices(lungs.array > 0)
    slices["sagittal"] = centre_slices(lungs.array == RIGHT_LUNG)["sagittal"]  # through the right lung, not the spine
    image = None
    for ax, view in zip(axes[0], ("axial", "coronal", "sagittal")):
        extent = ct.extent(view)
        ax.imshow(ct.cut(view, slices[view]), cmap="gray", vmin=-1000, vmax=300, extent=extent)
        lung_cut = lungs.cut(view, slices[view])
        image = ax.imshow(np.ma.masked_where(lung_cut == 0, perfusion.cut(view, slices[view])), cmap="jet", vmin=0,
                          vmax=1, alpha=0.75, extent=extent)
        ax.set_title(f"network map, {view}" + (" (right lung)" if view == "sagittal" else ""), fontsize=9)
        ax.set_xlabel("mm")
        label_orientation(ax, view, fontsize=8)
    fig.colorbar(image, ax=axes[0, 2], fraction=0.046).set_label("relative perfusion (0..1)")
    styles = {"network": "-", "baseline": "--", "truth": ":"}
    colours = {"right": "tab:blue", "left": "tab:red"}
    for ax, key, xlabel in ((axes[1, 0], "ap_profile", "anterior  ->  posterior (tenths of the lung's depth)"),
                            (axes[1, 1], "si_profile", "apex  ->  base (tenths of the lung's height)")):
        for name, by_side in case.measures.items():
            for side, m in by_side.items():
                values = np.asarray(m[key])
                ax.plot(np.arange(1, len(values) + 1), values / np.nanmean(values), styles[name], color=colours[side],
                        label=f"{name}, {side} lung")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean perfusion / lung mean")
        ax.grid(alpha=0.3)
    axes[1, 0].legend(fontsize=7)
    ax = axes[1, 2]
    names = list(case.measures)
    x = np.arange(len(names))
    for offset, side in ((-0.2, "right"), (0.2, "left")):
        ax.bar(x + offset, [case.measures[n][side]["posterior_to_anterior"] for n in names], 0.4, color=colours[side],
               label=f"{side} lung")
    ax.axhline(MIN_POSTERIOR_TO_ANTERIOR, color="k", lw=0.8, ls="--", label="acceptance 1.1")
    ax.set_xticks(x, names)
    ax.set_ylabel("posterior / anterior half mean")
    ax.legend(fontsize=7)
    cut = ", lungs cut by the field of view" if case.truncated else ""
    fig.suptitle(f"{case.name}: {case.what}{cut} (network trained on synthetic phantoms; research use only)",
                 fontsize=10)
    save_figure(fig, path, dpi=60)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def plausibility_cases(data: Path, model, info, names: Optional[List[str]] = None, controls: int = 0,
                       mc_dropout: int = 0, say=print) -> List[Case]:
    """Every real CT of ``data/real`` (or those in ``names``; refused CTs keep their error) and ``controls`` synthetic
    controls, measured with ``model`` (:func:`CTPerfusionMappingLib.run_cli.load_model`'s pair)."""
    cases: List[Case] = []
    for name, what, reader in REAL_CASES:
        if names and name not in names:
            continue
        case = Case(name, what)
        try:
            run_case(case, reader(data), model, info, mc_dropout=mc_dropout)
        except UserError as error:
            case.error = str(error)
        cases.append(case)
        say(f"{name}: {case.error or 'done'} ({case.seconds:.1f} s)")
    for name, what, ct, lobes, truth in synthetic_controls(controls):
        cases.append(run_case(Case(name, what), ct, model, info, lobes=lobes, truth=truth, mc_dropout=mc_dropout))
        say(f"{name}: done ({cases[-1].seconds:.1f} s)")
    return cases


def write_report(cases: List[Case], out: Path, info) -> Path:
    """``out/real_ct_plausibility.md`` and one figure per measured case in ``out/plausibility/``."""
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, CPU)"
    figures = out / "plausibility"
    figures.mkdir(parents=True, exist_ok=True)
    for case in cases:
        if case.error is None:
            case_figure(case, figures / f"{_slug(case.name)}.png")
    report = out / "real_ct_plausibility.md"
    report.write_text(markdown(cases, machine, Path(info["weights"]).name, "plausibility"), encoding="utf-8")
    return report


def acceptance_summary(cases: List[Case]) -> Dict[str, object]:
    """The issue's acceptance over the real CTs whose lungs are fully in view (network map): per case the three
    criteria, and whether every judged criterion holds on every such case."""
    judged = {c.name: c.passed["network"] for c in cases
              if c.error is None and not c.truncated and not c.name.startswith("synthetic")}
    holds = bool(judged) and all(v is not False for flags in judged.values() for v in flags.values())
    return {"cases": judged, "holds": holds}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--controls", type=int, default=2, help="synthetic controls with known truth (default 2)")
    parser.add_argument("--cases", nargs="+", help="only these real case names (default: all)")
    parser.add_argument("--mc-dropout", type=int, default=0, help="dropout passes for the uncertainty (0: none)")
    parser.add_argument("--weights", type=Path, help="network weights (default: the bundled model)")
    args = parser.parse_args(argv)
    if not (args.data / "real").is_dir():
        parser.error(f"no real CTs at {args.data}/real")
    model, info = load_model(str(args.weights) if args.weights else None, False, "cpu")
    cases = plausibility_cases(args.data, model, info, args.cases, args.controls, args.mc_dropout,
                               say=lambda m: print(m, flush=True))
    report = write_report(cases, args.out, info)
    print(f"wrote {report} and {len([c for c in cases if c.error is None])} figures in {args.out / 'plausibility'}")
    summary = acceptance_summary(cases)
    print(f"acceptance on the real CTs with both lungs in view: {'holds' if summary['holds'] else 'does not hold'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
