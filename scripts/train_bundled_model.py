"""Train the bundled demonstration model and write its model card (the recipe of issue 4, mirroring Ren 2022 Front Oncol).

    python scripts/train_bundled_model.py --out /tmp/bundled [--install]

Steps (each skipped when its result is already in --out, so a stopped run continues):

1. Cohorts (synthetic, ``ctpm phantom``): pre-training without tumours, fine-tuning with a tumour in every patient,
   and a held-out test cohort with tumours (never seen in training). Half of every cohort are small phantoms
   (128 x 128 at 3.9 mm, 5 mm slices: what ``ctpm demo`` makes), half full-size (512 x 512 at 0.98 mm, 1.25-3.75 mm
   slices: clinical CT), so the model meets both resolutions.
2. Preprocessing through the inference pipeline (registration, built-in lung segmentation, equations 1-2), cached.
3. ARNN: pre-train on the pre-training cohort; fine-tune from it on the fine-tuning cohort (encoder frozen for the
   first epochs, lower learning rate). Validation patients (20 %) pick the best epoch in both.
4. 3D U-Net with the same budget: the same cohorts, epochs, batch size and schedule.
5. Held-out scores per patient (both hemi-lung samples together): Spearman R, Pearson r, SSIM, DSC high/low against
   the normalised SPECT for the fine-tuned ARNN, the pre-trained-only ARNN, the fine-tuned U-Net and the HU-only
   baseline, and Spearman R against the phantoms' truth perfusion; Wilcoxon signed-rank tests.
6. Writes ``ctpm_arnn.pt`` (fine-tuned ARNN, float16), ``MODEL_CARD.md``, ``model_card.json``, ``scores.csv`` and
   ``held_out.png``.
7. Real CTs (when ``--real-data`` holds them, by default ``../shared/data``): the physiological plausibility measures
   of ``bench/real_ct_plausibility.py`` with the new weights (report and figures in ``--out``), their table in the card.
8. Acceptance (:func:`synthetic_acceptance`: ARNN >= HU baseline + 0.10 Spearman R, not below the U-Net of the same
   budget, DSC high and low >= 0.75, on the held-out patients; and the real-CT criteria where judged) in the card;
   ``--install`` copies the weights and the card into CTPerfusionMapping/Resources/Models/ only when the synthetic
   acceptance holds (exit status 1 otherwise).

On a lent GPU machine (no real CTs there), steps 1-6 run in one device call through ``bench/gpu_train.sh ctpm`` (its
budget and the device-tool recipe are in its header and docs/VALIDATION.md); the files it sends back are finished
here: ``python scripts/train_bundled_model.py --out DIR --finish-from RETURNED [--install]`` (steps 7-8 only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "CTPerfusionMapping" / "Resources" / "Models"
PREDICTORS = ("arnn", "arnn_pretrained", "unet", "hu_baseline")
#: the per-patient held-out measures of the card
METRICS = ("spearman", "pearson", "ssim", "dsc_high", "dsc_low", "spearman_truth")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_cohorts(out: Path, args, names=("pretrain", "finetune", "test")) -> dict:
    """The pooled cohorts (manifests): pretrain (no tumours), finetune and test (a tumour in every patient)."""
    from CTPerfusionMappingLib.synthetic.cohort import generate_cohort, write_manifest

    plan = {"pretrain": (args.n_pretrain, {"tumour": 0.0}, args.seed),
            "finetune": (args.n_finetune, {"tumour": 1.0}, args.seed + 1),
            "test": (args.n_test, {"tumour": 1.0}, args.seed + 2)}
    manifests = {}
    for name in names:
        n, pathology, seed = plan[name]
        manifest = out / "cohorts" / f"{name}.csv"
        if not manifest.is_file():
            folders = []
            for k, size in enumerate(("small", "full")):
                count = cohort_count(n, size, args.sizes)
                if count == 0:
                    continue
                t0 = time.perf_counter()
                folders += generate_cohort(out / "cohorts" / f"{name}_{size}", count, seed * 10 + k, size,
                                           pathology_probabilities=pathology, workers=args.workers,
                                           prefix=f"{name}_{size}", acquisition=args.acquisition,
                                           keep_complete=True)
                log(f"cohort {name}: {count} {size} phantoms in {time.perf_counter() - t0:.0f} s")
            write_manifest(manifest, folders)
        manifests[name] = manifest
    return manifests


def cohort_count(n: int, size: str, sizes: str) -> int:
    """Phantoms of ``size`` in a cohort of ``n``: half small, half full-size (``sizes`` "both"), or all small."""
    if sizes == "small":
        return n if size == "small" else 0
    return n // 2 if size == "small" else n - n // 2


def finish_from(run: Path, out: Path, args) -> int:
    """``--finish-from``: steps 7-8 here on a run made elsewhere (``run`` holds what bench/gpu_train.sh sends back from
    a GPU machine: ctpm_arnn.pt, model_card.json, and scores.csv, held_out.png, run.log when there), copied into
    ``out`` first. Exit status 2 with one ``error:`` line when the run is incomplete."""
    run = Path(run)
    missing = [name for name in ("ctpm_arnn.pt", "model_card.json") if not (run / name).is_file()]
    if missing:
        print(f"error: {run} is not a finished training run (missing {', '.join(missing)})", file=sys.stderr)
        return 2
    try:
        card = json.loads((run / "model_card.json").read_text())
        card["held_out"], card["tests"]
    except (ValueError, KeyError, TypeError):
        print(f"error: {run / 'model_card.json'} is not a model card of this script", file=sys.stderr)
        return 2
    if run.resolve() != out.resolve():
        for name in ("ctpm_arnn.pt", "model_card.json", "scores.csv", "held_out.png", "run.log"):
            if (run / name).is_file():
                shutil.copy2(run / name, out / name)
    log(f"finishing the run of {card.get('machine', 'another machine')} from {run}")
    return finish(out, card, args)


def training_domain(manifests: dict) -> dict:
    """What CTs the model was trained on, from the cohorts' meta.json: voxel sizes, slice thicknesses, kernel MTF50,
    noise, contrast and the share of cases with each acquisition effect (training and validation cohorts only).
    ``in_plane_mm``, ``slice_mm`` and ``lung_median_hu`` (widened by 40 HU) are what ``ctpm run`` checks a CT against
    (CTPerfusionMappingLib.quality.model_domain)."""
    import numpy as np

    from ImagingBasics.imageio import read_volume
    from ImagingBasics.manifest import read_manifest

    metas, medians = [], []
    for name in ("pretrain", "finetune"):
        manifest = Path(manifests[name])
        for row in read_manifest(manifest, required=("id", "ct")):
            folder = manifest.parent / Path(row["ct"]).parent
            metas.append(json.loads((folder / "meta.json").read_text()))
            lungs = read_volume(folder / "lungs.nrrd").array > 0
            medians.append(float(np.median(read_volume(folder / "ct.nrrd").array[lungs])))
    spacing = np.array([m["ct"]["spacing_mm"] for m in metas])
    acq = [m.get("acquisition", {"enabled": False}) for m in metas]
    on = [a for a in acq if a["enabled"]]

    def span(values):
        values = [float(v) for v in values]
        return [min(values), max(values)] if values else None

    return {
        "in_plane_mm": span(spacing[:, 0]), "slice_mm": span(spacing[:, 2]),
        "lung_median_hu": [min(medians) - 40.0, max(medians) + 40.0],
        "cases": len(metas),
        "pixel_mm": span(spacing[:, 0]), "slice_spacing_mm": span(spacing[:, 2]),
        "randomised_acquisition": len(on),
        "kernel_mtf50_lp_mm": span(a["mtf50_lp_mm"] for a in on),
        "noise_hu": span(a["noise_hu"] for a in on),
        "contrast_share": float(np.mean([a["contrast_hu"] > 0 for a in on])) if on else 0.0,
        "downsampled_share": float(np.mean([bool(a["downsampled_mm"]) for a in on])) if on else 0.0,
        "cut_field_of_view_share": float(np.mean([a["apex_cut_mm"] > 0 or a["base_cut_mm"] > 0 for a in on])) if on else 0.0,
        "breathing_share": float(np.mean([a["breathing_mm"] > 0 for a in on])) if on else 0.0,
    }


def truth_manifest(test_manifest: Path) -> Path:
    """The test manifest with each patient's truth perfusion in place of the SPECT (already on the CT grid)."""
    from ImagingBasics.files import write_csv
    from ImagingBasics.manifest import read_manifest

    rows = read_manifest(test_manifest, required=("id", "ct", "spect"))
    base = test_manifest.parent
    out = [{"id": r["id"], "ct": str(base / r["ct"]), "spect": str(base / r["perfusion_truth"]),
            "lungs": str(base / r["lungs"]), "lobes": str(base / r["lobes"]), "group": r.get("group", "")}
           for r in rows]
    path = test_manifest.with_name("test_truth.csv")
    write_csv(out, path)
    return path


