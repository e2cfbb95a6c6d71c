"""Condensed-history electron transport on a voxelised patient (torch; CPU or CUDA).

A class-I condensed-history scheme kept deliberately simple; each step of an electron of kinetic energy E:

1. Step length in mass thickness s = f R(E) (``step_fraction`` f of the remaining CSDA range R, material of the
   voxel where the step starts), at most ``max_step_mm`` geometrically; geometric length l = s / rho (density scaling).
2. Energy loss: continuous slowing down, E' = E(R(E) - s) from the CSDA range table of :mod:`.electron_stopping`
   (no straggling, no delta rays, no bremsstrahlung photons: radiative losses are < 0.5 % below 0.5 MeV in tissue and
   are deposited with the collision losses).
3. Deposition: the lost energy E - E' is deposited at the hinge point, a uniformly random point of the step.
4. Angular deflection (random hinge): the electron flies u l along its direction, turns, flies (1 - u) l. The
   deflection has the mean <1 - cos theta> = 1 - exp(-s / lambda_1) of a step (Goudsmit-Saunderson's first moment),
   with (1 - cos theta) exponentially distributed (the small-angle Gaussian limit), truncated at 2.
   lambda_1, the first transport mean free path, is computed from the screened Rutherford cross section with
   Moliere's screening parameter (:func:`transport_mean_free_path_g_cm2`):
   sigma_1 = 2 pi Z (Z + 1) r_e^2 (m c^2)^2 / (p c beta)^2 [ln(1 + 1/eta) - 1/(1 + eta)],
   eta = 1.7e-5 Z^(2/3) / (tau (tau + 2)) (1.13 + 3.76 (alpha Z / beta)^2).
5. Below ``cutoff_mev`` the electron stops and deposits the rest.
6. Range rejection (exact for voxel doses): an electron whose remaining CSDA range (a path length, so an upper bound of
   how far it can get) is shorter than its distance to the nearest face of its voxel deposits all its energy in that
   voxel and stops. Most Lu-177 electrons end this way after a few steps in millimetre voxels.

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
from .photon_transport import rotate_direction
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
    spacing = grid.spacing
    log_e = torch.as_tensor(np.log(tables.energies_mev), device=device, dtype=dtype)
    log_r = torch.as_tensor(np.log(tables.csda_g_cm2), device=device, dtype=dtype)  # [M, E]
    log_l = torch.as_tensor(np.log(tables.lambda1_g_cm2), device=device, dtype=dtype)
    n_e = len(tables.energies_mev)

    def interp(table_rows, x_log, m):  # log-log interpolation along the energy grid, per electron's material
        f = ((x_log - log_e[0]) / (log_e[1] - log_e[0])).clamp(0, n_e - 1 - 1e-9)
        i = f.floor().long()
        t = f - i
        return torch.exp(table_rows[m, i] + (table_rows[m, i + 1] - table_rows[m, i]) * t)

    def energy_from_range(r, m):  # inverse of the CSDA table (monotone) per material
        out = torch.empty_like(r)
        for material in torch.unique(m).tolist():
            sel = m == material
            lr = torch.log(r[sel].clamp(min=1e-30))
            rows = log_r[material]
            j = torch.searchsorted(rows, lr).clamp(1, n_e - 1)
            t = (lr - rows[j - 1]) / (rows[j] - rows[j - 1])
            out[sel] = torch.exp(log_e[j - 1] + (log_e[j] - log_e[j - 1]) * t)
        return out

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
        r = interp(log_r, torch.log(e), m)
        if range_rejection:  # remaining range (mm) shorter than the way out of the voxel: all energy stays there
            local = p - torch.floor(p / spacing) * spacing
            to_face = torch.minimum(local, spacing - local).min(-1).values
            trapped = 10.0 * r / density < to_face
            if bool(trapped.any()):
                deposit.index_add_(0, flat[trapped], (e * w)[trapped])
                keep_idx = ~trapped
                alive, p, d, e, w = alive[keep_idx], p[keep_idx], d[keep_idx], e[keep_idx], w[keep_idx]
                flat, m, density, r = flat[keep_idx], m[keep_idx], density[keep_idx], r[keep_idx]
                if alive.numel() == 0:
                    continue
        s = torch.minimum(step_fraction * r, 0.1 * max_step_mm * density)  # g/cm2; 0.1: mm -> cm
        stops = (r - s) <= interp(log_r, torch.full_like(e, math.log(cutoff_mev)), m)
        e_new = torch.where(stops, torch.zeros_like(e), energy_from_range(torch.where(stops, r, r - s), m))
        length_mm = 10.0 * s / density
        u = torch.rand(len(e), generator=gen, device=device, dtype=dtype)
        hinge = p + d * (u * length_mm)[:, None]
        inside = grid.inside(hinge)
        deposit.index_add_(0, grid.flat_index(torch.where(inside[:, None], hinge, p))[inside], ((e - e_new) * w)[inside])
        escaped = escaped + (e * w)[~inside].sum()
        mean_deflection = 1 - torch.exp(-s / interp(log_l, torch.log(0.5 * (e + e_new).clamp(min=cutoff_mev)), m))
        x = -mean_deflection * torch.log(torch.rand(len(e), generator=gen, device=device, dtype=dtype))
        d_new = rotate_direction(d, (1 - x.clamp(max=2.0)), gen)
        end = hinge + d_new * ((1 - u) * length_mm)[:, None]
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
