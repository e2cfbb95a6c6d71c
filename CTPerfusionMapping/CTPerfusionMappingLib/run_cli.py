"""``ctpm run``, ``ctpm evaluate`` and ``ctpm batch``: the CT-to-perfusion pipeline from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

from ImagingBasics.dicom_inputs import CT_SERIES, PATIENT_POSITION
from ImagingBasics.errors import UserError

from .options import EVALUATE, RUN


def load_model(weights: Optional[str], baseline: bool, device: str):
    """(model or None, model info) from --weights / --baseline / the bundled weights."""
    if baseline:
        return None, {"predictor": "hu_baseline"}
    from .weights import bundled_weights, load_weights

    path = Path(weights) if weights else bundled_weights()
    if not weights and os.environ.get("CTPM_WEIGHTS") and not Path(os.environ["CTPM_WEIGHTS"]).is_file():
        raise UserError(f"CTPM_WEIGHTS points to {path}, which is not a file; fix it, or unset it to use the bundled model")
    if path is None:
        raise UserError("no network weights: this installation has no bundled model; pass --weights FILE, or --baseline "
                        "for the HU-only baseline predictor")
    model, config, metadata = load_weights(path, device=device)
    info = {"predictor": "network", "weights": str(path), "config": config.to_dict(), "metadata": metadata}
    bundled = not weights and not os.environ.get("CTPM_WEIGHTS")
    if bundled and not (metadata or {}).get("training_domain"):  # weights from before the domain was stored in them
        from .quality import BUNDLED_TRAINING_DOMAIN

        info["training_domain"] = BUNDLED_TRAINING_DOMAIN
    return model, info


class _LazyBar:
    """A progress bar drawn at the first progress report, so that inputs refused before the pipeline starts give the
    error line alone on stderr."""

    def __init__(self) -> None:
        self.bar = None

    def update(self, fraction: float, message: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", bar_format="{desc:<16}{percentage:3.0f}%|{bar}| {elapsed}",
                            file=sys.stderr)
        self.bar.set_description_str(message)
        self.bar.n = int(round(100 * fraction))
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_bar(quiet: bool):
    if quiet:
        return None, None
    bar = _LazyBar()
    return bar, bar.update


def _add_common(p: argparse.ArgumentParser) -> None:
    """The model, the pipeline options (:data:`~.options.RUN`) and the progress bar switch of run and batch."""
    p.add_argument("--weights", help="network weights file (default: the bundled model, when installed)")
    p.add_argument("--baseline", action="store_true", help="predict with the HU-only baseline instead of a network")
    RUN.add_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_run_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="synthesize a perfusion map from a chest CT (and score it against a SPECT)",
                       description="CT (+ SPECT, + lung/lobe labels) -> perfusion.nrrd, functional.nrrd, lungs.nrrd, "
                                   "lobes.nrrd, spect_on_ct.nrrd, metrics.json, lobes.csv, overview.png in --out.")
    p.add_argument("--ct", required=True, help="chest CT in HU (NRRD, NIfTI, MHA, DICOM folder; a folder of several "
                                               "series gives its largest CT series)")
    CT_SERIES.add_argument(p)
    PATIENT_POSITION.add_argument(p)
    p.add_argument("--spect", help="perfusion SPECT (optional): registered to the CT and used for evaluation")
    p.add_argument("--lungs", help="lung label map (optional; default: built-in segmentation)")
    p.add_argument("--lobes", help="lobe label map (optional; default: lung thirds)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    _add_common(p)
    p.add_argument("--progress-lines", action="store_true",
                   help="instead of a progress bar, print machine-readable progress lines on stdout (for a calling "
                        "program such as the Slicer module; see ImagingBasics/process.py)")
    p.set_defaults(func=_run)


def _options(args: argparse.Namespace):
    """The checked :class:`~.pipeline.RunOptions` of the parsed arguments: the commands' first step, so that a wrong
    value is refused (one line, exit 2) before any file is read."""
    from .pipeline import RunOptions

    return RunOptions(**RUN.from_arguments(args))


def run_case(ct_path: str, out: Path, options, model, model_info: Dict[str, Any], spect: Optional[str] = None,
             lungs: Optional[str] = None, lobes: Optional[str] = None, progress=None, ct_series: Optional[str] = None,
             patient_position: Optional[str] = None):
    """Read the inputs, run the pipeline with ``options`` (a :class:`~.pipeline.RunOptions`) and write every output
    into ``out`` all at once (:func:`ImagingBasics.outputs.output_folder`: never over an input or inside an input
    folder, no mix with an earlier run's files); returns the RunResult. ``ct_path``: an image or a DICOM folder
    (``ct_series``: the SeriesInstanceUID to read there; :func:`ImagingBasics.dicom_inputs.read_ct`).
    ``patient_position``: the DICOM PatientPosition when given (``--patient-position``), else the CT series' own."""
    from ImagingBasics.dicom_inputs import ct_patient_position, read_ct
    from ImagingBasics.imageio import read_volume
    from ImagingBasics.outputs import output_folder
    from ImagingBasics.validation import require_finite

    from .pipeline import run_pipeline
    from .report import OUTPUT_FILES, write_run_outputs

    with output_folder(out, [ct_path, spect, lungs, lobes], list(OUTPUT_FILES.values()),
                       OUTPUT_FILES["metrics"]) as staging:
        ct = read_ct(ct_path, ct_series)
        volumes = {k: (read_volume(v) if v else None) for k, v in (("spect", spect), ("lungs", lungs), ("lobes", lobes))}
        if volumes["spect"] is not None:
            require_finite(volumes["spect"], "SPECT")  # before the pipeline starts (and its progress bar)
        info = dict(model_info, inputs={"ct": str(ct_path), "spect": spect, "lungs": lungs, "lobes": lobes})
        if ct_series is not None:
            info["inputs"]["ct_series"] = ct_series
        position = patient_position or ct_patient_position(ct_path, ct_series)
        if position is not None:
            info["inputs"]["patient_position"] = position
        result = run_pipeline(ct, volumes["spect"], volumes["lungs"], volumes["lobes"], model, options, progress, info,
                              position)
        write_run_outputs(result, staging, ct)
    return result


def _run(args: argparse.Namespace) -> int:
    from ImagingBasics.dicom_inputs import check_series_choice
    from ImagingBasics.outputs import check_output_folder
    from ImagingBasics.process import progress_line

    from .report import OUTPUT_FILES

    options = _options(args)
    ct_series = CT_SERIES.check(args.ct_series)
    check_series_choice(args.ct, ct_series)
    check_output_folder(args.out, [args.ct, args.spect, args.lungs, args.lobes], list(OUTPUT_FILES.values()))
    if args.progress_lines:
        print(progress_line({"progress": 0.0, "step": "loading the model"}), flush=True)
    model, info = load_model(args.weights, args.baseline, options.device)
    if args.progress_lines:
        bar = None

        def update(fraction: float, message: str) -> None:
            print(progress_line({"progress": round(float(fraction), 4), "step": message}), flush=True)
    else:
        bar, update = _progress_bar(args.quiet)
    try:
        result = run_case(args.ct, args.out, options, model, info, args.spect, args.lungs, args.lobes, update,
                          ct_series, PATIENT_POSITION.check(args.patient_position))
    finally:
        if bar is not None:
            bar.close()
    _print_summary(result, args.out)
    if args.progress_lines:
        print(progress_line({"done": True, "out": str(Path(args.out).resolve())}), flush=True)
    return 0


def _print_summary(result, out: Path) -> None:
    m = result.metrics
    vol = m["functional_volume_ml"]
    print(f"lungs: right {m['lung_volume_ml']['right']:.0f} mL, left {m['lung_volume_ml']['left']:.0f} mL "
          f"({m['labels']['lungs']}); regions: {m['regions_kind']}")
    split = (f"at the {vol['high_percentile']:g}th percentile" if vol.get("high_percentile") is not None
             else f"at {vol['threshold']:.2f} of max")
    print(f"functional volumes: high {vol['high']:.0f} mL, low {vol['low']:.0f} mL (split {split})")
    for row in result.regions:
        ref = ""
        if row.get("reference_share_percent") is not None:
            ref = f", SPECT share {row['reference_share_percent']:.1f}%"
        share = row["perfusion_share_percent"]
        print(f"  {row['name']:<22} {row['volume_ml']:8.0f} mL  share {share if share is not None else float('nan'):5.1f}%{ref}")
    ev = m.get("evaluation")
    if ev:
        for key in ("prediction", "hu_baseline"):
            e = ev[key]["patient"]
            print(f"{key:>12} vs SPECT: Spearman {_num(e['spearman'])}, SSIM {_num(e['ssim'])}, "
                  f"DSC high {_num(e['dsc_high'])}, low {_num(e['dsc_low'])}")
    for w in m.get("warnings", []):
        print(f"warning: {w['message']}", file=sys.stderr)
    print(f"results in {out}")


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a perfusion map against a SPECT (Spearman, SSIM, DSC, lobe table)",
                       description="Score any perfusion map (on the CT grid) against a SPECT: writes metrics.json and "
                                   "lobes.csv to --out.")
    p.add_argument("--perfusion", required=True, help="perfusion map on the CT grid")
    p.add_argument("--spect", required=True, help="the reference SPECT")
    p.add_argument("--ct", required=True, help="the CT (HU), for the lung mask, HU window and registration")
    p.add_argument("--lungs", help="lung label map (default: built-in segmentation)")
    p.add_argument("--lobes", help="lobe label map (default: lung thirds)")
    p.add_argument("--out", required=True, type=Path)
    EVALUATE.add_arguments(p)
    p.set_defaults(func=_evaluate)


