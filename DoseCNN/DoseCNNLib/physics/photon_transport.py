"""Monte Carlo photon transport on a voxelised patient (torch: the same code on the CPU and on CUDA).

Method (one function per step; :func:`transport_photons` runs them in this order):

* Woodcock (delta) tracking: distances to the next tentative collision are drawn with a majorant attenuation
  coefficient mu_max(E) (the largest mu/rho of the materials x the largest density of the grid),
  :func:`sample_free_path_cm`, and flown, :func:`advance`, so no voxel boundary is ever computed; a tentative collision
  at a voxel is real with probability mu(voxel)/mu_max, :func:`is_real_collision`.
* Interaction type by the partial coefficients of :mod:`.photon_xs` (photoelectric, incoherent, coherent),
  :func:`choose_interaction`.
* Photoelectric absorption: the photon's energy is deposited in the voxel.
* Incoherent (Compton) scattering, :func:`compton_scatter`: the scattered energy and angle from the Klein-Nishina
  cross section by Kahn's rejection method, :func:`sample_klein_nishina`; the electron's kinetic energy E - E' is
  deposited in the voxel. (Binding lowers the total incoherent coefficient, which the tables include; the angular
  sampling is free-electron.)
* Coherent (Rayleigh) scattering, :func:`coherent_scatter`: the direction from the Thomson distribution
  (1 + cos^2)/2 without atomic form factors (which would make it more forward); no energy is lost. Coherent scattering
  is ~2 % of the attenuation of soft tissue at 208 keV.
* Secondary electrons (photo- and Compton electrons) deposit their energy where they are set free (a kerma
  approximation: their ranges at Lu-177's photon energies are below 0.5 mm, small against CT voxels); the electron
  transport of betas is a separate step. Photons below ``cutoff_mev`` are absorbed where they are,
  :func:`absorb_below_cutoff`.

The random numbers are drawn in this order for every step (the results of a seed depend on it): free paths,
real-collision tests, interaction types, then Klein-Nishina and azimuths of the Compton photons, then Thomson and
azimuths of the coherent ones.

Geometry: :class:`~.voxel_grid.VoxelGrid` (positions in mm from the grid's corner). Photons leaving the grid
escape. Results are energies in MeV per voxel (float64) and the escaped energy; everything is reproducible for a
given torch generator seed on one device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .constants import ELECTRON_MASS_MEV
from .photon_xs import MAX_ENERGY_MEV, PhotonTable
from .voxel_grid import VoxelGrid


@dataclass
class PhotonResult:
    """Energy deposited per voxel (MeV, ``[z, y, x]`` float64), energy that escaped the grid, and counts."""

    deposit_mev: np.ndarray
    escaped_mev: float
    emitted_mev: float
    interactions: int


def sample_klein_nishina(energy_mev, generator):
    """(scattered energy, cos theta) of Compton scattering from the Klein-Nishina cross section (Kahn 1954).

    Rejection in the variable xi = E/E' in [1, 1 + 2 alpha], alpha = E / m c^2, with two branches as in Lux and
    Koblinger (1991); every photon is resampled until accepted (the acceptance rate is 0.6-0.7 for 10-800 keV).
    """
    import torch

    alpha = energy_mev / ELECTRON_MASS_MEV
    xi = torch.ones_like(energy_mev)
    pending = torch.ones_like(energy_mev, dtype=torch.bool)
    while bool(pending.any()):
        a = alpha[pending]
        r1, r2, r3 = (torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype) for _ in range(3))
        first = r1 <= (1 + 2 * a) / (9 + 2 * a)
        x = torch.where(first, 1 + 2 * a * r2, (1 + 2 * a) / (1 + 2 * a * r2))
        mu = 1 - (x - 1) / a
        accept = torch.where(first, r3 <= 4 * (1 / x - 1 / x ** 2), r3 <= 0.5 * (mu ** 2 + 1 / x))
        idx = pending.nonzero(as_tuple=True)[0]
        xi[idx[accept]] = x[accept]
        pending[idx[accept]] = False
    cos_theta = 1 - (xi - 1) / alpha
    return energy_mev / xi, cos_theta.clamp(-1.0, 1.0)


def sample_thomson_cosine(n: int, generator, device, dtype):
    """cos theta from the Thomson distribution (1 + cos^2 theta) / 2 on [-1, 1] (rejection, acceptance 2/3)."""
    import torch

    out = torch.empty(n, device=device, dtype=dtype)
    pending = torch.ones(n, device=device, dtype=torch.bool)
    while bool(pending.any()):
        k = int(pending.sum())
        mu = 2 * torch.rand(k, generator=generator, device=device, dtype=dtype) - 1
        ok = torch.rand(k, generator=generator, device=device, dtype=dtype) <= 0.5 * (1 + mu ** 2)
        idx = pending.nonzero(as_tuple=True)[0]
        out[idx[ok]] = mu[ok]
        pending[idx[ok]] = False
    return out


def rotate_direction(direction, cos_theta, generator):
    """New unit directions after scattering by polar cosine ``cos_theta`` about the old ones (uniform azimuth)."""
    import torch

    phi = 2 * math.pi * torch.rand(cos_theta.shape, generator=generator, device=cos_theta.device, dtype=cos_theta.dtype)
    sin_theta = torch.sqrt(torch.clamp(1 - cos_theta ** 2, min=0.0))
    u, v, w = direction.unbind(-1)
    near_pole = w.abs() > 0.99999
    s = torch.sqrt(torch.clamp(1 - w ** 2, min=1e-30))
    cp, sp = torch.cos(phi), torch.sin(phi)
    nu = u * cos_theta + sin_theta * (u * w * cp - v * sp) / s
    nv = v * cos_theta + sin_theta * (v * w * cp + u * sp) / s
    nw = w * cos_theta - s * sin_theta * cp
    pole = torch.stack([sin_theta * cp, sin_theta * sp, torch.sign(w) * cos_theta], -1)
    new = torch.where(near_pole[:, None], pole, torch.stack([nu, nv, nw], -1))
    return new / new.norm(dim=-1, keepdim=True)


class _Tables:
    """The photon table on the device, with log-log interpolation and the Woodcock majorant."""

    def __init__(self, table: PhotonTable, max_density: float, device, dtype):
        import torch

        self.log_e0 = math.log(float(table.energies_mev[0]))
        self.dlog = math.log(float(table.energies_mev[1])) - self.log_e0
        self.n = len(table.energies_mev)
        self.log_mu = torch.as_tensor(np.log(np.maximum(table.mu_rho, 1e-30)), device=device, dtype=dtype)  # [M, E, 3]
        majorant = table.mu_rho.sum(-1).max(0) * max_density  # [E], 1/cm
        self.log_major = torch.as_tensor(np.log(majorant), device=device, dtype=dtype)

    def _position(self, energy):
        import torch

        f = (torch.log(energy) - self.log_e0) / self.dlog
        f = f.clamp(0, self.n - 1 - 1e-9)
        i = f.floor().long()
        return i, f - i

    def partial(self, material, energy):
        """[n, 3] mass attenuation coefficients (cm2/g) at each photon's material and energy."""
        import torch

        i, t = self._position(energy)
        lo, hi = self.log_mu[material, i], self.log_mu[material, i + 1]
        return torch.exp(lo + (hi - lo) * t[:, None])

    def majorant(self, energy):
        """mu_max (1/cm) at each photon's energy."""
        import torch

        i, t = self._position(energy)
        return torch.exp(self.log_major[i] + (self.log_major[i + 1] - self.log_major[i]) * t)


