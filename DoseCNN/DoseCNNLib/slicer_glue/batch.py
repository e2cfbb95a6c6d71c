"""Arguments of the DoseCNN Slicer batch script (``Resources/Scripts/DoseCNNBatch.py``), as a plain function.

    Slicer --no-splash --no-main-window --python-script DoseCNNBatch.py --spect S --ct CT --activity-mbq A
           [--labels L] [--reference R] [--method vdk|vdk-tissue|cnn] [--weights W] [--device auto|cpu|cuda] --out DIR
    Slicer --no-splash --no-main-window --python-script DoseCNNBatch.py --manifest TIMEPOINTS.csv
           [--reference-ct CT] [--labels L] [--fit mono|bi|trapezoid] [--start constant|zero] [--no-register]
           [--registration-metric meansquares|mattes] [--method ...] --out DIR

One time point (``--spect``, ``--ct`` and a calibration: ``--activity-mbq``, the activity in the SPECT's field of view,
or ``--calibration``, Bq per count) gives the dose-rate map; a manifest of time points (the CSV of ``dosecnn
integrate``: columns time_h, spect, ct and activity_mbq or bq_per_count, paths relative to the CSV) gives the absorbed
dose. ``--labels``: a label map on the (reference) CT grid, or a ``.seg.nrrd`` segmentation (its segment names name the
table's rows). The options are the Slicer module's (:data:`~.options.MODULE`: the flags, ranges and checks of
``dosecnn run`` and ``integrate``); every CT is checked up front. Exit status 0 done, 1 failed, 2 bad arguments (the
``dosecnn`` convention).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from ImagingBasics.batch import BatchArgumentParser, checked_image, checked_label_map, checked_weights, existing_file
from ImagingBasics.errors import UserError
from ImagingBasics.validation import read_ct

from ..options import MODULE


@dataclass
class DoseBatchTimePoint:
    time_h: float
    spect: str
    ct: str
    activity_mbq: Optional[float] = None
    bq_per_count: Optional[float] = None


@dataclass
class DoseBatchRequest:
    """What the batch script runs: one time point (``time_points`` empty) or a time-point manifest."""

    out: Path
    ct: str  # the CT of the single time point, or the reference CT (default: the first time point's)
    spect: Optional[str] = None
    activity_mbq: Optional[float] = None
    bq_per_count: Optional[float] = None
    time_points: List[DoseBatchTimePoint] = field(default_factory=list)
    labels: Optional[str] = None
    reference: Optional[str] = None
    method: str = MODULE["method"].default
    weights: Optional[str] = None
    device: str = MODULE["device"].default
    fit: str = MODULE["fit"].default
    start: str = MODULE["start"].default
    register: bool = MODULE["register"].default
    registration_metric: str = MODULE["registration_metric"].default

    @property
    def integrate(self) -> bool:
        return bool(self.time_points)

    @property
    def by_activity(self) -> bool:
        """Calibrated by the activity in the field of view (else by Bq per count)."""
        if self.time_points:
            return self.time_points[0].activity_mbq is not None
        return self.activity_mbq is not None

    @property
    def labels_are_segmentation(self) -> bool:
        return bool(self.labels) and str(self.labels).lower().endswith(".seg.nrrd")

    @property
    def case_id(self) -> str:
        return Path(self.out).name or "dose"

    @property
    def cases(self) -> List[DoseBatchRequest]:
        """One case: the request itself (the batch runner's interface)."""
        return [self]

    def options(self) -> dict:
        """The values of :data:`~.options.MODULE` by option name (a manifest's calibration: its common Bq per count,
        or None when every row gives its activity)."""
        return {name: getattr(self, name) for name in MODULE.names}


def build_parser() -> argparse.ArgumentParser:
    p = BatchArgumentParser(prog="DoseCNNBatch.py", description="DoseCNN in Slicer without the GUI.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--spect", help="SPECT of one time point (counts; with --ct and a calibration)")
    source.add_argument("--manifest", help="CSV of time points: time_h, spect, ct, activity_mbq or bq_per_count")
    p.add_argument("--ct", help="CT in HU (with --spect); with --manifest the same as --reference-ct")
    p.add_argument("--reference-ct", help="with --manifest: the CT whose grid the outputs use (default: the first "
                                          "time point's)")
    p.add_argument("--labels", help="organ/lesion label map on the (reference) CT grid, or a .seg.nrrd segmentation")
    p.add_argument("--reference", help="reference map on the CT grid for MDE/NRMSE: dose rate (mGy/s) for one time "
                                       "point, absorbed dose (Gy) for a manifest")
    p.add_argument("--weights", help="CNN weights (--method cnn; default: the bundled model)")
    MODULE.add_arguments(p)  # --activity-mbq and --calibration (with --spect) exclude each other
    p.add_argument("--out", required=True, help="output folder")
    return p


#: the files the batch script writes into --out (DoseCNNBatch.py)
OUTPUT_FILES = ["dose_rate.nrrd", "absorbed_dose.nrrd", "dose_rate_*h.nrrd", "segments.csv", "dvh.csv"]


def _check_out(out, inputs) -> None:
    """--out: a folder (not a file) that can be written and whose results would not replace an input."""
    from ImagingBasics.outputs import check_output_folder

    check_output_folder(out, inputs, OUTPUT_FILES)


def parse_batch_arguments(argv: Sequence[str]) -> DoseBatchRequest:
    """The batch request of ``argv`` (``sys.argv[1:]``); raises UserError with a one-line message when it is wrong."""
    args = build_parser().parse_args(list(argv))
    options = MODULE.from_arguments(args)  # the ranges the GUI and the Logic accept too (one line, exit 2)
    if args.weights and options["method"] != "cnn":
        raise UserError("--weights goes with --method cnn")
    checked_weights(args.weights)
    checked_label_map(args.labels, "labels")
    checked_image(args.reference, "reference map")
    common = dict(out=Path(args.out), labels=args.labels, reference=args.reference, method=options["method"],
                  weights=args.weights, device=options["device"])
    if args.spect:
        if not args.ct:
            raise UserError("--spect needs --ct (the CT of the same time point)")
        if options["activity_mbq"] is None and options["bq_per_count"] is None:
            raise UserError("give a calibration: --activity-mbq (activity in the SPECT's field of view) or --calibration "
                            "(Bq per count)")
        if args.reference_ct:
            raise UserError("--reference-ct goes with --manifest")
        checked_image(args.spect, "SPECT")
        read_ct(args.ct)  # checked up front: a bad CT is a bad argument (exit 2), not a failed run
        _check_out(args.out, [args.spect, args.ct, args.labels, args.reference, args.weights])
        return DoseBatchRequest(ct=args.ct, spect=args.spect, activity_mbq=options["activity_mbq"],
                                bq_per_count=options["bq_per_count"], **common)
    from ..dosimetry.integrate import read_time_manifest

    if options["activity_mbq"] is not None or options["bq_per_count"] is not None:
        raise UserError("with --manifest the calibration is a column of the CSV (activity_mbq or bq_per_count)")
    if args.ct and args.reference_ct and Path(args.ct) != Path(args.reference_ct):
        raise UserError("--ct and --reference-ct name different CTs; give one")
    specs = read_time_manifest(Path(args.manifest))  # one clear UserError per problem of the CSV
    if options["fit"] == "bi" and len(specs) < 3:
        raise UserError("the bi-exponential fit needs at least 3 time points; use --fit mono")
    points = [DoseBatchTimePoint(s.time_h, str(s.spect), str(s.ct), s.activity_mbq, s.bq_per_count) for s in specs]
    if len({p.activity_mbq is None for p in points}) > 1 or len({p.bq_per_count for p in points} - {None}) > 1:
        raise UserError("the module takes one calibration for all time points: give every row activity_mbq, or every "
                        "row the same bq_per_count")
    reference_ct = existing_file(args.reference_ct or args.ct, "reference CT") or points[0].ct
    own = any(Path(p.ct).resolve() == Path(reference_ct).resolve() for p in points)
    read_ct(reference_ct, "CT" if own else "reference CT")  # named as dosecnn integrate names it
    for point in points:  # every CT checked up front (exit 2), before any time point is computed
        if Path(point.ct).resolve() != Path(reference_ct).resolve():
            read_ct(point.ct, f"CT of the {point.time_h:g} h time point")
    _check_out(args.out, [args.manifest, args.labels, args.reference, args.weights, reference_ct]
               + [path for p in points for path in (p.spect, p.ct)])
    return DoseBatchRequest(ct=reference_ct, time_points=points, bq_per_count=points[0].bq_per_count,
                            fit=options["fit"], start=options["start"], register=options["register"],
                            registration_metric=options["registration_metric"], **common)
