"""Published reference cut-points of functional lung dose, drawn on the figures for orientation (not constraints).

The values are the optimal ROC points for symptomatic (grade 2+) radiation pneumonitis found in a cohort of 90
patients with locally advanced non-small cell lung cancer treated with 60-66 Gy in 30-33 fractions (PubMed Central
PMC10283046): fMLD <= 12.3 Gy, fV20 <= 19 % and fV5 <= 54 %. Patients below the fMLD cut-point had a 14 % risk of
pneumonitis, those above it 35 %.

What the cut-points were derived with, and how this project's numbers differ (say so next to any comparison):

* the function was **ventilation** from 4DCT (Jacobian of a deformable registration), not perfusion;
* the functional lung was a **binary** high-ventilation volume (voxels above the population median expansion) of
  lung minus ITV, so their fMLD is the mean dose in that volume and fV_D the share of its volume receiving >= D; here
  the weights are the normalised perfusion (fMLD = sum(f*D)/sum(f)) unless ``--high-function-threshold`` is given;
* the doses were conventionally fractionated physical doses; a hypofractionated plan needs conversion (EQD2) before
  any comparison, which this package does not do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class CutPoint:
    """One reference value: ``metric`` (a metrics key, e.g. ``fv20_percent``), its ``value`` in ``unit``, the dose
    level it belongs to (``dose_gy``; None for a mean dose) and a short ``label`` for figures."""

    metric: str
    value: float
    unit: str
    dose_gy: Optional[float] = None
    label: str = ""

    def exceeded_by(self, value: float) -> bool:
        """True when ``value`` (same unit) lies above the cut-point."""
        return float(value) > self.value


#: fMLD <= 12.3 Gy, fV20 <= 19 %, fV5 <= 54 % (PMC10283046, see the module docstring)
FMLD = CutPoint("fmld_gy", 12.3, "Gy", label="fMLD 12.3 Gy")
FV20 = CutPoint("fv20_percent", 19.0, "%", dose_gy=20.0, label="fV20 19 %")
FV5 = CutPoint("fv5_percent", 54.0, "%", dose_gy=5.0, label="fV5 54 %")
CUT_POINTS: Tuple[CutPoint, ...] = (FMLD, FV20, FV5)
#: where the cut-points come from, as written into metrics.json
SOURCE = ("optimal ROC points for grade 2+ radiation pneumonitis, 4DCT-ventilation study of 90 patients with locally "
          "advanced NSCLC, 60-66 Gy in 30-33 fractions (PubMed Central PMC10283046); binary high-ventilation volume, "
          "not perfusion weights: for orientation only")
