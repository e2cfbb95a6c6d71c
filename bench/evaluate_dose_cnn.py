"""Held-out evaluation of the residual dose CNN against VDK with density scaling (Li 2020's Tables I and II).

    python bench/evaluate_dose_cnn.py COHORT_DIR [--weights W] [--out bench/results/dose_cnn] [--device cpu]
    python bench/evaluate_dose_cnn.py COHORT_DIR --rows bench/results/dose_cnn/rows.csv   # re-summarise only
    python bench/evaluate_dose_cnn.py COHORT_DIR --spect-model osem --out bench/results/dose_cnn_osem
    python bench/evaluate_dose_cnn.py COHORT_DIR --weights new/best.pt --compare bundled   # two CNNs, one pass

``--spect-model osem`` replaces each case's SPECT by one simulated anew from its true activity with projections and
OSEM (DoseCNNLib.phantoms.spect_projection; the case's camera and OSEM settings from its meta.json, seeded per case
and time point: seed 1000 + the row's index in cohort.csv): how a CNN fares on a projected and reconstructed SPECT
when the cohort's own SPECTs come from the image-domain model (the same anatomies and truths: a paired comparison).

COHORT_DIR holds phantoms written by ``dosecnn phantom`` (cohort.csv, one folder per case) that the network never
saw. For every case and time point: the SPECT -> dose rate by VDK (:func:`DoseCNNLib.dosimetry.pipeline.dose_rate_map`)
and VDK + CNN (:func:`DoseCNNLib.cnn.inference.cnn_dose_rate`, the same correction ``dosecnn run --method cnn``
adds; with ``--compare`` a second network on the same VDK), each compared per organ and lesion with the Monte Carlo
dose rate of the TRUE activity: Li 2020's mean dose error (MDE) and NRMSE, the NRMSE also corrected for the truth's
own Monte Carlo noise (its batch standard error). Writes per-region rows (``rows.csv``), a summary per region kind
(lesions, kidneys, liver, spleen, ...) with mean +- sd over case x time point, the mean signed error (MDE is its
absolute value per region: a method that smooths shows as lesions below and low-dose tissue above the truth), the
relative improvement of the CNN over VDK and the share of regions improved (``summary.csv``, ``summary.md``) and a
figure (``summary.png``); with
``--compare`` also ``summary_<name>.csv``/``.md`` for the second network.

Importable (``scripts/train_dose_model.py`` uses it): :func:`osem_spect`, :func:`evaluate`, :func:`summarise`,
:func:`write_outputs`, :func:`read_rows`.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np

KINDS = {"lesions": lambda name: name.startswith("lesion"), "kidneys": lambda name: "kidney" in name,
         "liver": lambda name: name == "liver", "spleen": lambda name: name == "spleen",
         "lungs": lambda name: name == "lungs", "bone": lambda name: name == "bone",
         "bowel (with gas)": lambda name: name == "bowel", "body remainder": lambda name: name == "body"}
#: the seed of the re-simulated OSEM SPECT of cohort.csv's row i
OSEM_SEED_BASE = 1000


def read_cohort(cohort: Path) -> List[Dict[str, str]]:
    with open(Path(cohort) / "cohort.csv", newline="") as f:
        return list(csv.DictReader(f))


def osem_model(cohort: Path, case: str):
    """The case's camera (meta.json) as an OSEM acquisition and reconstruction: every camera and OSEM field of the
    case's SPECT model (views, iterations, subsets, collimator, ...), with ``reconstruction="osem"``."""
    import dataclasses

    from DoseCNNLib.phantoms.case import load_meta
    from DoseCNNLib.phantoms.spect_sim import SpectModel

    camera = load_meta(Path(cohort) / case)["spect_model"]
    fields = {f.name for f in dataclasses.fields(SpectModel)}
    return SpectModel(**{**{k: v for k, v in camera.items() if k in fields}, "reconstruction": "osem"})


def osem_spect_path(cache: Path, row, seed: int) -> Path:
    return Path(cache) / f"{row['id']}_spect_osem_seed{seed}.nrrd"


def osem_spect(cohort: Path, row, ct, seed: int, cache: Path, device: str = "cpu"):
    """A SPECT of the row's true activity, simulated by projections + OSEM with the cohort's camera (kept in
    ``cache`` and reused: the simulation takes tens of seconds). ``ct``: the case's CT (read when None)."""
    from DoseCNNLib.phantoms.spect_sim import simulate_spect
    from ImagingBasics.imageio import read_volume, write_volume

    cohort = Path(cohort)
    path = osem_spect_path(cache, row, seed)
    if path.is_file():
        return read_volume(path)
    model = osem_model(cohort, row["case"])
    ct = ct if ct is not None else read_volume(cohort / row["ct"])
    activity = read_volume(cohort / row["spect"].replace("spect_", "activity_"))
    spect = simulate_spect(activity, model, np.random.default_rng(seed), ct=ct, device=device)[0]
    Path(cache).mkdir(parents=True, exist_ok=True)
    write_volume(spect, path)  # written atomically: a stopped run leaves no half file
    return spect