def train_stage(name: str, out: Path, network, config, samples, init=None) -> dict:
    """Train (or reuse a finished) stage; return its summary."""
    from CTPerfusionMappingLib.training.dataset import split_by_patient
    from CTPerfusionMappingLib.training.trainer import train
    from CTPerfusionMappingLib.weights import load_weights, save_weights

    folder = out / name
    done = folder / "summary.json"
    if done.is_file():
        log(f"{name}: already trained")
        return json.loads(done.read_text())
    train_s, val_s = split_by_patient(samples, 0.2, config.seed)
    t0 = time.perf_counter()

    def progress(epoch, total, row):
        if epoch == 0:
            log(f"{name}: the initial weights on the validation patients: val R {row['val_spearman']:.3f}")
            return
        log(f"{name} epoch {epoch}/{total}: loss {row['train_loss']:.4f} val R {row['val_spearman']:.3f} "
            f"({row['samples_per_second']:.1f} hemi-lungs/s)")

    summary = train(network, train_s, val_s, folder, config, init, resume=(folder / "checkpoint.pt").is_file(),
                    progress=progress)
    summary.update(seconds=time.perf_counter() - t0, train_hemilungs=len(train_s), validation_hemilungs=len(val_s))
    model, config, meta = load_weights(folder / "best.pt")
    save_weights(model, config, folder / "best_fp16.pt", meta, half=True)  # half the size, to copy elsewhere
    done.write_text(json.dumps(summary, indent=2))
    (folder / "checkpoint.pt").unlink(missing_ok=True)  # optimiser state is not needed any more (90 MB)
    return summary


