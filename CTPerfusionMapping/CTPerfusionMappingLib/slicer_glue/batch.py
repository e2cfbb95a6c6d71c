"""Arguments of the Slicer batch script (``Resources/Scripts/CTPerfusionMappingBatch.py``), as a plain function.

    Slicer --no-splash --no-main-window --python-script CTPerfusionMappingBatch.py --ct CT [--spect S] --out DIR
    Slicer --no-splash --no-main-window --python-script CTPerfusionMappingBatch.py --manifest CASES.csv --out DIR

Slicer passes the script's arguments in ``sys.argv[1:]``. One case (``--ct``) or a manifest (columns ``id, ct`` and
optional ``spect, lungs, lobes``; paths relative to the CSV), one output folder per case (``DIR`` itself for a single
case, ``DIR/<id>`` for a manifest). The script exits with status 0 when every case succeeded, 1 when some failed, 2
for bad arguments (the ``ctpm`` convention).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from ImagingBasics.batch import BatchArgumentParser
from ImagingBasics.devices import DEVICE_CHOICES as DEVICES
from ImagingBasics.errors import UserError
from ImagingBasics.validation import read_ct

SEGMENTATION_SOURCES = ("Automatic", "TotalSegmentator", "Chest Imaging Platform", "Built-in", "Given segmentation")
#: SPECT-to-CT registration: Automatic = Slicer's BRAINSFit (rigid, Mattes MI) + BRAINSResample when installed, else
#: the built-in registration of the core (validated on synthetic phantoms: 0.65 mm mean error, bench/RESULTS.md).
REGISTRATION_METHODS = ("Automatic", "BRAINSFit", "Built-in")


@dataclass
class BatchCase:
    case_id: str
    ct: str
    out: Path
    spect: Optional[str] = None
    lungs: Optional[str] = None
    lobes: Optional[str] = None


@dataclass
class BatchRequest:
    cases: List[BatchCase]
    weights: Optional[str]
    device: str
    threshold: float
    register: bool
    segmentation_source: str
    uncertainty: bool
    registration_method: str = "Automatic"
    high_percentile: Optional[float] = None


def build_parser() -> argparse.ArgumentParser:
    p = BatchArgumentParser(prog="CTPerfusionMappingBatch.py", description="CTPerfusionMapping in Slicer without the GUI.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ct", help="chest CT file or DICOM folder")
    source.add_argument("--manifest", help="CSV with columns id, ct and optional spect, lungs, lobes")
    p.add_argument("--spect", help="perfusion SPECT (with --ct)")
    p.add_argument("--lungs", help="lung label map (with --ct)")
    p.add_argument("--lobes", help="lobe label map (with --ct)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", help="network weights (default: the bundled model)")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--threshold", type=float, default=0.66)
    p.add_argument("--high-percentile", type=float, help="high-functional volume at or above this percentile instead")
    p.add_argument("--no-register", action="store_true")
    p.add_argument("--registration", choices=REGISTRATION_METHODS, default="Automatic")
    p.add_argument("--segmentation", choices=SEGMENTATION_SOURCES, default="Automatic")
    p.add_argument("--uncertainty", action="store_true", help="Monte Carlo dropout standard deviation")
    return p


def parse_batch_arguments(argv: Sequence[str]) -> BatchRequest:
    """The batch request of ``argv`` (``sys.argv[1:]``); raises UserError with a one-line message when it is wrong."""
    from ImagingBasics.manifest import read_manifest

    args = build_parser().parse_args(list(argv))
    if not 0.0 < args.threshold < 1.0:
        raise UserError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.high_percentile is not None and not 0.0 < args.high_percentile < 100.0:
        raise UserError(f"--high-percentile must be between 0 and 100, got {args.high_percentile}")
    if args.weights and not Path(args.weights).is_file():
        raise UserError(f"network weights not found: {args.weights}")
    out = Path(args.out)
    if args.manifest:
        if args.spect or args.lungs or args.lobes:
            raise UserError("--spect, --lungs and --lobes go with --ct; with --manifest they are columns of the CSV")
        rows = read_manifest(Path(args.manifest), required=("id", "ct"))
        cases = [BatchCase(r["id"], r["ct"], out / r["id"], r.get("spect") or None, r.get("lungs") or None,
                           r.get("lobes") or None) for r in rows]
    else:
        read_ct(args.ct)  # one case: a bad CT is a bad argument (exit 2), checked before Slicer loads anything
        cases = [BatchCase(Path(args.ct).name.split(".")[0] or "case", args.ct, out, args.spect, args.lungs, args.lobes)]
    for case in cases:
        for what in ("ct", "spect", "lungs", "lobes"):
            path = getattr(case, what)
            if path and not Path(path).exists():
                raise UserError(f"case {case.case_id}: {what} not found: {path}")
    if (args.lungs or args.lobes) and args.segmentation == "Automatic":
        args.segmentation = "Given segmentation"
    return BatchRequest(cases, args.weights, args.device, args.threshold, not args.no_register, args.segmentation,
                        args.uncertainty, args.registration, args.high_percentile)