def evaluate(cohort: Path, weights=None, device: str = "cpu", spect_model: str = "file",
             cache: Path = Path("spect_cache"), say: Optional[Callable[[str], None]] = print) -> List[Dict[str, object]]:
    """Rows of :func:`DoseCNNLib.dosimetry.metrics.compare_methods` for every case x time point with a reference.

    ``weights``: a weights file, None (the bundled model), or a mapping method name -> weights (None: the bundled
    model) to score several CNNs against one VDK; a single weights file is named ``CNN``. ``spect_model``: ``file``
    (the cohort's SPECTs) or ``osem`` (:func:`osem_spect`, cached in ``cache``)."""
    from DoseCNNLib.cnn.inference import cnn_dose_rate
    from DoseCNNLib.cnn.weights import resolve_weights
    from DoseCNNLib.dosimetry.metrics import compare_methods
    from DoseCNNLib.dosimetry.pipeline import dose_rate_map
    from DoseCNNLib.phantoms.case import load_meta
    from ImagingBasics.imageio import read_volume

    if spect_model not in ("file", "osem"):
        raise ValueError(f"unknown SPECT model {spect_model!r}: file or osem")
    cohort = Path(cohort)
    named = dict(weights) if isinstance(weights, Mapping) else {"CNN": weights}
    models = {name: resolve_weights(w, device) for name, w in named.items()}  # loaded once
    rows: List[Dict[str, object]] = []
    for i, r in enumerate(read_cohort(cohort)):
        if not r.get("reference"):
            continue
        names = {int(k): v for k, v in load_meta(cohort / r["case"])["labels"].items()}
        ct = read_volume(cohort / r["ct"])
        spect = (osem_spect(cohort, r, ct, OSEM_SEED_BASE + i, cache, device) if spect_model == "osem"
                 else read_volume(cohort / r["spect"]))
        labels = read_volume(cohort / r["labels"])
        reference = read_volume(cohort / r["reference"])
        sd = read_volume(cohort / r["reference_sd"])
        vdk = dose_rate_map(spect, ct, bq_per_count=float(r["bq_per_count"]), method="vdk", device=device)
        maps = {"VDK": vdk.dose_rate_mgy_s}
        for name, model in models.items():
            maps[name] = cnn_dose_rate(vdk.activity_bq, ct, vdk.vdk_dose_rate_mgy_s, weights=model, device=device)[0]
        out = compare_methods(maps, reference, labels, names, sd)
        for row in out:
            row.update({"case": r["case"], "time_h": float(r["time_h"])})
        rows += out
        if say is not None:
            say(f"{r['id']}: " + ", ".join(f"{x['name']} {x['method']} MDE {100 * x['mde']:.1f}%" for x in out
                                           if x["name"].startswith(("lesion", "right kidney"))))
    return rows


def read_rows(path: Path) -> List[Dict[str, object]]:
    """The rows of an earlier run's ``rows.csv`` (numbers as numbers)."""
    with open(path, newline="") as f:
        return [{**r, "mde": float(r["mde"]), "nrmse": float(r["nrmse"]), "time_h": float(r["time_h"]),
                 "nrmse_noise_corrected": float(r.get("nrmse_noise_corrected") or r["nrmse"])}
                for r in csv.DictReader(f)]


def summarise(rows, method: str = "CNN", baseline: str = "VDK"):
    """Per region kind: mean and sd of MDE and noise-corrected NRMSE of ``baseline`` and ``method``, and their mean
    signed error (region mean / truth mean - 1, averaged: the direction MDE hides); the relative improvement of
    ``method`` over ``baseline`` (1 - method / baseline) and the share of regions it improves. The keys name the
    methods ``VDK`` and ``CNN`` whatever ``method`` is called in the rows."""
    by = defaultdict(lambda: defaultdict(list))
    signed = defaultdict(lambda: defaultdict(list))
    paired = defaultdict(dict)
    roles = {baseline: "VDK", method: "CNN"}
    for r in rows:
        kind = next((k for k, test in KINDS.items() if test(str(r["name"]))), None)
        role = roles.get(str(r["method"]))
        if kind is None or role is None:
            continue
        by[kind][role].append((float(r["mde"]), float(r.get("nrmse_noise_corrected", r["nrmse"]))))
        signed[kind][role].append(signed_error(r))
        paired[(kind, r["case"], float(r["time_h"]), str(r["label"]))][role] = float(r["mde"])
    out = []
    for kind in KINDS:
        if kind not in by or not by[kind]["VDK"] or not by[kind]["CNN"]:
            continue
        entry = {"region": kind, "n": len(by[kind]["VDK"])}
        for role in ("VDK", "CNN"):
            mde = [m for m, _ in by[kind][role]]
            nr = [n for _, n in by[kind][role]]
            entry[f"{role}_mde_mean"], entry[f"{role}_mde_sd"] = statistics.mean(mde), statistics.pstdev(mde)
            entry[f"{role}_nrmse_mean"], entry[f"{role}_nrmse_sd"] = statistics.mean(nr), statistics.pstdev(nr)
            bias = [b for b in signed[kind][role] if b is not None]
            entry[f"{role}_signed_error_mean"] = statistics.mean(bias) if bias else None
        entry["mde_improvement"] = 1 - entry["CNN_mde_mean"] / entry["VDK_mde_mean"]
        entry["nrmse_improvement"] = 1 - entry["CNN_nrmse_mean"] / entry["VDK_nrmse_mean"]
        pairs = [p for key, p in paired.items() if key[0] == kind and len(p) == 2]
        entry["cnn_better_mde_share"] = sum(1 for p in pairs if p["CNN"] < p["VDK"]) / max(len(pairs), 1)
        out.append(entry)
    return out


