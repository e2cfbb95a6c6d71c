"""Arguments of the DoseCNN Slicer batch script (``Resources/Scripts/DoseCNNBatch.py``), as a plain function.

    Slicer --no-splash --no-main-window --python-script DoseCNNBatch.py --spect S --ct CT --activity-mbq A
           [--labels L] [--reference R] [--method vdk|cnn] [--weights W] [--device auto|cpu|cuda] --out DIR
    Slicer --no-splash --no-main-window --python-script DoseCNNBatch.py --manifest TIMEPOINTS.csv
           [--reference-ct CT] [--labels L] [--fit mono|bi|trapezoid] [--start constant|zero] [--no-register]
           [--registration-metric meansquares|mattes] [--method ...] --out DIR

One time point (``--spect``, ``--ct`` and a calibration: ``--activity-mbq``, the activity in the SPECT's field of view,
or ``--calibration``, Bq per count) gives the dose-rate map; a manifest of time points (the CSV of ``dosecnn
integrate``: columns time_h, spect, ct and activity_mbq or bq_per_count, paths relative to the CSV) gives the absorbed
dose. ``--labels``: a label map on the (reference) CT grid, or a ``.seg.nrrd`` segmentation (its segment names name the
table's rows). The argument parser and the file checks are CTPerfusionMapping's (``CTPerfusionMappingLib.slicer_glue.batch``);
exit status 0 done, 1 failed, 2 bad arguments (the ``dosecnn`` convention).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from ImagingBasics.batch import BatchArgumentParser, existing_file
from ImagingBasics.devices import DEVICE_CHOICES as DEVICES
from ImagingBasics.errors import UserError
from ImagingBasics.validation import read_ct

from .commands import FIT_MODELS, METHODS, REGISTRATION_METRICS, START_MODES


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
    method: str = "vdk"
    weights: Optional[str] = None
    device: str = "auto"
    fit: str = "mono"
    start: str = "constant"
    register: bool = True
    registration_metric: str = "meansquares"

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


def build_parser() -> argparse.ArgumentParser:
    p = BatchArgumentParser(prog="DoseCNNBatch.py", description="DoseCNN in Slicer without the GUI.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--spect", help="SPECT of one time point (counts; with --ct and a calibration)")
    source.add_argument("--manifest", help="CSV of time points: time_h, spect, ct, activity_mbq or bq_per_count")
    p.add_argument("--ct", help="CT in HU (with --spect); with --manifest the same as --reference-ct")
    p.add_argument("--reference-ct", help="with --manifest: the CT whose grid the outputs use (default: the first "
                                          "time point's)")
    cal = p.add_mutually_exclusive_group()
    cal.add_argument("--activity-mbq", type=float, help="activity in the SPECT's field of view (MBq), with --spect")
    cal.add_argument("--calibration", type=float, help="Bq per SPECT count, with --spect")
    p.add_argument("--labels", help="organ/lesion label map on the (reference) CT grid, or a .seg.nrrd segmentation")
    p.add_argument("--reference", help="reference map on the CT grid for MDE/NRMSE: dose rate (mGy/s) for one time "
                                       "point, absorbed dose (Gy) for a manifest")
    p.add_argument("--method", choices=sorted(METHODS.values()), default="vdk")
    p.add_argument("--weights", help="CNN weights (--method cnn; default: the bundled model)")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--fit", choices=sorted(FIT_MODELS.values()), default="mono")
    p.add_argument("--start", choices=sorted(START_MODES.values()), default="constant")
    p.add_argument("--no-register", action="store_true", help="do not register the time points' CTs")
    p.add_argument("--registration-metric", choices=sorted(REGISTRATION_METRICS.values()), default="meansquares")
    p.add_argument("--out", required=True, help="output folder")
    return p


def parse_batch_arguments(argv: Sequence[str]) -> DoseBatchRequest:
    """The batch request of ``argv`` (``sys.argv[1:]``); raises UserError with a one-line message when it is wrong."""
    args = build_parser().parse_args(list(argv))
    if args.weights and args.method != "cnn":
        raise UserError("--weights goes with --method cnn")
    existing_file(args.weights, "CNN weights")
    existing_file(args.labels, "labels")
    existing_file(args.reference, "reference map")
    common = dict(out=Path(args.out), labels=args.labels, reference=args.reference, method=args.method,
                  weights=args.weights, device=args.device)
    if args.spect:
        if not args.ct:
            raise UserError("--spect needs --ct (the CT of the same time point)")
        if args.activity_mbq is None and args.calibration is None:
            raise UserError("give a calibration: --activity-mbq (activity in the SPECT's field of view) or --calibration "
                            "(Bq per count)")
        value = args.activity_mbq if args.activity_mbq is not None else args.calibration
        if not value > 0:
            raise UserError("the calibration (--activity-mbq or --calibration) must be positive")
        if args.reference_ct:
            raise UserError("--reference-ct goes with --manifest")
        existing_file(args.spect, "SPECT")
        read_ct(args.ct)  # checked up front: a bad CT is a bad argument (exit 2), not a failed run
        return DoseBatchRequest(ct=args.ct, spect=args.spect, activity_mbq=args.activity_mbq,
                                bq_per_count=args.calibration, **common)
    from ..dosimetry.integrate import read_time_manifest

    if args.activity_mbq is not None or args.calibration is not None:
        raise UserError("with --manifest the calibration is a column of the CSV (activity_mbq or bq_per_count)")
    if args.ct and args.reference_ct and Path(args.ct) != Path(args.reference_ct):
        raise UserError("--ct and --reference-ct name different CTs; give one")
    specs = read_time_manifest(Path(args.manifest))  # one clear UserError per problem of the CSV
    if args.fit == "bi" and len(specs) < 3:
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
    return DoseBatchRequest(ct=reference_ct, time_points=points, fit=args.fit, start=args.start,
                            register=not args.no_register, registration_metric=args.registration_metric, **common)
