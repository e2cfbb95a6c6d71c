"""Monte Carlo absorbed dose rate of a patient: decays sampled from an activity map, transported on the CT grid.

Steps (each a function):

1. :func:`patient_media`: CT (HU) -> material index and density (:mod:`.materials`; Li 2020's calibration by default).
2. :class:`DecaySource`: decay positions (mm from the grid corner), voxels drawn in proportion to their activity,
   uniform inside the voxel (:func:`sample_decay_positions` for one draw).
3. :func:`transport_decays`, per batch: the decays' electrons and photons (:func:`.kernels.sample_emissions`)
   transported by :mod:`.electron_transport` and :mod:`.photon_transport`; energy per voxel, kept for the voxels the
   batch reached (:class:`BatchTally`).
4. :func:`dose_rate_from_energy`: dose rate (mGy/s) = energy per decay / voxel mass x total activity (Bq).
5. :func:`batch_mean_and_relative_error`: statistical uncertainty from the spread of the batch results, the relative
   standard error of the mean per voxel.

Whole-grid work (34 M voxels for a 512 x 512 x 130 CT) is done once per run, not per batch; steps 4 and 5 run on the
voxels that received energy only.

The activity map must be in Bq per voxel on the CT grid (a SPECT in counts needs its calibration factor first;
:func:`run_mc` resamples an activity map on another grid onto the CT grid, keeping its total).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.resample import resample_amount
from ImagingBasics.volume import Volume

from .constants import MEV_TO_J
from .decay import load_decay_data
from .voxel_grid import VoxelGrid, indices


@dataclass
class McResult:
    dose_rate_mgy_s: Volume  # on the CT grid
    relative_uncertainty: Volume  # standard error of the mean / mean (NaN where no dose)
    n_decays: int
    batches: int
    total_activity_bq: float
    nuclide: str


def patient_media(ct: Volume, density_calibration=None):
    """(material index uint8, density g/cm3 float32) arrays of a CT in HU.

    An integer CT (the usual int16) is converted through a table over the HU values its type can hold, one gather per
    voxel: the same numbers as converting every voxel's HU, without a patient-size float64 copy."""
    from .materials import density_from_hu_li2020, material_index

    def convert(hu):
        density = density_calibration(hu) if density_calibration is not None else density_from_hu_li2020(hu)
        return material_index(hu), density.astype(np.float32)

    hu = ct.array
    if hu.dtype.kind in "iu" and hu.dtype.itemsize <= 2:
        unsigned = np.dtype(f"u{hu.dtype.itemsize}")
        levels = np.arange(2 ** (8 * hu.dtype.itemsize), dtype=np.int64).astype(unsigned).view(hu.dtype)
        material_table, density_table = convert(levels.astype(np.float64))
        index = hu.view(unsigned)  # the voxel's HU as its row in the tables
        return material_table[index], density_table[index]
    return convert(hu.astype(np.float64))


class DecaySource:
    """Where the decays happen: an activity array ``[z, y, x]`` (any non-negative units) on a grid of ``spacing_mm``,
    checked and reduced to its active voxels once, so that each batch only draws from them."""

    def __init__(self, activity: np.ndarray, spacing_mm):
        a = np.asarray(activity)
        flat = a.ravel()
        self.active = np.flatnonzero(flat != 0)  # draw among the active voxels only (a patient grid is mostly empty)
        weights = flat[self.active].astype(np.float64)  # NaN and negative values are non-zero: they are among them
        if not len(weights) or not np.all(np.isfinite(weights)) or weights.min() < 0:
            raise UserError("the activity map must be finite, non-negative and not all zero")
        self.shape = a.shape
        self.spacing_mm = np.asarray(spacing_mm, dtype=np.float64)
        self.total = float(weights.sum())  # the whole map's activity (the inactive voxels add nothing)
        self.probability = weights / weights.sum()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, 3]`` positions (x, y, z mm from the grid corner): voxels drawn in proportion to their activity,
        uniform inside the voxel."""
        nz, ny, nx = self.shape
        flat = self.active[rng.choice(self.active.size, size=n, p=self.probability)]
        k, rem = np.divmod(flat, ny * nx)
        j, i = np.divmod(rem, nx)
        ijk = np.stack([i, j, k], -1).astype(np.float64) + rng.uniform(0, 1, (n, 3))
        return ijk * self.spacing_mm


def sample_decay_positions(activity: np.ndarray, spacing_mm, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` positions (x, y, z mm from the grid corner) of decays drawn from an activity array ``[z, y, x]``."""
    return DecaySource(activity, spacing_mm).sample(n, rng)


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


