"""``dosecnn demo``: one synthetic Lu-177 patient through every step, compared with its Monte Carlo truth.

1. :func:`.phantoms.case.generate_case`: a torso with known kinetics, SPECTs at 4, 24, 96 and 168 h and the Monte
   Carlo dose rate of the true activity (``out/patient``). To finish in about half a minute on two CPU cores, the demo
   differs from a ``dosecnn phantom`` case in two ways, both printed: the CT grid is :data:`DEMO_GRID` (the ``small``
   preset's voxels and slices, in-plane cut to the body: only air left out), and the truth has :data:`DEMO_DECAYS`
   decays in :data:`DEMO_MC_RUNS` independent runs per compartment, which measure its noise: the relative standard
   error of every organ's mean is printed beside the errors it qualifies and shown in ``comparison.png``. The truth
   of a seed is computed once and then read from a cache (:mod:`.phantoms.truth_cache`; ``--no-cache``: computed).
2. First time point: dose rate by VDK with density scaling.
3. :func:`.dosimetry.integrate.run_integrate` over the four time points with the residual CNN (the bundled
   demonstration model, or ``--weights``) -> absorbed dose (Gy), organ table, DVH (``out/results/integrate``); its
   first time point's dose rate (``dose_rate_00.nrrd``) is the CNN estimate of step 4 (computed once).
4. Both estimates at 4 h against the truth per organ and lesion: Li 2020's mean dose error (MDE) and NRMSE
   (noise-corrected for the truth's Monte Carlo noise) -> ``comparison.csv``, ``comparison.png``; the organs' mean
   absorbed dose against the truth; ``overview.png``: CT, truth, VDK and CNN dose rate.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np

from ImagingBasics.volume import Volume

#: the demo's CT grid ((nx, ny, nz), mm): the ``small`` preset's voxels and 64 slices, in-plane 376 x 282 mm instead
#: of 502 x 502 mm, which still holds the largest body :func:`.phantoms.torso.draw_torso` makes (370 x 260 mm)
DEMO_GRID = ((192, 144, 64), (1.96, 1.96, 3.0))
#: Monte Carlo decays of the demo's truth (all compartments together; a training phantom has 2,000,000)
DEMO_DECAYS = 500_000
#: independent Monte Carlo runs per compartment: their spread is the truth's standard error per organ
DEMO_MC_RUNS = 5


def run_demo(out: Path, seed: int = 1, weights: Optional[Path] = None, mc_decays: int = DEMO_DECAYS,
             device: str = "cpu", say: Callable[[str], None] = lambda msg: None,
             grid: Optional[tuple] = None, truth_cache: Optional[Path] = None, workers: int = 1) -> Dict[str, object]:
    """Steps 1-4 of the module docstring; returns the summary (also written to ``out/results/demo.json``).

    ``grid``: ((nx, ny, nz), spacing mm) instead of :data:`DEMO_GRID` (tests); ``truth_cache``: the folder of cached
    Monte Carlo truths (:func:`.phantoms.truth_cache.default_truth_cache` for the command; None: no cache);
    ``workers``: processes for the truth's compartments (the same truth with any number)."""
    from ImagingBasics.files import write_csv, write_json
    from ImagingBasics.imageio import write_volume

    from .cnn.weights import bundled_weights
    from .dosimetry.pipeline import dose_rate_map

    t0 = time.perf_counter()
    out = Path(out)
    grid = grid or DEMO_GRID
    say("1/4 synthetic patient (anatomy, kinetics, SPECTs, Monte Carlo truth)")
    case, folder = _patient(out / "patient", seed, grid, mc_decays, device, truth_cache, say, workers)
    truth = _truth_summary(case, grid, time.perf_counter() - t0)
    names = {int(k): v for k, v in case.meta["labels"].items()}
    results = out / "results"

    cnn_weights = Path(weights) if weights else bundled_weights()  # None: VDK only
    say(f"2/4 dose rate at {case.times_h[0]:g} h by VDK")
    vdk = dose_rate_map(case.spect[0], case.ct, bq_per_count=case.meta["spect_model"]["bq_per_count"], method="vdk",
                        device=device)
    estimates: Dict[str, Volume] = {"VDK": vdk.dose_rate_mgy_s}
    write_volume(vdk.dose_rate_mgy_s, results / "dose_rate_vdk.nrrd")

    method = "cnn" if cnn_weights is not None else "vdk"
    say(f"3/4 dose rate at {len(case.times_h)} time points by {method.upper()}"
        + ("" if cnn_weights else " (no CNN weights found)") + ", time integration")
    integ = integrate_patient(case, folder, results / "integrate", names, method, cnn_weights, device, say)
    if cnn_weights is not None:
        estimates["CNN"] = integ["first_dose_rate"]
        write_volume(estimates["CNN"], results / "dose_rate_cnn.nrrd")

    say("4/4 comparison with the truth, figures")
    rows = _comparison_rows(case, estimates, names)
    write_csv(rows, results / "comparison.csv")
    _comparison_figure(rows, results / "comparison.png", case.times_h[0], truth)
    organ_table = _organ_table(integ["summary"], case.meta["per_label"])
    write_csv(organ_table, results / "absorbed_dose_vs_truth.csv")
    overview_figure(case, estimates, results / "overview.png", truth_title=f"Monte Carlo truth ({truth['decays']:,} "
                                                                           "decays)")
    summary = {"seconds": time.perf_counter() - t0, "seed": seed, "weights": str(cnn_weights) if cnn_weights else None,
               "monte_carlo_truth": truth, "comparison": rows, "absorbed_dose": organ_table, "patient": str(folder),
               "results": str(results),
               "note": "synthetic phantom and a demonstration model trained on synthetic data; not for clinical use"}
    write_json(summary, results / "demo.json")
    return summary


