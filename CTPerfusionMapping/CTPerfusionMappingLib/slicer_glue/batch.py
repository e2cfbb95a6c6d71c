"""Arguments of the Slicer batch script (``Resources/Scripts/CTPerfusionMappingBatch.py``), as a plain function.

    Slicer --no-splash --no-main-window --python-script CTPerfusionMappingBatch.py --ct CT [--spect S] --out DIR
    Slicer --no-splash --no-main-window --python-script CTPerfusionMappingBatch.py --manifest CASES.csv --out DIR

Slicer passes the script's arguments in ``sys.argv[1:]``. One case (``--ct``) or a manifest (columns ``id, ct`` and
optional ``spect, lungs, lobes``; paths relative to the CSV), one output folder per case (``DIR`` itself for a single
case, ``DIR/<id>`` for a manifest). The options are the Slicer module's (:data:`~.options.MODULE`: the flags, ranges
and checks of ``ctpm run`` where they are the same options). The script exits with status 0 when every case
succeeded, 1 when some failed, 2 for bad arguments (the ``ctpm`` convention).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ImagingBasics.batch import BatchArgumentParser, checked_image, checked_label_map, checked_weights
from ImagingBasics.errors import UserError
from ImagingBasics.outputs import check_output_folder
from ImagingBasics.validation import read_ct

from ..options import MODULE


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
    """The cases, the weights (None: the bundled model) and the checked values of the module's options (by name)."""

    cases: List[BatchCase]
    weights: Optional[str]
    device: str
    register: bool
    registration_method: str
    segmentation_source: str
    threshold: float
    high_percentile: Optional[float]
    uncertainty: bool

    def options(self) -> Dict[str, Any]:
        """The values of :data:`~.options.MODULE` by option name."""
        return {name: getattr(self, name) for name in MODULE.names}


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
    MODULE.add_arguments(p)
    return p


#: the files the batch script writes into each case's folder (CTPerfusionMappingBatch.py)
OUTPUT_FILES = ["perfusion.nrrd", "functional.seg.nrrd", "regions.csv"]


def parse_batch_arguments(argv: Sequence[str]) -> BatchRequest:
    """The batch request of ``argv`` (``sys.argv[1:]``); raises UserError with a one-line message when it is wrong."""
    from ImagingBasics.manifest import read_manifest

    args = build_parser().parse_args(list(argv))
    options = MODULE.from_arguments(args)  # the ranges the GUI and the Logic accept too (one line, exit 2)
    checked_weights(args.weights)
    out = Path(args.out)
    if args.manifest:
        if args.spect or args.lungs or args.lobes:
            raise UserError("--spect, --lungs and --lobes go with --ct; with --manifest they are columns of the CSV")
        rows = read_manifest(Path(args.manifest), required=("id", "ct"))
        cases = [BatchCase(r["id"], r["ct"], out / r["id"], r.get("spect") or None, r.get("lungs") or None,
                           r.get("lobes") or None) for r in rows]
    else:
        read_ct(args.ct)  # one case: a bad CT is a bad argument (exit 2), checked before Slicer loads anything
        checked_image(args.spect, "SPECT")
        checked_label_map(args.lungs, "lung labels")
        checked_label_map(args.lobes, "lobe labels")
        cases = [BatchCase(Path(args.ct).name.split(".")[0] or "case", args.ct, out, args.spect, args.lungs, args.lobes)]
    for case in cases:
        for what in ("ct", "spect", "lungs", "lobes"):
            path = getattr(case, what)
            if path and not Path(path).exists():
                raise UserError(f"case {case.case_id}: {what} not found: {path}")
    inputs = [args.manifest, args.weights] + [getattr(c, k) for c in cases for k in ("ct", "spect", "lungs", "lobes")]
    check_output_folder(out, inputs, OUTPUT_FILES)  # a file, not writable, would replace an input: refused now
    if (args.lungs or args.lobes) and options["segmentation_source"] == "Automatic":
        options["segmentation_source"] = "Given segmentation"
    return BatchRequest(cases, args.weights, **options)