class DepositLog:
    """Energy deposits (flat voxel index, MeV) recorded in the order made, to be added to a grid afterwards: what the
    photon transport writes into while it runs beside the electron transport (:func:`transport_decays`), so that the
    two never add to one grid at the same time. Takes the place of the grid tensor (its ``index_add_``)."""

    def __init__(self):
        self._index, self._energy = [], []

    def index_add_(self, dim: int, index, energy_mev) -> None:
        self._index.append(index)
        self._energy.append(energy_mev)

    def add_to(self, deposit) -> None:
        """Add the recorded deposits to the flat grid tensor ``deposit``, in the order they were made."""
        import torch

        if self._index:
            deposit.index_add_(0, torch.cat(self._index), torch.cat(self._energy))


def transport_decays(n_decays: int, decay, source: DecaySource, grid, tables, rng: np.random.Generator, seed: int,
                     deposit, photon_worker=None) -> None:
    """Step 3: ``n_decays`` decays of ``decay`` sampled and transported; their energy (MeV) is added to ``deposit``.

    Emissions, positions (drawn from ``source``, :class:`DecaySource` on the CT grid) and isotropic directions,
    electrons' first, come from ``rng``; the electron and photon transports use torch generators seeded ``seed`` and
    ``seed + 1``. ``grid``: the patient's :class:`.voxel_grid.VoxelGrid`. ``tables``:
    (:func:`.electron_transport.electron_tables`, :func:`.photon_xs.photon_table`). The decay data's photons below
    1 keV are absorbed where the decays (their electrons) are. ``deposit``: flat float64 on the grid's device.

    ``photon_worker``: a ``concurrent.futures`` executor with one thread: the photons are then transported there
    while this thread transports the electrons (two CPU cores busy); their deposits are added after the electrons',
    as without it, so the result is the same.
    """
    from .electron_transport import transport_electrons
    from .kernels import sample_emissions
    from .photon_transport import isotropic_directions, transport_photons

    electron_tables, photon_table = tables
    spacing_mm = source.spacing_mm
    device = grid.device
    emissions = sample_emissions(decay, n_decays, rng)
    n_e, n_p = len(emissions.electron_mev), len(emissions.photon_mev)
    pos = source.sample(n_e + n_p, rng)
    electron_directions = isotropic_directions(n_e, rng)
    photon_directions = isotropic_directions(n_p, rng)

    def photons(target) -> None:
        if n_p:
            transport_photons(pos[n_e:], photon_directions, emissions.photon_mev, None, None, spacing_mm, photon_table,
                              device=device, seed=seed + 1, deposit=target, weight=emissions.photon_weight, grid=grid)

    photon_log = DepositLog() if photon_worker is not None else None
    photons_done = photon_worker.submit(photons, photon_log) if photon_log is not None else None
    transport_electrons(pos[:n_e], electron_directions, emissions.electron_mev, emissions.electron_weight, None, None,
                        spacing_mm, electron_tables, device=device, seed=seed, deposit=deposit, grid=grid)
    if photons_done is None:
        photons(deposit)
    else:
        photons_done.result()
        photon_log.add_to(deposit)
    if emissions.local_mev and n_e:
        deposit_locally(deposit, pos[:n_e], spacing_mm, source.shape, emissions.local_mev / n_e)