def _patient(folder: Path, seed: int, grid: tuple, mc_decays: int, device: str, truth_cache: Optional[Path],
             say: Callable[[str], None], workers: int = 1):
    """Step 1: the case (truth from ``truth_cache`` when there) and its folder."""
    from .phantoms.case import generate_case, write_case

    case = generate_case(seed, mc_decays=mc_decays, mc_runs=DEMO_MC_RUNS, device=device, grid_override=grid,
                         truth_cache=truth_cache, progress=lambda m: say(f"    {m}"), mc_workers=workers)
    return case, write_case(case, folder, preview=True)


def _truth_summary(case, grid: tuple, seconds: float) -> Dict[str, object]:
    """What the printout says about the truth: decays, runs, grid, cache use, the largest organ standard error."""
    mc = case.meta["monte_carlo"]
    (nx, ny, nz), spacing = grid
    se = [r["mean_dose_rate_se_mgy_s"][0] / r["mean_dose_rate_mgy_s"][0] for r in case.meta["per_label"]
          if r.get("mean_dose_rate_se_mgy_s") and r["mean_dose_rate_mgy_s"][0] > 0]
    return {"decays": int(mc["decays"]), "runs": int(mc.get("runs", 1)), "cache": mc.get("cache", "off"),
            "cache_file": mc.get("cache_file"), "step_1_seconds": seconds,
            "grid_voxels": [nx, ny, nz], "spacing_mm": list(spacing),
            "field_of_view_mm": [round(n * s, 1) for n, s in zip((nx, ny, nz), spacing)],
            "grid_note": ("the small phantom's voxels; the field of view cut to the body, only air left out"
                          if tuple(map(tuple, grid)) == tuple(map(tuple, DEMO_GRID)) else "a custom grid"),
            "max_organ_relative_se": max(se) if se else None}


def integrate_patient(case, folder: Path, out: Path, names: Dict[int, str], method: str, weights: Optional[Path],
               device: str, say: Callable[[str], None]) -> Dict[str, object]:
    """Step 3: ``dosecnn integrate`` of the patient's time points; returns its summary and the first time point's
    dose rate (mGy/s, on the patient's CT grid)."""
    from ImagingBasics.imageio import read_volume

    from .dosimetry.integrate import DOSE_RATE_MAP, run_integrate

    summary = run_integrate(folder / "timepoints.csv", out, labels_path=folder / "labels.nrrd", names=names,
                            method=method, weights=weights, device=device, progress=lambda m: say(f"    {m}"),
                            dose_rate_maps=True)
    first = read_volume(out / DOSE_RATE_MAP.format(index=0))
    return {"summary": summary, "first_dose_rate": case.ct.with_array(first.array.astype(np.float32, copy=False))}


