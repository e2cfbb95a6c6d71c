"""The CT-to-perfusion pipeline: one function from a chest CT (and optionally a SPECT and given labels) to the
synthetic perfusion map, functional volumes, per-region table and, with a SPECT, the agreement metrics.

The command line (``ctpm run``, ``ctpm batch``), the Slicer Logic and the tests all call :func:`run_pipeline`.

Steps: check the CT -> lungs and regions (given labels normalised to CIP regions, or the built-in segmentation and
lung thirds) -> SPECT onto the CT (rigid registration, or as it is) -> hemi-lung samples (Ren 2021 IJROBP preprocessing) ->
network on both lungs in one batch (or the HU-only baseline) -> back onto the CT grid -> the map's physiological
plausibility (:mod:`.plausibility`: supine gravity gradient, right-lung share, emphysema; warnings where it fails) ->
functional volumes -> region table -> evaluation against the SPECT (network and HU-only baseline side by side).

The HU-only baseline predictor is the CT enhancement of equation (1) itself (histogram-equalised, filtered density
in the lung window): a fixed monotone function of local HU, i.e. "denser parenchyma is better perfused". It needs no
training and shows in every report what the network adds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.quality import QualityWarning, warning_dicts
from ImagingBasics.resample import resample_labels
from ImagingBasics.validation import check_ct, require_finite
from ImagingBasics.volume import Volume

from .labels import LungLabels, lung_thirds, normalise_labels
from .lungseg import segment_lungs
from .metrics import evaluate, functional_volumes, percentile_functional_volumes, region_table
from .options import RUN
from .plausibility import map_plausibility, plausibility_warnings, truncated_sides, with_reference_spect
from .preprocess import (
    LungSample,
    PreprocessParams,
    combine_lungs,
    high_intensity_region,
    preprocess_case,
    sample_to_ct,
)
from .quality import lung_quality, model_domain, patient_orientation, spect_coverage

Progress = Optional[Callable[[float, str], None]]


@dataclass(frozen=True)
class RunOptions:
    """The options object of :func:`run_pipeline`. The fields named in :data:`~.options.RUN` take their defaults,
    ranges and meaning from there (``RunOptions(**RUN.check(values))`` is a checked one); ``preprocess`` and ``seed``
    are for training and tests."""

    register: bool = RUN["register"].default  # rigid SPECT-to-CT registration (off: SPECT used where it lies)
    device: str = RUN["device"].default
    amp: bool = RUN["amp"].default
    mc_dropout_passes: int = RUN["mc_dropout_passes"].default  # >= 2 gives an uncertainty map (sd over passes)
    threshold: float = RUN["threshold"].default  # high/low functional split, fraction of the map's maximum
    high_percentile: Optional[float] = RUN["high_percentile"].default  # instead: high = at or above this percentile
    labels_source: str = RUN["labels_source"].default
    preprocess: PreprocessParams = PreprocessParams()
    seed: int = 0
    evaluation_spacing_mm: Optional[float] = RUN["evaluation_spacing_mm"].default  # None: the SPECT's voxel size

    def to_dict(self) -> Dict[str, Any]:
        return {"register": self.register, "device": self.device, "amp": self.amp,
                "mc_dropout_passes": self.mc_dropout_passes, "threshold": self.threshold,
                "high_percentile": self.high_percentile,
                "labels_source": self.labels_source, "preprocess": self.preprocess.to_dict(), "seed": self.seed,
                "evaluation_spacing_mm": self.evaluation_spacing_mm}


@dataclass
class RunResult:
    perfusion: Volume  # float32 0..1 in the lungs, 0 elsewhere, CT geometry
    functional: Volume  # uint8: 1 low, 2 high
    labels: LungLabels  # lungs (1 right, 2 left) and regions (lobes 4-8 or thirds 9-14)
    baseline: Volume  # HU-only baseline map, 0..1
    uncertainty: Optional[Volume] = None  # MC-dropout standard deviation
    spect_on_ct: Optional[Volume] = None  # SPECT on the CT grid (counts)
    spect_normalised: Optional[Volume] = None  # equation (2): SPECT / P75 in the lungs, clipped to 0..1
    regions: List[Dict[str, Any]] = field(default_factory=list)
    metrics: Dict[str, Any] = field(default_factory=dict)


def _say(progress: Progress, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def resolve_labels(ct: Volume, lungs: Optional[Volume] = None, lobes: Optional[Volume] = None,
                   source: str = "auto") -> Tuple[LungLabels, Dict[str, Any]]:
    """Lungs and regions on the CT grid: given label maps normalised to CIP regions, or the built-in segmentation.

    Given lobes give the regions (and the lungs unless a lung map is given too); a lung map alone gives lung thirds;
    nothing given runs :func:`~.lungseg.segment_lungs` and uses lung thirds.
    """
    if lobes is not None:
        lab = normalise_labels(resample_labels(lobes, ct, name="the lobe labels"), source=source, name="the lobe labels")
        info = {"lungs": "given (lobe labels)", "regions": lab.kind}
        if lungs is not None:
            given = normalise_labels(resample_labels(lungs, ct, name="the lung labels"), source=source,
                                     name="the lung labels")
            regions = lab.regions.with_array(np.where(given.lungs.array > 0, lab.regions.array, 0).astype(np.uint8))
            lab = LungLabels(given.lungs, regions, lab.kind)
            info["lungs"] = "given"
        return lab, info
    if lungs is not None:
        lab = normalise_labels(resample_labels(lungs, ct, name="the lung labels"), source=source, name="the lung labels")
        return lab, {"lungs": "given", "regions": lab.kind}
    seg = segment_lungs(ct)
    return LungLabels(seg.lungs, lung_thirds(seg.lungs), "thirds"), {"lungs": "built-in segmentation",
                                                                      "regions": "thirds", "segmentation": seg.info}


def align_spect(ct: Volume, spect: Volume, lungs: Volume, register: bool) -> Tuple[Volume, Dict[str, Any]]:
    """The SPECT on the CT grid: rigidly registered (Mattes MI) or resampled as it lies."""
    from .registration import register_spect_to_ct, resample_spect_to_ct

    require_finite(spect, "SPECT")
    if not register:
        return resample_spect_to_ct(ct, spect), {"registered": False}
    result = register_spect_to_ct(ct, spect, lungs)
    info = {"registered": True, "matrix_lps": result.matrix_lps.tolist(), "seconds": result.seconds,
            "translation_mm": result.translation_mm, "rotation_deg": result.rotation_deg,
            "fraction_in_lungs_before": result.fraction_in_lungs_before,
            "fraction_in_lungs_after": result.fraction_in_lungs_after,
            "suspicious": result.suspicious, "warnings": list(result.warnings)}
    return result.spect_on_ct, info


def training_domain(model_info: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The voxel sizes and lung HU a model was trained on: ``model_info["training_domain"]`` (the model loader sets it
    for the bundled model), else its weights' ``training_domain`` metadata, else None (unknown: no domain warnings)."""
    info = model_info or {}
    return info.get("training_domain") or (info.get("metadata") or {}).get("training_domain")


