"""Held-out evaluation of the residual dose CNN against VDK with density scaling (Li 2020's Tables I and II).

    python bench/evaluate_dose_cnn.py COHORT_DIR [--weights W] [--out bench/results/dose_cnn] [--device cpu]
    python bench/evaluate_dose_cnn.py COHORT_DIR --rows bench/results/dose_cnn/rows.csv   # re-summarise only
    python bench/evaluate_dose_cnn.py COHORT_DIR --spect-model osem --out bench/results/dose_cnn_osem

``--spect-model osem`` replaces each case's SPECT by one simulated anew from its true activity with projections and
OSEM (DoseCNNLib.phantoms.spect_projection; same camera calibration, seeded per case and time point): how a CNN trained on
the image-domain SPECT model fares on a projected and reconstructed one.

COHORT_DIR holds phantoms written by ``dosecnn phantom`` (cohort.csv, one folder per case) that the network never
saw. For every case and time point: the SPECT -> dose rate by VDK and by VDK + CNN (:func:`DoseCNNLib.dosimetry.pipeline.
dose_rate_map`), each compared per organ and lesion with the Monte Carlo dose rate of the TRUE activity: Li 2020's mean
dose error (MDE) and NRMSE, the NRMSE also corrected for the truth's own Monte Carlo noise (its batch standard
error). Writes per-region rows (``rows.csv``), a summary per region kind (lesions, kidneys, liver, spleen) with mean
+- sd over case x time point, the relative improvement of the CNN over VDK and the share of regions improved
(``summary.csv``, ``summary.md``) and a figure (``summary.png``).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

KINDS = {"lesions": lambda name: name.startswith("lesion"), "kidneys": lambda name: "kidney" in name,
         "liver": lambda name: name == "liver", "spleen": lambda name: name == "spleen",
         "lungs": lambda name: name == "lungs", "bone": lambda name: name == "bone",
         "bowel (with gas)": lambda name: name == "bowel", "body remainder": lambda name: name == "body"}


def osem_spect(cohort: Path, row, ct, seed: int, cache: Path):
    """A SPECT of the row's true activity, simulated by projections + OSEM with the cohort's camera (kept in
    ``cache`` and reused: the simulation takes tens of seconds)."""
    from DoseCNNLib.phantoms.case import load_meta
    from DoseCNNLib.phantoms.spect_sim import SpectModel, simulate_spect
    from ImagingBasics.imageio import read_volume, write_volume

    camera = load_meta(cohort / row["case"])["spect_model"]
    model = SpectModel(reconstruction="osem", voxel_mm=camera["voxel_mm"], matrix=camera["matrix"],
                       sensitivity_cps_per_mbq=camera["sensitivity_cps_per_mbq"], duration_s=camera["duration_s"])
    path = cache / f"{row['id']}_spect_osem_seed{seed}.nrrd"
    if path.is_file():
        return read_volume(path)
    activity = read_volume(cohort / row["spect"].replace("spect_", "activity_"))
    spect = simulate_spect(activity, model, np.random.default_rng(seed), ct=ct)[0]
    cache.mkdir(parents=True, exist_ok=True)
    write_volume(spect, path)
    return spect


def evaluate(cohort: Path, weights, device: str, spect_model: str = "file", cache: Path = Path("spect_cache")):
    from DoseCNNLib.dosimetry.metrics import compare_methods
    from DoseCNNLib.dosimetry.pipeline import dose_rate_map
    from DoseCNNLib.phantoms.case import load_meta
    from ImagingBasics.imageio import read_volume

    rows = []
    with open(cohort / "cohort.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    for i, r in enumerate(manifest):
        if not r.get("reference"):
            continue
        case_dir = cohort / r["case"]
        names = {int(k): v for k, v in load_meta(case_dir)["labels"].items()}
        ct = read_volume(cohort / r["ct"])
        spect = osem_spect(cohort, r, ct, 1000 + i, cache) if spect_model == "osem" else read_volume(cohort / r["spect"])
        labels = read_volume(cohort / r["labels"])
        reference = read_volume(cohort / r["reference"])
        sd = read_volume(cohort / r["reference_sd"])
        cnn = dose_rate_map(spect, ct, bq_per_count=float(r["bq_per_count"]), method="cnn", weights=weights, device=device)
        out = compare_methods({"VDK": cnn.vdk_dose_rate_mgy_s, "CNN": cnn.dose_rate_mgy_s}, reference, labels, names, sd)
        for row in out:
            row.update({"case": r["case"], "time_h": float(r["time_h"])})
        rows += out
        print(f"{r['id']}: " + ", ".join(f"{x['name']} {x['method']} MDE {100 * x['mde']:.1f}%" for x in out
                                        if x["name"].startswith(("lesion", "right kidney"))), flush=True)
    return rows


def summarise(rows):
    """Per region kind and method: mean and sd of MDE and noise-corrected NRMSE; CNN vs VDK improvement."""
    by = defaultdict(lambda: defaultdict(list))
    paired = defaultdict(list)
    for r in rows:
        kind = next((k for k, test in KINDS.items() if test(str(r["name"]))), None)
        if kind is None:
            continue
        by[kind][r["method"]].append((r["mde"], r.get("nrmse_noise_corrected", r["nrmse"])))
        paired[(kind, r["case"], r["time_h"], r["label"])].append(r)
    out = []
    for kind in KINDS:
        if kind not in by:
            continue
        entry = {"region": kind, "n": len(by[kind]["VDK"])}
        for method in ("VDK", "CNN"):
            mde = [m for m, _ in by[kind][method]]
            nr = [n for _, n in by[kind][method]]
            entry[f"{method}_mde_mean"], entry[f"{method}_mde_sd"] = statistics.mean(mde), statistics.pstdev(mde)
            entry[f"{method}_nrmse_mean"], entry[f"{method}_nrmse_sd"] = statistics.mean(nr), statistics.pstdev(nr)
        entry["mde_improvement"] = 1 - entry["CNN_mde_mean"] / entry["VDK_mde_mean"]
        entry["nrmse_improvement"] = 1 - entry["CNN_nrmse_mean"] / entry["VDK_nrmse_mean"]
        pairs = [p for key, p in paired.items() if key[0] == kind and len(p) == 2]
        better = sum(1 for p in pairs if {x["method"]: x["mde"] for x in p}["CNN"] < {x["method"]: x["mde"] for x in p}["VDK"])
        entry["cnn_better_mde_share"] = better / max(len(pairs), 1)
        out.append(entry)
    return out


def write_outputs(rows, summary, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ImagingBasics.files import save_figure, write_csv

    write_csv(rows, out / "rows.csv")
    write_csv(summary, out / "summary.csv")
    lines = ["| region | n | MDE VDK | MDE CNN | MDE gain | NRMSE VDK | NRMSE CNN | NRMSE gain | CNN better (MDE) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['region']} | {s['n']} | {100 * s['VDK_mde_mean']:.1f} +- {100 * s['VDK_mde_sd']:.1f} % | "
                     f"{100 * s['CNN_mde_mean']:.1f} +- {100 * s['CNN_mde_sd']:.1f} % | {100 * s['mde_improvement']:.0f} % | "
                     f"{100 * s['VDK_nrmse_mean']:.1f} +- {100 * s['VDK_nrmse_sd']:.1f} % | "
                     f"{100 * s['CNN_nrmse_mean']:.1f} +- {100 * s['CNN_nrmse_sd']:.1f} % | "
                     f"{100 * s['nrmse_improvement']:.0f} % | {100 * s['cnn_better_mde_share']:.0f} % |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    x = np.arange(len(summary))
    for ax, metric, title in ((axes[0], "mde", "mean dose error (%)"), (axes[1], "nrmse", "NRMSE, noise-corrected (%)")):
        for k, method in enumerate(("VDK", "CNN")):
            mean = np.array([100 * s[f"{method}_{metric}_mean"] for s in summary])
            sd = np.array([100 * s[f"{method}_{metric}_sd"] for s in summary])
            ax.bar(x + (k - 0.5) * 0.38, mean, 0.38, yerr=[np.minimum(sd, 0.9 * mean), sd], label=method, capsize=3)
        ax.set_yscale("log")  # lung errors are tens of times those of soft-tissue organs
        ax.set_xticks(x)
        ax.set_xticklabels([s["region"] for s in summary], rotation=30, ha="right")
        ax.set_title(title, fontsize=10)
        ax.legend()
    fig.suptitle("dose rate vs Monte Carlo truth on held-out phantoms (mean +- sd over case x time point)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "summary.png", dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--weights", type=Path, default=None, help="default: the bundled model")
    ap.add_argument("--out", type=Path, default=Path("bench/results/dose_cnn"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", type=Path, help="summarise an earlier run's rows.csv instead of evaluating again")
    ap.add_argument("--spect-model", choices=["file", "osem"], default="file",
                    help="file: the cohort's SPECTs (default); osem: re-simulate them by projections + OSEM")
    ap.add_argument("--spect-cache", type=Path, default=None,
                    help="folder for the re-simulated SPECTs, reused by later runs (default: COHORT_DIR/spects_osem)")
    args = ap.parse_args()
    if args.rows:
        with open(args.rows, newline="") as f:
            rows = [{**r, "mde": float(r["mde"]), "nrmse": float(r["nrmse"]),
                     "nrmse_noise_corrected": float(r["nrmse_noise_corrected"])} for r in csv.DictReader(f)]
    else:
        rows = evaluate(args.cohort, args.weights, args.device, args.spect_model,
                        args.spect_cache or args.cohort / "spects_osem")
    summary = summarise(rows)
    write_outputs(rows, summary, args.out)


if __name__ == "__main__":
    main()