def evaluate_case(ct_path, perfusion_path, spect_path, out: Path, options, lungs: Optional[str] = None,
                  lobes: Optional[str] = None) -> Dict[str, Any]:
    """Score the perfusion map of ``perfusion_path`` (on the CT grid) against the SPECT with ``options`` (a
    :class:`~.pipeline.RunOptions`: register, labels_source, threshold, evaluation_spacing_mm); writes lobes.csv and
    metrics.json into ``out`` and returns the metrics."""
    from ImagingBasics.dicom_inputs import read_ct
    from ImagingBasics.files import write_json
    from ImagingBasics.imageio import read_volume
    from ImagingBasics.outputs import output_folder
    from ImagingBasics.quality import warning_dicts
    from ImagingBasics.validation import check_ct, require_finite

    from .metrics import region_table, write_region_csv
    from .pipeline import (
        PreprocessParams,
        align_spect,
        evaluate_against_spect,
        normalised_spect,
        registration_warnings,
        resolve_labels,
    )
    from .plausibility import map_plausibility, plausibility_warnings, truncated_sides, with_reference_spect
    from .quality import lung_quality

    inputs = [ct_path, perfusion_path, spect_path, lungs, lobes]
    with output_folder(out, inputs, ["lobes.csv", "metrics.json"], "metrics.json") as staging:
        ct = read_ct(ct_path)
        quality = list(check_ct(ct))
        perfusion = read_volume(perfusion_path)
        require_finite(perfusion, "perfusion map")
        if not perfusion.same_geometry(ct):
            raise UserError("the perfusion map is not on the CT grid (same size, spacing, origin and direction needed)")
        spect = read_volume(spect_path)  # every input read and checked before the lungs are segmented
        require_finite(spect, "SPECT")
        given = {k: (read_volume(v) if v else None) for k, v in (("lungs", lungs), ("lobes", lobes))}
        labels, label_info = resolve_labels(ct, given["lungs"], given["lobes"], options.labels_source)
        quality += lung_quality(labels, ct, given=bool(lungs or lobes))
        spect_on_ct, reg = align_spect(ct, spect, labels.lungs, options.register)
        ref = normalised_spect(spect_on_ct, labels.lungs, PreprocessParams())
        spacing = options.evaluation_spacing_mm
        if spacing is None:
            spacing = float(min(spect.spacing))
        evaluation = evaluate_against_spect(ct, labels.lungs, {"map": perfusion}, ref, options, spacing)
        plausibility = map_plausibility(perfusion, ct, labels.lungs, truncated_sides(quality))
        quality += plausibility_warnings(plausibility)
        result = {"labels": label_info, "registration": reg, "evaluation": evaluation["map"],
                  "grid_spacing_mm": evaluation["grid_spacing_mm"],
                  "plausibility": with_reference_spect(plausibility, ref, ct, labels.lungs),
                  "warnings": warning_dicts(quality + registration_warnings(reg))}
        rows = region_table(perfusion, labels.regions, ct.voxel_volume_ml, ref.array)
        write_region_csv(rows, staging / "lobes.csv")
        write_json(result, staging / "metrics.json")
    return result


