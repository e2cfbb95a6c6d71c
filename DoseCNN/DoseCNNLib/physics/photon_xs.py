"""Photon interaction coefficients of the transport materials: photoelectric, incoherent (Compton), coherent (Rayleigh).

Source: the Elam, Ravel and Sieber (2002) tables as shipped by the PyPI package ``xraydb`` (offline, MIT), per
element; a material's mass attenuation coefficient is the mass-fraction-weighted sum over its elements (the mixture
rule). The incoherent coefficient includes electron binding (incoherent scattering functions), so low-energy Compton
scattering is not overestimated as the free-electron Klein-Nishina cross section would; the transport engine samples
the scattering angle from Klein-Nishina.

Validity: xraydb warns that the Elam tables are unreliable above 800 keV (water at 1 MeV is 11 % above NIST XCOM);
tables here end at :data:`MAX_ENERGY_MEV` = 0.8 MeV. Lu-177's photons (113, 208 keV; 321 keV at 0.2 %) are well
inside; a nuclide with photon lines above is refused (:func:`check_photon_energies`). Checked against NIST XCOM for
water (30, 100, 200 keV) in Testing/test_photon_xs.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Sequence, Tuple

import numpy as np

from ImagingBasics.errors import UserError

from .materials import MATERIALS, Material

MIN_ENERGY_MEV = 1e-3
MAX_ENERGY_MEV = 0.8
KINDS = ("photo", "incoh", "coh")  # xraydb's names: photoelectric, incoherent (Compton), coherent (Rayleigh)


def mass_attenuation_cm2_g(composition: Dict[str, float], energies_mev: np.ndarray, kind: str = "total") -> np.ndarray:
    """Mass attenuation coefficient (cm2/g) of a mixture (element -> mass fraction) at ``energies_mev``.

    ``kind``: "photo", "incoh", "coh" or "total" (their sum).
    """
    import warnings

    try:
        import xraydb
    except ImportError:
        raise UserError("photon cross sections need the xraydb package: pip install xraydb") from None
    e_ev = np.atleast_1d(np.asarray(energies_mev, dtype=np.float64)) * 1e6
    kinds = KINDS if kind == "total" else (kind,)
    out = np.zeros_like(e_ev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the > 800 keV warning: energies are checked by the callers
        for element, fraction in composition.items():
            for k in kinds:
                out += fraction * np.asarray(xraydb.mu_elam(element, e_ev, kind=k), dtype=np.float64)
    return out


@dataclass(frozen=True)
class PhotonTable:
    """Mass attenuation coefficients of the transport materials on a log energy grid.

    ``mu_rho[m, e, k]``: material m, energy e, interaction k (photoelectric, incoherent, coherent), in cm2/g.
    """

    materials: Tuple[str, ...]
    energies_mev: np.ndarray
    mu_rho: np.ndarray

    def interpolate(self, material: int, energies_mev: np.ndarray) -> np.ndarray:
        """``[n, 3]`` coefficients (cm2/g) at arbitrary energies, log-log interpolated (the tables are smooth there;
        absorption edges of the elements here lie below 4 keV)."""
        e = np.asarray(energies_mev, dtype=np.float64)
        check_photon_energies(e)
        le, lt = np.log(e), np.log(self.energies_mev)
        return np.stack([np.exp(np.interp(le, lt, np.log(np.maximum(self.mu_rho[material, :, k], 1e-30))))
                         for k in range(len(KINDS))], axis=-1)

    def total(self, material: int, energies_mev: np.ndarray) -> np.ndarray:
        """Total mass attenuation coefficient (cm2/g)."""
        return self.interpolate(material, energies_mev).sum(axis=-1)


def check_photon_energies(energies_mev: np.ndarray) -> None:
    e = np.asarray(energies_mev)
    if e.size and (e.min() < MIN_ENERGY_MEV or e.max() > MAX_ENERGY_MEV):
        raise UserError(f"photon energies must lie within {1000 * MIN_ENERGY_MEV:g}-{1000 * MAX_ENERGY_MEV:g} keV "
                        f"(the cross-section tables' range); got {1000 * e.min():.3g}-{1000 * e.max():.3g} keV")


@lru_cache(maxsize=4)
def photon_table(n_energies: int = 300) -> PhotonTable:
    """The coefficients of the standard materials (:data:`~.materials.MATERIALS`), cached."""
    return build_photon_table(MATERIALS, n_energies)


def build_photon_table(materials: Sequence[Material], n_energies: int = 300) -> PhotonTable:
    """The coefficients of ``materials`` on ``n_energies`` log-spaced energies from 1 to 800 keV."""
    energies = np.geomspace(MIN_ENERGY_MEV, MAX_ENERGY_MEV, n_energies)
    mu = np.stack([np.stack([mass_attenuation_cm2_g(m.composition, energies, k) for k in KINDS], axis=-1)
                   for m in materials])
    return PhotonTable(tuple(m.name for m in materials), energies, mu)