def registration_warnings(info: Optional[Dict[str, Any]]) -> List[QualityWarning]:
    """The registration's warnings (:func:`align_spect`'s info) as quality warnings with its numbers."""
    if not info:
        return []
    numbers = {k: info[k] for k in ("translation_mm", "rotation_deg", "fraction_in_lungs_before",
                                    "fraction_in_lungs_after") if info.get(k) is not None}
    return [QualityWarning("registration_suspicious", str(w), numbers) for w in info.get("warnings", [])]


def network_inputs(samples: List[LungSample]) -> np.ndarray:
    """(N, 1, 128, 64, 64) float32: the enhanced CT of each hemi-lung sample."""
    return np.stack([s.ct_input for s in samples])[:, None].astype(np.float32)


def predict_perfusion(model, samples: List[LungSample], options: RunOptions,
                      progress: Progress = None) -> Tuple[List[np.ndarray], Optional[List[np.ndarray]], str]:
    """Network outputs per sample (both lungs in one batch) and, with MC dropout, their standard deviations."""
    from .inference import predict

    def report(done: int, total: int) -> None:
        _say(progress, 0.6 + 0.25 * done / max(total, 1), "network")

    out = predict(model, network_inputs(samples), options.device, options.amp, options.mc_dropout_passes,
                  progress=report, seed=options.seed)
    means = [np.where(s.lung, m, 0.0).astype(np.float32) for s, m in zip(samples, out["mean"])]
    stds = None if out["std"] is None else [np.where(s.lung, d, 0.0).astype(np.float32) for s, d in zip(samples, out["std"])]
    return means, stds, out["device"]


def samples_to_ct(values: List[np.ndarray], samples: List[LungSample], ct: Volume, lungs: Volume) -> Volume:
    """Per-sample maps resampled back onto the CT and combined, each lung from its own sample."""
    per_side = {s.side: sample_to_ct(v, s.grid, ct) for s, v in zip(samples, values)}
    return ct.with_array(combine_lungs(per_side, lungs))


def normalised_spect(spect_on_ct: Volume, lungs: Volume, params: PreprocessParams) -> Volume:
    """Equation (2) without discretisation, on the CT grid: SPECT / P75 in the lungs, clipped to 0..1."""
    mask = lungs.array > 0
    hir = high_intensity_region(spect_on_ct.array, mask, params.hir_percentile)
    return spect_on_ct.with_array(np.where(mask, np.clip(spect_on_ct.array / hir, 0.0, 1.0), 0.0).astype(np.float32))