def _comparison_rows(case, estimates: Mapping[str, Volume], names: Dict[int, str]) -> List[Dict[str, object]]:
    """:func:`.dosimetry.metrics.compare_methods` at the first time point, with the truth's relative standard error
    per region (``truth_relative_se``, a fraction; None without independent runs)."""
    from .dosimetry.metrics import compare_methods

    rows = compare_methods(estimates, case.dose_rate_mgy_s[0], case.labels, names, case.dose_rate_sd_mgy_s[0])
    for row in rows:
        se = case.truth_label_errors.get(int(row["label"]), {}).get("mean_dose_rate_se_mgy_s")
        ref = float(row["mean_reference"])
        row["truth_relative_se"] = se[0] / ref if se and ref > 0 else None
    return rows


def _comparison_figure(rows: List[Dict[str, object]], path: Path, t_h: float, truth: Mapping[str, object]) -> None:
    """:func:`.dosimetry.metrics.comparison_figure`, each region named with the truth's standard error."""
    from .dosimetry.metrics import comparison_figure

    def named(row):
        se = row.get("truth_relative_se")
        return {**row, "name": f"{row['name']}\n(truth +-{100 * se:.1f} %)" if se is not None else row["name"]}

    comparison_figure([named(r) for r in rows], path,
                      title=f"dose rate at {t_h:g} h vs Monte Carlo truth ({truth['decays']:,} decays in "
                            f"{truth['runs']} runs; +-: the truth's relative standard error per region)")


