"""One run of the CTPerfusionMapping Slicer module: the keywords of ``CTPerfusionMappingLogic.process`` as one object,
and the check of whether it can start (pure Python: the nodes are passed in and only compared).

The option keywords take their defaults and ranges from :data:`~.options.MODULE_KEYWORDS`, the definitions that the
command line and the batch script use too.
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


@dataclass
class PerfusionRequest:
    """Inputs (nodes), options and output nodes of one run. ``weightsFile`` None: the bundled model. An output node
    that is None is created by the run (the Logic returns the nodes it filled, by these names)."""

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

    def options(self) -> Dict[str, Any]:
        """The option values by option name (:data:`~.options.MODULE`), checked: a one-line UserError names the
        keyword and its range."""
        values = {option.name: getattr(self, keyword) for keyword, option in MODULE_KEYWORDS.items()}
        return MODULE.check(values, names={option.name: keyword for keyword, option in MODULE_KEYWORDS.items()})

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
        except UserError as exc:
            return str(exc)
        return None
