"""``ctpm plan``: compare radiotherapy plans by the dose the functioning lung receives (see :mod:`.planning`).

Inputs: a perfusion map with its lungs (``--perfusion`` + ``--lungs``, optional ``--lobes``) or the folder of a
``ctpm run`` (``--results``: its perfusion.nrrd, lungs.nrrd and lobes.nrrd), one or more planned doses in Gy
(``--dose FILE[:NAME]``: an image, or an RT Dose recognised by its content), optional exclusion masks (``--exclude``,
e.g. the GTV, or ``--exclude-structure NAME`` of an RT Structure Set given by ``--structures``) and, for the DICOM
checks, the planning CT's series (``--ct-dicom``). The command follows the project's conventions: every input read
and checked before the first DVH (the DICOM headers before any voxel), a problem is one ``error:`` line and exit
status 2, the outputs are written all at once into ``--out`` (never an input folder, nor inside one) and nothing else
is written.

DICOM (docs/PLANNING.md): an RT Dose is read in Gy (:func:`ImagingBasics.dicom_rt.read_rtdose`; its
DoseSummationType goes to metrics.json, and a dose of less than a whole plan, e.g. one FRACTION, is a warning); the
named structures of an RT Structure Set are rasterised onto the perfusion grid
(:func:`ImagingBasics.dicom_rt.read_rtstruct`) and excluded like ``--exclude`` masks. With ``--ct-dicom`` the RT Dose
and the RT Structure Set must lie on the CT's frame of reference and the perfusion map on the CT series' grid; without
it, the RT objects must at least share one frame of reference.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ImagingBasics.dicom_inputs import CT_SERIES
from ImagingBasics.errors import UserError
from ImagingBasics.quality import QualityWarning

from .planning.options import PLAN

#: DoseSummationType values of a dose for a whole plan (or several); any other (FRACTION, BEAM, ...) is a warning
WHOLE_PLAN_SUMMATION_TYPES = ("PLAN", "MULTI_PLAN", "PLAN_OVERVIEW")


@dataclass
class PlanInputs:
    """The input files of one ``ctpm plan`` run (paths as given): plan name -> dose file, mask name -> mask file."""

    perfusion: str
    lungs: str
    lobes: Optional[str] = None
    doses: Dict[str, str] = field(default_factory=dict)
    exclusions: Dict[str, str] = field(default_factory=dict)
    results: Optional[str] = None
    structures: Optional[str] = None
    exclude_structures: List[str] = field(default_factory=list)
    ct_dicom: Optional[str] = None
    ct_series: Optional[str] = None

    def paths(self) -> List[str]:
        """Every input path (for the --out checks)."""
        return [p for p in (self.perfusion, self.lungs, self.lobes, self.results, *self.doses.values(),
                            *self.exclusions.values(), self.structures, self.ct_dicom) if p]

    def to_dict(self) -> Dict[str, object]:
        d: Dict[str, object] = {"results": self.results, "perfusion": self.perfusion, "lungs": self.lungs,
                                "lobes": self.lobes, "doses": dict(self.doses), "exclusions": dict(self.exclusions)}
        if self.structures:
            d.update(structures=self.structures, exclude_structures=list(self.exclude_structures))
        if self.ct_dicom:
            d.update(ct_dicom=self.ct_dicom, ct_series=self.ct_series)
        return d


@dataclass
class DicomChecks:
    """What the DICOM headers of a ``ctpm plan`` run said, before any voxel was read: the CT series' grid (with
    ``--ct-dicom``), each RT Dose's header by plan name, the structures to exclude (as named in the RT Structure Set),
    the frame of reference every RT object must lie on (None: nothing to check against) and the warnings."""

    ct: Optional[object] = None
    dose_info: Dict[str, object] = field(default_factory=dict)
    structure_names: List[str] = field(default_factory=list)
    frame_of_reference_uid: Optional[str] = None
    warnings: List[QualityWarning] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        """The DICOM part of metrics.json's inputs."""
        doses = {plan: {"dose_units": i.dose_units, "dose_type": i.dose_type, "dose_summation_type": i.summation_type,
                        "frame_of_reference_uid": i.frame_of_reference_uid, "series_uid": i.series_uid,
                        "comment": i.comment} for plan, i in self.dose_info.items()}
        ct = None
        if self.ct is not None:
            ct = {"series_uid": self.ct.series.series_uid, "frame_of_reference_uid": self.ct.series.frame_of_reference_uid,
                  "study_uid": self.ct.series.study_uid}
        return {"ct": ct, "rtdose": doses, "excluded_structures": list(self.structure_names),
                "frame_of_reference_uid": self.frame_of_reference_uid}


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
                   help="planned dose in Gy (any readable image, or an RT Dose DICOM file, recognised by its content; "
                        "any grid covering the lungs); NAME names the plan (default: the file name); repeat for several "
                        "plans")
    p.add_argument("--exclude", action="append", default=[], metavar="MASK",
                   help="label map whose non-zero voxels are removed from every structure (e.g. the GTV or PTV: "
                        "'lung minus GTV'); repeatable")
    p.add_argument("--structures", metavar="RTSTRUCT",
                   help="RT Structure Set (DICOM) drawn on the planning CT, holding the structures named by "
                        "--exclude-structure")
    p.add_argument("--exclude-structure", action="append", default=[], metavar="NAME",
                   help="a structure of --structures (e.g. GTV or PTV; case is ignored) rasterised onto the perfusion "
                        "grid and removed from every structure like an --exclude mask; repeatable")
    p.add_argument("--ct-dicom", metavar="FOLDER",
                   help="the planning CT's DICOM series folder: the RT Dose and RT Structure Set must lie on its "
                        "frame of reference and the perfusion map on its grid")
    CT_SERIES.add_argument(p)
    PLAN.add_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=_plan)


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nrrd", ".nii", ".mha", ".mhd", ".h33", ".hdr", ".dcm"):
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
    _check_dicom_arguments(args)
    return PlanInputs(perfusion, lungs, lobes, doses, exclusions, args.results, args.structures,
                      list(args.exclude_structure), args.ct_dicom, CT_SERIES.check(args.ct_series))


