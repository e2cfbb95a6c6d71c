"""The settings of plan evaluation (``ctpm plan``), defined once (:mod:`ImagingBasics.options`).

:data:`PLAN` gives the command-line arguments, their checks and the validators a Slicer Logic's parameter node would
use; the names are the keywords of :func:`~.evaluation.evaluate_plans` (``labels_source`` is the label convention of
the lung and lobe maps, shared with ``ctpm run``).

Ranges: the high-function split runs from 0.05 to 0.95 of the maximum, as ``ctpm run --threshold`` (beyond these the
high or the low function volume is nearly empty); DVH bins from just above 0 to 5 Gy wide (0.1 Gy is the usual
resolution of a planning system's DVH export; 5 Gy is the coarsest that still resolves V5).
"""

from __future__ import annotations

from ImagingBasics.options import Option, OptionSet

from ..options import LABELS_SOURCE

HIGH_FUNCTION_THRESHOLD = Option(
    "high_function_threshold", "--high-function-threshold", float, None, minimum=0.05, maximum=0.95,
    metavar="FRACTION",
    help="count only the high-function volume as functioning lung: weights below FRACTION of the lungs' maximum "
         "perfusion are set to 0, and the high/low split of the functional volumes moves to FRACTION (not given: "
         "every voxel weighted by its normalised perfusion, split at 0.66 as ctpm run)")
BIN_WIDTH = Option(
    "bin_width_gy", "--bin-width", float, 0.1, unit="Gy", minimum=0.0, exclusive_minimum=True, maximum=5.0,
    metavar="GY", help="width of the dose bins of the DVHs in dvh.csv and dvh.png")

PLAN = OptionSet(HIGH_FUNCTION_THRESHOLD, BIN_WIDTH, LABELS_SOURCE)
