"""Absorbed fractions in spheres: analytic photon bounds, Monte Carlo sphere runs and published Lu-177 sphere S values.

The transport engine's checks against spheres (issue 6, point 5). A source uniform in a homogeneous sphere of radius R
in vacuum, as in the MIRD sphere model.

**Photons of one energy E** (:func:`photon_absorbed_fraction_bounds`). With mu the linear attenuation coefficient,
the probability that a photon leaves the sphere without interacting is the first-flight escape probability of a
uniform isotropic source (Case, de Hoffmann & Placzek 1953, "Introduction to the theory of neutron diffusion", vol. 1)

    P(tau) = 3 / (8 tau^3) [2 tau^2 - 1 + (1 + 2 tau) exp(-2 tau)],   tau = mu R          (:func:`escape_probability`)

which tends to 1 - 3 tau / 4 for small spheres (the mean distance to the surface is 3R/4) and to 3 / (4 tau) for large
ones. The absorbed fraction phi is then bounded:

    lower = (1 - P) (mu_pe + f_KN(E) mu_inc) / mu      energy deposited at the first interaction only
    upper = 1 - P                                      every interacting photon deposits all its energy

f_KN: the Klein-Nishina mean fraction of the photon's energy given to the Compton electron
(:func:`klein_nishina_energy_transfer_fraction`). These bounds use the engine's own cross sections (photoelectric,
incoherent and coherent from xraydb; Compton energies from Klein-Nishina), so a Monte Carlo absorbed fraction outside
them is a transport error; small spheres approach the lower bound (single interactions), large ones the upper.

**Lu-177 in soft-tissue spheres** (:data:`LU177_SOFT_TISSUE_SPHERES`): total S values (electrons and photons,
Gy per decay = Gy/(Bq s)) for spheres of 1-60 mm radius, as distributed with PyTheranostics
(github.com/qurit/PyTheranostics, ``doodle/data/s-values/spheres.json``, the "100%/0%" column, i.e. no bone). That file
does not name its source; the masses imply a density of 1.03 g/cm3 (the radii below are derived from them). The
absorbed energy per decay, S x mass, is what :func:`mc_sphere_absorbed_energy` computes.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from .constants import ELECTRON_MASS_MEV, MEV_TO_J
from .decay import trapezoid
from .materials import AIR, AIR_DENSITY_G_CM3, SOFT_TISSUE

#: (radius mm, mass g, total S value Gy per decay) of Lu-177 in soft-tissue spheres (1.03 g/cm3), see the docstring.
LU177_SOFT_TISSUE_SPHERES: Tuple[Tuple[float, float, float], ...] = (
    (1.0, 4.31e-03, 4.54e-09), (1.5, 1.46e-02, 1.44e-09), (2.0, 3.45e-02, 6.29e-10), (3.0, 1.16e-01, 1.93e-10),
    (4.0, 2.76e-01, 8.26e-11), (5.0, 5.39e-01, 4.27e-11), (6.0, 9.32e-01, 2.49e-11), (8.0, 2.21e+00, 1.06e-11),
    (10.0, 4.31e+00, 5.46e-12), (15.0, 1.46e+01, 1.63e-12), (20.0, 3.45e+01, 6.93e-13), (30.0, 1.16e+02, 2.07e-13),
    (40.0, 2.76e+02, 8.81e-14), (50.0, 5.39e+02, 4.54e-14), (60.0, 9.32e+02, 2.65e-14))
SPHERE_DENSITY_G_CM3 = 1.03


def reference_absorbed_energy_mev(s_gy_per_decay: float, mass_g: float) -> float:
    """Energy absorbed in the sphere per decay (MeV) from a sphere S value: S x mass."""
    return s_gy_per_decay * mass_g * 1e-3 / MEV_TO_J


def escape_probability(tau):
    """First-flight escape probability from a sphere of optical radius ``tau`` = mu R with a uniform isotropic source
    (Case, de Hoffmann & Placzek 1953); a series for tau < 1e-3, where the closed form cancels badly."""
    t = np.asarray(tau, dtype=np.float64)
    small = t < 1e-3
    ts = np.where(small, 1.0, t)
    closed = 3.0 / (8.0 * ts ** 3) * (2.0 * ts ** 2 - 1.0 + (1.0 + 2.0 * ts) * np.exp(-2.0 * ts))
    return np.where(small, 1.0 - 0.75 * t + 0.6 * t ** 2, closed)


def klein_nishina_energy_transfer_fraction(energy_mev: float, n: int = 20001) -> float:
    """Mean fraction of a photon's energy given to the electron in Klein-Nishina (free-electron) Compton scattering:
    the integral over cos theta of dsigma/dOmega x (1 - E'/E), divided by the integral of dsigma/dOmega."""
    k = float(energy_mev) / ELECTRON_MASS_MEV
    mu = np.linspace(-1.0, 1.0, n)
    ratio = 1.0 / (1.0 + k * (1.0 - mu))  # E'/E
    dsigma = ratio ** 2 * (ratio + 1.0 / ratio - (1.0 - mu ** 2))
    return trapezoid(dsigma * (1.0 - ratio), mu) / trapezoid(dsigma, mu)


def photon_absorbed_fraction_bounds(energy_mev: float, radius_mm: float, density_g_cm3: float = 1.0,
                                    material: int = SOFT_TISSUE) -> Tuple[float, float]:
    """(lower, upper) bounds of the photon absorbed fraction of a sphere (module docstring), with the engine's cross
    sections of ``material`` at ``density_g_cm3``."""
    from .photon_xs import photon_table

    pe, inc, coh = photon_table().interpolate(material, np.array([energy_mev]))[0]
    mu_per_mm = (pe + inc + coh) * density_g_cm3 / 10.0
    interacting = 1.0 - float(escape_probability(mu_per_mm * radius_mm))
    first = (pe + klein_nishina_energy_transfer_fraction(energy_mev) * inc) / (pe + inc + coh)
    return interacting * first, interacting


def sphere_grid(radius_mm: float, voxels_per_radius: int = 20, margin_voxels: int = 2,
                density_g_cm3: float = SPHERE_DENSITY_G_CM3):
    """A voxelised sphere of soft tissue in air: (materials, density, mask ``[z, y, x]``, voxel size mm).

    The grid's voxel is ``radius_mm / voxels_per_radius``; voxels whose centre lies inside the sphere are soft tissue.
    """
    voxel = radius_mm / voxels_per_radius
    n = 2 * (voxels_per_radius + margin_voxels)
    c = (np.arange(n) + 0.5 - n / 2) * voxel
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    mask = x * x + y * y + z * z <= radius_mm * radius_mm
    materials = np.where(mask, SOFT_TISSUE, AIR).astype(np.uint8)
    density = np.where(mask, density_g_cm3, AIR_DENSITY_G_CM3).astype(np.float32)
    return materials, density, mask, voxel


def _uniform_in_mask(mask: np.ndarray, voxel_mm: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` positions (x, y, z mm from the grid corner) uniform in the voxels of ``mask``."""
    k, j, i = np.nonzero(mask)
    pick = rng.integers(0, len(i), n)
    ijk = np.stack([i[pick], j[pick], k[pick]], -1).astype(np.float64) + rng.uniform(0, 1, (n, 3))
    return ijk * voxel_mm


def mc_photon_absorbed_fraction(energy_mev: float, radius_mm: float, n: int = 20_000, density_g_cm3: float = 1.0,
                                voxels_per_radius: int = 20, seed: int = 0, device: str = "cpu") -> float:
    """Monte Carlo absorbed fraction of ``energy_mev`` photons emitted uniformly in a soft-tissue sphere."""
    from .photon_transport import isotropic_directions, transport_photons
    from .photon_xs import photon_table

    rng = np.random.default_rng(seed)
    materials, density, mask, voxel = sphere_grid(radius_mm, voxels_per_radius, density_g_cm3=density_g_cm3)
    pos = _uniform_in_mask(mask, voxel, n, rng)
    r = transport_photons(pos, isotropic_directions(n, rng), np.full(n, float(energy_mev)), materials, density,
                          (voxel,) * 3, photon_table(), device=device, seed=seed + 1)
    return float(r.deposit_mev[mask].sum() / (n * energy_mev))


def mc_sphere_absorbed_energy(radius_mm: float, nuclide: str = "Lu-177", n_decays: int = 100_000,
                              density_g_cm3: float = SPHERE_DENSITY_G_CM3, voxels_per_radius: int = 20,
                              seed: int = 0, device: str = "cpu") -> Dict[str, float]:
    """Energy absorbed in a soft-tissue sphere per decay (MeV) of ``nuclide`` uniform in it, by the engine's
    electron and photon transport: {"electrons", "photons", "total", "mass_g"} (mass of the voxelised sphere)."""
    from .decay import load_decay_data
    from .electron_transport import electron_tables, transport_electrons
    from .kernels import sample_emissions
    from .photon_transport import isotropic_directions, transport_photons
    from .photon_xs import photon_table

    rng = np.random.default_rng(seed)
    materials, density, mask, voxel = sphere_grid(radius_mm, voxels_per_radius, density_g_cm3=density_g_cm3)
    em = sample_emissions(load_decay_data(nuclide), n_decays, rng)
    spacing = (voxel,) * 3
    n_e = len(em.electron_mev)
    e = transport_electrons(_uniform_in_mask(mask, voxel, n_e, rng), isotropic_directions(n_e, rng),
                            em.electron_mev, em.electron_weight, materials, density, spacing, electron_tables(),
                            device=device, seed=seed + 1)
    photons = 0.0
    if len(em.photon_mev):
        n_p = len(em.photon_mev)
        p = transport_photons(_uniform_in_mask(mask, voxel, n_p, rng), isotropic_directions(n_p, rng), em.photon_mev,
                              materials, density, spacing, photon_table(), device=device, seed=seed + 2)
        photons = float(p.deposit_mev[mask].sum()) * em.photon_weight
    electrons = float(e.deposit_mev[mask].sum()) + em.local_mev
    mass_g = float(mask.sum()) * voxel ** 3 / 1000.0 * density_g_cm3
    return {"electrons": electrons / n_decays, "photons": photons / n_decays,
            "total": (electrons + photons) / n_decays, "mass_g": mass_g}


def compare_with_reference(radius_mm: float, n_decays: int = 100_000, seed: int = 0, device: str = "cpu",
                           voxels_per_radius: Optional[int] = None) -> Dict[str, float]:
    """The engine against :data:`LU177_SOFT_TISSUE_SPHERES` for one tabulated radius: absorbed energies per decay
    (MeV) and their ratio."""
    rows = {r: (m, s) for r, m, s in LU177_SOFT_TISSUE_SPHERES}
    if radius_mm not in rows:
        raise ValueError(f"no reference sphere of radius {radius_mm} mm")
    mass_g, s = rows[radius_mm]
    ours = mc_sphere_absorbed_energy(radius_mm, n_decays=n_decays, seed=seed, device=device,
                                     voxels_per_radius=voxels_per_radius or 20)
    ref = reference_absorbed_energy_mev(s, mass_g)
    return {"radius_mm": radius_mm, "reference_mev": ref, "ours_mev": ours["total"],
            "ours_electrons_mev": ours["electrons"], "ours_photons_mev": ours["photons"],
            "ratio": ours["total"] / ref, "mass_g_reference": mass_g, "mass_g_voxelised": ours["mass_g"]}