def score_all(weights: dict, test, test_truth, device: str) -> list:
    """Per-hemi-lung and per-patient rows for every predictor, against the SPECT (and Spearman vs the truth)."""
    from CTPerfusionMappingLib.metrics import spearman_r
    from CTPerfusionMappingLib.training.crossval import predict_samples, score_samples
    from CTPerfusionMappingLib.weights import load_weights

    rows = []
    predictions = {"hu_baseline": [s.ct_input for s in test]}
    for name, path in weights.items():
        predictions[name] = predict_samples(load_weights(path, device=device)[0], test, device)
    truth = {(s.case_id, s.side): s for s in test_truth}
    for name, preds in predictions.items():
        part = score_samples(preds, test, name)
        for r in part:  # truth agreement: same voxels, the truth preprocessed like the SPECT
            idx = [i for i, s in enumerate(test) if s.case_id == r["patient"]
                   and (r["scope"] == "patient" or ("right" if s.side == 1 else "left") == r["scope"])]
            p = [preds[i][test[i].mask] for i in idx]
            t = [truth[(test[i].case_id, test[i].side)].reference[test[i].mask] for i in idx]
            import numpy as np

            r["spearman_truth"] = spearman_r(np.concatenate(p), np.concatenate(t))
            r["size"] = "full" if "_full" in r["patient"] else "small"
        rows += part
    return rows


def transfer_cv(out: Path, args, pretrained: Path, fine_cfg, network) -> dict:
    """Ren 2022 Front Oncol's design: the pre-trained model fine-tuned in k-fold cross-validation over all tumour patients (the
    fine-tuning and test cohorts pooled); per held-out patient, fine-tuned vs pre-trained-only (Wilcoxon)."""
    from CTPerfusionMappingLib.synthetic.cohort import write_manifest
    from CTPerfusionMappingLib.training.crossval import cross_validate
    from CTPerfusionMappingLib.training.dataset import load_samples

    manifests = make_cohorts(out, args, ("finetune", "test"))
    folders = []
    for name in ("finetune", "test"):
        folders += [out / "cohorts" / f"{name}_{size}" / p.name for size in ("small", "full")
                    for p in sorted((out / "cohorts" / f"{name}_{size}").glob(f"{name}_{size}*")) if p.is_dir()]
    pooled = out / "cohorts" / "tumour_all.csv"
    write_manifest(pooled, folders)
    samples = load_samples(pooled, out / "cache", workers=args.workers)
    del manifests
    t0 = time.perf_counter()
    result = cross_validate(samples, args.cv_folds, network, fine_cfg, out / "transfer_cv", pretrained,
                            progress=lambda f, k, msg: log(f"transfer CV {msg}"))
    result["seconds"] = time.perf_counter() - t0
    (out / "transfer_cv" / "cv_summary.json").write_text(json.dumps(result, indent=2))
    t = result["fine_tuned_vs_pretrained"]
    log(f"transfer CV ({len(folders)} tumour patients, {args.cv_folds} folds): fine-tuned - pre-trained Spearman "
        f"{t['mean_difference']:+.3f}, better in {t['b_better']}/{t['patients']}, p = {t['p_value']:.3g}")
    return result


def transfer_card(cv: dict) -> dict:
    """The model card's summary of :func:`transfer_cv`'s result."""
    return {"folds": len(cv["folds"]), "patients": sum(len(f) for f in cv["folds"]),
            "fine_tune_epochs": cv["train"]["epochs"], "lr": cv["train"]["lr"],
            "freeze_encoder_epochs": cv["train"]["freeze_encoder_epochs"],
            "spearman": {k: cv["summary"][k]["patient"]["spearman"] for k in ("model", "pretrained", "hu_baseline")},
            "per_fold_spearman": {f: {k: v[k]["patient"]["spearman"]["mean"] for k in v} for f, v in cv["per_fold"].items()},
            "test": cv["fine_tuned_vs_pretrained"]}


def patient_stats(rows, predictor: str, metric: str, size: str = "") -> dict:
    import numpy as np

    v = np.array([r[metric] for r in rows if r["predictor"] == predictor and r["scope"] == "patient"
                  and (not size or r["size"] == size)], float)
    v = v[np.isfinite(v)]
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
            "min": float(v.min()), "n": int(v.size)}


#: the held-out synthetic acceptance of the training issue (and issue 17): Spearman R margin over the HU baseline,
#: and the minimum mean DSC of the high and low functional volumes
MIN_GAIN_OVER_BASELINE = 0.10
MIN_DSC = 0.75


def synthetic_acceptance(held_out: dict) -> dict:
    """The held-out synthetic acceptance from the card's ``held_out`` means: ``checks`` (name -> bool) and ``holds``
    (all checks, and the U-Net compared: without it "not below the U-Net" cannot be judged)."""
    arnn = held_out["arnn"]
    checks = {
        "spearman_at_least_baseline_plus_0.10":
            arnn["spearman"]["mean"] >= held_out["hu_baseline"]["spearman"]["mean"] + MIN_GAIN_OVER_BASELINE,
        "dsc_high_at_least_0.75": arnn["dsc_high"]["mean"] >= MIN_DSC,
        "dsc_low_at_least_0.75": arnn["dsc_low"]["mean"] >= MIN_DSC,
    }
    if "unet" in held_out:
        checks["spearman_not_below_unet"] = arnn["spearman"]["mean"] >= held_out["unet"]["spearman"]["mean"]
    return {"checks": checks, "holds": "unet" in held_out and all(checks.values())}