def batch_mean_and_relative_error(sums, squares, batches: int, shape):
    """Step 5: (mean of the batch results, relative standard error of that mean) per voxel as ``[z, y, x]`` numpy
    arrays, from the flat sums of the batch results and of their squares: sample variance (Bessel's correction),
    standard error sqrt(variance / batches); NaN where the mean is not positive."""
    mean = (sums / batches).reshape(shape).cpu().numpy()
    var = np.maximum((squares / batches).reshape(shape).cpu().numpy() - mean ** 2, 0.0) * batches / (batches - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(mean > 0, np.sqrt(var / batches) / mean, np.nan)
    return mean, rel


def _zeros(size: int, device):
    """A flat float64 tensor of zeros; on the CPU its memory pages are only zeroed by the system when first written
    (a patient grid of 34 M voxels is 272 MB; a small run writes to part of it)."""
    import torch

    if torch.device(device).type == "cpu":
        return torch.from_numpy(np.zeros(size))
    return torch.zeros(size, dtype=torch.float64, device=device)


class BatchTally:
    """The energy (MeV) per voxel of the current batch on the whole grid (``batch``, where the transports add), and
    of the finished batches only the voxels they reached (a patient grid is mostly untouched by one batch)."""

    def __init__(self, size: int, device):
        self.batch = _zeros(size, device)
        self._voxels = []  # per finished batch: flat indices of the voxels it reached (increasing)
        self._energies = []  # and their energies (MeV)

    def end_batch(self) -> None:
        """Keep the batch's non-zero voxels, then clear the grid for the next batch."""
        touched = indices(self.batch != 0)
        self._voxels.append(touched)
        self._energies.append(self.batch.index_select(0, touched))
        self.batch.index_fill_(0, touched, 0.0)

    def sums_and_squares(self):
        """(flat indices of the voxels any batch reached, the sum over batches of their energy, and of its square),
        each sum taken in batch order. The (cleared) batch grid serves as the scratch space of the sums."""
        import torch

        voxels, energies = torch.cat(self._voxels), torch.cat(self._energies)
        self.batch.index_add_(0, voxels, energies)
        reached = indices(self.batch != 0)
        sums = self.batch.index_select(0, reached)
        self.batch.index_fill_(0, reached, 0.0)
        self.batch.index_add_(0, voxels, energies * energies)
        squares = self.batch.index_select(0, reached)
        self.batch.index_fill_(0, reached, 0.0)
        return reached, sums, squares


@contextmanager
def _cpu_threads(device):
    """On the CPU: torch's intra-op threads set to one for the run (then restored) and, when torch was allowed two or
    more, an executor with one thread for the photon transport (else None); elsewhere nothing changes (None)."""
    import torch

    if device.type != "cpu":
        yield None
        return
    allowed = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if allowed < 2:
            yield None
        else:
            with ThreadPoolExecutor(max_workers=1, initializer=torch.set_num_threads, initargs=(1,)) as worker:
                yield worker
    finally:
        torch.set_num_threads(allowed)


def run_mc(activity: Volume, ct: Volume, nuclide: str = "Lu-177", n_decays: int = 1_000_000, batches: int = 10,
           device: str = "cpu", seed: int = 0, density_calibration=None,
           progress: Optional[Callable[[int, int], None]] = None, dtype=None) -> McResult:
    """Dose-rate map and its relative uncertainty (see the module docstring).

    ``dtype``: the floating type of the particle transport, torch.float32 by default (positions to ~0.03 um on a
    50 cm grid, energies to 1e-7; the energies deposited are summed in float64, so energy is conserved to float64
    rounding); torch.float64 for a reference run.

    CPU threads: the transport's tensor operations are small (tens of thousands of particles), too small for torch's
    intra-op threads to pay for their synchronisation (and with other jobs on the cores that synchronisation costs
    several times the work). So on the CPU each operation runs on one thread, and with torch allowed two threads or
    more (``torch.get_num_threads()``, restored afterwards) the photons are transported on a second thread beside the
    electrons (:func:`transport_decays`)."""
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
    source = DecaySource(act.array, spacing)
    import torch

    rng = np.random.default_rng(seed)
    per_batch = n_decays // batches
    size = int(np.prod(ct.shape))
    grid = VoxelGrid(materials, density, spacing, device, dtype or torch.float32)
    tally = BatchTally(size, grid.device)  # the grid's device: the CPU when "mps" was asked for
    tables = (electron_tables(), photon_table())
    with _cpu_threads(grid.device) as photon_worker:
        for b in range(batches):
            transport_decays(per_batch, decay, source, grid, tables, rng, seed * 1000 + 2 * b, tally.batch,
                             photon_worker)
            tally.end_batch()
            if progress is not None:
                progress(b + 1, batches)
    total_bq = source.total
    touched, sums, squares = tally.sums_and_squares()
    mean, rel = batch_mean_and_relative_error(sums, squares, batches, (len(touched),))
    where = touched.cpu().numpy()
    dose = np.zeros(size, np.float32)  # no energy, no dose
    dose[where] = dose_rate_from_energy(mean, per_batch, density.reshape(-1)[where], spacing, total_bq)
    uncertainty = np.full(size, np.nan, np.float32)  # no dose, no relative uncertainty
    uncertainty[where] = rel
    return McResult(ct.with_array(dose.reshape(ct.shape)), ct.with_array(uncertainty.reshape(ct.shape)),
                    per_batch * batches, batches, total_bq, decay.nuclide)
