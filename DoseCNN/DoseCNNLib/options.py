"""The options of the dosimetry pipelines, defined once (:mod:`ImagingBasics.options`).

* :data:`RUN`: ``dosecnn run`` (:func:`~.dosimetry.pipeline.dose_rate_map`: the names are its keywords).
* :data:`INTEGRATE`: ``dosecnn integrate`` (:func:`~.dosimetry.integrate.run_integrate`: the names are its keywords).
* :data:`MODULE`: the Slicer module (GUI, Logic, batch script ``DoseCNNBatch.py``); :data:`MODULE_KEYWORDS` names
  each by its keyword of ``DoseCNNLogic.process`` (also its parameter node field; the GUI shows the choices by their
  labels).

The calibration of a SPECT is one of two: the activity in its field of view (MBq) or Bq per count. The activity must
be positive and at most 100 GBq (:data:`MAX_ACTIVITY_MBQ`), more than ten times the largest single Lu-177 therapy
administration (7.4 GBq in the standard schedule); a larger number is a unit mistake (Bq or kBq given as MBq). Bq per
count must be positive and at most 1e9. Every time point of a manifest is checked against the same ranges.
Pure Python; the Slicer module imports it when Slicer loads it.
"""

from __future__ import annotations

from typing import Any, Dict

from ImagingBasics.devices import DEVICE
from ImagingBasics.options import Option, OptionSet

#: the largest activity in a SPECT's field of view (MBq): 100 GBq
MAX_ACTIVITY_MBQ = 1.0e5
#: the largest calibration factor (Bq per SPECT count)
MAX_BQ_PER_COUNT = 1.0e9
#: the latest time point after administration (h) that the module's time points take (the GUI's range; about 11 years)
MAX_HOURS = 1.0e5

METHOD = Option("method", "--method", str, "vdk", choices=("vdk", "vdk-tissue", "cnn"),
                labels=("VDK", "VDK, tissue-specific kernels", "VDK + CNN"),
                help="dose-rate method: vdk, soft-tissue kernel convolution with density scaling (Li 2020); "
                     "vdk-tissue, lung, soft-tissue and bone kernels (electrons by the source voxel's tissue, photons "
                     "by the target's; better in lung and bone); cnn, VDK + the residual CNN (Li 2020)")
ACTIVITY_MBQ = Option("activity_mbq", "--activity-mbq", float, None, minimum=0.0, exclusive_minimum=True,
                      maximum=MAX_ACTIVITY_MBQ, unit="MBq",
                      help="total activity in the SPECT's field of view at its acquisition")
BQ_PER_COUNT = Option("bq_per_count", "--calibration", float, None, minimum=0.0, exclusive_minimum=True,
                      maximum=MAX_BQ_PER_COUNT, unit="Bq/count", help="Bq per SPECT count")
NUCLIDE = Option("nuclide", "--nuclide", str, "Lu-177", help="nuclide of the decay data (ICRP Publication 107)")
FIT = Option("fit", "--fit", str, "mono", choices=("mono", "bi", "trapezoid"),
             labels=("Mono-exponential", "Bi-exponential (uptake and washout)", "Trapezoid with exponential tail"),
             help="time-activity fit: mono-exponential, bi-exponential uptake-washout (3 or more time points) or "
                  "trapezoid with an exponential tail; failed voxel fits fall back to the trapezoid with a "
                  "physical-decay tail")
START = Option("start", "--start", str, "constant", choices=("constant", "zero"),
               labels=("First value held back to 0 h", "Line from zero at 0 h"),
               help="the trapezoid before the first time point: the first value held back to t = 0 (constant) or a "
                    "line from zero")
REGISTER = Option("register", "--no-register", bool, True,
                  help="do not register the time points' CTs (images matched by scanner coordinates)")
REGISTRATION_METRIC = Option("registration_metric", "--registration-metric", str, "meansquares",
                             choices=("meansquares", "mattes"),
                             labels=("Mean squares (HU)", "Mattes mutual information"),
                             help="CT-to-CT registration metric: mean squares of HU or Mattes mutual information")

RUN = OptionSet(METHOD, ACTIVITY_MBQ, BQ_PER_COUNT, DEVICE, NUCLIDE, exclusive=[("activity_mbq", "bq_per_count")])
INTEGRATE = OptionSet(METHOD, FIT, START, REGISTER, REGISTRATION_METRIC, DEVICE, NUCLIDE)

#: keyword of DoseCNNLogic.process (and parameter node field) -> option
MODULE_KEYWORDS = {"method": METHOD, "activityMBq": ACTIVITY_MBQ, "bqPerCount": BQ_PER_COUNT, "device": DEVICE,
                   "fitModel": FIT, "startMode": START, "registerCTs": REGISTER, "registrationMetric": REGISTRATION_METRIC}
MODULE = OptionSet(*MODULE_KEYWORDS.values(), exclusive=[("activity_mbq", "bq_per_count")])


def logic_keywords(values: Dict[str, Any]) -> Dict[str, Any]:
    """The Logic's keywords of checked :data:`MODULE` values (option name -> value), e.g. of a batch request."""
    return {keyword: values[option.name] for keyword, option in MODULE_KEYWORDS.items()}