def real_ct_card(weights: Path, data: Path, out: Path) -> dict:
    """Step 7: the plausibility measures of the new weights on every real CT in ``data/real`` (report and figures in
    ``out``); the card's rows (network map) and the acceptance over the CTs with both lungs in view. Empty when there
    are no real CTs."""
    if not (Path(data) / "real").is_dir():
        log(f"real CTs: none at {data}/real; the card has no real-CT table")
        return {}
    sys.path.insert(0, str(ROOT / "bench"))
    import real_ct_plausibility as plausibility

    from CTPerfusionMappingLib.run_cli import load_model

    model, info = load_model(str(weights), False, "cpu")
    cases = plausibility.plausibility_cases(Path(data), model, info, say=log)
    plausibility.write_report(cases, out, info)
    rows = []
    for c in cases:
        if c.error is not None:
            rows.append({"case": c.name, "error": c.error})
            continue
        m = c.measures["network"]
        rows.append({"case": c.name, "lungs": "cut by the field of view" if c.truncated else "whole",
                     "posterior_to_anterior": [m[s]["posterior_to_anterior"] for s in ("right", "left")],
                     "right_share": c.shares["network"],
                     "emphysema_to_rest": [m[s]["emphysema_to_rest"] for s in ("right", "left")],
                     "passed": c.passed["network"]})
    return {"rows": rows, "acceptance": plausibility.acceptance_summary(cases)}


#: the real CTs and dependent-density ramps (HU) of the card's gravity-cue table (bench/gravity_cue.py)
GRAVITY_CASES = ("cip ct-64", "cip TestInput")
GRAVITY_RAMPS_HU = (0.0, 80.0)


def gravity_card(weights: Path, data: Path) -> dict:
    """Step 7b: where the new weights' gravity gradient comes from (:mod:`gravity_cue`): the posterior/anterior
    ratio on the real COPD CTs as they are, with an 80 HU dependent-density ramp added, and with a uniform lung (what
    position alone gives). Empty without real CTs."""
    if not (Path(data) / "real").is_dir():
        return {}
    sys.path.insert(0, str(ROOT / "bench"))
    import gravity_cue
    from real_data_report import CASES

    from CTPerfusionMappingLib.run_cli import load_model

    model, info = load_model(str(weights), False, "cpu")
    tables = {name: gravity_cue.ramp_table(reader(Path(data)), model, info, GRAVITY_RAMPS_HU, uniform=True)
              for name, _, reader in CASES if name in GRAVITY_CASES}
    log("gravity cue: " + "; ".join(f"{name} P/A network right/left " + ", ".join(
        f"{gravity_cue.row_label(r)}: {r['network_right']:.2f}/{r['network_left']:.2f}" for r in rows)
        for name, rows in tables.items()))
    return tables