def _evaluate(args: argparse.Namespace) -> int:
    from .pipeline import RunOptions

    options = RunOptions(**EVALUATE.from_arguments(args))
    result = evaluate_case(args.ct, args.perfusion, args.spect, args.out, options, args.lungs, args.lobes)
    e = result["evaluation"]["patient"]
    print(f"vs SPECT: Spearman {_num(e['spearman'])}, SSIM {_num(e['ssim'])}, DSC high {_num(e['dsc_high'])}, "
          f"low {_num(e['dsc_low'])}; results in {args.out}")
    for w in result["warnings"]:
        print(f"warning: {w['message']}", file=sys.stderr)
    return 0


def add_batch_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="run the pipeline on every case of a manifest CSV",
                       description="MANIFEST.csv with columns id, ct, and optional spect, lungs, lobes (paths relative "
                                   "to the manifest). One folder per case in --out and summary.csv; a failing case never "
                                   "stops the others; finished cases are skipped on a rerun. Exit 0 when all cases "
                                   "succeeded, 1 when some failed.")
    p.add_argument("manifest", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--force", action="store_true", help="rerun cases that already finished")
    _add_common(p)
    p.set_defaults(func=_batch)


def _batch(args: argparse.Namespace) -> int:
    from ImagingBasics.manifest import read_manifest
    from ImagingBasics.outputs import check_output_folder

    from .report import OUTPUT_FILES

    options = _options(args)
    rows = read_manifest(args.manifest)
    check_output_folder(args.out, [args.manifest], ["summary.csv"])  # a file, not writable: refused before any work
    model, info = load_model(args.weights, args.baseline, options.device)
    summary: List[Dict[str, Any]] = []
    iterator = rows
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        iterator = bar = tqdm(rows, unit="case", desc="batch", file=sys.stderr)
    for row in iterator:
        out = args.out / row["id"]
        entry: Dict[str, Any] = {"id": row["id"], "status": "", "error": ""}
        try:
            if (out / OUTPUT_FILES["metrics"]).is_file() and not args.force:
                metrics = json.loads((out / OUTPUT_FILES["metrics"]).read_text(encoding="utf-8"))
                entry["status"] = "skipped (done)"
            else:
                result = run_case(row["ct"], out, options, model, info, row.get("spect") or None,
                                  row.get("lungs") or None, row.get("lobes") or None)
                metrics = result.metrics
                entry["status"] = "ok"
            entry.update(_summary_values(metrics))
        except UserError as exc:
            entry.update(status="failed", error=str(exc))
        except Exception as exc:  # a bug must not stop the other cases; its trace goes to the case folder
            out.mkdir(parents=True, exist_ok=True)
            (out / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
            entry.update(status="failed", error=f"internal error ({type(exc).__name__}: {exc}); see {out / 'error.txt'}")
        summary.append(entry)
    if bar is not None:
        bar.close()
    from ImagingBasics.files import write_csv

    write_csv(summary, args.out / "summary.csv")
    failed = [e for e in summary if e["status"] == "failed"]
    print(f"{len(summary) - len(failed)} of {len(summary)} cases succeeded; summary in {args.out / 'summary.csv'}")
    for e in failed:
        print(f"  {e['id']}: {e['error']}", file=sys.stderr)
    return 1 if failed else 0


def _summary_values(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """One case's columns of summary.csv from its metrics.json: volumes, the map's plausibility (empty for outputs
    of versions without it), the codes of its quality warnings and, with a SPECT, the agreement."""
    out = {"right_ml": metrics["lung_volume_ml"]["right"], "left_ml": metrics["lung_volume_ml"]["left"],
           "high_ml": metrics["functional_volume_ml"]["high"], "low_ml": metrics["functional_volume_ml"]["low"]}
    plausibility = metrics.get("plausibility") or {}
    for side in ("right", "left"):
        out[f"posterior_to_anterior_{side}"] = plausibility.get("lungs", {}).get(side, {}).get("posterior_to_anterior")
    share = plausibility.get("right_share")
    out["right_share_percent"] = None if share is None else 100.0 * share
    out["warnings"] = ";".join(w.get("code", "warning") if isinstance(w, dict) else "warning"
                               for w in metrics.get("warnings", []))
    ev = metrics.get("evaluation")
    if ev:
        for key in ("prediction", "hu_baseline"):
            for name in ("spearman", "ssim", "dsc_high", "dsc_low"):
                out[f"{key}_{name}"] = ev[key]["patient"][name]
    return out


