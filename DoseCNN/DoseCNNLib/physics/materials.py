"""From CT numbers to what radiation transport needs: mass density and a material (elemental composition).

* Density: the calibration of the DoseCNN paper (Li 2020), piecewise linear in HU,
  rho = 0.00108 HU + 1.02351 g/cm3 for HU <= 0 and rho = 0.00069 HU + 1.03107 g/cm3 for HU > 0
  (:func:`density_from_hu_li2020`), clipped at the density of air. A scanner's own calibration (pairs of HU and
  density, e.g. from a phantom) replaces it through :class:`DensityCalibration`.
* Material: one of five tissues by HU interval (:data:`MATERIALS`, :func:`material_index`), each with its ICRU
  Report 44 elemental composition (by mass) as tabulated by NIST (ESTAR/XCOM material lists). The intervals are our
  choice (the paper does not give them), in the spirit of Schneider et al. 2000: air below -950 HU, lung to -200,
  adipose to -50, soft tissue to +150, cortical bone above. Density comes from the calibration, not the class.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np

from ImagingBasics.errors import UserError

AIR_DENSITY_G_CM3 = 0.001205


def density_from_hu_li2020(hu):
    """Mass density (g/cm3) from HU with the DoseCNN paper's bilinear calibration (Li 2020), at least that of air.

    Takes a numpy array (returns float32 numpy) or a torch tensor (returns a float32 tensor on its device).
    """
    if type(hu).__module__.startswith("torch"):
        h = hu.float()
        return (h * 0.00108 + 1.02351).where(h <= 0.0, h * 0.00069 + 1.03107).clamp_(min=AIR_DENSITY_G_CM3)
    h = np.asarray(hu, dtype=np.float64)
    rho = np.where(h <= 0.0, 0.00108 * h + 1.02351, 0.00069 * h + 1.03107)
    return np.maximum(rho, AIR_DENSITY_G_CM3).astype(np.float32)


@dataclass(frozen=True)
class DensityCalibration:
    """A piecewise-linear HU -> density (g/cm3) calibration through points, extrapolated linearly at both ends."""

    hu: Tuple[float, ...]
    density_g_cm3: Tuple[float, ...]

    def __post_init__(self):
        if len(self.hu) < 2 or len(self.hu) != len(self.density_g_cm3):
            raise UserError("a density calibration needs at least two (HU, density) points")
        if any(b <= a for a, b in zip(self.hu, self.hu[1:])):
            raise UserError("the calibration's HU values must increase strictly")
        if any(d <= 0 or not np.isfinite(d) for d in self.density_g_cm3):
            raise UserError("the calibration's densities must be positive numbers (g/cm3)")

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        x, y = np.asarray(self.hu), np.asarray(self.density_g_cm3)
        h = np.asarray(hu, dtype=np.float64)
        rho = np.interp(h, x, y)
        lo, hi = h < x[0], h > x[-1]
        rho[lo] = y[0] + (h[lo] - x[0]) * (y[1] - y[0]) / (x[1] - x[0])
        rho[hi] = y[-1] + (h[hi] - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2])
        return np.maximum(rho, AIR_DENSITY_G_CM3).astype(np.float32)

    @classmethod
    def from_csv(cls, path) -> DensityCalibration:
        """Read a CSV with columns ``hu`` and ``density`` (g/cm3), one calibration point per row."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"density calibration not found: {path}")
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
            points = sorted((float(r["hu"]), float(r["density"])) for r in rows)
        except (KeyError, ValueError, TypeError):
            raise UserError(f"{path.name}: a density calibration needs numeric columns 'hu' and 'density'") from None
        return cls(tuple(p[0] for p in points), tuple(p[1] for p in points))


@dataclass(frozen=True)
class Material:
    name: str
    hu_max: float  # upper HU bound of this class (exclusive); the last class has +inf
    composition: Dict[str, float]  # element symbol -> mass fraction (ICRU-44 via NIST)
    nominal_density_g_cm3: float


#: Material classes in increasing HU order (see the module docstring for the bounds and the source).
MATERIALS: Tuple[Material, ...] = (
    Material("air", -950.0, {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827}, AIR_DENSITY_G_CM3),
    Material("lung", -200.0, {"H": 0.103, "C": 0.105, "N": 0.031, "O": 0.749, "Na": 0.002, "P": 0.002, "S": 0.003,
                              "Cl": 0.003, "K": 0.002}, 1.05),
    Material("adipose", -50.0, {"H": 0.114, "C": 0.598, "N": 0.007, "O": 0.278, "Na": 0.001, "S": 0.001, "Cl": 0.001},
             0.95),
    Material("soft tissue", 150.0, {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003,
                                    "S": 0.003, "Cl": 0.002, "K": 0.003}, 1.06),
    Material("cortical bone", float("inf"), {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002,
                                             "P": 0.103, "S": 0.003, "Ca": 0.225}, 1.92),
)
#: indices of the air and soft-tissue classes in :data:`MATERIALS`
AIR = [m.name for m in MATERIALS].index("air")
SOFT_TISSUE = [m.name for m in MATERIALS].index("soft tissue")
#: CT numbers below this are air (the air class's upper bound): no dose is reported there (VDK, CNN)
AIR_HU = MATERIALS[AIR].hu_max


def material_index(hu: np.ndarray, materials: Sequence[Material] = MATERIALS) -> np.ndarray:
    """uint8 index into ``materials`` of each voxel's HU (NaN is refused)."""
    h = np.asarray(hu, dtype=np.float64)
    if not np.all(np.isfinite(h)):
        raise UserError("the CT holds NaN or infinite values; fix or crop it before dose calculation")
    bounds = np.array([m.hu_max for m in materials[:-1]])
    return np.searchsorted(bounds, h, side="right").astype(np.uint8)
