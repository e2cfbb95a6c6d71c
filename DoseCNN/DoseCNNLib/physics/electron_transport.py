"""Condensed-history electron transport on a voxelised patient (torch; CPU or CUDA).

A class-I condensed-history scheme kept deliberately simple; each step of an electron of kinetic energy E (one
function per step; :func:`transport_electrons` runs them in the order 6, 1, 2 + 5, 3, 4):

1. Step length in mass thickness s = f R(E) (``step_fraction`` f of the remaining CSDA range R, material of the
   voxel where the step starts), at most ``max_step_mm`` geometrically; geometric length l = s / rho (density scaling):
   :func:`condensed_history_step`.
2. Energy loss: continuous slowing down, E' = E(R(E) - s) from the CSDA range table of :mod:`.electron_stopping`
   (no straggling, no delta rays, no bremsstrahlung photons: radiative losses are < 0.5 % below 0.5 MeV in tissue and
   are deposited with the collision losses): :func:`continuous_energy_loss`.
3. Deposition: the lost energy E - E' is deposited at the hinge point, a uniformly random point of the step
   (:func:`random_hinge`).
4. Angular deflection (random hinge): the electron flies u l along its direction, turns, flies (1 - u) l. The
   deflection has the mean <1 - cos theta> = 1 - exp(-s / lambda_1) of a step (Goudsmit-Saunderson's first moment),
   with (1 - cos theta) exponentially distributed (the small-angle Gaussian limit), truncated at 2.
   lambda_1, the first transport mean free path, is computed from the screened Rutherford cross section with
   Moliere's screening parameter (:func:`transport_mean_free_path_g_cm2`):
   sigma_1 = 2 pi Z (Z + 1) r_e^2 (m c^2)^2 / (p c beta)^2 [ln(1 + 1/eta) - 1/(1 + eta)],
   eta = 1.7e-5 Z^(2/3) / (tau (tau + 2)) (1.13 + 3.76 (alpha Z / beta)^2). The turn: :func:`multiple_scattering_deflection`.
5. Below ``cutoff_mev`` the electron stops and deposits the rest (in :func:`continuous_energy_loss`).
6. Range rejection (exact for voxel doses): an electron whose remaining CSDA range (a path length, so an upper bound of
   how far it can get) is shorter than its distance to the nearest face of its voxel deposits all its energy in that
   voxel and stops, :func:`range_rejected`. Most Lu-177 electrons end this way after a few steps in millimetre voxels.

Random numbers per step, in this order: the hinge fraction u, the deflection, the azimuth.

Electrons leaving the grid escape. The checks (energy balance in a large water phantom, penetration against the CSDA
range, Lu-177 self-voxel S values against Lanconelli) are in Testing/test_electron_transport.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .constants import AVOGADRO_PER_MOL, CLASSICAL_ELECTRON_RADIUS_CM, ELECTRON_MASS_MEV, FINE_STRUCTURE
from .electron_stopping import ELEMENTS, csda_range_g_cm2, electron_medium
from .materials import MATERIALS, Material
from .photon_transport import advance, rotate_direction
from .voxel_grid import VoxelGrid


def transport_mean_free_path_g_cm2(t_mev: np.ndarray, composition) -> np.ndarray:
    """First transport mean free path lambda_1 (g/cm2) of electrons: screened Rutherford, Moliere screening."""
    t = np.asarray(t_mev, dtype=np.float64)
    tau = t / ELECTRON_MASS_MEV
    beta2 = tau * (tau + 2) / (tau + 1) ** 2
    pc = ELECTRON_MASS_MEV * np.sqrt(tau * (tau + 2))
    inverse = np.zeros_like(t)
    for element, fraction in composition.items():
        z, a = ELEMENTS[element]
        eta = 1.7e-5 * z ** (2 / 3) / (tau * (tau + 2)) * (1.13 + 3.76 * (FINE_STRUCTURE * z) ** 2 / beta2)
        prefactor = 2 * math.pi * z * (z + 1) * CLASSICAL_ELECTRON_RADIUS_CM ** 2 * ELECTRON_MASS_MEV ** 2 / (pc ** 2 * beta2)
        sigma1 = prefactor * (np.log1p(1 / eta) - 1 / (1 + eta))  # cm2 per atom
        inverse += fraction * AVOGADRO_PER_MOL / a * sigma1
    return 1.0 / inverse


@dataclass(frozen=True)
class ElectronTables:
    """Per material, on one log energy grid: CSDA range (g/cm2) and lambda_1 (g/cm2)."""

    energies_mev: np.ndarray
    csda_g_cm2: np.ndarray  # [material, energy]
    lambda1_g_cm2: np.ndarray


def electron_tables(materials: Sequence[Material] = MATERIALS, max_energy_mev: float = 3.0,
                    n_energies: int = 400) -> ElectronTables:
    energies = np.geomspace(1e-3, max_energy_mev, n_energies)
    csda = np.stack([csda_range_g_cm2(energies, electron_medium(m.composition, m.nominal_density_g_cm3))
                     for m in materials])
    lam = np.stack([transport_mean_free_path_g_cm2(energies, m.composition) for m in materials])
    return ElectronTables(energies, csda, lam)


@dataclass
class ElectronResult:
    deposit_mev: np.ndarray  # [z, y, x], float64
    escaped_mev: float
    emitted_mev: float
    steps: int


class _DeviceTables:
    """:class:`ElectronTables` on the device, with log-log interpolation along the energy grid per material."""

    def __init__(self, tables: ElectronTables, device, dtype):
        import torch

        self.log_e = torch.as_tensor(np.log(tables.energies_mev), device=device, dtype=dtype)
        self.log_r = torch.as_tensor(np.log(tables.csda_g_cm2), device=device, dtype=dtype)  # [M, E]
        self.log_l = torch.as_tensor(np.log(tables.lambda1_g_cm2), device=device, dtype=dtype)
        self.n_e = len(tables.energies_mev)

    def _interpolate(self, table_rows, log_energy, material):
        import torch

        log_e, n_e = self.log_e, self.n_e
        f = ((log_energy - log_e[0]) / (log_e[1] - log_e[0])).clamp(0, n_e - 1 - 1e-9)
        i = f.floor().long()
        t = f - i
        return torch.exp(table_rows[material, i] + (table_rows[material, i + 1] - table_rows[material, i]) * t)

    def csda_range_at_log_energy(self, log_energy, material):
        """CSDA range (g/cm2) at ln(E / MeV) in each electron's material."""
        return self._interpolate(self.log_r, log_energy, material)

    def csda_range(self, energy_mev, material):
        """CSDA range R(E) (g/cm2) in each electron's material."""
        import torch

        return self.csda_range_at_log_energy(torch.log(energy_mev), material)

    def lambda1(self, energy_mev, material):
        """First transport mean free path lambda_1(E) (g/cm2) in each electron's material."""
        import torch

        return self._interpolate(self.log_l, torch.log(energy_mev), material)

    def energy_from_range(self, range_g_cm2, material):
        """E(R) (MeV), the inverse of the CSDA range table (monotone), per material."""
        import torch

        log_e, n_e = self.log_e, self.n_e
        out = torch.empty_like(range_g_cm2)
        for m in torch.unique(material).tolist():
            sel = material == m
            lr = torch.log(range_g_cm2[sel].clamp(min=1e-30))
            rows = self.log_r[m]
            j = torch.searchsorted(rows, lr).clamp(1, n_e - 1)
            t = (lr - rows[j - 1]) / (rows[j] - rows[j - 1])
            out[sel] = torch.exp(log_e[j - 1] + (log_e[j] - log_e[j - 1]) * t)
        return out


