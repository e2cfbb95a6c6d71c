"""k-fold cross-validation by patient (Ren 2022 Front Oncol), transfer-learning comparison, and the ablation study
(Ren 2021 Front Oncol).

* :func:`patient_folds`: patients (both lungs together) dealt into k folds after a seeded shuffle.
* :func:`score_samples`: per hemi-lung and per patient (voxels of both lungs together; SSIM as the voxel-weighted
  mean of the hemi-lungs'), the agreement of a model's prediction and of the HU-only
  baseline (the enhanced CT of equation 1) with the normalised SPECT over the parenchyma: Spearman R, Pearson r,
  SSIM, DSC of the high and low functional volumes (0.66 of the maximum) -- on the 128 x 64 x 64 sample grid, as the
  papers evaluated hemi-lungs.
* :func:`cross_validate`: for each fold, train on the other folds (a share of their patients validates for early
  stopping) and score the held-out fold; the held-out scores of all folds together are the cross-validated result.
  With ``init_weights`` (transfer learning, Ren 2022 Front Oncol) each fold fine-tunes from the pre-trained model,
  which is scored on the same held-out patients, and the per-patient Spearman R of both are compared with a Wilcoxon
  signed-rank test.
"""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.files import save_figure, write_csv

from .dataset import TrainSample
from .trainer import TrainConfig, train

if TYPE_CHECKING:  # annotations only: network.py imports torch, and `ctpm --help` reaches this module (ABLATIONS)
    from ..network import NetworkConfig

METRICS = ("spearman", "pearson", "ssim", "dsc_high", "dsc_low")


def patient_folds(samples: Sequence[TrainSample], k: int, seed: int) -> List[List[str]]:
    """Patient ids in ``k`` folds of (nearly) equal size after a seeded shuffle."""
    ids = sorted({s.case_id for s in samples})
    if k < 2:
        raise UserError(f"--folds must be at least 2, got {k}")
    if len(ids) < k:
        raise UserError(f"{k} folds need at least {k} patients, the manifest has {len(ids)}")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return [sorted(order[i::k]) for i in range(k)]


def _agreement(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, with_ssim: bool = True) -> Dict[str, float]:
    from ..metrics import dsc_high_low, pearson_r, spearman_r, ssim

    out = {"spearman": spearman_r(pred, ref, mask), "pearson": pearson_r(pred, ref, mask)}
    pn = np.where(mask, pred / max(float(pred[mask].max()), 1e-9), 0.0) if mask.any() else pred
    rn = np.where(mask, ref / max(float(ref[mask].max()), 1e-9), 0.0) if mask.any() else ref
    out["ssim"] = float("nan")
    if with_ssim:
        try:
            out["ssim"] = ssim(pn, rn, mask)
        except UserError:
            pass
    dsc = dsc_high_low(pn, rn, mask)
    out["dsc_high"], out["dsc_low"] = dsc["high"], dsc["low"]
    return out


def predict_samples(model, samples: Sequence[TrainSample], device: str) -> List[np.ndarray]:
    from ..inference import predict

    x = np.stack([s.ct_input for s in samples])[:, None]
    return list(predict(model, x, device, batch_size=4)["mean"])