def signed_error(row) -> Optional[float]:
    """A row's region mean over the truth's, minus 1 (None where the row lacks the means or the truth's is 0)."""
    try:
        estimate, reference = float(row["mean_estimate"]), float(row["mean_reference"])
    except (KeyError, TypeError, ValueError):
        return None
    return estimate / reference - 1.0 if reference > 0 else None


def summary_table(summary, label: str = "CNN") -> List[str]:
    """The markdown table of a :func:`summarise` result (``label`` names the CNN in the header)."""
    lines = [f"| region | n | MDE VDK | MDE {label} | MDE gain | signed error VDK / {label} | NRMSE VDK | NRMSE {label} "
             f"| NRMSE gain | {label} better (MDE) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['region']} | {s['n']} | {100 * s['VDK_mde_mean']:.1f} +- {100 * s['VDK_mde_sd']:.1f} % | "
                     f"{100 * s['CNN_mde_mean']:.1f} +- {100 * s['CNN_mde_sd']:.1f} % | {100 * s['mde_improvement']:.0f} % | "
                     f"{_signed(s.get('VDK_signed_error_mean'))} / {_signed(s.get('CNN_signed_error_mean'))} | "
                     f"{100 * s['VDK_nrmse_mean']:.1f} +- {100 * s['VDK_nrmse_sd']:.1f} % | "
                     f"{100 * s['CNN_nrmse_mean']:.1f} +- {100 * s['CNN_nrmse_sd']:.1f} % | "
                     f"{100 * s['nrmse_improvement']:.0f} % | {100 * s['cnn_better_mde_share']:.0f} % |")
    return lines


def _signed(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:+.0f} %"


def write_outputs(rows, summary, out: Path, figure: bool = True, quiet: bool = False) -> None:
    """``rows.csv``, ``summary.csv``, ``summary.md`` and (``figure``) ``summary.png`` in ``out``."""
    from ImagingBasics.files import write_csv

    out = Path(out)
    write_csv(rows, out / "rows.csv")
    write_csv(summary, out / "summary.csv")
    lines = summary_table(summary)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines))
    if figure:
        summary_figure(summary, out / "summary.png")


def summary_figure(summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ImagingBasics.files import save_figure

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
    save_figure(fig, path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--weights", type=Path, default=None, help="default: the bundled model")
    ap.add_argument("--compare", metavar="WEIGHTS",
                    help="a second CNN scored on the same VDK maps ('bundled': the bundled model): summary_compare.*")
    ap.add_argument("--out", type=Path, default=Path("bench/results/dose_cnn"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", type=Path, help="summarise an earlier run's rows.csv instead of evaluating again")
    ap.add_argument("--spect-model", choices=["file", "osem"], default="file",
                    help="file: the cohort's SPECTs (default); osem: re-simulate them by projections + OSEM")
    ap.add_argument("--spect-cache", type=Path, default=None,
                    help="folder for the re-simulated SPECTs, reused by later runs (default: COHORT_DIR/spects_osem)")
    args = ap.parse_args()
    if args.rows:
        rows = read_rows(args.rows)
    else:
        weights = {"CNN": args.weights}
        if args.compare:
            weights["compare"] = None if args.compare == "bundled" else Path(args.compare)
        rows = evaluate(args.cohort, weights, args.device, args.spect_model,
                        args.spect_cache or args.cohort / "spects_osem")
    write_outputs(rows, summarise(rows), args.out)
    if any(r["method"] == "compare" for r in rows):
        from ImagingBasics.files import write_csv

        other = summarise(rows, "compare")
        write_csv(other, args.out / "summary_compare.csv")
        (args.out / "summary_compare.md").write_text("\n".join(summary_table(other, "compared CNN")) + "\n")


if __name__ == "__main__":
    main()