def _check_dicom_arguments(args: argparse.Namespace) -> None:
    """The DICOM options that only make sense together."""
    if args.exclude_structure and not args.structures:
        raise UserError("--exclude-structure needs --structures RTSTRUCT: the structure set that holds it")
    if args.structures and not args.exclude_structure:
        raise UserError("--structures needs --exclude-structure NAME: the structures to remove from the lungs (e.g. GTV)")
    if args.ct_series is not None and not args.ct_dicom:
        raise UserError("--ct-series chooses a series of --ct-dicom FOLDER; give the CT's DICOM folder too")


# --- DICOM headers, checked before any voxel ------------------------------------------------------------------------
def _rtdose_headers(inputs: PlanInputs) -> Dict[str, object]:
    """The RT Dose header of each plan whose dose file is an RT Dose (by content); a DICOM file of another kind is a
    one-line UserError."""
    from ImagingBasics.dicom_inputs import dicom_modality
    from ImagingBasics.dicom_rt import rtdose_info

    found = {}
    for plan, path in inputs.doses.items():
        modality = dicom_modality(path)
        if modality == "RTDOSE":
            found[plan] = rtdose_info(path)
        elif modality is not None:
            raise UserError(f"--dose {path} is a DICOM {modality} file, not an RT Dose; give the plan's RT Dose or an "
                            "image in Gy")
    return found


def structure_names(path: str, wanted: List[str]) -> List[str]:
    """The names, as the RT Structure Set spells them, of the structures ``wanted`` (case ignored).

    Raises:
        UserError: not an RT Structure Set, a name it does not hold (the message lists those it holds), or a
        structure without closed contours.
    """
    from ImagingBasics.dicom_inputs import require_modality
    from ImagingBasics.dicom_rt import list_structures

    require_modality(path, "RTSTRUCT", "--structures")
    infos = list_structures(path)
    by_name = {}
    for info in infos:
        by_name.setdefault(info.name.strip().lower(), info)
    names = []
    for name in wanted:
        info = by_name.get(name.strip().lower())
        if info is None:
            available = ", ".join(i.name for i in infos) or "none"
            raise UserError(f"--exclude-structure {name}: {Path(path).name} holds no such structure (it holds: "
                            f"{available})")
        if "CLOSED_PLANAR" not in info.contour_types:
            raise UserError(f"--exclude-structure {name}: the structure {info.name} of {Path(path).name} has no closed "
                            "contours, so no volume to exclude")
        if info.name not in names:
            names.append(info.name)
    return names


def _structure_frames(path: str) -> List[str]:
    from ImagingBasics.dicom_rt import list_structures

    return sorted({i.frame_of_reference_uid for i in list_structures(path) if i.frame_of_reference_uid})


def _common_frame(frames: Dict[str, List[str]], ct) -> Optional[str]:
    """The frame of reference every RT object lies on: the CT's with ``--ct-dicom``, else the one the RT objects share
    (None when there is no RT object); a one-line UserError for an object on another frame."""
    expected = ct.series.frame_of_reference_uid if ct is not None else None
    for what, uids in frames.items():
        if not uids:
            continue
        if expected is None:
            expected = uids[0]
        wrong = [u for u in uids if u != expected]
        if wrong:
            against = f"the CT's ({expected})" if ct is not None else f"that of the other DICOM inputs ({expected})"
            raise UserError(f"{what} lies on another frame of reference ({', '.join(wrong)}) than {against}; it was made "
                            "on another scan: give the RT objects of this CT")
    return expected


