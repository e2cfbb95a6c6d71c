"""``ctpm phantom`` and ``ctpm demo``: write a synthetic chest SPECT/CT cohort (see :mod:`.synthetic`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

from ImagingBasics.devices import DEVICE
from ImagingBasics.errors import UserError
from ImagingBasics.parallel import default_workers


def parse_pathology_overrides(items: List[str]) -> Dict[str, float]:
    """``["tumour=1", "emphysema=0"]`` -> ``{"tumour": 1.0, "emphysema": 0.0}`` (names checked later)."""
    out: Dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--pathology expects NAME=PROBABILITY (e.g. tumour=1), got {item!r}") from None
    return out


def add_phantom_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="generate a synthetic chest SPECT/CT cohort (CT, SPECT, truth perfusion, lungs, lobes, meta.json)",
        description="Generate synthetic chest SPECT/CT cases, one folder per case (case000, case001, ...), and a "
                    "cohort.csv manifest. Deterministic for a given --seed.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (created; existing case folders are replaced)")
    p.add_argument("--n", type=int, default=3, help="number of cases (default 3)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (default 0); case i uses a seed derived from it")
    p.add_argument("--size", choices=["small", "full"], default="small",
                   help="small: 128x128 at 3.9 mm, 5 mm slices (fast); full: 512x512 at 0.977 mm, 1.25-3.75 mm slices "
                        "(with --acquisition random: 0.6-1.0 mm pixels, 0.6-5 mm slices, one in six downsampled to 3-5.5 mm)")
    p.add_argument("--spect-grid", choices=["standard", "fine"], default="standard",
                   help="standard: 128^3 at 4.42 mm; fine: 128x128x60 at 2.76x2.76x5 mm")
    p.add_argument("--pathology", action="append", default=[], metavar="NAME=P",
                   help="override a pathology probability (emphysema, tumour, embolism, consolidation), e.g. "
                        "--pathology tumour=0 for a pre-training cohort without tumours; repeatable")
    p.add_argument("--acquisition", choices=["random", "none"], default="random",
                   help="random (default): each CT through a randomised scanner and protocol (kernel, dose and noise, "
                        "inspiration level, "
                        "slice thickness, pixel size, contrast, HU offset, breathing, partial field of view, sometimes "
                        "downsampled), every drawn value in meta.json; none: one scanner for every case (white noise, "
                        "no contrast, the fixed grid of --size)")
    p.add_argument("--preview", action="store_true", help="also write preview.png (CT, truth, SPECT) in each case folder")
    p.add_argument("--prefix", default="case", help="case folder and id prefix (default case: case000, case001, ...)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help=f"cases generated at once, one process each (default: cores - 1 = {default_workers()})")
    p.add_argument("--resume", action="store_true",
                   help="keep the case folders that a stopped run of the same command already finished (same seed, "
                        "size, grid, pathologies, acquisition) and make only the others")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_phantom)


def _phantom(args: argparse.Namespace) -> int:
    from .synthetic.cohort import generate_cohort

    folders = generate_cohort(args.out, args.n, args.seed, args.size, args.spect_grid,
                              parse_pathology_overrides(args.pathology), args.preview, progress=not args.quiet,
                              workers=args.workers, prefix=args.prefix, acquisition=args.acquisition,
                              keep_complete=args.resume)
    for folder in folders:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        print(_summary(folder, meta))
    print(f"wrote {len(folders)} cases and {args.out / 'cohort.csv'}")
    return 0


def _summary(folder: Path, meta: dict) -> str:
    lung_l = sum(meta["lung_volume_ml"].values()) / 1000.0
    pathologies = ", ".join(sorted(meta["pathologies"])) or "none"
    return f"{folder}: lungs {lung_l:.2f} L, mean lung {meta['mean_lung_hu']:.0f} HU, pathologies: {pathologies}"


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the demonstration: a synthetic patient with a tumour through the whole pipeline",
                       description="Generate a small synthetic SPECT/CT patient with a lung tumour (and its preview), "
                                   "then run the whole pipeline on it (SPECT registration, built-in lung segmentation, "
                                   "the network with the bundled weights, evaluation against the SPECT) and print the "
                                   "region table. The bundled model is trained on synthetic patients only (see "
                                   "Resources/Models/MODEL_CARD.md); an installation without it falls back to the HU-only "
                                   "baseline, and the outputs say so.")
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic patient (default 1)")
    p.add_argument("--weights", help="network weights (default: the bundled model, when installed)")
    DEVICE.add_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    import sys

    from .pipeline import RunOptions
    from .run_cli import _print_summary, load_model
    from .synthetic.cohort import generate_cohort
    from .weights import bundled_weights

    options = RunOptions(device=DEVICE.check(args.device))  # every other option at its default (0.66 split, ...)
    patient = generate_cohort(args.out / "patient", 1, args.seed, "small", pathology_probabilities={"tumour": 1.0},
                              preview=True, progress=False)[0]
    meta = json.loads((patient / "meta.json").read_text(encoding="utf-8"))
    print(_summary(patient, meta))
    print(f"  phantom figure: {patient / 'preview.png'}")
    baseline = args.weights is None and bundled_weights() is None
    if baseline:
        print("note: this installation has no bundled network weights: the HU-only baseline predicts", file=sys.stderr)
    model, info = load_model(args.weights, baseline, options.device)
    if not baseline:
        trained_on = info["metadata"].get("trained_on", "unknown data")
        print(f"model: {info['weights']} ({info['config']['arch']}; trained on {trained_on})")
    from .run_cli import _progress_bar, run_case

    bar, update = _progress_bar(args.quiet)
    try:
        result = run_case(str(patient / "ct.nrrd"), args.out / "results", options, model, info,
                          spect=str(patient / "spect.nrrd"), progress=update)
    finally:
        if bar is not None:
            bar.close()
    _print_summary(result, args.out / "results")
    print(f"demo finished: overview figure {args.out / 'results' / 'overview.png'}")
    return 0