def range_rejected(positions_mm, csda_g_cm2, density_g_cm3, spacing_mm):
    """Step 6, range rejection: True where the remaining CSDA range (``10 R / rho`` mm at the voxel's density; a path
    length, so an upper bound of how far the electron can get) is shorter than the distance to the nearest face of
    the electron's voxel (``spacing_mm`` a tensor (sx, sy, sz)). Such an electron deposits all its energy there."""
    import torch

    local = positions_mm - torch.floor(positions_mm / spacing_mm) * spacing_mm
    to_face = torch.minimum(local, spacing_mm - local).min(-1).values
    return 10.0 * csda_g_cm2 / density_g_cm3 < to_face


def condensed_history_step(csda_g_cm2, density_g_cm3, step_fraction: float, max_step_mm: float):
    """Step 1: (mass thickness s in g/cm2, geometric length l in mm) of the next step: s = f R(E), at most
    ``max_step_mm`` geometrically; l = s / rho (density scaling; 0.1 and 10 convert mm and cm)."""
    import torch

    s = torch.minimum(step_fraction * csda_g_cm2, 0.1 * max_step_mm * density_g_cm3)
    return s, 10.0 * s / density_g_cm3


def continuous_energy_loss(tables: _DeviceTables, csda_g_cm2, s_g_cm2, material, cutoff_mev: float):
    """Steps 2 and 5: (energy E' in MeV after the step, mask of the electrons that stop). Continuous slowing down,
    E' = E(R(E) - s) from the CSDA range table; an electron whose remaining range R(E) - s is at most the range at
    ``cutoff_mev`` stops (E' = 0) and its whole energy counts as lost in this step."""
    import torch

    stops = (csda_g_cm2 - s_g_cm2) <= tables.csda_range_at_log_energy(
        torch.full_like(csda_g_cm2, math.log(cutoff_mev)), material)
    remaining = tables.energy_from_range(torch.where(stops, csda_g_cm2, csda_g_cm2 - s_g_cm2), material)
    return torch.where(stops, torch.zeros_like(csda_g_cm2), remaining), stops