def check_dicom_inputs(inputs: PlanInputs) -> DicomChecks:
    """Every DICOM header checked before any voxel is read (:class:`DicomChecks`)."""
    from ImagingBasics.dicom_inputs import ct_series_geometry

    checks = DicomChecks()
    if inputs.ct_dicom:
        checks.ct = ct_series_geometry(inputs.ct_dicom, inputs.ct_series)
    checks.dose_info = _rtdose_headers(inputs)
    frames = {f"the RT Dose {inputs.doses[plan]}": [info.frame_of_reference_uid] if info.frame_of_reference_uid else []
              for plan, info in checks.dose_info.items()}
    if inputs.structures:
        checks.structure_names = structure_names(inputs.structures, inputs.exclude_structures)
        frames[f"the RT Structure Set {inputs.structures}"] = _structure_frames(inputs.structures)
    checks.frame_of_reference_uid = _common_frame(frames, checks.ct)
    if checks.ct is None and (checks.dose_info or inputs.structures):
        checks.warnings.append(QualityWarning("dicom_frame_unchecked", "no --ct-dicom: the RT objects' frame of "
                                              "reference was not checked against the planning CT's"))
    return checks


def summation_warnings(checks: DicomChecks) -> Dict[str, List[QualityWarning]]:
    """Per plan, a warning when its RT Dose is less than a whole plan (DoseSummationType FRACTION, BEAM, ...)."""
    found: Dict[str, List[QualityWarning]] = {}
    for plan, info in checks.dose_info.items():
        kind = info.summation_type or "not stated"
        if kind not in WHOLE_PLAN_SUMMATION_TYPES:
            found[plan] = [QualityWarning("dose_not_whole_plan", f"the RT Dose of plan '{plan}' has DoseSummationType "
                                          f"{kind}, not PLAN: its metrics are those of that dose, not of the whole plan",
                                          {"plan": plan, "dose_summation_type": kind})]
    return found


# --- reading ------------------------------------------------------------------------------------------------------
def _read_dose(path: str, is_rtdose: bool, frame_of_reference_uid: Optional[str]):
    from ImagingBasics.dicom_rt import read_rtdose
    from ImagingBasics.imageio import read_volume

    return read_rtdose(path, frame_of_reference_uid) if is_rtdose else read_volume(path)


def structure_exclusions(inputs: PlanInputs, checks: DicomChecks, perfusion) -> Dict[str, object]:
    """The structures to exclude rasterised onto the perfusion grid: ``"NAME (file)"`` -> uint8 label Volume."""
    import numpy as np

    from ImagingBasics.dicom_rt import read_rtstruct

    if not inputs.structures:
        return {}
    masks = read_rtstruct(inputs.structures, perfusion, checks.frame_of_reference_uid)
    file_name = Path(inputs.structures).name
    return {f"{name} ({file_name})": perfusion.with_array(np.asarray(masks[name], dtype=np.uint8))
            for name in checks.structure_names}


def read_inputs(inputs: PlanInputs, checks: Optional[DicomChecks] = None):
    """Every input image read (a missing or unreadable file is a one-line UserError): (perfusion, lungs, lobes or
    None, {plan: dose}, {mask: volume}). ``checks`` (:func:`check_dicom_inputs`): the RT Doses are read in Gy on the
    checked frame of reference, the perfusion map must lie on the CT series' grid, the excluded structures are added
    to the masks."""
    from ImagingBasics.dicom_inputs import require_on_ct_grid
    from ImagingBasics.imageio import read_volume

    checks = checks or DicomChecks()
    perfusion = read_volume(inputs.perfusion)
    if checks.ct is not None:
        require_on_ct_grid(perfusion, checks.ct, "the perfusion map")
    lungs = read_volume(inputs.lungs)
    lobes = read_volume(inputs.lobes) if inputs.lobes else None
    doses = {name: _read_dose(path, name in checks.dose_info, checks.frame_of_reference_uid)
             for name, path in inputs.doses.items()}
    exclusions = {name: read_volume(path) for name, path in inputs.exclusions.items()}
    exclusions.update(structure_exclusions(inputs, checks, perfusion))
    return perfusion, lungs, lobes, doses, exclusions


def _plan(args: argparse.Namespace) -> int:
    from ImagingBasics.outputs import check_output_folder, output_folder

    from .planning.evaluation import evaluate_plans
    from .planning.report import OUTPUT_FILES, write_plan_outputs

    options = PLAN.from_arguments(args)
    inputs = resolve_inputs(args)
    names = list(OUTPUT_FILES.values())
    check_output_folder(args.out, inputs.paths(), names)
    checks = check_dicom_inputs(inputs)
    perfusion, lungs, lobes, doses, exclusions = read_inputs(inputs, checks)
    result = evaluate_plans(perfusion, lungs, doses, lobes, exclusions, **options)
    add_dicom_warnings(result, checks)
    metadata = dict(inputs.to_dict(), options=options)
    if checks.ct is not None or checks.dose_info or inputs.structures:
        metadata["dicom"] = checks.to_dict()
    with output_folder(args.out, inputs.paths(), names, OUTPUT_FILES["metrics"]) as staging:
        write_plan_outputs(result, staging, metadata)
    _print_summary(result, args.out)
    return 0


def add_dicom_warnings(result, checks: DicomChecks) -> None:
    """The DICOM warnings into the result (metrics.json and the printed summary): per plan, a dose of less than a
    whole plan; for all plans, an unchecked frame of reference."""
    for plan in result.plans:
        plan.warnings.extend(summation_warnings(checks).get(plan.name, []))
    result.lung.warnings.extend(checks.warnings)


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