def sample_free_path_cm(majorant_per_cm, generator):
    """Woodcock step length (cm) to the next tentative collision: ``-ln(xi) / mu_max``, exponential with the majorant
    coefficient mu_max (1/cm) of each photon's energy (Woodcock et al. 1965); one uniform xi per photon."""
    import torch

    xi = torch.rand(majorant_per_cm.shape, generator=generator, device=majorant_per_cm.device, dtype=majorant_per_cm.dtype)
    return -torch.log(xi) / majorant_per_cm


def advance(positions_mm, directions, distance_mm):
    """Positions (mm) after a straight flight of ``distance_mm`` ``[n]`` along the unit ``directions`` ``[n, 3]``."""
    return positions_mm + directions * distance_mm[:, None]


def is_real_collision(mu_per_cm, majorant_per_cm, generator):
    """Woodcock's rejection: a tentative collision is real with probability mu / mu_max (both 1/cm, mu of the voxel
    where it happens), i.e. where ``xi mu_max < mu``; one uniform xi per photon. Virtual collisions change nothing."""
    import torch

    xi = torch.rand(mu_per_cm.shape, generator=generator, device=mu_per_cm.device, dtype=mu_per_cm.dtype)
    return xi * majorant_per_cm < mu_per_cm


def choose_interaction(partial_cm2_g, generator):
    """(photoelectric, incoherent, coherent) boolean masks of real collisions, each interaction chosen with
    probability its partial mass attenuation coefficient / their sum (``partial_cm2_g`` ``[n, 3]`` in that order, from
    :mod:`.photon_xs`); one uniform number per photon."""
    import torch

    u = torch.rand(len(partial_cm2_g), generator=generator, device=partial_cm2_g.device,
                   dtype=partial_cm2_g.dtype) * partial_cm2_g.sum(-1)
    photo = u < partial_cm2_g[:, 0]
    compton = ~photo & (u < partial_cm2_g[:, 0] + partial_cm2_g[:, 1])
    return photo, compton, ~photo & ~compton