def held_out_figure(rows, path: Path) -> None:
    """Per-patient Spearman R vs SPECT of the four predictors, one line per patient (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ImagingBasics.files import save_figure

    patients = sorted({r["patient"] for r in rows if r["scope"] == "patient"})
    order = ["hu_baseline", "arnn_pretrained", "unet", "arnn"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, metric, title in ((axes[0], "spearman", "vs SPECT"), (axes[1], "spearman_truth", "vs truth perfusion")):
        for p in patients:
            v = [next(r[metric] for r in rows if r["patient"] == p and r["scope"] == "patient" and r["predictor"] == k)
                 for k in order]
            ax.plot(range(len(order)), v, marker="o", color="tab:blue" if "_full" in p else "tab:orange", alpha=0.6)
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(["HU baseline", "ARNN\npre-trained", "U-Net\nfine-tuned", "ARNN\nfine-tuned"])
        ax.set_ylabel(f"per-patient Spearman R {title}")
        ax.set_title(f"held-out patients ({len(patients)}); blue full-size, orange small", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-pretrain", type=int, default=48)
    ap.add_argument("--n-finetune", type=int, default=24)
    ap.add_argument("--n-test", type=int, default=12)
    ap.add_argument("--pretrain-epochs", type=int, default=40)
    ap.add_argument("--finetune-epochs", type=int, default=30)
    ap.add_argument("--finetune-lr", type=float, default=3e-4)
    ap.add_argument("--freeze-encoder-epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--max-channels", type=int, default=128)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--skip-unet", action="store_true", help="no U-Net comparison (its rows are left out)")
    ap.add_argument("--cv-folds", type=int, default=3, help="folds of the transfer-learning cross-validation")
    ap.add_argument("--only-transfer-cv", type=Path, metavar="PRETRAINED",
                    help="run only the transfer-learning cross-validation, from these pre-trained weights")
    ap.add_argument("--acquisition", choices=["random", "none"], default="random",
                    help="CT acquisition of the phantoms (ctpm phantom --acquisition); default random")
    ap.add_argument("--coordinates", action=argparse.BooleanOptionalAction, default=True,
                    help="position channels (z, y) as extra network input (default on; --no-coordinates: the CT only, "
                         "as in Ren 2021 IJROBP)")
    ap.add_argument("--density-ramp", type=float, default=0.2,
                    help="training augmentation: a random front-to-back ramp of up to this slope added to the enhanced "
                         "CT (TrainConfig.density_ramp; 0: off)")
    ap.add_argument("--sizes", choices=["both", "small"], default="both",
                    help="phantom sizes of each cohort: half small, half full-size (default), or all small (dry runs)")
    ap.add_argument("--finish-from", type=Path, metavar="RUN",
                    help="a finished run made elsewhere (what bench/gpu_train.sh sent back from a GPU machine): copy "
                         "its weights and card into --out and run only steps 7-8 here (real CTs, acceptance, --install)")
    ap.add_argument("--install", action="store_true",
                    help="copy ctpm_arnn.pt and MODEL_CARD.md into Resources/Models (only when the acceptance holds)")
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR, help=argparse.SUPPRESS)
    ap.add_argument("--real-data", type=Path, default=ROOT.parent / "shared" / "data",
                    help="folder with real/ CTs for the plausibility table (default ../shared/data; skipped when absent)")
    args = ap.parse_args(argv)

    from CTPerfusionMappingLib.network import NetworkConfig
    from CTPerfusionMappingLib.training.crossval import paired_test
    from CTPerfusionMappingLib.training.dataset import load_samples
    from CTPerfusionMappingLib.training.trainer import TrainConfig
    from CTPerfusionMappingLib.weights import load_weights, save_weights
    from ImagingBasics.devices import describe_device, select_device
    from ImagingBasics.files import write_csv

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.finish_from is not None:
        return finish_from(args.finish_from, out, args)
    device = select_device(args.device)
    machine = f"{platform.node()}, {os.cpu_count()} cores; {describe_device(device)}"
    log(f"machine: {machine}")
    pre_cfg = TrainConfig(epochs=args.pretrain_epochs, batch_size=args.batch_size, patience=args.pretrain_epochs,
                          seed=args.seed, device=device, density_ramp=args.density_ramp)
    fine_cfg = replace(pre_cfg, epochs=args.finetune_epochs, patience=args.finetune_epochs, lr=args.finetune_lr,
                       freeze_encoder_epochs=args.freeze_encoder_epochs)
    arnn = NetworkConfig(arch="arnn", base_channels=args.base_channels, max_channels=args.max_channels,
                         coordinates=args.coordinates)
    if args.only_transfer_cv:
        transfer_cv(out, args, args.only_transfer_cv, fine_cfg, arnn)
        return 0
    manifests = make_cohorts(out, args)
    t0 = time.perf_counter()
    data = {name: load_samples(m, out / "cache", workers=args.workers) for name, m in manifests.items()}
    test_truth = load_samples(truth_manifest(manifests["test"]), out / "cache", register=False, workers=args.workers)
    log(f"preprocessing: {time.perf_counter() - t0:.0f} s; hemi-lungs " +
        ", ".join(f"{k} {len(v)}" for k, v in data.items()))

    stages = {"arnn_pretrain": train_stage("arnn_pretrain", out, arnn, pre_cfg, data["pretrain"])}
    stages["arnn_finetune"] = train_stage("arnn_finetune", out, arnn, fine_cfg, data["finetune"],
                                          out / "arnn_pretrain" / "best.pt")
    weights = {"arnn": out / "arnn_finetune" / "best.pt", "arnn_pretrained": out / "arnn_pretrain" / "best.pt"}
    if not args.skip_unet:
        unet = replace(arnn, arch="unet")
        stages["unet_pretrain"] = train_stage("unet_pretrain", out, unet, pre_cfg, data["pretrain"])
        stages["unet_finetune"] = train_stage("unet_finetune", out, unet, fine_cfg, data["finetune"],
                                              out / "unet_pretrain" / "best.pt")
        weights["unet"] = out / "unet_finetune" / "best.pt"

    if args.cv_folds > 1 and not (out / "transfer_cv" / "cv_summary.json").is_file():
        transfer_cv(out, args, out / "arnn_pretrain" / "best.pt", fine_cfg, arnn)
    rows = score_all(weights, data["test"], test_truth, device)
    write_csv(rows, out / "scores.csv")
    if not args.skip_unet:
        held_out_figure(rows, out / "held_out.png")
    predictors = [p for p in PREDICTORS if p in weights or p == "hu_baseline"]
    card = {
        "machine": machine,
        "recipe": {"cohorts": {k: len({s.case_id for s in v}) for k, v in data.items()},
                   "pretrain": pre_cfg.to_dict(), "finetune": fine_cfg.to_dict(), "network": arnn.to_dict(),
                   "seed": args.seed, "acquisition": args.acquisition},
        "training_domain": training_domain(manifests),
        "training": stages,
        "held_out": {p: {m: patient_stats(rows, p, m) for m in METRICS} for p in predictors},
        "held_out_by_size": {size: {p: {m: patient_stats(rows, p, m, size) for m in ("spearman", "dsc_high", "dsc_low")}
                                    for p in predictors} for size in ("small", "full") if any(r["size"] == size for r in rows)},
        "tests": {"arnn_vs_hu_baseline": paired_test(rows, "hu_baseline", "arnn"),
                  "arnn_vs_pretrained": paired_test(rows, "arnn_pretrained", "arnn"),
                  "arnn_vs_pretrained_truth": paired_test(rows, "arnn_pretrained", "arnn", "spearman_truth")},
    }
    if not args.skip_unet:
        card["tests"]["arnn_vs_unet"] = paired_test(rows, "unet", "arnn")
    if (out / "transfer_cv" / "cv_summary.json").is_file():
        card["transfer_cv"] = transfer_card(json.loads((out / "transfer_cv" / "cv_summary.json").read_text()))
    (out / "model_card.json").write_text(json.dumps(card, indent=2))
    model, config, meta = load_weights(weights["arnn"])
    save_weights(model, config, out / "ctpm_arnn.pt", half=True, metadata={
        "name": "ctpm_arnn demonstration model", "trained_on": "synthetic SPECT/CT phantoms only; not for clinical use",
        "card": "MODEL_CARD.md", "best_epoch": meta.get("epoch"), "val_spearman": meta.get("val_spearman"),
        "held_out_spearman_mean": card["held_out"]["arnn"]["spearman"]["mean"], "recipe": card["recipe"],
        "training_domain": {k: card["training_domain"][k] for k in ("in_plane_mm", "slice_mm", "lung_median_hu")}})
    return finish(out, card, args)


def _best_epochs_line(training: dict) -> list:
    """The card's line on the epochs kept (the best validation epoch of each ARNN stage; 0 = the initial weights)."""
    pre, fine = training.get("arnn_pretrain"), training.get("arnn_finetune")
    if not pre or not fine:
        return []
    kept = (f"epoch {fine['best_epoch']}" if fine["best_epoch"]
            else "the pre-trained weights (no fine-tuning epoch beat them)")
    start = fine.get("init_val_spearman")
    first = (f"; the pre-trained weights were validated first ({start:.3f}), so the fine-tuned model is never worse on "
             "the validation patients" if start is not None else "")
    return [f"- Kept: pre-training epoch {pre['best_epoch']} of {pre['epochs']} (validation Spearman "
            f"{pre['best_val_spearman']:.3f}); fine-tuning: {kept} (validation Spearman {fine['best_val_spearman']:.3f})"
            f"{first}."]


