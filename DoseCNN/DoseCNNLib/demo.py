"""``dosecnn demo``: one synthetic Lu-177 patient through every step, compared with its Monte Carlo truth.

1. :func:`.phantoms.case.generate_case`: a torso with known kinetics, SPECTs at 4, 24, 96 and 168 h and the Monte
   Carlo dose rate of the true activity (``out/patient``).
2. First time point: dose rate by VDK with density scaling and by the residual CNN (the bundled demonstration model,
   or ``--weights``), each compared with the Monte Carlo truth per organ and lesion: Li 2020's mean dose error (MDE) and
   NRMSE (noise-corrected for the truth's Monte Carlo noise) -> ``comparison.csv``, ``comparison.png``.
3. :func:`.dosimetry.integrate.run_integrate` over the four time points -> absorbed dose (Gy), organ table, DVH
   (``out/results/integrate``), and the organs' mean absorbed dose against the truth.
4. ``overview.png``: CT, truth, VDK and CNN dose rate, and the absorbed dose.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ImagingBasics.volume import Volume


def run_demo(out: Path, seed: int = 1, weights: Optional[Path] = None, mc_decays: int = 2_000_000,
             device: str = "cpu", say: Callable[[str], None] = lambda msg: None,
             grid: Optional[tuple] = None) -> Dict[str, object]:
    """Steps 1-4 of the module docstring; returns the summary (also written to ``out/results/demo.json``).

    ``grid``: ((nx, ny, nz), spacing mm) instead of the ``small`` phantom (tests)."""
    from ImagingBasics.files import write_csv, write_json
    from ImagingBasics.imageio import write_volume

    from .cnn.weights import bundled_weights
    from .dosimetry.integrate import run_integrate
    from .dosimetry.metrics import compare_methods, comparison_figure
    from .dosimetry.pipeline import dose_rate_map
    from .phantoms.case import generate_case, write_case

    t0 = time.perf_counter()
    out = Path(out)
    say("1/4 synthetic patient (anatomy, kinetics, SPECTs, Monte Carlo truth)")
    case = generate_case(seed, "small", mc_decays=mc_decays, device=device, grid_override=grid,
                         progress=lambda m: say(f"    {m}"))
    folder = write_case(case, out / "patient", preview=True)
    names = {int(k): v for k, v in case.meta["labels"].items()}
    bq_per_count = case.meta["spect_model"]["bq_per_count"]
    results = out / "results"

    cnn_weights = Path(weights) if weights else bundled_weights()  # None: VDK only
    say(f"2/4 dose rate at {case.times_h[0]:g} h: VDK" + (" and CNN" if cnn_weights else " (no CNN weights found)"))
    vdk = dose_rate_map(case.spect[0], case.ct, bq_per_count=bq_per_count, method="vdk", device=device)
    estimates: Dict[str, Volume] = {"VDK": vdk.dose_rate_mgy_s}
    write_volume(vdk.dose_rate_mgy_s, results / "dose_rate_vdk.nrrd")
    if cnn_weights is not None:
        cnn = dose_rate_map(case.spect[0], case.ct, bq_per_count=bq_per_count, method="cnn", weights=cnn_weights,
                            device=device)
        estimates["CNN"] = cnn.dose_rate_mgy_s
        write_volume(cnn.dose_rate_mgy_s, results / "dose_rate_cnn.nrrd")
    rows = compare_methods(estimates, case.dose_rate_mgy_s[0], case.labels, names, case.dose_rate_sd_mgy_s[0])
    write_csv(rows, results / "comparison.csv")
    comparison_figure(rows, results / "comparison.png", title=f"dose rate at {case.times_h[0]:g} h vs Monte Carlo truth")

    method = "cnn" if cnn_weights is not None else "vdk"
    say(f"3/4 time integration of {len(case.times_h)} time points ({method.upper()})")
    integ = run_integrate(folder / "timepoints.csv", results / "integrate", labels_path=folder / "labels.nrrd",
                          names=names, method=method, weights=cnn_weights, device=device,
                          progress=lambda m: say(f"    {m}"))
    truth = {r["label"]: r for r in case.meta["per_label"]}
    organ_table = _organ_table(integ, truth)
    write_csv(organ_table, results / "absorbed_dose_vs_truth.csv")

    say("4/4 overview figure")
    overview_figure(case, estimates, results / "overview.png")
    summary = {"seconds": time.perf_counter() - t0, "seed": seed, "weights": str(cnn_weights) if cnn_weights else None,
               "comparison": rows, "absorbed_dose": organ_table, "patient": str(folder), "results": str(results),
               "note": "synthetic phantom and a demonstration model trained on synthetic data; not for clinical use"}
    write_json(summary, results / "demo.json")
    return summary


def _organ_table(integ: Dict[str, object], truth: Dict[int, dict]) -> List[Dict[str, object]]:
    """Per label: mean absorbed dose estimated (voxel map) and true (Monte Carlo of the true kinetics), error %."""
    rows = []
    for r in integ.get("organs", []):
        label = int(r["label"])
        if label not in truth or "mean_absorbed_dose_gy" not in truth[label]:
            continue
        est = float(r["mean_dose_gy_voxel_map"])
        ref = float(truth[label]["mean_absorbed_dose_gy"])
        rows.append({"label": label, "name": truth[label]["name"], "estimate_gy": est, "truth_gy": ref,
                     "error_percent": 100.0 * (est - ref) / ref if ref > 0 else float("nan")})
    return rows


def overview_figure(case, estimates: Dict[str, Volume], path: Path) -> None:
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
    panels = [("Monte Carlo truth", truth)] + [(name, radiological_view(v).coronal(j)) for name, v in estimates.items()]
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


def print_summary(summary: Dict[str, object], file=sys.stdout) -> None:
    print("dose rate vs Monte Carlo truth (MDE and NRMSE, %; NRMSE corrected for the truth's noise):", file=file)
    print(f"  {'region':<28} {'method':<6} {'MDE %':>7} {'NRMSE %':>8}", file=file)
    for r in summary["comparison"]:
        nrmse = r.get("nrmse_noise_corrected", r["nrmse"])
        print(f"  {str(r['name'])[:28]:<28} {r['method']:<6} {100 * r['mde']:7.1f} {100 * nrmse:8.1f}", file=file)
    print("mean absorbed dose vs truth:", file=file)
    for r in summary["absorbed_dose"]:
        print(f"  {str(r['name'])[:28]:<28} {r['estimate_gy']:8.3f} Gy  truth {r['truth_gy']:8.3f} Gy  "
              f"({r['error_percent']:+.1f} %)", file=file)
    print(f"results in {summary['results']} ({summary['seconds']:.0f} s); {summary['note']}", file=file)


def add_demo_command(sub) -> None:
    p = sub.add_parser("demo", help="one synthetic Lu-177 patient through every step, compared with its Monte Carlo truth",
                       description="Generate a synthetic patient (torso, kinetics, SPECTs at 4/24/96/168 h, Monte Carlo "
                                   "truth), compute the dose rate by VDK and by VDK + the residual CNN (bundled "
                                   "demonstration model) and compare them with the truth per organ and lesion (MDE, "
                                   "NRMSE), integrate the time points to absorbed dose (Gy) with organ table and DVH.")
    p.add_argument("--out", type=Path, default=Path("dosecnn_demo"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--weights", type=Path, help="CNN weights (default: the bundled demonstration model)")
    p.add_argument("--mc-decays", type=float, default=2e6, help="Monte Carlo decays of the truth (default 2e6)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from ImagingBasics.errors import UserError

    if args.weights is not None and not args.weights.is_file():
        raise UserError(f"weights file not found: {args.weights}")
    if args.mc_decays < 1000:
        raise UserError("--mc-decays must be at least 1000")
    t0 = time.perf_counter()
    summary = run_demo(args.out, args.seed, args.weights, int(args.mc_decays), args.device,
                       say=lambda msg: print(f"[{time.perf_counter() - t0:5.0f} s] {msg}", file=sys.stderr, flush=True))
    print_summary(summary)
    return 0