def score_samples(predictions: Sequence[np.ndarray], samples: Sequence[TrainSample], predictor: str) -> List[Dict[str, Any]]:
    """Rows per hemi-lung (scope "right"/"left") and per patient (scope "patient": both lungs' voxels together)."""
    rows = []
    for p, s in zip(predictions, samples):
        rows.append({"predictor": predictor, "patient": s.case_id, "scope": "right" if s.side == 1 else "left",
                     "group": s.group, **_agreement(p, s.reference, s.mask)})
    for pid in sorted({s.case_id for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.case_id == pid]
        pred = np.concatenate([predictions[i][samples[i].mask] for i in idx])
        ref = np.concatenate([samples[i].reference[samples[i].mask] for i in idx])
        row = {"predictor": predictor, "patient": pid, "scope": "patient", "group": samples[idx[0]].group,
               **_agreement(pred, ref, np.ones(pred.shape, bool), with_ssim=False)}
        # SSIM needs images: the patient's is the voxel-weighted mean of its hemi-lungs'
        weights = np.array([samples[i].mask.sum() for i in idx], float)
        values = np.array([rows[i]["ssim"] for i in idx], float)
        ok = np.isfinite(values) & (weights > 0)
        row["ssim"] = float(np.average(values[ok], weights=weights[ok])) if ok.any() else float("nan")
        rows.append(row)
    return rows


def summarise(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Mean and standard deviation of every metric per predictor and scope ("hemilung" = right and left)."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for predictor in sorted({r["predictor"] for r in rows}):
        for scope, keep in (("patient", ("patient",)), ("hemilung", ("right", "left"))):
            sel = [r for r in rows if r["predictor"] == predictor and r["scope"] in keep]
            stats = {}
            for m in METRICS:
                v = np.array([r[m] for r in sel if r[m] is not None and math.isfinite(r[m])])
                stats[m] = {"mean": float(v.mean()) if v.size else float("nan"),
                            "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"), "n": int(v.size)}
            out.setdefault(predictor, {})[scope] = stats
    return out


def paired_test(rows: Sequence[Dict[str, Any]], a: str, b: str, metric: str = "spearman") -> Dict[str, Any]:
    """Wilcoxon signed-rank test of per-patient ``metric`` of predictor ``b`` against ``a`` (two-sided)."""
    from scipy import stats

    va = {r["patient"]: r[metric] for r in rows if r["predictor"] == a and r["scope"] == "patient"}
    vb = {r["patient"]: r[metric] for r in rows if r["predictor"] == b and r["scope"] == "patient"}
    common = sorted(set(va) & set(vb))
    x = np.array([va[p] for p in common])
    y = np.array([vb[p] for p in common])
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    result = {"a": a, "b": b, "metric": metric, "patients": int(x.size),
              "mean_difference": float(np.mean(y - x)) if x.size else float("nan"),
              "b_better": int(np.sum(y > x)), "p_value": float("nan")}
    if x.size >= 2 and np.any(y != x):
        result["p_value"] = float(stats.wilcoxon(y, x).pvalue)
    return result


def cross_validate(samples: Sequence[TrainSample], folds: int, network: NetworkConfig, config: TrainConfig,
                   out_dir: Path, init_weights: Optional[Path] = None, val_fraction: float = 0.2,
                   progress=None) -> Dict[str, Any]:
    """k-fold cross-validation by patient; writes ``scores.csv`` (every held-out hemi-lung and patient, all folds),
    ``summary.json`` data (returned) and, with ``init_weights``, the pre-trained vs fine-tuned comparison."""
    from ImagingBasics.devices import select_device

    from ..weights import load_weights
    from .dataset import split_by_patient

    out_dir = Path(out_dir)
    device = select_device(config.device)
    rows: List[Dict[str, Any]] = []
    fold_ids = patient_folds(samples, folds, config.seed)
    pretrained = load_weights(init_weights, device=device)[0] if init_weights is not None else None
    for f, held_out in enumerate(fold_ids, start=1):
        test = [s for s in samples if s.case_id in held_out]
        rest = [s for s in samples if s.case_id not in held_out]
        train_s, val_s = split_by_patient(rest, val_fraction, config.seed + f)
        if progress is not None:
            progress(f, folds, f"fold {f}: {len(train_s)} training, {len(val_s)} validation, {len(test)} held-out hemi-lungs")
        summary = train(network, train_s, val_s, out_dir / f"fold{f}", replace(config, seed=config.seed + f), init_weights)
        model = load_weights(summary["weights"], device=device)[0]
        fold_rows = score_samples(predict_samples(model, test, device), test, "model")
        fold_rows += score_samples([s.ct_input for s in test], test, "hu_baseline")
        if pretrained is not None:
            fold_rows += score_samples(predict_samples(pretrained, test, device), test, "pretrained")
        for r in fold_rows:
            r["fold"] = f
        rows += fold_rows
    write_csv(rows, out_dir / "scores.csv")
    result: Dict[str, Any] = {"folds": [sorted(f) for f in fold_ids], "summary": summarise(rows),
                              "per_fold": {f: summarise([r for r in rows if r["fold"] == f]) for f in range(1, folds + 1)},
                              "network": network.to_dict(), "train": config.to_dict()}
    result["model_vs_hu_baseline"] = paired_test(rows, "hu_baseline", "model")
    if pretrained is not None:
        result["fine_tuned_vs_pretrained"] = paired_test(rows, "pretrained", "model")
        paired_figure(rows, "pretrained", "model", out_dir / "transfer.png")
    return result


def paired_figure(rows: Sequence[Dict[str, Any]], a: str, b: str, path: Path, metric: str = "spearman") -> None:
    """Per-patient ``metric`` of two predictors joined by lines (as Ren 2022 Front Oncol figure 2A)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    va = {r["patient"]: r[metric] for r in rows if r["predictor"] == a and r["scope"] == "patient"}
    vb = {r["patient"]: r[metric] for r in rows if r["predictor"] == b and r["scope"] == "patient"}
    common = sorted(set(va) & set(vb))
    fig, ax = plt.subplots(figsize=(4, 5))
    for p in common:
        ax.plot([0, 1], [va[p], vb[p]], color="grey", alpha=0.6, marker="o")
    ax.set_xticks([0, 1])
    ax.set_xticklabels([a, b])
    ax.set_ylabel(f"per-patient {metric} vs SPECT")
    ax.set_xlim(-0.3, 1.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


#: The ablation study of Ren 2021 Front Oncol: the full ARNN, each component removed, the 3D U-Net, and the HU-only baseline.
ABLATIONS = {
    "arnn": {},
    "arnn_without_ct_enhancement": {"input": "linear"},
    "arnn_without_residual": {"residual": False},
    "arnn_without_roi_attention": {"roi_attention": False},
    "arnn_without_skip_attention": {"skip_attention": False},
    "unet_3d": {"arch": "unet"},
}


def ablation_study(samples: Sequence[TrainSample], folds: int, network: NetworkConfig, config: TrainConfig,
                   out_dir: Path, val_fraction: float = 0.2, variants: Optional[Sequence[str]] = None,
                   progress=None) -> Dict[str, Any]:
    """Cross-validate every variant of :data:`ABLATIONS` on the same folds; the HU-only baseline is scored beside.

    "Without CT enhancement" trains on the HU window scaled linearly (no histogram equalisation, no filters). The
    other variants switch one component off in ``network`` (or use the 3D U-Net with the same channel rule).
    Writes ``ablation_scores.csv``, ``ablation.csv`` (mean and sd per patient) and ``ablation.png``.
    """
    names = list(variants or ABLATIONS)
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise UserError(f"unknown ablation variant(s) {', '.join(unknown)}; choose from {', '.join(ABLATIONS)}")
    rows: List[Dict[str, Any]] = []
    for name in names:
        change = dict(ABLATIONS[name])
        use_linear = change.pop("input", "enhanced") == "linear"
        data = [replace(s, ct_input=s.ct_linear) for s in samples] if use_linear else list(samples)
        if use_linear and any(s.ct_linear is None for s in samples):
            raise UserError("the cached samples have no linear CT input; delete the cache and run again")
        if progress is not None:
            progress(name)
        result_dir = Path(out_dir) / name
        cross_validate(data, folds, replace(network, **change), config, result_dir, None, val_fraction)
        for r in csv.DictReader(open(result_dir / "scores.csv", encoding="utf-8")):
            if r["predictor"] == "hu_baseline" and name != names[0]:
                continue
            r["predictor"] = name if r["predictor"] == "model" else r["predictor"]
            rows.append({k: (float(v) if k in METRICS and v not in ("", "nan") else v) for k, v in r.items()})
    for r in rows:
        for m in METRICS:
            if not isinstance(r[m], float):
                r[m] = float("nan")
    write_csv(rows, Path(out_dir) / "ablation_scores.csv")
    summary = summarise(rows)
    table = [{"variant": v, **{f"{m}_{k}": summary[v]["patient"][m][k] for m in METRICS for k in ("mean", "sd")}}
             for v in names + ["hu_baseline"]]
    write_csv(table, Path(out_dir) / "ablation.csv")
    ablation_figure(table, Path(out_dir) / "ablation.png")
    return {"variants": names, "table": table, "folds": folds, "network": network.to_dict(), "train": config.to_dict()}


def ablation_figure(table: Sequence[Dict[str, Any]], path: Path) -> None:
    """Mean +- sd per patient of Spearman R, SSIM and DSC high/low for every variant (bars)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metrics = ("spearman", "ssim", "dsc_high", "dsc_low")
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(table), 4.5))
    width = 0.8 / len(metrics)
    for i, m in enumerate(metrics):
        ax.bar(x + (i - 1.5) * width, [r[f"{m}_mean"] for r in table], width, yerr=[r[f"{m}_sd"] for r in table],
               label=m, capsize=2)
    ax.set_xticks(x)
    ax.set_xticklabels([r["variant"].replace("_", "\n") for r in table], fontsize=7)
    ax.set_ylabel("per patient, mean +- sd (held-out folds)")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 1.12))
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
