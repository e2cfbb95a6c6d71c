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
   eta = 1.7e-5 Z^(2/3) / (tau (tau + 2)) (1.13 + 3.76 (alpha Z / beta)^2), taken at the step's mean energy
   (E + E')/2 (at least the cutoff). The turn: :func:`multiple_scattering_deflection`.
5. Below ``cutoff_mev`` the electron stops and deposits the rest (in :func:`continuous_energy_loss`).
6. Range rejection (exact for voxel doses): an electron whose remaining CSDA range (a path length, so an upper bound of
   how far it can get) is shorter than its distance to the nearest face of its voxel deposits all its energy in that
   voxel and stops, :func:`range_rejected`. Most Lu-177 electrons end this way after a few steps in millimetre voxels.

Random numbers per step, in this order: the hinge fraction u, the deflection, the azimuth.

Electrons leaving the grid escape. The checks (energy balance in a large water phantom, penetration against the CSDA
range, Lu-177 self-voxel S values against Lanconelli) are in Testing/test_electron_transport.py.

Implementation: the electrons still tracked are one batch, positions and directions component-major ``[3, n]`` (rows
x, y, z), energies and weights ``[n]``; a step is a fixed sequence of whole-batch tensor operations, and the batch is
compacted (in order) after the range rejection and at the end of the step. The tables are interpolated by gathers
from flat tables (:class:`_DeviceTables`). The transport runs in float64 or float32 (``dtype``); the energies
deposited and escaped are summed in float64 from exact differences of the energies, so energy is conserved to float64
rounding in either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .constants import AVOGADRO_PER_MOL, CLASSICAL_ELECTRON_RADIUS_CM, ELECTRON_MASS_MEV, FINE_STRUCTURE
from .electron_stopping import ELEMENTS, csda_range_g_cm2, electron_medium
from .materials import MATERIALS, Material
from .photon_transport import advance, rotate_direction, uniform
from .voxel_grid import VoxelGrid, indices, select


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
    """:class:`ElectronTables` on the device, with log-log interpolation along the energy grid per material.

    The tables are stored flat (row ``material``, column ``i`` at ``material * n_e + i``) with the slopes between
    neighbouring grid points precomputed, so an interpolation for a batch of electrons is one gather per table and
    no per-material loop."""

    def __init__(self, tables: ElectronTables, device, dtype):
        import torch

        def tensor(array):
            return torch.as_tensor(np.ascontiguousarray(array), device=device, dtype=dtype)

        log_e = np.log(tables.energies_mev)
        log_r, log_l = np.log(tables.csda_g_cm2), np.log(tables.lambda1_g_cm2)  # [M, E]
        self.n_e = len(log_e)
        self.n_materials = len(log_r)
        self.log_e0, self.dlog_e = float(log_e[0]), float(log_e[1] - log_e[0])  # uniform ln(E) grid
        self.log_e = tensor(log_e)
        self._log_e_step = tensor(np.append(np.diff(log_e), 0.0))  # ln E[j + 1] - ln E[j]
        self._flat_log_r, self._flat_slope_r = tensor(log_r.ravel()), tensor(self._slopes(log_r).ravel())
        self._flat_log_l, self._flat_slope_l = tensor(log_l.ravel()), tensor(self._slopes(log_l).ravel())
        # the inverse's lookup table from the table as stored (rounded to dtype), so that it brackets those values
        self._build_range_index(self._flat_log_r.cpu().double().numpy().reshape(log_r.shape), tensor)

    def _build_range_index(self, log_r: np.ndarray, tensor) -> None:
        """The lookup table of :meth:`_range_index`: ln R cut into buckets of a width w below a quarter of the
        smallest step between neighbouring table entries (so three buckets hold at most one entry); per material and
        bucket q, the number of entries below the bucket's lower edge ln R_0 + q w."""
        import torch

        self._bucket_width = float(np.diff(log_r, axis=1).min()) / 4
        self._bucket_origin = float(log_r.min()) - self._bucket_width
        self._n_buckets = int((log_r.max() - self._bucket_origin) / self._bucket_width) + 3
        edges = self._bucket_origin + self._bucket_width * np.arange(self._n_buckets)
        below = np.stack([np.searchsorted(row, edges, side="left") for row in log_r])  # [M, Q]
        self._flat_below_edge = torch.as_tensor(below.ravel(), device=self.log_e.device)
        padded = np.concatenate([log_r, np.full((len(log_r), 1), np.inf)], axis=1)  # [M, E + 1]: +inf past the end
        self._flat_log_r_padded = tensor(padded.ravel())

    @staticmethod
    def _slopes(log_table: np.ndarray) -> np.ndarray:
        """table[:, i + 1] - table[:, i] per row (0 in the last column)."""
        return np.concatenate([np.diff(log_table, axis=1), np.zeros((len(log_table), 1))], axis=1)

    def _grid_position(self, log_energy, material):
        """(flat row index material * n_e + i of the grid energy below, fraction t in [0, 1) towards the next) of
        each electron on the uniform ln(E) grid."""
        f = ((log_energy - self.log_e0) / self.dlog_e).clamp_(0, self.n_e - 1 - 1e-9)
        i = f.floor()
        return material * self.n_e + i.long(), f.sub_(i)

    def _interpolate(self, flat_table, flat_slope, log_energy, material):
        import torch

        k, t = self._grid_position(log_energy, material)
        return torch.exp(flat_table.index_select(0, k).addcmul_(flat_slope.index_select(0, k), t))

    def csda_range_at_log_energy(self, log_energy, material):
        """CSDA range (g/cm2) at ln(E / MeV) in each electron's material."""
        return self._interpolate(self._flat_log_r, self._flat_slope_r, log_energy, material)

    def csda_range(self, energy_mev, material):
        """CSDA range R(E) (g/cm2) in each electron's material."""
        import torch

        return self.csda_range_at_log_energy(torch.log(energy_mev), material)

    def csda_range_per_material(self, energy_mev: float):
        """R(E) (g/cm2) of one energy in every material, ``[M]`` (e.g. the range at the cutoff energy)."""
        import torch

        material = torch.arange(self.n_materials, device=self.log_e.device)
        return self.csda_range_at_log_energy(torch.full((self.n_materials,), math.log(energy_mev),
                                                        device=self.log_e.device, dtype=self.log_e.dtype), material)

    def lambda1(self, energy_mev, material):
        """First transport mean free path lambda_1(E) (g/cm2) in each electron's material."""
        import torch

        return self._interpolate(self._flat_log_l, self._flat_slope_l, torch.log(energy_mev), material)

    def _range_index(self, log_range, material):
        """Number of entries of each electron's material row of ln R below ln R (what a binary search in the row
        returns), by table lookup: the bucket of ln R (possibly one off by rounding) gives the count below the edge
        of the bucket before it, and the one entry that can lie between that edge and ln R is compared directly."""
        bucket = ((log_range - self._bucket_origin) / self._bucket_width).floor_().clamp_(1, self._n_buckets - 1)
        below = self._flat_below_edge.index_select(0, material * self._n_buckets + bucket.long() - 1)
        entry = self._flat_log_r_padded.index_select(0, material * (self.n_e + 1) + below)
        return below + (entry < log_range).long()

    def energy_from_range(self, range_g_cm2, material):
        """E(R) (MeV), the inverse of the CSDA range table (monotone), per material: the grid points that bracket
        ln R (:meth:`_range_index`), then ln E interpolated linearly in ln R."""
        import torch

        lr = torch.log(range_g_cm2.clamp(min=1e-30))
        j = self._range_index(lr, material).clamp_(1, self.n_e - 1).sub_(1)  # grid points j and j + 1 bracket ln R
        k = material * self.n_e + j
        t = (lr - self._flat_log_r.index_select(0, k)).div_(self._flat_slope_r.index_select(0, k))
        return torch.exp(self.log_e.index_select(0, j).addcmul_(self._log_e_step.index_select(0, j), t))


def _distance_to_voxel_faces_mm(positions_mm, voxel_coordinates, spacing_mm):
    """Distance (mm) from each position ``[3, n]`` to the nearest face of its voxel; ``voxel_coordinates`` =
    floor(position / spacing), ``spacing_mm`` ``[3, 1]``."""
    import torch

    local = positions_mm - voxel_coordinates * spacing_mm
    return torch.minimum(local, spacing_mm - local).amin(0)


def range_rejected(positions_mm, csda_g_cm2, density_g_cm3, spacing_mm, voxel_coordinates=None):
    """Step 6, range rejection: True where the remaining CSDA range (``10 R / rho`` mm at the voxel's density; a path
    length, so an upper bound of how far the electron can get) is shorter than the distance to the nearest face of
    the electron's voxel. Positions ``[3, n]`` mm, ``spacing_mm`` a tensor (sx, sy, sz). Such an electron deposits all
    its energy there. ``voxel_coordinates``: floor(position / spacing) when already computed."""
    import torch

    spacing = spacing_mm.reshape(3, 1)
    ijk = torch.floor(positions_mm / spacing) if voxel_coordinates is None else voxel_coordinates
    return 10.0 * csda_g_cm2 / density_g_cm3 < _distance_to_voxel_faces_mm(positions_mm, ijk, spacing)


def condensed_history_step(csda_g_cm2, density_g_cm3, step_fraction: float, max_step_mm: float):
    """Step 1: (mass thickness s in g/cm2, geometric length l in mm) of the next step: s = f R(E), at most
    ``max_step_mm`` geometrically; l = s / rho (density scaling; 0.1 and 10 convert mm and cm)."""
    import torch

    s = torch.minimum(step_fraction * csda_g_cm2, (0.1 * max_step_mm) * density_g_cm3)
    return s, 10.0 * s / density_g_cm3


def continuous_energy_loss(tables: _DeviceTables, csda_g_cm2, s_g_cm2, material, cutoff_mev: float,
                           cutoff_range_g_cm2=None):
    """Steps 2 and 5: (energy E' in MeV after the step, mask of the electrons that stop). Continuous slowing down,
    E' = E(R(E) - s) from the CSDA range table; an electron whose remaining range R(E) - s is at most the range at
    ``cutoff_mev`` stops (E' = 0) and its whole energy counts as lost in this step. ``cutoff_range_g_cm2``: the range
    at the cutoff per material (``[M]``, :meth:`_DeviceTables.csda_range_per_material`) when already computed."""
    import torch

    if cutoff_range_g_cm2 is None:
        cutoff_range_g_cm2 = tables.csda_range_per_material(cutoff_mev)
    remaining_g_cm2 = csda_g_cm2 - s_g_cm2
    stops = remaining_g_cm2 <= cutoff_range_g_cm2.index_select(0, material)
    energy = tables.energy_from_range(torch.where(stops, csda_g_cm2, remaining_g_cm2), material)
    return energy.masked_fill_(stops, 0.0), stops


def random_hinge(positions_mm, directions, length_mm, generator):
    """Steps 3-4, first half: (hinge positions ``[3, n]`` mm, fractions u): the electron flies ``u l`` along its
    direction, u uniform on [0, 1) (one random number per electron); the energy lost in the step is deposited at the
    hinge."""
    u = uniform(length_mm.shape, generator, length_mm)
    return advance(positions_mm, directions, u * length_mm), u


def multiple_scattering_deflection(directions, s_g_cm2, lambda1_g_cm2, generator):
    """Step 4: directions ``[3, n]`` after the step's angular deflection at the hinge. (1 - cos theta) exponential
    with the Goudsmit-Saunderson first-moment mean 1 - exp(-s / lambda_1), truncated at 2; uniform azimuth (one
    random number per electron, then :func:`.photon_transport.rotate_direction`'s)."""
    import torch

    mean_deflection = torch.expm1(-s_g_cm2 / lambda1_g_cm2).neg_()  # 1 - exp(-s / lambda_1)
    xi = 1.0 - uniform(s_g_cm2.shape, generator, s_g_cm2)  # in (0, 1]
    one_minus_cos = torch.log(xi).mul_(mean_deflection).neg_()
    return rotate_direction(directions, 1.0 - one_minus_cos.clamp_(max=2.0), generator)


def transport_electrons(positions_mm, directions, energies_mev, weights, materials: np.ndarray,
                        density_g_cm3: np.ndarray, spacing_mm: Sequence[float], tables: ElectronTables,
                        device: str = "cpu", seed: int = 0, step_fraction: float = 0.1, max_step_mm: float = 1.0,
                        cutoff_mev: float = 0.005, max_steps: int = 10_000, range_rejection: bool = True,
                        deposit=None, grid: Optional[VoxelGrid] = None, dtype=None) -> ElectronResult:
    """Transport weighted electrons (see the module docstring); energies deposited are weight x MeV.

    ``positions_mm`` and ``directions`` ``[n, 3]``, ``energies_mev`` and ``weights`` ``[n]`` (numpy arrays or
    tensors). ``deposit``: an optional flat float64 torch tensor (the grid's size) to accumulate into; then the returned
    ``deposit_mev`` is None (no copy of a large grid). ``grid``: the :class:`.voxel_grid.VoxelGrid` of ``materials``
    and ``density_g_cm3`` when the caller already holds one (a patient run shares it between batches). ``dtype``: the
    floating type of the transport (default: ``grid``'s, else float64); energies are tallied in float64.

    The electrons still tracked are kept as one compact batch (positions and directions component-major ``[3, n]``,
    energies and weights ``[n]``), in their original order; each step works on the whole batch and then drops those
    that stopped, were range-rejected or left the grid.
    """
    import torch

    if grid is None:
        grid = VoxelGrid(materials, density_g_cm3, spacing_mm, device, dtype or torch.float64)
    dtype, device = grid.dtype, grid.device
    f64 = torch.float64
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    tabs = _DeviceTables(tables, device, dtype)
    cutoff_range_g_cm2 = tabs.csda_range_per_material(cutoff_mev)

    pos = torch.as_tensor(positions_mm, device=device, dtype=dtype).reshape(-1, 3).T  # [3, n] mm
    direction = torch.as_tensor(directions, device=device, dtype=dtype).reshape(-1, 3).T
    energy = torch.as_tensor(energies_mev, device=device, dtype=dtype).reshape(-1)
    weight = torch.as_tensor(weights, device=device, dtype=dtype).reshape(-1)
    emitted = float((energy.to(f64) * weight.to(f64)).sum())
    external = deposit is not None
    if not external:
        deposit = torch.zeros(grid.size, device=device, dtype=f64)
    escaped = torch.zeros((), device=device, dtype=f64)
    low = energy < cutoff_mev  # too slow to move: deposited where born
    at_birth = indices(low)
    deposit.index_add_(0, grid.flat_index(pos[:, at_birth]), energy[at_birth].to(f64) * weight[at_birth].to(f64))
    pos, direction, energy, weight = select(indices(~low), pos, direction, energy, weight)  # contiguous copies
    steps = 0
    for _ in range(max_steps):
        if len(energy) == 0:
            break
        steps += 1
        ijk = grid.voxel_coordinates(pos)
        flat = grid.flat_index(pos, ijk)
        m = grid.material_at(flat)
        density = grid.density_at(flat)
        r = tabs.csda_range(energy, m)
        if range_rejection:
            trapped = range_rejected(pos, r, density, grid.spacing, ijk)
            gone = indices(trapped)
            if len(gone):
                deposit.index_add_(0, flat.index_select(0, gone),
                                   energy.index_select(0, gone).to(f64) * weight.index_select(0, gone).to(f64))
                pos, direction, energy, weight, m, density, r = select(
                    indices(~trapped), pos, direction, energy, weight, m, density, r)
                if len(energy) == 0:
                    continue
        s, length_mm = condensed_history_step(r, density, step_fraction, max_step_mm)
        e_new, stops = continuous_energy_loss(tabs, r, s, m, cutoff_mev, cutoff_range_g_cm2)
        hinge, u = random_hinge(pos, direction, length_mm, gen)
        inside = grid.inside(hinge)  # deposition at the hinge; electrons whose hinge is outside escape
        lost = (energy.to(f64) - e_new.to(f64)) * weight.to(f64)  # (exact difference of the two energies)
        if bool(inside.all()):
            deposit.index_add_(0, grid.flat_index(hinge), lost)
        else:
            kept = indices(inside)
            deposit.index_add_(0, grid.flat_index(*select(kept, hinge)), lost.index_select(0, kept))
            escaped += (energy.to(f64) * weight.to(f64))[~inside].sum()
        mid_energy = (0.5 * (energy + e_new)).clamp_(min=cutoff_mev)
        d_new = multiple_scattering_deflection(direction, s, tabs.lambda1(mid_energy, m), gen)
        end = advance(hinge, d_new, (1.0 - u) * length_mm)
        still = inside & ~stops
        out = still & ~grid.inside(end)
        if bool(out.any()):
            escaped += (e_new.to(f64) * weight.to(f64))[out].sum()
        pos, direction, energy, weight = select(indices(still & ~out), end, d_new, e_new, weight)
    else:
        raise RuntimeError("electron transport did not finish within max_steps")
    out = None if external else grid.to_numpy(deposit)
    return ElectronResult(out, float(escaped), emitted, steps)