def evaluation_grid(lungs: Volume, spacing_mm: float) -> Volume:
    """An isotropic grid of ``spacing_mm`` (identity direction) over the lungs' bounding box plus one voxel."""
    idx = np.argwhere(lungs.array > 0)[:, ::-1].astype(float)
    if idx.size == 0:
        raise UserError("no lungs to evaluate")
    lo_i, hi_i = idx.min(axis=0) - 0.5, idx.max(axis=0) + 0.5
    corners = lungs.index_to_lps(np.array([[a, b, c] for a in (lo_i[0], hi_i[0]) for b in (lo_i[1], hi_i[1])
                                           for c in (lo_i[2], hi_i[2])]))
    lo, hi = corners.min(axis=0) - spacing_mm, corners.max(axis=0) + spacing_mm
    size = np.maximum(np.ceil((hi - lo) / spacing_mm).astype(int), 1)
    return Volume(np.zeros(tuple(size[::-1]), np.float32), (spacing_mm,) * 3, tuple(lo + spacing_mm / 2), np.eye(3))


def evaluate_against_spect(ct: Volume, lungs: Volume, maps: Dict[str, Volume], reference: Volume, options: RunOptions,
                           spacing_mm: Optional[float], regions: Optional[Volume] = None) -> Dict[str, Any]:
    """:func:`~.metrics.evaluate` of each map against the normalised SPECT, on an evaluation grid.

    Ren 2021 IJROBP compared its maps with the SPECT at the SPECT's resolution ("upsampled to the original SPECT resolution"):
    by default the maps, the reference, the HU and the lungs are resampled onto an isotropic grid of the SPECT's
    voxel size over the lungs (linear; lungs nearest). ``spacing_mm=0`` evaluates on the CT grid itself. With
    ``regions`` (CIP ids on the CT grid, resampled nearest) each map's result also has the per-region rows.
    """
    from .preprocess import resample_to_sample

    if spacing_mm:
        grid = evaluation_grid(lungs, float(spacing_mm))
        hu = resample_to_sample(ct, grid, default=-1000.0)
        lung = np.rint(resample_to_sample(lungs, grid, linear=False)).astype(np.uint8)
        ref = resample_to_sample(reference, grid)
        arrays = {k: resample_to_sample(v, grid) for k, v in maps.items()}
        reg = None if regions is None else np.rint(resample_to_sample(regions, grid, linear=False)).astype(np.uint8)
        voxel_ml = float(spacing_mm) ** 3 / 1000.0
    else:
        hu, lung, ref = ct.array, lungs.array, reference.array
        arrays = {k: v.array for k, v in maps.items()}
        reg = None if regions is None else regions.array
        voxel_ml = ct.voxel_volume_ml
    out = {}
    for name, a in arrays.items():
        out[name] = evaluate(a, ref, lung, reg, hu, options.preprocess.hu_window, options.threshold)
        for row in out[name].get("regions", []):  # volumes from the evaluation grid's voxel size
            row["volume_ml"] = row["voxels"] * voxel_ml
    out["grid_spacing_mm"] = float(spacing_mm) if spacing_mm else list(ct.spacing)
    return out


def functional_split(perfusion: np.ndarray, lung_mask: np.ndarray, options: RunOptions) -> np.ndarray:
    """The functional-volume map (1 low, 2 high): at ``threshold`` x the maximum (Ren 2021 IJROBP, Ren 2022 Front
    Oncol: 0.66), or, with
    ``high_percentile`` P, high = the voxels at or above the P-th percentile of the lungs' perfusion (50: the
    better-perfused half), as planners who spare a fixed share of the lung prefer. The evaluation against a SPECT
    keeps the papers' fraction-of-maximum split either way."""
    if options.high_percentile is None:
        return functional_volumes(perfusion, lung_mask, options.threshold).astype(np.uint8)
    return percentile_functional_volumes(perfusion, lung_mask, (float(options.high_percentile),)).astype(np.uint8)


AGREEMENT_KEYS = ("spearman", "pearson", "ssim", "dsc_high", "dsc_low")


def add_region_agreement(rows: List[Dict[str, Any]], evaluated: List[Dict[str, Any]]) -> None:
    """Copy each region's agreement with the SPECT (computed on the evaluation grid) into the CT-grid table rows
    (same ``region_id``); regions absent from the evaluation get None."""
    by_id = {r["region_id"]: r for r in evaluated}
    for row in rows:
        source = by_id.get(row["region_id"], {})
        row.update({k: source.get(k) for k in AGREEMENT_KEYS})