def compton_scatter(directions, energy_mev, generator):
    """Incoherent (Compton) scattering: (new directions, scattered photon energies E' in MeV, kinetic energies
    E - E' in MeV of the Compton electrons). E' and the angle from Klein-Nishina (:func:`sample_klein_nishina`),
    uniform azimuth (:func:`rotate_direction`)."""
    scattered_mev, cos_theta = sample_klein_nishina(energy_mev, generator)
    electron_mev = energy_mev - scattered_mev
    return rotate_direction(directions, cos_theta, generator), scattered_mev, electron_mev


def coherent_scatter(directions, generator):
    """Coherent (Rayleigh) scattering: new directions, polar angle from the Thomson distribution
    (:func:`sample_thomson_cosine`, no form factors), uniform azimuth; the energy is unchanged."""
    cos_theta = sample_thomson_cosine(len(directions), generator, directions.device, directions.dtype)
    return rotate_direction(directions, cos_theta, generator)


def absorb_below_cutoff(energy_mev, cutoff_mev: float):
    """(energies with those below ``cutoff_mev`` set to 0, mask of those absorbed): a photon below the cutoff
    deposits its energy where it is and stops."""
    import torch

    absorbed = energy_mev < cutoff_mev
    return torch.where(absorbed, torch.zeros_like(energy_mev), energy_mev), absorbed


def _record_first_collisions(first_collision_mm: list, first_done, alive, positions_mm, real) -> None:
    """Append the positions (mm) of the photons whose first real collision this is; mark them in ``first_done``."""
    new_first = real & ~first_done[alive]
    first_collision_mm.extend(positions_mm[new_first].cpu().numpy().tolist())
    first_done[alive[new_first]] = True


def _survivors(alive, real, stopped):
    """``alive`` (photon indices) without those of the real collisions (mask ``real``) that ``stopped``."""
    import torch

    gone = torch.zeros(len(alive), device=alive.device, dtype=torch.bool)
    gone[real.nonzero(as_tuple=True)[0][stopped]] = True
    return alive[~gone]


