"""The options of the CT-to-perfusion pipeline, defined once (:mod:`ImagingBasics.options`).

* :data:`RUN`: ``ctpm run`` and ``ctpm batch``; the names are the fields of :class:`~.pipeline.RunOptions`, which
  takes its defaults from here.
* :data:`EVALUATE`: ``ctpm evaluate``.
* :data:`MODULE`: the Slicer module (GUI, Logic, batch script ``CTPerfusionMappingBatch.py``): a part of :data:`RUN`
  and the choices only Slicer has (where the lungs come from, how the SPECT is registered, the uncertainty switch).
  :data:`MODULE_KEYWORDS` names each by its keyword of ``CTPerfusionMappingLogic.process`` (also its parameter node
  field).

The ranges are chosen once for every surface. The functional split is 0.05 to 0.95 of the maximum and the percentile
1 to 99: beyond these the high or the low functional volume is nearly empty, and the GUI sliders show this range.
Pure Python (numpy only, through the label conventions); the Slicer module imports it when Slicer loads it.
"""

from __future__ import annotations

from typing import Any, Dict

from ImagingBasics.devices import DEVICE
from ImagingBasics.options import Option, OptionSet

from .labels import SOURCES
from .metrics import HIGH_FUNCTION_THRESHOLD

#: label conventions of given lung/lobe label maps a command line can name ("mapping" needs a Python dict)
LABEL_SOURCES = ("auto",) + tuple(source for source in SOURCES if source != "mapping")

REGISTER = Option("register", "--no-register", bool, True,
                  help="do not register the SPECT to the CT: use it where it lies (a SPECT/CT of one scanner)")
LABELS_SOURCE = Option("labels_source", "--labels-source", str, "auto", choices=LABEL_SOURCES,
                       help="label convention of --lungs/--lobes (auto: recognised from the label values)")
THRESHOLD = Option("threshold", "--threshold", float, HIGH_FUNCTION_THRESHOLD, minimum=0.05, maximum=0.95,
                   help="high/low functional split as a fraction of the map's maximum (the papers split at 0.66: "
                        "Ren 2021 IJROBP, Ren 2022 Front Oncol)")
HIGH_PERCENTILE = Option("high_percentile", "--high-percentile", float, None, minimum=1.0, maximum=99.0, metavar="P",
                         help="instead of --threshold: the high-functional volume is the voxels at or above the P-th "
                              "percentile of the lungs' perfusion (50: the better half); the SPECT evaluation keeps "
                              "--threshold")
MC_DROPOUT = Option("mc_dropout_passes", "--mc-dropout", int, 0, minimum=0, maximum=100, metavar="N",
                    help="Monte Carlo dropout passes (2 or more also write perfusion_std.nrrd, the standard deviation "
                         "over the passes; more than 100 passes change it little)")
AMP = Option("amp", "--no-amp", bool, True, help="no mixed precision on CUDA (float32 throughout)")
EVAL_SPACING = Option("evaluation_spacing_mm", "--eval-spacing", float, None, minimum=0.0, maximum=20.0, unit="mm",
                      metavar="MM",
                      help="voxel size of the grid on which maps are compared with the SPECT (not given: the SPECT's, "
                           "as in Ren 2021 IJROBP; 0: the CT grid; coarser than 20 mm leaves too few voxels per region)")

RUN = OptionSet(DEVICE, REGISTER, LABELS_SOURCE, THRESHOLD, HIGH_PERCENTILE, MC_DROPOUT, AMP, EVAL_SPACING)
EVALUATE = RUN.subset("register", "labels_source", "threshold", "evaluation_spacing_mm")

# --- the Slicer module ---------------------------------------------------------------------------------------------
#: where the lung/lobe labels come from in Slicer
SEGMENTATION_SOURCES = ("Automatic", "TotalSegmentator", "Chest Imaging Platform", "Built-in", "Given segmentation")
#: SPECT-to-CT registration: Automatic = Slicer's BRAINSFit (rigid, Mattes MI) + BRAINSResample when installed, else
#: the built-in registration of the core (validated on synthetic phantoms: 0.65 mm mean error, bench/RESULTS.md).
REGISTRATION_METHODS = ("Automatic", "BRAINSFit", "Built-in")
#: Monte Carlo dropout passes of the module's uncertainty switch
MC_DROPOUT_PASSES = 10

SEGMENTATION_SOURCE = Option("segmentation_source", "--segmentation", str, "Automatic", choices=SEGMENTATION_SOURCES,
                             help="where the lung/lobe labels come from (Automatic: the given labels, else "
                                  "TotalSegmentator, else the Chest Imaging Platform, else the built-in segmentation)")
REGISTRATION_METHOD = Option("registration_method", "--registration", str, "Automatic", choices=REGISTRATION_METHODS,
                             help="SPECT-to-CT registration (Automatic: BRAINSFit when installed, else the built-in "
                                  "registration)")
UNCERTAINTY = Option("uncertainty", "--uncertainty", bool, False,
                     help=f"also the uncertainty map: the standard deviation over {MC_DROPOUT_PASSES} Monte Carlo "
                          "dropout passes")

#: keyword of CTPerfusionMappingLogic.process (and parameter node field) -> option
MODULE_KEYWORDS = {"device": DEVICE, "registerSPECT": REGISTER, "registrationMethod": REGISTRATION_METHOD,
                   "segmentationSource": SEGMENTATION_SOURCE, "threshold": THRESHOLD, "highPercentile": HIGH_PERCENTILE,
                   "uncertainty": UNCERTAINTY}
MODULE = OptionSet(*MODULE_KEYWORDS.values())


def logic_keywords(values: Dict[str, Any]) -> Dict[str, Any]:
    """The Logic's keywords of checked :data:`MODULE` values (option name -> value), e.g. of a batch request."""
    return {keyword: values[option.name] for keyword, option in MODULE_KEYWORDS.items()}