def finish(out: Path, card: dict, args) -> int:
    """Steps 7-8 on a card whose weights are written (``out``/ctpm_arnn.pt): the real-CT plausibility and gravity-cue
    tables (when ``--real-data`` holds real CTs), the acceptance, MODEL_CARD.md, and ``--install`` when the synthetic
    acceptance holds (exit status 1 otherwise). Also what ``--finish-from`` runs on a run made elsewhere (a GPU machine
    has no real CTs)."""
    predictors = [p for p in PREDICTORS if p in card["held_out"]]
    weights = out / "ctpm_arnn.pt"
    tables = {"real_ct": lambda: real_ct_card(weights, args.real_data, out),
              "gravity_cue": lambda: gravity_card(weights, args.real_data)}
    for name, make in tables.items():
        path = out / f"{name}.json"
        if args.real_data is not None and not path.is_file():
            rows = make()
            if rows:  # none without real CTs (a GPU machine): a later --finish-from run makes them
                path.write_text(json.dumps(rows, indent=2))
        if path.is_file():
            card[name] = json.loads(path.read_text())
    card["acceptance"] = {"synthetic": synthetic_acceptance(card["held_out"]),
                          "real_ct": (card.get("real_ct") or {}).get("acceptance")}
    (out / "model_card.json").write_text(json.dumps(card, indent=2))
    (out / "MODEL_CARD.md").write_text(render_card(card))
    for p in predictors:
        s = card["held_out"][p]
        log(f"{p:>16}: " + ", ".join(f"{m} {s[m]['mean']:.3f} +- {s[m]['sd']:.3f} (min {s[m]['min']:.3f})" for m in METRICS))
    for k, t in card["tests"].items():
        log(f"{k}: mean difference {t['mean_difference']:+.3f}, better in {t['b_better']}/{t['patients']}, "
            f"p = {t['p_value']:.3g}")
    accepted = card["acceptance"]["synthetic"]
    log(f"synthetic acceptance: {'holds' if accepted['holds'] else 'does not hold'} ({accepted['checks']})")
    if card["acceptance"]["real_ct"] is not None:
        log(f"real-CT acceptance: {'holds' if card['acceptance']['real_ct']['holds'] else 'does not hold'}")
    if args.install and not accepted["holds"]:
        log("not installed: the held-out synthetic acceptance does not hold")
        return 1
    if args.install:
        args.models_dir.mkdir(parents=True, exist_ok=True)
        for name in ("ctpm_arnn.pt", "MODEL_CARD.md", "model_card.json"):
            shutil.copy2(out / name, args.models_dir / name)
        log(f"installed into {args.models_dir}")
    return 0


def _domain_lines(d) -> list:
    """The card's training-domain section: the CTs the model has seen (``ctpm run`` warns outside them)."""
    if not d:
        return []

    def rng(v, unit, fmt="{:.2f}"):
        return f"{fmt.format(v[0])}-{fmt.format(v[1])} {unit}" if v else "n/a"

    return [
        "## Training domain (the CTs the model has seen)",
        f"- {d['cases']} training and validation CTs; pixels {rng(d['pixel_mm'], 'mm')}, slice spacing "
        f"{rng(d['slice_spacing_mm'], 'mm')}.",
        f"- Randomised acquisition in {d['randomised_acquisition']} of them: kernel MTF50 "
        f"{rng(d['kernel_mtf50_lp_mm'], 'lp/mm')}, noise {rng(d['noise_hu'], 'HU', '{:.0f}')}; contrast in "
        f"{100 * d['contrast_share']:.0f} %, downsampled to 3-5.5 mm in {100 * d['downsampled_share']:.0f} %, apex or "
        f"bases cut in {100 * d['cut_field_of_view_share']:.0f} %, breathing blur in {100 * d['breathing_share']:.0f} %.",
        "",
    ]