def run_pipeline(
    ct: Volume,
    spect: Optional[Volume] = None,
    lungs: Optional[Volume] = None,
    lobes: Optional[Volume] = None,
    model=None,
    options: RunOptions = RunOptions(),
    progress: Progress = None,
    model_info: Optional[Dict[str, Any]] = None,
    patient_position: Optional[str] = None,
) -> RunResult:
    """CT (+ SPECT, + labels) -> synthetic perfusion and its evaluation. ``model=None`` predicts with the HU-only
    baseline (a warning goes into the metrics); otherwise ``model`` is a network from :func:`~.weights.load_weights`.
    ``patient_position``: the CT's DICOM PatientPosition when known (a warning unless supine)."""
    times: Dict[str, float] = {}
    t0 = time.perf_counter()
    quality = list(check_ct(ct)) + patient_orientation(patient_position)
    _say(progress, 0.02, "lung labels")
    labels, label_info = resolve_labels(ct, lungs, lobes, options.labels_source)
    quality += lung_quality(labels, ct, given=lungs is not None or lobes is not None)
    times["labels"] = time.perf_counter() - t0

    spect_on_ct = reg_info = spect_norm = None
    if spect is not None:
        _say(progress, 0.2, "registration" if options.register else "SPECT onto CT")
        t = time.perf_counter()
        spect_on_ct, reg_info = align_spect(ct, spect, labels.lungs, options.register)
        quality += spect_coverage(labels.lungs, spect, reg_info.get("matrix_lps"))
        spect_norm = normalised_spect(spect_on_ct, labels.lungs, options.preprocess)
        times["registration"] = time.perf_counter() - t

    _say(progress, 0.45, "preprocessing")
    t = time.perf_counter()
    samples = preprocess_case(ct, labels.lungs, spect_on_ct, options.preprocess)
    times["preprocessing"] = time.perf_counter() - t

    t = time.perf_counter()
    baseline = samples_to_ct([s.ct_input for s in samples], samples, ct, labels.lungs)
    uncertainty = None
    if model is None:
        quality.append(QualityWarning("baseline_predictor", "no network weights: the perfusion map is the HU-only "
                                      "baseline, not a network prediction"))
        perfusion, device = baseline, "none"
    else:
        quality += model_domain(ct, labels.lungs, training_domain(model_info)) if training_domain(model_info) else []
        _say(progress, 0.6, "network")
        means, stds, device = predict_perfusion(model, samples, options, progress)
        perfusion = samples_to_ct(means, samples, ct, labels.lungs)
        if stds is not None:
            uncertainty = samples_to_ct(stds, samples, ct, labels.lungs)
    times["prediction"] = time.perf_counter() - t

    _say(progress, 0.9, "evaluation")
    supine = not any(w.code == "patient_not_supine" for w in quality)
    plausibility = map_plausibility(perfusion, ct, labels.lungs, truncated_sides(quality), supine)
    quality += plausibility_warnings(plausibility)
    if spect_norm is not None:
        plausibility = with_reference_spect(plausibility, spect_norm, ct, labels.lungs)
    lung_mask = labels.lungs.array > 0
    functional = ct.with_array(functional_split(perfusion.array, lung_mask, options))
    rows = region_table(perfusion, labels.regions, ct.voxel_volume_ml,
                        None if spect_norm is None else spect_norm.array)
    vml = ct.voxel_volume_ml
    metrics: Dict[str, Any] = {
        "labels": label_info,
        "regions_kind": labels.kind,
        "lung_volume_ml": {"right": float((labels.lungs.array == 1).sum() * vml),
                           "left": float((labels.lungs.array == 2).sum() * vml)},
        "functional_volume_ml": {"low": float((functional.array == 1).sum() * vml),
                                 "high": float((functional.array == 2).sum() * vml), "threshold": options.threshold,
                                 "high_percentile": options.high_percentile},
        "model": dict(model_info or {}, device=device),
        "options": options.to_dict(),
        "registration": reg_info,
        "plausibility": plausibility,
        "warnings": warning_dicts(quality + registration_warnings(reg_info)),
    }
    if spect_norm is not None:
        spacing = options.evaluation_spacing_mm
        if spacing is None:
            spacing = float(min(spect.spacing))
        metrics["evaluation"] = evaluate_against_spect(ct, labels.lungs, {"prediction": perfusion, "hu_baseline": baseline},
                                                       spect_norm, options, spacing, labels.regions)
        add_region_agreement(rows, metrics["evaluation"]["prediction"].get("regions", []))
    times["total"] = time.perf_counter() - t0
    metrics["timings_s"] = times
    _say(progress, 1.0, "done")
    return RunResult(perfusion, functional, labels, baseline, uncertainty, spect_on_ct, spect_norm, rows, metrics)
