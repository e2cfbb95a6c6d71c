"""Monte Carlo photon transport on a voxelised patient (torch: the same code on the CPU and on CUDA).

Method (one function per step; :func:`transport_photons` runs them in this order):

* Woodcock (delta) tracking: distances to the next tentative collision are drawn with a majorant attenuation
  coefficient mu_max(E) (the largest mu/rho of the materials x the largest density of the grid),
  :func:`sample_free_path_cm`, and flown, :func:`advance`, so no voxel boundary is ever computed; a tentative collision
  at a voxel is real with probability mu(voxel)/mu_max, :func:`is_real_collision`. :func:`woodcock_flight` flies one
  tentative collision per photon and round, or several when few photons are left.
* Interaction type by the partial coefficients of :mod:`.photon_xs` (photoelectric, incoherent, coherent),
  :func:`choose_interaction`.
* Photoelectric absorption: the photon's energy is deposited in the voxel.
* Incoherent (Compton) scattering: the scattered energy and angle from the Klein-Nishina cross section by Kahn's
  rejection method, :func:`sample_klein_nishina`, with a uniform azimuth, :func:`rotate_direction`; the electron's
  kinetic energy E - E' is deposited in the voxel. (Binding lowers the total incoherent coefficient, which the tables
  include; the angular sampling is free-electron.)
* Coherent (Rayleigh) scattering: the polar angle from the Thomson distribution (1 + cos^2)/2 without atomic form
  factors (which would make it more forward), :func:`sample_thomson_cosine`, uniform azimuth; no energy is lost.
  Coherent scattering is ~2 % of the attenuation of soft tissue at 208 keV.
* Secondary electrons (photo- and Compton electrons) deposit their energy where they are set free (a kerma
  approximation: their ranges at Lu-177's photon energies are below 0.5 mm, small against CT voxels); the electron
  transport of betas is a separate step. Photons below ``cutoff_mev`` are absorbed where they are,
  :func:`absorb_below_cutoff`.

The random numbers are drawn in this order for every step (the results of a seed depend on it): free paths,
real-collision tests, interaction types, then the Klein-Nishina candidates of the Compton photons, the Thomson
candidates of the coherent ones, and one azimuth per scattered photon.

Geometry: :class:`~.voxel_grid.VoxelGrid` (positions in mm from the grid's corner). Photons leaving the grid
escape. Results are energies in MeV per voxel (float64) and the escaped energy; everything is reproducible for a
given torch generator seed on one device.

Implementation: the photons in flight are one batch, positions and directions component-major ``[3, n]`` (rows x, y,
z; the helpers below take that layout), energies ``[n]``; every step is a fixed sequence of whole-batch tensor
operations, and the batch is compacted (in order) when photons leave the grid or are absorbed. The rejection samplers
draw several candidates per photon at once, so that a step needs few rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .constants import ELECTRON_MASS_MEV
from .photon_xs import MAX_ENERGY_MEV, PhotonTable
from .voxel_grid import VoxelGrid, indices, select


@dataclass
class PhotonResult:
    """Energy deposited per voxel (MeV, ``[z, y, x]`` float64), energy that escaped the grid, and counts."""

    deposit_mev: np.ndarray
    escaped_mev: float
    emitted_mev: float
    interactions: int


def uniform(shape, generator, like):
    """Uniform random numbers on [0, 1) of ``like``'s floating type and device."""
    import torch

    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def first_accepted(candidates, accepted):
    """(value of the first accepted candidate, whether any was) per column of ``candidates`` ``[k, n]`` (k tries
    per photon, in the order drawn; ``accepted`` their acceptance, boolean ``[k, n]``)."""
    import torch

    value = candidates[-1]
    for k in range(len(candidates) - 2, -1, -1):  # the earliest accepted try wins
        value = torch.where(accepted[k], candidates[k], value)
    return value, accepted.any(0)


