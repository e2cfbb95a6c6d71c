"""``ctpm plan``: compare radiotherapy plans by the dose the functioning lung receives (see :mod:`.planning`).

Inputs: a perfusion map with its lungs (``--perfusion`` + ``--lungs``, optional ``--lobes``) or the folder of a
``ctpm run`` (``--results``: its perfusion.nrrd, lungs.nrrd and lobes.nrrd), one or more planned doses in Gy
(``--dose FILE[:NAME]``), optional exclusion masks (``--exclude``, e.g. the GTV). The command follows the project's
conventions: every input read and checked before the first DVH, a problem is one ``error:`` line and exit status 2,
the outputs are written all at once into ``--out`` (never an input folder) and nothing else is written.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ImagingBasics.errors import UserError

from .planning.options import PLAN


@dataclass
class PlanInputs:
    """The input files of one ``ctpm plan`` run (paths as given): plan name -> dose file, mask name -> mask file."""

    perfusion: str
    lungs: str
    lobes: Optional[str] = None
    doses: Dict[str, str] = field(default_factory=dict)
    exclusions: Dict[str, str] = field(default_factory=dict)
    results: Optional[str] = None

    def paths(self) -> List[str]:
        """Every input path (for the --out checks)."""
        return [p for p in (self.perfusion, self.lungs, self.lobes, self.results, *self.doses.values(),
                            *self.exclusions.values()) if p]

    def to_dict(self) -> Dict[str, object]:
        return {"results": self.results, "perfusion": self.perfusion, "lungs": self.lungs, "lobes": self.lobes,
                "doses": dict(self.doses), "exclusions": dict(self.exclusions)}


def add_plan_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="compare radiotherapy plans by the dose to functioning lung (function-weighted DVH, fMLD, fV20)",
        description="Evaluate one or more planned doses (in Gy) against a perfusion map: anatomical and "
                    "function-weighted DVHs and MLD, fMLD, V5/V20/V30, fV5/fV20/fV30 and the mean dose in the high- "
                    "and low-function volumes per plan, for the right, left and both lungs and each lobe, optionally "
                    "minus the GTV/PTV. Writes dvh.csv, metrics.csv, metrics.json, dvh.png and, with several plans, "
                    "comparison.csv and comparison.png to --out. Definitions and references: docs/PLANNING.md.")
    p.add_argument("--results", metavar="DIR",
                   help="the output folder of ctpm run: its perfusion.nrrd, lungs.nrrd and lobes.nrrd (instead of "
                        "--perfusion; --lungs and --lobes override its files)")
    p.add_argument("--perfusion", metavar="FILE", help="perfusion map (SPECT on the CT, or ctpm run's perfusion.nrrd)")
    p.add_argument("--lungs", metavar="FILE", help="lung label map on the perfusion map's grid (needed with --perfusion)")
    p.add_argument("--lobes", metavar="FILE", help="lobe label map on the same grid (optional: per-lobe rows)")
    p.add_argument("--dose", action="append", default=[], metavar="FILE[:NAME]",
                   help="planned dose in Gy (any readable image, any grid covering the lungs); NAME names the plan "
                        "(default: the file name); repeat for several plans")
    p.add_argument("--exclude", action="append", default=[], metavar="MASK",
                   help="label map whose non-zero voxels are removed from every structure (e.g. the GTV or PTV: "
                        "'lung minus GTV'); repeatable")
    PLAN.add_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=_plan)


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nrrd", ".nii", ".mha", ".mhd", ".h33", ".hdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_dose_argument(text: str) -> Tuple[str, str]:
    """``FILE[:NAME]`` -> (plan name, file). An existing file whose name holds a colon is taken whole."""
    if Path(text).exists() or ":" not in text:
        return _stem(text), text
    path, _, name = text.rpartition(":")
    if not path or not name.strip() or "/" in name or "\\" in name:
        return _stem(text), text
    return name.strip(), path


def resolve_inputs(args: argparse.Namespace) -> PlanInputs:
    """The input files from the arguments, or a one-line UserError when they do not fit together."""
    if args.results and args.perfusion:
        raise UserError("give --results (a ctpm run folder) or --perfusion with --lungs, not both")
    if not args.results and not args.perfusion:
        raise UserError("give the perfusion: --results DIR (a ctpm run folder) or --perfusion FILE with --lungs FILE")
    if not args.dose:
        raise UserError("give at least one planned dose: --dose FILE[:NAME] (in Gy)")
    lungs, lobes, perfusion = args.lungs, args.lobes, args.perfusion
    if args.results:
        from .report import OUTPUT_FILES

        folder = Path(args.results)
        if not folder.is_dir():
            raise UserError(f"--results {args.results} is not a folder; give the output folder of ctpm run")
        perfusion = str(folder / OUTPUT_FILES["perfusion"])
        if not Path(perfusion).is_file():
            raise UserError(f"--results {args.results} holds no {OUTPUT_FILES['perfusion']}: is it a ctpm run folder?")
        lungs = lungs or str(folder / OUTPUT_FILES["lungs"])
        if lobes is None and (folder / OUTPUT_FILES["regions"]).is_file():
            lobes = str(folder / OUTPUT_FILES["regions"])
    elif not lungs:
        raise UserError("--perfusion needs --lungs: the lung label map on the perfusion map's grid")
    doses: Dict[str, str] = {}
    for item in args.dose:
        name, path = parse_dose_argument(item)
        if name in doses:
            raise UserError(f"two plans are named {name!r}: name them apart with --dose FILE:NAME")
        doses[name] = path
    exclusions: Dict[str, str] = {}
    for path in args.exclude:
        name = Path(path).name
        exclusions[name if name not in exclusions else path] = path
    return PlanInputs(perfusion, lungs, lobes, doses, exclusions, args.results)


def read_inputs(inputs: PlanInputs):
    """Every input image read (a missing or unreadable file is a one-line UserError): (perfusion, lungs, lobes or
    None, {plan: dose}, {mask: volume})."""
    from ImagingBasics.imageio import read_volume

    perfusion = read_volume(inputs.perfusion)
    lungs = read_volume(inputs.lungs)
    lobes = read_volume(inputs.lobes) if inputs.lobes else None
    doses = {name: read_volume(path) for name, path in inputs.doses.items()}
    exclusions = {name: read_volume(path) for name, path in inputs.exclusions.items()}
    return perfusion, lungs, lobes, doses, exclusions


def _plan(args: argparse.Namespace) -> int:
    from ImagingBasics.outputs import check_output_folder, output_folder

    from .planning.evaluation import evaluate_plans
    from .planning.report import OUTPUT_FILES, write_plan_outputs

    options = PLAN.from_arguments(args)
    inputs = resolve_inputs(args)
    names = list(OUTPUT_FILES.values())
    check_output_folder(args.out, inputs.paths(), names)
    perfusion, lungs, lobes, doses, exclusions = read_inputs(inputs)
    result = evaluate_plans(perfusion, lungs, doses, lobes, exclusions, **options)
    with output_folder(args.out, inputs.paths(), names, OUTPUT_FILES["metrics"]) as staging:
        write_plan_outputs(result, staging, dict(inputs.to_dict(), options=options))
    _print_summary(result, args.out)
    return 0


def _number(value, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _print_summary(result, out: Path) -> None:
    print(f"{'plan':<16}{'structure':<14}{'MLD Gy':>8}{'fMLD Gy':>9}{'V20 %':>7}{'fV20 %':>8}{'V5 %':>7}{'fV5 %':>7}")
    for plan in result.plans:
        for row in plan.rows:
            if row["kind"] in ("lung", "lungs"):
                print(f"{plan.name[:15]:<16}{row['structure']:<14}{_number(row['mld_gy']):>8}"
                      f"{_number(row['fmld_gy']):>9}{_number(row['v20_percent']):>7}{_number(row['fv20_percent']):>8}"
                      f"{_number(row['v5_percent']):>7}{_number(row['fv5_percent']):>7}")
    for warning in result.warnings:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(f"results in {out}")
