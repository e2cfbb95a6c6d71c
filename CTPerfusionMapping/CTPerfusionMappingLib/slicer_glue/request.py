"""One run of the CTPerfusionMapping Slicer module: the keywords of ``CTPerfusionMappingLogic.process`` as one object,
and the check of whether it can start (pure Python: the nodes are passed in; only their names, segments and
attributes are read).

The option keywords take their defaults and ranges from :data:`~.options.MODULE_KEYWORDS`, the definitions that the
command line and the batch script use too; those of the plan evaluation (a planned dose, optional) from
:data:`~.plan.PLAN_KEYWORDS`, the definitions of ``ctpm plan``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ImagingBasics.errors import UserError

from ..options import (
    DEVICE,
    HIGH_PERCENTILE,
    MODULE,
    MODULE_KEYWORDS,
    REGISTER,
    REGISTRATION_METHOD,
    SEGMENTATION_SOURCE,
    THRESHOLD,
    UNCERTAINTY,
)
from ..planning.options import BIN_WIDTH, HIGH_FUNCTION_THRESHOLD, PLAN
from .plan import PLAN_KEYWORDS, dose_unit_problem


@dataclass
class PerfusionRequest:
    """Inputs (nodes), options and output nodes of one run. ``weightsFile`` None: the bundled model. An output node
    that is None is created by the run (the Logic returns the nodes it filled, by these names).

    Plan evaluation (only with ``inputDose``, a dose volume in Gy): ``inputExclusionSegmentation`` with
    ``exclusionSegmentID`` and/or ``inputExclusionLabelmap`` (the GTV/PTV, removed from every structure),
    ``highFunctionThreshold`` and ``dvhBinWidthGy`` (:data:`~.plan.PLAN_KEYWORDS`); outputs ``outputDVHTable``,
    ``outputDVHChart`` and ``outputPlanMetrics``."""

    inputCT: Any = None
    inputSPECT: Any = None
    inputSegmentation: Any = None
    inputLabelmap: Any = None
    weightsFile: Optional[str] = None
    device: str = DEVICE.default
    registerSPECT: bool = REGISTER.default
    registrationMethod: str = REGISTRATION_METHOD.default
    segmentationSource: str = SEGMENTATION_SOURCE.default
    threshold: float = THRESHOLD.default
    highPercentile: Optional[float] = HIGH_PERCENTILE.default
    uncertainty: bool = UNCERTAINTY.default
    outputPerfusion: Any = None
    outputFunctional: Any = None
    outputTable: Any = None
    inputDose: Any = None
    inputExclusionSegmentation: Any = None
    exclusionSegmentID: Optional[str] = None
    inputExclusionLabelmap: Any = None
    highFunctionThreshold: Optional[float] = HIGH_FUNCTION_THRESHOLD.default
    dvhBinWidthGy: float = BIN_WIDTH.default
    outputDVHTable: Any = None
    outputDVHChart: Any = None
    outputPlanMetrics: Any = None

    def options(self) -> Dict[str, Any]:
        """The option values by option name (:data:`~.options.MODULE`), checked: a one-line UserError names the
        keyword and its range."""
        values = {option.name: getattr(self, keyword) for keyword, option in MODULE_KEYWORDS.items()}
        return MODULE.check(values, names={option.name: keyword for keyword, option in MODULE_KEYWORDS.items()})

    def planOptions(self) -> Dict[str, Any]:
        """The values of the plan options by option name (:data:`~.planning.options.PLAN`), checked like
        :meth:`options`."""
        values = {option.name: getattr(self, keyword) for keyword, option in PLAN_KEYWORDS.items()}
        return PLAN.check(values, names={option.name: keyword for keyword, option in PLAN_KEYWORDS.items()})

    def planProblem(self) -> Optional[str]:
        """Why the plan evaluation inputs cannot be used (one line), or None."""
        excluded = self.inputExclusionSegmentation is not None or self.inputExclusionLabelmap is not None
        if self.inputDose is None:
            return "Select a dose volume: the exclusion (GTV/PTV) applies to its evaluation" if excluded else None
        if self.inputDose is self.inputCT or self.inputDose is self.inputSPECT:
            return "The dose must be a volume of its own, not the CT or the SPECT"
        segmentation = self.inputExclusionSegmentation
        if segmentation is not None:
            if not self.exclusionSegmentID:
                return f"Select the segment of '{segmentation.GetName()}' to exclude (GTV/PTV)"
            if segmentation.GetSegmentation().GetSegment(self.exclusionSegmentID) is None:
                return f"The segmentation '{segmentation.GetName()}' has no segment {self.exclusionSegmentID!r}"
        return dose_unit_problem(self.inputDose)

    def problem(self) -> Optional[str]:
        """Why the run cannot start, in one line a user can act on, or None."""
        if self.inputCT is None:
            return "Select a CT volume"
        if self.inputSPECT is not None and self.inputSPECT is self.inputCT:
            return "The SPECT and the CT must be different volumes"
        if self.segmentationSource == "Given segmentation" and self.inputSegmentation is None \
                and self.inputLabelmap is None:
            return "Select a lung/lobe segmentation or label map, or another segmentation source"
        if self.weightsFile is not None and not self.weightsFile:
            return "Choose a model weights file, or use the bundled model"
        if self.weightsFile and not os.path.isfile(self.weightsFile):
            return f"Model weights file not found: {self.weightsFile}"
        try:
            self.options()
            if self.inputDose is not None:  # the plan options matter only with a dose
                self.planOptions()
        except UserError as exc:
            return str(exc)
        return self.planProblem()
