"""One run of the DoseCNN Slicer module: the keywords of ``DoseCNNLogic.process`` as one object, and the check of
whether it can start (pure Python: the nodes are passed in and only compared).

One time point (``inputSPECT``; ``timePoints`` None) gives the dose-rate map; a list of time points gives the
absorbed dose. The calibration is ``activityMBq`` (the activity in the one SPECT's field of view; with time points
each point's own ``activityMBq``) unless ``bqPerCount`` is given, which then holds for every SPECT. The option keywords
take their defaults and ranges from :data:`~.options.MODULE_KEYWORDS`, the definitions that the command line and the
batch script use too; the GUI's labels of the choices are mapped to these values by the Widget.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ImagingBasics.errors import UserError

from ..options import (
    ACTIVITY_MBQ,
    DEVICE,
    FIT,
    MAX_HOURS,
    METHOD,
    MODULE,
    MODULE_KEYWORDS,
    REGISTER,
    REGISTRATION_METRIC,
    START,
)


@dataclass
class TimePoint:
    """One SPECT/CT time point: ``hours`` after administration, ``activityMBq`` in the SPECT's field of view (used when
    the request has no ``bqPerCount``); ``ct`` None: the request's ``inputCT`` (the reference CT)."""

    spect: Any
    ct: Any = None
    hours: float = 24.0
    activityMBq: float = 0.0


@dataclass
class DoseRequest:
    """Inputs (nodes), options and output nodes of one run. ``weightsFile`` None: the bundled CNN. An output node that
    is None is created by the run (the Logic returns the nodes it filled, by these names)."""

    inputCT: Any = None
    inputSPECT: Any = None
    timePoints: Optional[List[Any]] = None
    inputSegmentation: Any = None
    inputLabelmap: Any = None
    inputReference: Any = None
    method: str = METHOD.default
    activityMBq: Optional[float] = None
    bqPerCount: Optional[float] = None
    weightsFile: Optional[str] = None
    device: str = DEVICE.default
    fitModel: str = FIT.default
    startMode: str = START.default
    registerCTs: bool = REGISTER.default
    registrationMetric: str = REGISTRATION_METRIC.default
    outputDoseRate: Any = None
    outputAbsorbedDose: Any = None
    outputTable: Any = None
    outputDVHTable: Any = None
    outputDVHChart: Any = None
    outputTimePointDoseRates: Optional[List[Any]] = None

    @property
    def integrate(self) -> bool:
        """Several time points (the absorbed dose), not one (the dose rate)."""
        return self.timePoints is not None

    @property
    def byActivity(self) -> bool:
        """Calibrated by the activity in each SPECT's field of view (not by Bq per count)."""
        return self.bqPerCount is None

    def options(self) -> Dict[str, Any]:
        """The option values by option name (:data:`~.options.MODULE`), checked: a one-line UserError names the
        keyword and its range."""
        values = {option.name: getattr(self, keyword) for keyword, option in MODULE_KEYWORDS.items()}
        return MODULE.check(values, names={option.name: keyword for keyword, option in MODULE_KEYWORDS.items()})

    def problem(self) -> Optional[str]:
        """Why the run cannot start, in one line a user can act on, or None."""
        if self.inputCT is None:
            return "Select a CT volume" + (" (the reference CT)" if self.integrate else "")
        problem = self._timePointsProblem() if self.integrate else self._spectProblem()
        if problem:
            return problem
        if not self.byActivity and not self.bqPerCount > 0:
            return "Enter the calibration factor (Bq per count)"
        if self.inputSegmentation is not None and self.inputLabelmap is not None:
            return "Choose a segmentation or a label map, not both"
        if self.method == "cnn" and self.weightsFile is not None:
            if not self.weightsFile:
                return "Choose a CNN weights file, or use the bundled model"
            if not os.path.isfile(self.weightsFile):
                return f"CNN weights file not found: {self.weightsFile}"
        try:
            self.options()
        except UserError as exc:
            return str(exc)
        return None

    def _spectProblem(self) -> Optional[str]:
        if self.inputSPECT is None:
            return "Select a SPECT volume, or turn on time integration and add time points"
        if self.inputSPECT is self.inputCT:
            return "The SPECT and the CT must be different volumes"
        if self.byActivity and not (self.activityMBq or 0.0) > 0:
            return "Enter the activity in the SPECT's field of view (MBq)"
        return None

    def _timePointsProblem(self) -> Optional[str]:
        points = list(self.timePoints)
        if len(points) < 2:
            return "Add at least 2 time points (SPECT, time, activity)"
        for n, point in enumerate(points, start=1):
            if point.spect is None:
                return f"Choose the SPECT of time point {n}"
            if point.spect is (point.ct if point.ct is not None else self.inputCT):
                return f"Time point {n}: the SPECT and the CT must be different volumes"
            if not 0.0 <= point.hours <= MAX_HOURS:  # the GUI's range (a script's TimePoint is not checked on entry)
                return f"Time point {n}: the time must be from 0 to {MAX_HOURS:g} h after administration, got " \
                       f"{point.hours:g}"
            if self.byActivity:
                if not point.activityMBq > 0:
                    return f"Enter the activity in the field of view of time point {n} (MBq)"
                try:
                    ACTIVITY_MBQ.check(point.activityMBq, f"the activity of time point {n}")
                except UserError as exc:
                    return str(exc)
        hours = [point.hours for point in points]
        if len(set(hours)) != len(hours):
            return "Two time points have the same time; each needs its own hours after administration"
        if self.fitModel == "bi" and len(points) < 3:
            return "The bi-exponential fit needs at least 3 time points; choose the mono-exponential fit"
        return None