def _cell(s: dict) -> str:
    return f"{s['mean']:.3f} +- {s['sd']:.3f} (min {s['min']:.3f})"


def _acceptance_lines(acceptance) -> list:
    """The card's acceptance section (held-out synthetic patients; real CTs where judged)."""
    if not acceptance:
        return []
    synthetic = acceptance["synthetic"]
    lines = ["", "## Acceptance", "",
             f"Held-out synthetic patients: **{'holds' if synthetic['holds'] else 'does not hold'}** ("
             + ", ".join(f"{k.replace('_', ' ')}: {'yes' if v else 'no'}" for k, v in synthetic["checks"].items())
             + ("" if "spearman_not_below_unet" in synthetic["checks"] else "; no U-Net trained, not judged") + ")."]
    real = acceptance.get("real_ct")
    if real is not None:
        lines.append(f"Real CTs with both lungs in view (posterior/anterior >= 1.1 in each lung, right share 42-65 %, "
                     f"emphysema-like voxels less perfused): **{'holds' if real['holds'] else 'does not hold'}**.")
    return lines


def _gravity_lines(tables) -> list:
    """The card's gravity-cue table: the posterior/anterior ratio with and without an added dependent density."""
    if not tables:
        return []
    lines = ["", "## Where the gravity gradient comes from (`bench/gravity_cue.py`)", "",
             "Posterior/anterior mean perfusion (right / left) on the real COPD CTs as they are and with a dependent-"
             "density ramp added inside the lungs (0 HU at the front to the value at the back). A model that reads the "
             "gradient only off the CT's density shows none at 0 HU on a CT whose dependent lung is not denser; the "
             "uniform-lung row (every lung voxel -870 HU with 20 HU of noise) shows what position alone gives.", ""]
    sys.path.insert(0, str(ROOT / "bench"))
    import gravity_cue

    return lines + gravity_cue.table_lines(tables)


def _real_ct_lines(real) -> list:
    """The card's real-CT plausibility table (no SPECT comes with these CTs: physiology, not accuracy)."""
    if not real:
        return []
    lines = ["", "## Real CTs: physiological plausibility (no SPECT; `bench/real_ct_plausibility.py`)", "",
             "| CT | lungs | P/A right / left | right share | < -950 HU vs rest, right / left | gradient, share, "
             "< -950 |", "|---|---|---|---:|---|---|"]

    def flag(v):
        return "n/a" if v is None else ("yes" if v else "**no**")

    def pair(values, fmt="{:.2f}"):
        return " / ".join("n/a" if v is None or v != v else fmt.format(v) for v in values)

    for r in real["rows"]:
        if "error" in r:
            lines.append(f"| {r['case']} | refused | | | | {r['error'][:90]} |")
            continue
        lines.append(f"| {r['case']} | {r['lungs']} | {pair(r['posterior_to_anterior'])} | "
                     f"{100 * r['right_share']:.1f} % | {pair(r['emphysema_to_rest'])} | "
                     f"{', '.join(flag(r['passed'][k]) for k in ('gradient', 'right_share', 'emphysema'))} |")
    return lines