def sample_klein_nishina(energy_mev, generator, candidates: int = 4):
    """(scattered energy, cos theta) of Compton scattering from the Klein-Nishina cross section (Kahn 1954).

    Rejection in the variable xi = E/E' in [1, 1 + 2 alpha], alpha = E / m c^2, with two branches as in Lux and
    Koblinger (1991); every photon is resampled until accepted (the acceptance rate is 0.6-0.7 for 10-800 keV). Each
    round draws ``candidates`` tries per photon still pending (three uniform numbers each) and keeps the first
    accepted, which is exactly the rejection method's result.
    """
    import torch

    alpha = energy_mev / ELECTRON_MASS_MEV
    xi = torch.ones_like(energy_mev)
    pending = torch.arange(len(energy_mev), device=energy_mev.device)  # photons not yet accepted, in order
    a = alpha
    while len(pending):
        r1, r2, r3 = uniform((3, candidates, len(pending)), generator, a)
        two_a = 2.0 * a
        first = r1 <= (1.0 + two_a) / (9.0 + two_a)
        x = torch.where(first, 1.0 + two_a * r2, (1.0 + two_a) / (1.0 + two_a * r2))
        inverse_x = 1.0 / x
        mu = 1.0 - (x - 1.0) / a
        accept = torch.where(first, r3 <= 4.0 * (inverse_x - inverse_x * inverse_x),
                             r3 <= 0.5 * (mu * mu + inverse_x))
        value, done = first_accepted(x, accept)
        finished = indices(done)
        xi.index_copy_(0, pending.index_select(0, finished), value.index_select(0, finished))
        again = indices(~done)
        pending, a = pending.index_select(0, again), a.index_select(0, again)
    cos_theta = 1.0 - (xi - 1.0) / alpha
    return energy_mev / xi, cos_theta.clamp_(-1.0, 1.0)


def sample_thomson_cosine(n: int, generator, device, dtype, candidates: int = 3):
    """cos theta from the Thomson distribution (1 + cos^2 theta) / 2 on [-1, 1] (rejection, acceptance 2/3;
    ``candidates`` tries per pending photon and round, the first accepted kept)."""
    import torch

    out = torch.empty(n, device=device, dtype=dtype)
    pending = torch.arange(n, device=device)  # not yet accepted, in order
    while len(pending):
        mu, r = uniform((2, candidates, len(pending)), generator, out)
        mu = 2.0 * mu - 1.0
        value, done = first_accepted(mu, r <= 0.5 * (1.0 + mu * mu))
        finished = indices(done)
        out.index_copy_(0, pending.index_select(0, finished), value.index_select(0, finished))
        pending = pending.index_select(0, indices(~done))
    return out


def rotate_direction(direction, cos_theta, generator):
    """New unit directions ``[3, n]`` after scattering by polar cosine ``cos_theta`` ``[n]`` about the old ones
    ``direction`` ``[3, n]`` (direction cosines u, v, w), with a uniform azimuth phi (one random number each):

    u' = u cos + sin (u w cos(phi) - v sin(phi)) / s,  v' = v cos + sin (v w cos(phi) + u sin(phi)) / s,
    w' = w cos - s sin cos(phi),  s = sqrt(1 - w^2);  near w = +-1 the frame is the fixed x, y axes.
    The result is renormalised against rounding drift.
    """
    import torch

    phi = (2 * math.pi) * uniform(cos_theta.shape, generator, cos_theta)
    sin_theta = (1.0 - cos_theta * cos_theta).clamp_(min=0.0).sqrt_()
    u, v, w = direction
    s = (1.0 - w * w).clamp_(min=1e-30).sqrt_()
    cp, sp = torch.cos(phi), torch.sin(phi)
    sin_over_s = sin_theta / s
    new = torch.stack([u * cos_theta + sin_over_s * (u * w * cp - v * sp),
                       v * cos_theta + sin_over_s * (v * w * cp + u * sp),
                       w * cos_theta - s * sin_theta * cp])
    near_pole = indices(w.abs() > 0.99999)  # along +-z the formula above is singular
    if len(near_pole):
        st, c, sn = sin_theta[near_pole], cp[near_pole], sp[near_pole]
        new[:, near_pole] = torch.stack([st * c, st * sn, torch.sign(w[near_pole]) * cos_theta[near_pole]])
    return new.div_(torch.sqrt((new * new).sum(0)))