def random_hinge(positions_mm, directions, length_mm, generator):
    """Steps 3-4, first half: (hinge positions in mm, fractions u): the electron flies ``u l`` along its direction,
    u uniform on [0, 1) (one random number per electron); the energy lost in the step is deposited at the hinge."""
    import torch

    u = torch.rand(len(length_mm), generator=generator, device=length_mm.device, dtype=length_mm.dtype)
    return advance(positions_mm, directions, u * length_mm), u


def multiple_scattering_deflection(directions, s_g_cm2, lambda1_g_cm2, generator):
    """Step 4: directions after the step's angular deflection at the hinge. (1 - cos theta) exponential with the
    Goudsmit-Saunderson first-moment mean 1 - exp(-s / lambda_1), truncated at 2; uniform azimuth (one random number
    per electron, then :func:`.photon_transport.rotate_direction`'s)."""
    import torch

    mean_deflection = 1 - torch.exp(-s_g_cm2 / lambda1_g_cm2)
    xi = torch.rand(len(s_g_cm2), generator=generator, device=s_g_cm2.device, dtype=s_g_cm2.dtype)
    x = -mean_deflection * torch.log(xi)
    return rotate_direction(directions, (1 - x.clamp(max=2.0)), generator)


def transport_electrons(positions_mm, directions, energies_mev, weights, materials: np.ndarray,
                        density_g_cm3: np.ndarray, spacing_mm: Sequence[float], tables: ElectronTables,
                        device: str = "cpu", seed: int = 0, step_fraction: float = 0.1, max_step_mm: float = 1.0,
                        cutoff_mev: float = 0.005, max_steps: int = 10_000, range_rejection: bool = True,
                        deposit=None) -> ElectronResult:
    """Transport weighted electrons (see the module docstring); energies deposited are weight x MeV.

    ``deposit``: an optional flat float64 torch tensor (the grid's size) to accumulate into; then the returned
    ``deposit_mev`` is None (no copy of a large grid).
    """
    import torch

    dtype = torch.float64
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    grid = VoxelGrid(materials, density_g_cm3, spacing_mm, device, dtype)
    tabs = _DeviceTables(tables, device, dtype)

    pos = torch.as_tensor(positions_mm, device=device, dtype=dtype).clone()
    direction = torch.as_tensor(directions, device=device, dtype=dtype).clone()
    energy = torch.as_tensor(energies_mev, device=device, dtype=dtype).clone()
    weight = torch.as_tensor(weights, device=device, dtype=dtype).clone()
    emitted = float((energy * weight).sum())
    external = deposit is not None
    if not external:
        deposit = torch.zeros(grid.size, device=device, dtype=dtype)
    escaped = torch.zeros((), device=device, dtype=dtype)
    low = energy < cutoff_mev  # too slow to move: deposited where born
    deposit.index_add_(0, grid.flat_index(pos[low]), (energy * weight)[low])
    alive = (~low).nonzero(as_tuple=True)[0]
    steps = 0
    for _ in range(max_steps):
        if alive.numel() == 0:
            break
        steps += 1
        p, d, e, w = pos[alive], direction[alive], energy[alive], weight[alive]
        flat = grid.flat_index(p)
        m = grid.material_at(flat)
        density = grid.density_at(flat)
        r = tabs.csda_range(e, m)
        if range_rejection:
            trapped = range_rejected(p, r, density, grid.spacing)
            if bool(trapped.any()):
                deposit.index_add_(0, flat[trapped], (e * w)[trapped])
                keep_idx = ~trapped
                alive, p, d, e, w = alive[keep_idx], p[keep_idx], d[keep_idx], e[keep_idx], w[keep_idx]
                flat, m, density, r = flat[keep_idx], m[keep_idx], density[keep_idx], r[keep_idx]
                if alive.numel() == 0:
                    continue
        s, length_mm = condensed_history_step(r, density, step_fraction, max_step_mm)
        e_new, stops = continuous_energy_loss(tabs, r, s, m, cutoff_mev)
        hinge, u = random_hinge(p, d, length_mm, gen)
        inside = grid.inside(hinge)  # deposition at the hinge; electrons whose hinge is outside escape
        deposit.index_add_(0, grid.flat_index(torch.where(inside[:, None], hinge, p))[inside], ((e - e_new) * w)[inside])
        escaped = escaped + (e * w)[~inside].sum()
        d_new = multiple_scattering_deflection(d, s, tabs.lambda1(0.5 * (e + e_new).clamp(min=cutoff_mev), m), gen)
        end = advance(hinge, d_new, (1 - u) * length_mm)
        still = inside & ~stops
        out = still & ~grid.inside(end)
        escaped = escaped + (e_new * w)[out].sum()
        keep = still & ~out
        pos[alive], direction[alive], energy[alive] = end, d_new, e_new
        alive = alive[keep]
    else:
        raise RuntimeError("electron transport did not finish within max_steps")
    out = None if external else grid.to_numpy(deposit)
    return ElectronResult(out, float(escaped), emitted, steps)