def render_card(card: dict) -> str:
    """MODEL_CARD.md from the numbers of this run."""
    r = card["recipe"]
    names = {"arnn": "ARNN, fine-tuned (bundled)", "arnn_pretrained": "ARNN, pre-trained only",
             "unet": "3D U-Net, same budget", "hu_baseline": "HU-only baseline (enhanced CT)"}
    lines = [
        "# ctpm_arnn.pt: demonstration CT-to-perfusion model",
        "",
        "**Trained on synthetic SPECT/CT phantoms only. Not for clinical use.** It demonstrates the pipeline and is a",
        "starting point for fine-tuning on a real SPECT/CT cohort (`ctpm train --init ctpm_arnn.pt`).",
        "",
        "## Model",
        f"Attention residual network (ARNN, Ren 2021 IJROBP; architecture in `CTPerfusionMappingLib/network.py`): "
        f"{json.dumps(r['network'])}. Stored as float16 (loaded as float32). Input: one 128 x 64 x 64 hemi-lung sample "
        "of the enhanced CT (equation 1)" + (", with two position channels (cranio-caudal and anterior-posterior "
        "position across the sample, which assume a supine patient; see the network's docstring)"
        if r["network"].get("coordinates") else "") + "; output: relative perfusion 0..1 (the P75-normalised, "
        "discretised SPECT of equation 2).",
        "",
        "## Training data and recipe (mirrors Ren 2022 Front Oncol's transfer learning)",
        f"- Pre-training: {r['cohorts']['pretrain']} synthetic patients without tumours (`ctpm phantom --pathology "
        f"tumour=0 --acquisition {r.get('acquisition', 'none')}`), half small (3.9 mm pixels, 5 mm slices), half "
        "full-size (512 x 512).",
        f"- Fine-tuning: {r['cohorts']['finetune']} synthetic patients each with a lung tumour (`--pathology tumour=1`), "
        "from the pre-trained weights.",
        f"- Held out: {r['cohorts']['test']} further patients with tumours, never seen in training (different seeds).",
        f"- Pre-training: {r['pretrain']['epochs']} epochs, Adam lr {r['pretrain']['lr']}, batch "
        f"{r['pretrain']['batch_size']}, ReduceLROnPlateau, best validation epoch kept (20 % of patients validate).",
        f"- Fine-tuning: {r['finetune']['epochs']} epochs, lr {r['finetune']['lr']}, encoder frozen for the first "
        f"{r['finetune']['freeze_encoder_epochs']} epochs.",
        *_best_epochs_line(card.get("training", {})),
        "- Augmentation (both stages): shifts of up to 4 voxels, a gamma of 0.9-1.1 on the enhanced CT"
        + (f", and a random front-to-back ramp of slope -{r['pretrain']['density_ramp']:g} to "
           f"+{r['pretrain']['density_ramp']:g} added to it (the dependent density made a useless cue for the supine "
           "gradient; `CTPerfusionMappingLib/training/trainer.py`)" if r['pretrain'].get('density_ramp') else "") + ".",
        "- Budget: far below the papers' 500 epochs on 137 + 33 patients (what the machine below allows); the fine-",
        "  tuning learning rate and the frozen epochs are our choices (Ren 2022 Front Oncol does not give them).",
        f"- Trained on: {card['machine']}. Reproduce: `python scripts/train_bundled_model.py --out DIR --seed "
        f"{r['seed']}` (same cohort sizes and epochs as above; GPU recommended).",
        "",
        *_domain_lines(card.get("training_domain")),
        "## Held-out results (per patient, both lungs; mean +- sd, minimum)",
        "",
        "| predictor | Spearman R vs SPECT | SSIM | DSC high | DSC low | Spearman R vs truth perfusion |",
        "|---|---|---|---|---|---|",
    ]
    for p, s in card["held_out"].items():
        lines.append(f"| {names[p]} | {_cell(s['spearman'])} | {_cell(s['ssim'])} | {_cell(s['dsc_high'])} | "
                     f"{_cell(s['dsc_low'])} | {_cell(s['spearman_truth'])} |")
    lines += ["", "By phantom size (Spearman R vs SPECT):", "", "| predictor | small | full-size |", "|---|---|---|"]
    for p in card["held_out"]:
        by_size = card["held_out_by_size"]
        lines.append(f"| {names[p]} | " + " | ".join(_cell(by_size[size][p]["spearman"]) if size in by_size else "n/a"
                                                    for size in ("small", "full")) + " |")
    lines += ["", "Paired comparisons (Wilcoxon signed-rank, two-sided, per-patient Spearman R):", ""]
    for k, t in card["tests"].items():
        lines.append(f"- {k.replace('_', ' ')}: mean difference {t['mean_difference']:+.3f}, better in "
                     f"{t['b_better']} of {t['patients']} patients, p = {t['p_value']:.3g}")
    if "transfer_cv" in card:
        t = card["transfer_cv"]
        sp = t["spearman"]
        lines += ["", f"## Transfer learning in {t['folds']}-fold cross-validation (Ren 2022 Front Oncol's design)", "",
                  f"The pre-trained model fine-tuned on the other folds' tumour patients ({t['fine_tune_epochs']} epochs, "
                  f"lr {t['lr']}, encoder frozen {t['freeze_encoder_epochs']} epochs), scored on each held-out fold; "
                  f"{t['patients']} tumour patients (the fine-tuning and held-out cohorts pooled):", "",
                  "| predictor | Spearman R vs SPECT, per patient |", "|---|---|",
                  f"| fine-tuned | {sp['model']['mean']:.3f} +- {sp['model']['sd']:.3f} |",
                  f"| pre-trained only | {sp['pretrained']['mean']:.3f} +- {sp['pretrained']['sd']:.3f} |",
                  f"| HU-only baseline | {sp['hu_baseline']['mean']:.3f} +- {sp['hu_baseline']['sd']:.3f} |", "",
                  f"Fine-tuned minus pre-trained: {t['test']['mean_difference']:+.3f}, better in {t['test']['b_better']} of "
                  f"{t['test']['patients']} patients, Wilcoxon p = {t['test']['p_value']:.3g}. Per fold (fine-tuned / "
                  "pre-trained): " + ", ".join(f"{v['model']:.3f} / {v['pretrained']:.3f}"
                                               for v in t["per_fold_spearman"].values()) + "."]
    lines += [*_acceptance_lines(card.get("acceptance")), *_real_ct_lines(card.get("real_ct")),
              *_gravity_lines(card.get("gravity_cue"))]
    lines += [
        "",
        "DSC: overlap of the high- (above 0.66 of the maximum) and low-functional volumes of prediction and SPECT.",
        "\"vs truth perfusion\": the phantom's noise-free perfusion, preprocessed like the SPECT. The SPECT blurs it",
        "(12-15 mm) and spills counts out at the lung border; a model trained on SPECT learns that look as well.",
        "",
        "## Intended use and limits",
        "- Intended: the demonstration (`ctpm demo`), tests, and initial weights for fine-tuning on real data.",
        "- Not intended: any clinical decision. The synthetic cohort models anatomy, gravity, vessel territories,",
        "  emphysema, tumours, emboli and opacities in a simplified way; real CT and SPECT differ in ways the",
        "  phantoms do not capture. Expect poor results on real patients until fine-tuned on real SPECT/CT.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