class _Tables:
    """The photon table on the device, with log-log interpolation and the Woodcock majorant.

    Stored flat and component-major (interaction k, material m, energy index i at ``[k, m * n + i]``) with the slopes
    to the next grid energy precomputed, so a lookup for a batch of photons is one gather."""

    def __init__(self, table: PhotonTable, max_density: float, device, dtype):
        import torch

        self.log_e0 = math.log(float(table.energies_mev[0]))
        self.dlog = math.log(float(table.energies_mev[1])) - self.log_e0
        self.n = len(table.energies_mev)
        log_mu = np.log(np.maximum(table.mu_rho, 1e-30))  # [M, E, 3]
        slope = np.zeros_like(log_mu)
        slope[:, :-1] = log_mu[:, 1:] - log_mu[:, :-1]
        self._log_mu = torch.as_tensor(log_mu.reshape(-1, 3).T.copy(), device=device, dtype=dtype)  # [3, M E]
        self._slope_mu = torch.as_tensor(slope.reshape(-1, 3).T.copy(), device=device, dtype=dtype)
        log_major = np.log(table.mu_rho.sum(-1).max(0) * max_density)  # [E], ln(1/cm)
        self._log_major = torch.as_tensor(log_major, device=device, dtype=dtype)
        self._slope_major = torch.as_tensor(np.append(np.diff(log_major), 0.0), device=device, dtype=dtype)

    def position(self, energy):
        """(index i of the grid energy below, fraction t in [0, 1) towards the next) on the uniform ln(E) grid."""
        import torch

        f = ((torch.log(energy) - self.log_e0) / self.dlog).clamp_(0, self.n - 1 - 1e-9)
        i = f.floor()
        return i.long(), f.sub_(i)

    def partial(self, material, energy, position=None):
        """``[3, n]`` mass attenuation coefficients (cm2/g; photoelectric, incoherent, coherent) at each photon's
        material and energy (``position``: the energies' :meth:`position` when already computed)."""
        import torch

        i, t = self.position(energy) if position is None else position
        log_mu, slope = select(material * self.n + i, self._log_mu, self._slope_mu)
        return torch.exp(log_mu.addcmul_(slope, t))

    def majorant(self, energy, position=None):
        """mu_max (1/cm) at each photon's energy."""
        import torch

        i, t = self.position(energy) if position is None else position
        return torch.exp(self._log_major.index_select(0, i).addcmul_(self._slope_major.index_select(0, i), t))


def sample_free_path_cm(majorant_per_cm, generator):
    """Woodcock step length (cm) to the next tentative collision: ``-ln(xi) / mu_max``, exponential with the majorant
    coefficient mu_max (1/cm) of each photon's energy (Woodcock et al. 1965); one uniform xi in (0, 1] per photon."""
    import torch

    xi = 1.0 - uniform(majorant_per_cm.shape, generator, majorant_per_cm)
    return torch.log(xi).div_(majorant_per_cm).neg_()


def advance(positions_mm, directions, distance_mm):
    """Positions (mm, ``[3, n]``) after a straight flight of ``distance_mm`` ``[n]`` along the unit ``directions``
    ``[3, n]``."""
    return positions_mm + directions * distance_mm


def is_real_collision(mu_per_cm, majorant_per_cm, generator):
    """Woodcock's rejection: a tentative collision is real with probability mu / mu_max (both 1/cm, mu of the voxel
    where it happens), i.e. where ``xi mu_max < mu``; one uniform xi per photon. Virtual collisions change nothing."""
    return uniform(mu_per_cm.shape, generator, mu_per_cm) * majorant_per_cm < mu_per_cm


def choose_interaction(partial_cm2_g, generator):
    """(photoelectric, incoherent, coherent) boolean masks of real collisions, each interaction chosen with
    probability its partial mass attenuation coefficient / their sum (``partial_cm2_g`` ``[3, n]``, rows in that
    order, from :mod:`.photon_xs`); one uniform number per photon."""
    photo_mu, incoherent_mu, coherent_mu = partial_cm2_g
    u = uniform(photo_mu.shape, generator, photo_mu) * (photo_mu + incoherent_mu + coherent_mu)
    photo = u < photo_mu
    compton = ~photo & (u < photo_mu + incoherent_mu)
    return photo, compton, ~photo & ~compton