def _organ_table(integ: Mapping[str, object], per_label: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """Per label: mean absorbed dose estimated (voxel map) and true (Monte Carlo of the true kinetics), error %, and
    the truth's relative standard error (``truth_relative_se``, a fraction; None without independent runs)."""
    truth = {int(r["label"]): r for r in per_label}
    rows = []
    for r in integ.get("organs", []):
        label = int(r["label"])
        if label not in truth or "mean_absorbed_dose_gy" not in truth[label]:
            continue
        est = float(r["mean_dose_gy_voxel_map"])
        ref = float(truth[label]["mean_absorbed_dose_gy"])
        se = truth[label].get("mean_absorbed_dose_se_gy")
        rows.append({"label": label, "name": truth[label]["name"], "estimate_gy": est, "truth_gy": ref,
                     "error_percent": 100.0 * (est - ref) / ref if ref > 0 else float("nan"),
                     "truth_relative_se": se / ref if se is not None and ref > 0 else None})
    return rows


def overview_figure(case, estimates: Dict[str, Volume], path: Path, truth_title: str = "Monte Carlo truth") -> None:
    """Coronal slice through the kidneys: CT, Monte Carlo truth and each estimate (same colour scale)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ImagingBasics.display import label_orientation, radiological_view
    from ImagingBasics.files import save_figure

    labels = radiological_view(case.labels).array
    j = int(np.argmax(np.isin(labels, (3, 4)).sum(axis=(0, 2))))  # the coronal slice with most kidney
    ct = radiological_view(case.ct)
    extent = ct.extent("coronal")
    truth = radiological_view(case.dose_rate_mgy_s[0]).coronal(j)
    vmax = float(np.percentile(truth[truth > 0], 99.5)) if (truth > 0).any() else 1.0
    panels = [(truth_title, truth)] + [(name, radiological_view(v).coronal(j)) for name, v in estimates.items()]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.8 * (len(panels) + 1), 3.6))
    axes[0].imshow(ct.coronal(j), cmap="gray", vmin=-250, vmax=350, extent=extent)
    axes[0].set_title("CT (coronal)", fontsize=9)
    for ax, (title, image) in zip(axes[1:], panels):
        im = ax.imshow(image, cmap="inferno", vmin=0, vmax=vmax, extent=extent)
        ax.set_title(f"{title}, {case.times_h[0]:g} h", fontsize=9)
    for ax in axes:
        ax.axis("off")
        label_orientation(ax, "coronal")
    fig.colorbar(im, ax=axes, label="dose rate (mGy/s)", shrink=0.8)
    save_figure(fig, path, dpi=80)


def print_summary(summary: Dict[str, object], file=None) -> None:
    """The demo's tables, with what was reduced (grid, decays) and cached, and the truth's noise per region (on
    ``file``, default standard output)."""
    file = file or sys.stdout
    truth = summary["monte_carlo_truth"]
    for line in truth_lines(truth):
        print(line, file=file)
    print("dose rate vs Monte Carlo truth (MDE and NRMSE, %; NRMSE corrected for the truth's noise; truth SE: the "
          "relative standard error of the truth's mean):", file=file)
    print(f"  {'region':<28} {'method':<6} {'MDE %':>7} {'NRMSE %':>8} {'truth SE %':>10}", file=file)
    for r in summary["comparison"]:
        nrmse = r.get("nrmse_noise_corrected", r["nrmse"])
        print(f"  {str(r['name'])[:28]:<28} {r['method']:<6} {100 * r['mde']:7.1f} {100 * nrmse:8.1f} "
              f"{_percent(r.get('truth_relative_se')):>10}", file=file)
    print("mean absorbed dose vs truth (truth SE: its relative standard error):", file=file)
    for r in summary["absorbed_dose"]:
        print(f"  {str(r['name'])[:28]:<28} {r['estimate_gy']:8.3f} Gy  truth {r['truth_gy']:8.3f} Gy  "
              f"({r['error_percent']:+.1f} %; truth SE {_percent(r.get('truth_relative_se'))} %)", file=file)
    print(f"results in {summary['results']} ({summary['seconds']:.0f} s); {summary['note']}", file=file)


def _percent(fraction: Optional[float]) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}"


def truth_lines(truth: Mapping[str, object]) -> List[str]:
    """How the demo's truth was made: grid, decays (reduced), runs, and whether it was computed or cached."""
    nx, ny, nz = truth["grid_voxels"]
    fx, fy, fz = truth["field_of_view_mm"]
    source = {"hit": f"read from the cache {truth['cache_file']} (computed by an earlier run of this seed; "
                     "--no-cache computes it again)",
              "miss": f"computed and cached in {truth['cache_file']}" if truth.get("cache_file") else
                      "computed (could not be cached)",
              "off": "computed (not cached: --no-cache)"}[str(truth["cache"])]
    worst = truth.get("max_organ_relative_se")
    return [f"CT grid {nx} x {ny} x {nz} voxels, {fx:g} x {fy:g} x {fz:g} mm ({truth['grid_note']})",
            f"Monte Carlo truth: {truth['decays']:,} decays (a training phantom has 2,000,000) in {truth['runs']} "
            f"independent runs per compartment, {source}; the largest relative standard error of a region's mean dose "
            f"rate is {_percent(worst)} %"]


def add_demo_command(sub) -> None:
    p = sub.add_parser("demo", help="one synthetic Lu-177 patient through every step, compared with its Monte Carlo truth",
                       description="Generate a synthetic patient (torso, kinetics, SPECTs at 4/24/96/168 h, Monte Carlo "
                                   "truth), compute the dose rate by VDK and by VDK + the residual CNN (bundled "
                                   "demonstration model) and compare them with the truth per organ and lesion (MDE, "
                                   "NRMSE, with the truth's own standard error), integrate the time points to absorbed "
                                   "dose (Gy) with organ table and DVH. The truth of a seed is computed once and cached "
                                   "(in $DOSECNN_CACHE/mc_truth, else the user cache folder, e.g. "
                                   "~/.cache/dosecnn/mc_truth).")
    p.add_argument("--out", type=Path, default=Path("dosecnn_demo"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--weights", type=Path, help="CNN weights (default: the bundled demonstration model)")
    p.add_argument("--mc-decays", type=float, default=float(DEMO_DECAYS),
                   help=f"Monte Carlo decays of the truth (default {DEMO_DECAYS:,}; its noise per region is printed)")
    p.add_argument("--no-cache", action="store_true",
                   help="compute the Monte Carlo truth even when a cached one exists, and do not cache it")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int,
                   help="processes that compute the Monte Carlo truth's compartments side by side on the CPU "
                        "(default: one per core; the truth is the same with any number)")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from ImagingBasics.errors import UserError

    from .phantoms.truth_cache import check_cache_folder, default_truth_cache

    if args.weights is not None and not args.weights.is_file():
        raise UserError(f"weights file not found: {args.weights}")
    if args.mc_decays < 1000:
        raise UserError("--mc-decays must be at least 1000")
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    cache = None if args.no_cache else default_truth_cache()
    if cache is not None:
        check_cache_folder(cache)
    t0 = time.perf_counter()
    summary = run_demo(args.out, args.seed, args.weights, int(args.mc_decays), args.device,
                       say=lambda msg: print(f"[{time.perf_counter() - t0:5.0f} s] {msg}", file=sys.stderr, flush=True),
                       truth_cache=cache, workers=workers)
    print_summary(summary)
    return 0
