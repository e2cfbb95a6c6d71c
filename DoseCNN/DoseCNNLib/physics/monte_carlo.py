"""Monte Carlo absorbed dose rate of a patient: decays sampled from an activity map, transported on the CT grid.

Steps (each a function):

1. :func:`patient_media`: CT (HU) -> material index and density (:mod:`.materials`; Li 2020's calibration by default).
2. :func:`sample_decay_positions`: ``n`` decay positions (mm from the grid corner), voxels drawn in proportion to
   their activity, uniform inside the voxel.
3. :func:`transport_decays`, per batch: the decays' electrons and photons (:func:`.kernels.sample_emissions`)
   transported by :mod:`.electron_transport` and :mod:`.photon_transport`; energy per voxel.
4. :func:`dose_rate_from_energy`: dose rate (mGy/s) = energy per decay / voxel mass x total activity (Bq).
5. :func:`batch_mean_and_relative_error`: statistical uncertainty from the spread of the batch results, the relative
   standard error of the mean per voxel.

The activity map must be in Bq per voxel on the CT grid (a SPECT in counts needs its calibration factor first;
:func:`run_mc` resamples an activity map on another grid onto the CT grid, keeping its total).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.resample import resample_amount
from ImagingBasics.volume import Volume

from .constants import MEV_TO_J
from .decay import load_decay_data


@dataclass
class McResult:
    dose_rate_mgy_s: Volume  # on the CT grid
    relative_uncertainty: Volume  # standard error of the mean / mean (NaN where no dose)
    n_decays: int
    batches: int
    total_activity_bq: float
    nuclide: str


def patient_media(ct: Volume, density_calibration=None):
    """(material index uint8, density g/cm3 float32) arrays of a CT in HU."""
    from .materials import density_from_hu_li2020, material_index

    hu = ct.array.astype(np.float64)
    density = density_calibration(hu) if density_calibration is not None else density_from_hu_li2020(hu)
    return material_index(hu), density.astype(np.float32)


def sample_decay_positions(activity: np.ndarray, spacing_mm, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` positions (x, y, z mm from the grid corner) of decays drawn from an activity array ``[z, y, x]``."""
    a = np.asarray(activity).ravel()
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.sum() <= 0:
        raise UserError("the activity map must be finite, non-negative and not all zero")
    nz, ny, nx = np.asarray(activity).shape
    active = np.flatnonzero(a)  # draw among the active voxels only (a patient grid is mostly empty)
    weights = a[active].astype(np.float64)
    flat = active[rng.choice(active.size, size=n, p=weights / weights.sum())]
    k, rem = np.divmod(flat, ny * nx)
    j, i = np.divmod(rem, nx)
    ijk = np.stack([i, j, k], -1).astype(np.float64) + rng.uniform(0, 1, (n, 3))
    return ijk * np.asarray(spacing_mm, dtype=np.float64)


def dose_rate_from_energy(energy_mev: np.ndarray, n_decays: int, density_g_cm3: np.ndarray, spacing_mm,
                          total_activity_bq: float) -> np.ndarray:
    """Dose rate (mGy/s) from the energy (MeV) deposited by ``n_decays`` decays, at ``total_activity_bq``."""
    voxel_cm3 = float(np.prod(spacing_mm)) / 1000.0
    mass_kg = density_g_cm3.astype(np.float64) * voxel_cm3 / 1000.0
    return energy_mev / n_decays * MEV_TO_J / mass_kg * total_activity_bq * 1e3


def deposit_locally(deposit, positions_mm: np.ndarray, spacing_mm, shape, energy_mev: float) -> None:
    """Add ``energy_mev`` (MeV, each) to ``deposit`` (a flat ``[z, y, x]`` float64 tensor of a grid of ``shape``) in
    the voxels of ``positions_mm`` ``[n, 3]`` (x, y, z mm from the grid corner; the far faces clamped)."""
    import torch

    ijk = np.minimum(np.floor(positions_mm / np.asarray(spacing_mm)).astype(np.int64), np.array(shape[::-1]) - 1)
    flat = torch.as_tensor((ijk[:, 2] * shape[1] + ijk[:, 1]) * shape[2] + ijk[:, 0], device=deposit.device)
    deposit.index_add_(0, flat, torch.full((len(flat),), energy_mev, dtype=torch.float64, device=deposit.device))