def absorb_below_cutoff(energy_mev, cutoff_mev: float):
    """(energies with those below ``cutoff_mev`` set to 0, mask of those absorbed): a photon below the cutoff
    deposits its energy where it is and stops."""
    import torch

    absorbed = energy_mev < cutoff_mev
    return torch.where(absorbed, torch.zeros_like(energy_mev), energy_mev), absorbed


#: photons per batch below which a flight covers several tentative collisions (:func:`woodcock_flight`): the last
#: few photons of a batch, often at low energy in lung where most tentative collisions are virtual, then need few
#: rounds of tensor operations
SMALL_BATCH = 4096


def woodcock_flight(grid: VoxelGrid, tables: _Tables, positions_mm, directions, energy_mev, tries: int, generator):
    """Woodcock tracking of each photon through up to ``tries`` tentative collisions, to the first real one or out of
    the grid: ``tries`` free paths (:func:`sample_free_path_cm`) flown one after the other and ``tries`` real-collision
    tests (:func:`is_real_collision`) per photon, drawn together (free paths first). Returns (end positions ``[3, n]``
    mm, real ``[n]``: a real collision at the end, left ``[n]``: the photon left the grid there, flat index ``[n]``
    of the end voxel and partial coefficients ``[3, n]`` (cm2/g) there, meaningful where real). A photon with only
    virtual collisions ends at its last one; with ``tries`` = 1 this is one plain Woodcock step."""
    import torch

    n = len(energy_mev)
    i, t = tables.position(energy_mev)
    majorant = tables.majorant(energy_mev, (i, t))
    if tries > 1:  # the same photon in each try: [tries * n], try-major
        i, t, energy_mev, majorant = i.repeat(tries), t.repeat(tries), energy_mev.repeat(tries), majorant.repeat(tries)
    flight_mm = (10.0 * sample_free_path_cm(majorant, generator)).reshape(tries, n).cumsum(0)  # 10 mm per cm
    points = (positions_mm.unsqueeze(1) + directions.unsqueeze(1) * flight_mm).reshape(3, tries * n)
    inside = grid.inside(points)
    flat = grid.flat_index(points)
    partial = tables.partial(grid.material_at(flat), energy_mev, (i, t))
    real = is_real_collision(partial.sum(0) * grid.density_at(flat), majorant, generator) & inside
    if tries == 1:
        return points, real, ~inside, flat, partial
    ends = (real | ~inside).reshape(tries, n)
    first = (ends.cumsum(0) == 0).sum(0).clamp_(max=tries - 1)  # the first try that ends the flight, else the last
    column = first * n + torch.arange(n, device=first.device)
    points, real, inside, flat, partial = select(column, points, real, inside, flat, partial)
    return points, real, ~inside, flat, partial


