"""Radionuclide decay data for dosimetry (ICRP Publication 107): emission lines, beta spectra, energy per decay.

Source: ICRP Publication 107, "Nuclear Decay Data for Dosimetric Calculations" (Eckerman and Endo, Ann ICRP 38(3),
2008), read from the tables that the PyPI package ``icrp107-database`` ships (one JSON file per nuclide; a runtime
dependency, nothing copied here). Any nuclide of ICRP-107 loads the same way: Lu-177 for DoseCNN, Y-90, I-131 and
Tc-99m for checks.

Per nuclide (:class:`DecayData`):

* discrete electrons: internal conversion (``IE``) and Auger lines, energy (MeV) and yield per decay;
* photons: gamma and X-ray lines;
* beta- (and beta+) particles: the continuous spectrum ``b-spectra`` (particles per MeV per decay at tabulated
  energies, piecewise linear between them) and the number of betas per decay (its integral).

Energies are kinetic energies in MeV; yields are per nuclear transformation (decay). For Lu-177 the electron energy
is 0.1479 MeV/decay (beta mean 0.1333, conversion 0.0135, Auger 0.0011) and the photon energy 0.0351 MeV/decay
(gamma 0.0316, X 0.0035), as ICRP-107 lists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Optional

import numpy as np

from ImagingBasics.errors import UserError

#: seconds per ICRP-107 time unit
TIME_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "y": 365.25 * 86400.0}


@dataclass(frozen=True)
class LineSpectrum:
    """Discrete emissions: energies (MeV) and yields per decay."""

    energies_mev: np.ndarray
    yields_per_decay: np.ndarray

    @property
    def energy_per_decay_mev(self) -> float:
        """Sum of energy x yield: the mean energy this emission type carries per decay (MeV)."""
        return float(np.sum(self.energies_mev * self.yields_per_decay))

    @property
    def yield_per_decay(self) -> float:
        return float(np.sum(self.yields_per_decay))

    def above(self, cutoff_mev: float) -> LineSpectrum:
        """The lines at or above ``cutoff_mev`` (lower ones are deposited locally by a transport code)."""
        keep = self.energies_mev >= cutoff_mev
        return LineSpectrum(self.energies_mev[keep], self.yields_per_decay[keep])


@dataclass(frozen=True)
class BetaSpectrum:
    """A continuous beta spectrum: density (particles per MeV per decay) at tabulated energies, linear between."""

    energies_mev: np.ndarray
    density_per_mev: np.ndarray

    @property
    def yield_per_decay(self) -> float:
        """Betas per decay: the integral of the density."""
        return trapezoid(self.density_per_mev, self.energies_mev)

    @property
    def mean_energy_mev(self) -> float:
        """Mean kinetic energy of one beta (MeV)."""
        return trapezoid(self.density_per_mev * self.energies_mev, self.energies_mev) / self.yield_per_decay

    @property
    def energy_per_decay_mev(self) -> float:
        return self.mean_energy_mev * self.yield_per_decay

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` beta energies (MeV) drawn from the spectrum, exactly for its piecewise-linear density.

        In a bin [E0, E1] with densities p0, p1 the density is linear, so the CDF is quadratic in the position within
        the bin; it is inverted in closed form (the uniform case p0 == p1 separately).
        """
        e, p = self.energies_mev, np.maximum(self.density_per_mev, 0.0)
        widths = np.diff(e)
        areas = 0.5 * (p[:-1] + p[1:]) * widths
        cdf = np.concatenate([[0.0], np.cumsum(areas)])
        u = rng.random(n) * cdf[-1]
        k = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, len(areas) - 1)
        r = u - cdf[k]  # area still to cover inside bin k
        p0, slope = p[k], (p[k + 1] - p[k]) / widths[k]
        # solve p0 x + slope x^2 / 2 = r for the offset x in [0, width]
        with np.errstate(divide="ignore", invalid="ignore"):
            quadratic = (-p0 + np.sqrt(np.maximum(p0 * p0 + 2.0 * slope * r, 0.0))) / slope
            linear = r / p0
        x = np.where(np.abs(slope) > 1e-12 * np.maximum(p0, 1e-30), quadratic, linear)
        return e[k] + np.clip(np.nan_to_num(x), 0.0, widths[k])


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoidal integral of samples ``y`` over ``x``."""
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


@dataclass(frozen=True)
class DecayData:
    """Everything a dose calculation needs about one radionuclide (see the module docstring)."""

    nuclide: str
    half_life_s: float
    internal_conversion: LineSpectrum
    auger: LineSpectrum
    gamma: LineSpectrum
    xray: LineSpectrum
    beta_minus: Optional[BetaSpectrum]
    beta_minus_mean_energy_per_decay_mev: float  # ICRP-107's own beta- energy per decay (branch table)

    @property
    def decay_constant_per_s(self) -> float:
        return float(np.log(2.0) / self.half_life_s)

    @property
    def electron_energy_per_decay_mev(self) -> float:
        """Beta, conversion and Auger electrons (MeV per decay): what a beta kernel deposits."""
        beta = self.beta_minus_mean_energy_per_decay_mev
        return beta + self.internal_conversion.energy_per_decay_mev + self.auger.energy_per_decay_mev

    @property
    def photon_energy_per_decay_mev(self) -> float:
        """Gamma and X-ray photons (MeV per decay)."""
        return self.gamma.energy_per_decay_mev + self.xray.energy_per_decay_mev

    def summary(self) -> Dict[str, float]:
        """Energies per decay by emission type (MeV) and the half-life (days), for tables and reports."""
        return {"half_life_d": self.half_life_s / 86400.0,
                "beta_minus_mev": self.beta_minus_mean_energy_per_decay_mev,
                "internal_conversion_mev": self.internal_conversion.energy_per_decay_mev,
                "auger_mev": self.auger.energy_per_decay_mev,
                "electrons_mev": self.electron_energy_per_decay_mev,
                "gamma_mev": self.gamma.energy_per_decay_mev, "xray_mev": self.xray.energy_per_decay_mev,
                "photons_mev": self.photon_energy_per_decay_mev}


def normalise_nuclide_name(name: str) -> str:
    """"Lu-177", "lu177", "177Lu", "Lu 177" -> "Lu-177"; metastable states keep their "m" ("Tc-99m")."""
    text = str(name).strip().replace(" ", "").replace("_", "-")
    m = re.fullmatch(r"([A-Za-z]{1,2})-?(\d{1,3})(m\d?)?", text) or None
    if m:
        element, mass, meta = m.group(1), m.group(2), m.group(3) or ""
    else:
        m = re.fullmatch(r"(\d{1,3})(m\d?)?-?([A-Za-z]{1,2})", text)
        if not m:
            raise UserError(f"{name!r} is not a nuclide name; write it like Lu-177, Y-90 or Tc-99m")
        mass, meta, element = m.group(1), m.group(2) or "", m.group(3)
    return f"{element[0].upper()}{element[1:].lower()}-{int(mass)}{meta.lower()}"


def _table(nuclide: str) -> dict:
    try:
        import icrp107_database
    except ImportError:
        raise UserError("the ICRP-107 decay tables are not installed: pip install icrp107-database") from None
    from pathlib import Path

    path = Path(icrp107_database.__file__).parent / "icrp107" / f"{nuclide}.json"
    if not path.is_file():
        raise UserError(f"{nuclide} is not in the ICRP-107 decay tables")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return json.loads(data) if isinstance(data, str) else data  # the package stores a JSON string in JSON


def _lines(emissions: dict, key: str) -> LineSpectrum:
    a = np.asarray(emissions.get(key) or np.zeros((0, 2)), dtype=float).reshape(-1, 2)
    return LineSpectrum(a[:, 0].copy(), a[:, 1].copy())


@lru_cache(maxsize=32)
def load_decay_data(nuclide: str) -> DecayData:
    """The ICRP-107 decay data of ``nuclide`` (any spelling :func:`normalise_nuclide_name` accepts)."""
    name = normalise_nuclide_name(nuclide)
    data = _table(name)
    unit = str(data.get("time_unit", "")).strip()
    if unit not in TIME_UNITS_S:
        raise UserError(f"{name}: unknown half-life unit {unit!r} in the ICRP-107 table")
    em = data["emissions"]
    branches = _lines(em, "beta-")
    spectrum = None
    b = np.asarray(em.get("b-spectra") or [], dtype=float).reshape(-1, 2)
    if branches.yield_per_decay > 0 and len(b) >= 2:
        spectrum = BetaSpectrum(b[:, 0].copy(), b[:, 1].copy())
    return DecayData(name, float(data["half_life"]) * TIME_UNITS_S[unit], _lines(em, "IE"), _lines(em, "auger"),
                     _lines(em, "gamma"), _lines(em, "X"), spectrum, branches.energy_per_decay_mev)