def transport_decays(n_decays: int, decay, activity: np.ndarray, materials: np.ndarray, density_g_cm3: np.ndarray,
                     spacing_mm, tables, rng: np.random.Generator, device: str, seed: int, deposit) -> None:
    """Step 3: ``n_decays`` decays of ``decay`` sampled and transported; their energy (MeV) is added to ``deposit``.

    Emissions, positions (drawn from ``activity``, Bq per voxel on the CT grid) and isotropic directions, electrons'
    first, come from ``rng``; the electron and photon transports use torch generators seeded ``seed`` and ``seed + 1``.
    ``tables``: (:func:`.electron_transport.electron_tables`, :func:`.photon_xs.photon_table`). The decay data's
    photons below 1 keV are absorbed where the decays (their electrons) are. ``deposit``: flat float64 on ``device``.
    """
    from .electron_transport import transport_electrons
    from .kernels import sample_emissions
    from .photon_transport import isotropic_directions, transport_photons

    electron_tables, photon_table = tables
    emissions = sample_emissions(decay, n_decays, rng)
    n_e, n_p = len(emissions.electron_mev), len(emissions.photon_mev)
    pos = sample_decay_positions(activity, spacing_mm, n_e + n_p, rng)
    transport_electrons(pos[:n_e], isotropic_directions(n_e, rng), emissions.electron_mev, emissions.electron_weight,
                        materials, density_g_cm3, spacing_mm, electron_tables, device=device, seed=seed, deposit=deposit)
    if n_p:
        transport_photons(pos[n_e:], isotropic_directions(n_p, rng), emissions.photon_mev, materials, density_g_cm3,
                          spacing_mm, photon_table, device=device, seed=seed + 1, deposit=deposit,
                          weight=emissions.photon_weight)
    if emissions.local_mev and n_e:
        deposit_locally(deposit, pos[:n_e], spacing_mm, activity.shape, emissions.local_mev / n_e)


def batch_mean_and_relative_error(sums, squares, batches: int, shape):
    """Step 5: (mean of the batch results, relative standard error of that mean) per voxel as ``[z, y, x]`` numpy
    arrays, from the flat sums of the batch results and of their squares: sample variance (Bessel's correction),
    standard error sqrt(variance / batches); NaN where the mean is not positive."""
    mean = (sums / batches).reshape(shape).cpu().numpy()
    var = np.maximum((squares / batches).reshape(shape).cpu().numpy() - mean ** 2, 0.0) * batches / (batches - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(mean > 0, np.sqrt(var / batches) / mean, np.nan)
    return mean, rel


def run_mc(activity: Volume, ct: Volume, nuclide: str = "Lu-177", n_decays: int = 1_000_000, batches: int = 10,
           device: str = "cpu", seed: int = 0, density_calibration=None,
           progress: Optional[Callable[[int, int], None]] = None) -> McResult:
    """Dose-rate map and its relative uncertainty (see the module docstring)."""
    from .electron_transport import electron_tables
    from .photon_xs import photon_table

    if batches < 2:
        raise UserError("at least 2 batches are needed for an uncertainty estimate")
    if n_decays < batches:
        raise UserError(f"--decays must be at least the number of batches ({batches})")
    act = activity if activity.same_geometry(ct) else resample_amount(activity, ct, keep_total=True)
    materials, density = patient_media(ct, density_calibration)
    decay = load_decay_data(nuclide)
    spacing = tuple(float(s) for s in ct.spacing)
    import torch

    rng = np.random.default_rng(seed)
    per_batch = n_decays // batches
    size = int(np.prod(ct.shape))
    sums = torch.zeros(size, dtype=torch.float64, device=device)  # the batches' energies, summed on the device
    squares = torch.zeros(size, dtype=torch.float64, device=device)
    batch = torch.zeros(size, dtype=torch.float64, device=device)
    tables = (electron_tables(), photon_table())
    for b in range(batches):
        batch.zero_()
        transport_decays(per_batch, decay, act.array, materials, density, spacing, tables, rng, device,
                         seed * 1000 + 2 * b, batch)
        sums.add_(batch)
        squares.addcmul_(batch, batch)
        if progress is not None:
            progress(b + 1, batches)
    total_bq = float(act.array.astype(np.float64).sum())
    mean, rel = batch_mean_and_relative_error(sums, squares, batches, ct.shape)
    dose = dose_rate_from_energy(mean, per_batch, density, spacing, total_bq)
    return McResult(ct.with_array(dose.astype(np.float32)), ct.with_array(rel.astype(np.float32)), per_batch * batches,
                    batches, total_bq, decay.nuclide)