def transport_photons(positions_mm, directions, energies_mev, materials: np.ndarray, density_g_cm3: np.ndarray,
                      spacing_mm: Sequence[float], table: PhotonTable, device: str = "cpu", seed: int = 0,
                      cutoff_mev: float = 0.001, max_steps: int = 100_000,
                      first_collision_mm: Optional[list] = None, deposit=None, weight: float = 1.0,
                      grid: Optional[VoxelGrid] = None, dtype=None) -> PhotonResult:
    """Track photons through the grid until absorbed or escaped; see the module docstring.

    ``positions_mm`` ``[n, 3]`` (x, y, z in mm from the grid corner), ``directions`` ``[n, 3]`` unit vectors,
    ``energies_mev`` ``[n]`` (numpy arrays or tensors). ``first_collision_mm``, when a list, receives each photon's
    first real-collision position (x, y, z; tests of the free-path distribution). ``deposit``: an optional flat
    float64 torch tensor to accumulate ``weight`` x energy into (then ``deposit_mev`` is None). ``grid``: the
    :class:`.voxel_grid.VoxelGrid` of ``materials`` and ``density_g_cm3`` when the caller already holds one.
    ``dtype``: the floating type of the transport (default: ``grid``'s, else float64); energies are tallied in float64.
    """
    import torch

    if grid is None:
        grid = VoxelGrid(materials, density_g_cm3, spacing_mm, device, dtype or torch.float64)
    dtype = grid.dtype
    device = grid.device
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    tabs = _Tables(table, grid.max_density, device, dtype)

    pos = torch.as_tensor(positions_mm, device=device, dtype=dtype).reshape(-1, 3).T.contiguous()  # [3, n] mm
    direction = torch.as_tensor(directions, device=device, dtype=dtype).reshape(-1, 3).T.clone(
        memory_format=torch.contiguous_format)  # updated in place
    energy = torch.as_tensor(energies_mev, device=device, dtype=dtype).reshape(-1).clone()
    if len(energy) and float(energy.max()) > MAX_ENERGY_MEV:
        from ImagingBasics.errors import UserError

        raise UserError(f"photon energies above {1000 * MAX_ENERGY_MEV:g} keV are outside the cross-section tables")
    emitted = float(energy.sum(dtype=torch.float64))
    external = deposit is not None
    target = deposit if external else torch.zeros(grid.size, device=device, dtype=torch.float64)

    def add(index, energy_mev):  # energy stays in the voxel (kerma approximation for the secondary electrons)
        values = energy_mev.to(torch.float64)
        target.index_add_(0, index, values * weight if external else values)
    escaped = torch.zeros((), device=device, dtype=torch.float64)
    recording = first_collision_mm is not None
    first_done = torch.zeros(len(energy) if recording else 0, device=device, dtype=torch.bool)  # had a real collision
    interactions = 0

    for _ in range(max_steps):
        n = len(energy)
        if n == 0:
            break
        tries = 1 if n >= SMALL_BATCH else min(16, SMALL_BATCH // n)
        pos, real, left, flat, partial = woodcock_flight(grid, tabs, pos, direction, energy, tries, gen)
        if bool(left.any()):
            escaped += energy[left].sum(dtype=torch.float64)  # photons leaving the grid escape
        if recording:
            new_first = real & ~first_done
            first_collision_mm.extend(pos[:, new_first].T.cpu().numpy().tolist())
            first_done |= new_first
        stopped = left.clone()
        idx = indices(real)
        if len(idx):
            interactions += len(idx)
            d_r, e_r, flat_r, partial_r = select(idx, direction, energy, flat, partial)
            photo, compton, coherent = choose_interaction(partial_r, gen)
            absorbed_here = photo.clone()
            add(flat_r[photo], e_r[photo])  # photoelectric absorption: all of the photon's energy
            cos_theta = torch.empty_like(e_r)
            c = indices(compton)
            if len(c):
                e_c = e_r.index_select(0, c)
                scattered_mev, cos_theta_c = sample_klein_nishina(e_c, gen)
                flat_c = flat_r.index_select(0, c)
                add(flat_c, e_c.to(torch.float64) - scattered_mev.to(torch.float64))  # the Compton electron
                e_kept, absorbed = absorb_below_cutoff(scattered_mev, cutoff_mev)
                add(flat_c[absorbed], scattered_mev[absorbed])
                e_r.index_copy_(0, c, e_kept)
                absorbed_here.index_copy_(0, c, absorbed)
                cos_theta.index_copy_(0, c, cos_theta_c)
            h = indices(coherent)
            if len(h):
                cos_theta.index_copy_(0, h, sample_thomson_cosine(len(h), gen, device, dtype))
            scattered = indices(~photo)
            if len(scattered):
                d_s, cos_s = select(scattered, d_r, cos_theta)
                d_r.index_copy_(1, scattered, rotate_direction(d_s, cos_s, gen))
            direction.index_copy_(1, idx, d_r)
            energy.index_copy_(0, idx, e_r)
            stopped.index_copy_(0, idx, absorbed_here)
        if bool(stopped.any()):  # photons absorbed or out of the grid leave the batch
            kept = indices(~stopped)
            pos, direction, energy = select(kept, pos, direction, energy)
            if recording:
                first_done = first_done[kept]
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