def transport_photons(positions_mm, directions, energies_mev, materials: np.ndarray, density_g_cm3: np.ndarray,
                      spacing_mm: Sequence[float], table: PhotonTable, device: str = "cpu", seed: int = 0,
                      cutoff_mev: float = 0.001, max_steps: int = 100_000,
                      first_collision_mm: Optional[list] = None, deposit=None, weight: float = 1.0) -> PhotonResult:
    """Track photons through the grid until absorbed or escaped; see the module docstring.

    ``positions_mm`` ``[n, 3]`` (x, y, z in mm from the grid corner), ``directions`` ``[n, 3]`` unit vectors,
    ``energies_mev`` ``[n]``. ``first_collision_mm``, when a list, receives each photon's first real-collision
    position (tests of the free-path distribution). ``deposit``: an optional flat float64 torch tensor to accumulate
    ``weight`` x energy into (then ``deposit_mev`` is None).
    """
    import torch

    dtype = torch.float64
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    grid = VoxelGrid(materials, density_g_cm3, spacing_mm, device, dtype)
    tabs = _Tables(table, float(grid.density.max()), device, dtype)

    pos = torch.as_tensor(positions_mm, device=device, dtype=dtype).clone()
    direction = torch.as_tensor(directions, device=device, dtype=dtype).clone()
    energy = torch.as_tensor(energies_mev, device=device, dtype=dtype).clone()
    if float(energy.max()) > MAX_ENERGY_MEV:
        from ImagingBasics.errors import UserError

        raise UserError(f"photon energies above {1000 * MAX_ENERGY_MEV:g} keV are outside the cross-section tables")
    emitted = float(energy.sum())
    external = deposit is not None
    target = deposit if external else torch.zeros(grid.size, device=device, dtype=dtype)

    def add(index, values):  # energy stays in the voxel (kerma approximation for the secondary electrons)
        target.index_add_(0, index, values * weight if external else values)
    escaped = torch.zeros((), device=device, dtype=dtype)
    first_done = torch.zeros(len(energy), device=device, dtype=torch.bool)
    alive = torch.arange(len(energy), device=device)
    interactions = 0

    for _ in range(max_steps):
        if alive.numel() == 0:
            break
        p, d, e = pos[alive], direction[alive], energy[alive]
        p = advance(p, d, 10.0 * sample_free_path_cm(tabs.majorant(e), gen))  # Woodcock step; 10 mm per cm
        inside = grid.inside(p)
        escaped = escaped + e[~inside].sum()  # photons leaving the grid escape
        alive, p, d, e = alive[inside], p[inside], d[inside], e[inside]
        flat = grid.flat_index(p)
        partial = tabs.partial(grid.material_at(flat), e)  # cm2/g
        real = is_real_collision(partial.sum(-1) * grid.density_at(flat), tabs.majorant(e), gen)
        pos[alive] = p
        if first_collision_mm is not None:
            _record_first_collisions(first_collision_mm, first_done, alive, p, real)
        if not bool(real.any()):
            continue
        idx, d_r, e_r, flat_r, part_r = alive[real], d[real], e[real], flat[real], partial[real]
        interactions += len(idx)
        photo, compton, coherent = choose_interaction(part_r, gen)
        add(flat_r[photo], e_r[photo])  # photoelectric absorption: all of the photon's energy
        stopped = photo.clone()
        if bool(compton.any()):
            d_c, e_c, electron_mev = compton_scatter(d_r[compton], e_r[compton], gen)
            add(flat_r[compton], electron_mev)
            d_r[compton] = d_c
            e_kept, absorbed = absorb_below_cutoff(e_c, cutoff_mev)
            add(flat_r[compton][absorbed], e_c[absorbed])
            e_r[compton], stopped[compton] = e_kept, absorbed
        if bool(coherent.any()):
            d_r[coherent] = coherent_scatter(d_r[coherent], gen)
        direction[idx], energy[idx] = d_r, e_r
        alive = _survivors(alive, real, stopped)
    else:
        raise RuntimeError("photon transport did not finish within max_steps")
    out = None if external else grid.to_numpy(target)
    return PhotonResult(out, float(escaped), emitted, interactions)


def isotropic_directions(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` unit vectors uniform on the sphere."""
    w = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2 * math.pi, n)
    s = np.sqrt(1 - w ** 2)
    return np.stack([s * np.cos(phi), s * np.sin(phi), w], -1)


def uniform_grid(shape: Tuple[int, int, int], material: int, density: float):
    """A homogeneous phantom: (materials, densities) arrays of ``shape`` [z, y, x]."""
    return np.full(shape, material, np.uint8), np.full(shape, density, np.float32)
