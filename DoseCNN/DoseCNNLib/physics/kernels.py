"""Voxel S values (dose voxel kernels) of a radionuclide in uniform soft tissue, from the Monte Carlo engine.

S(i, j, k) is the mean absorbed dose rate in voxel (i, j, k) per unit activity uniformly distributed in the central
voxel, in mGy/(MBq*s) (MIRD Pamphlet 17's voxel S value; Lanconelli et al. 2012 tabulate Lu-177's):

    S = E_dep(i, j, k) [MeV per decay] x 1.602176634e-13 J/MeV x 1e6 decays/(MBq*s) / m [kg] x 1e3 mGy/Gy.

The electron part ("beta": beta spectrum, conversion and Auger electrons) and the photon part (gamma and X-ray
lines) are simulated and returned separately, as the DoseCNN paper (Li 2020) convolves them with different kernels.
Emissions are sampled per decay type with statistical weights: ``n_decays`` betas (weight = betas per decay), and
as many discrete electrons and photons drawn in proportion to their yields (weight = total yield x n_decays / drawn).
Photon lines below 1 keV are deposited in the source voxel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .constants import MEV_TO_J
from .decay import load_decay_data
from .materials import SOFT_TISSUE

#: Density used for kernels (g/cm3): soft tissue as in MIRD voxel S value tables.
KERNEL_DENSITY_G_CM3 = 1.04


@dataclass
class VoxelSValues:
    electron: np.ndarray  # [z, y, x] mGy/(MBq*s), size^3
    photon: np.ndarray  # photon_size^3 (the photons reach further), same centre
    spacing_mm: Tuple[float, float, float]
    nuclide: str
    n_decays: int

    @property
    def photon_cropped(self) -> np.ndarray:
        """The photon kernel on the electron kernel's grid."""
        lo = (self.photon.shape[0] - self.electron.shape[0]) // 2
        n = self.electron.shape[0]
        return self.photon[lo:lo + n, lo:lo + n, lo:lo + n]

    @property
    def total(self) -> np.ndarray:
        """Electron plus photon S values on the electron kernel's grid."""
        return self.electron + self.photon_cropped


def dose_per_decay_to_s_value(energy_mev_per_decay: np.ndarray, voxel_mass_kg: float) -> np.ndarray:
    """MeV per decay deposited in a voxel -> S value in mGy/(MBq*s) (MIRD Pamphlet 17)."""
    return np.asarray(energy_mev_per_decay) * MEV_TO_J * 1e6 / voxel_mass_kg * 1e3


def _source_positions(rng, n, centre_index, spacing) -> np.ndarray:
    return (np.asarray(centre_index, float) + rng.uniform(0, 1, (n, 3))) * np.asarray(spacing, float)


@dataclass
class Emissions:
    """The particles of ``n`` decays, with statistical weights (see the module docstring)."""

    electron_mev: np.ndarray
    electron_weight: np.ndarray
    photon_mev: np.ndarray
    photon_weight: float  # every photon history carries this weight (photons per history)
    local_mev: float  # energy of photons below 1 keV, deposited where the decay happens (total over the n decays)


def sample_emissions(decay, n: int, rng: np.random.Generator) -> Emissions:
    """Electrons (betas: one per decay, weight = betas per decay; conversion + Auger: one per decay, weight = their
    total yield) and photons (gamma + X above 1 keV: n x their total yield histories, at most n, each weighted so that
    the n decays' photons are represented) of ``n`` decays."""
    energies, weights = [], []
    if decay.beta_minus is not None:
        energies.append(decay.beta_minus.sample(rng, n))
        weights.append(np.full(n, decay.beta_minus.yield_per_decay))
    lines_e = np.concatenate([decay.internal_conversion.energies_mev, decay.auger.energies_mev])
    lines_y = np.concatenate([decay.internal_conversion.yields_per_decay, decay.auger.yields_per_decay])
    if lines_y.sum() > 0:
        energies.append(lines_e[rng.choice(len(lines_e), n, p=lines_y / lines_y.sum())])
        weights.append(np.full(n, lines_y.sum()))
    pe = np.concatenate([decay.gamma.energies_mev, decay.xray.energies_mev])
    py = np.concatenate([decay.gamma.yields_per_decay, decay.xray.yields_per_decay])
    local = pe < 1e-3
    local_mev = float(np.sum(pe[local] * py[local])) * n
    pe, py = pe[~local], py[~local]
    # as many photon histories as photons are emitted (at most one per decay): weight 1 when the yield is below 1
    m = max(1, int(round(n * min(float(py.sum()), 1.0)))) if py.sum() > 0 else 0
    photons = pe[rng.choice(len(pe), m, p=py / py.sum())] if m else np.zeros(0)
    weight = float(py.sum()) * n / m if m else 0.0
    return Emissions(np.concatenate(energies) if energies else np.zeros(0),
                     np.concatenate(weights) if weights else np.zeros(0), photons, weight, local_mev)


#: the largest kernel grid (voxels per side) a kernel command computes: Li 2020's photon kernel is 99 (default sizes,
#: :func:`.kernel_library.default_kernel_sizes`, are at most 99); 201^3 already holds 8 million voxels per kernel
MAX_KERNEL_SIZE = 201


#: photon lines rarer than this (per decay) are not held against a nuclide in :func:`check_nuclide` (Y-90's 2186 keV
#: gamma, 1.4e-8 per decay)
MIN_PHOTON_YIELD = 1e-6


def check_nuclide(nuclide: str):
    """The decay data of ``nuclide`` when the dose engine can transport its emissions, else a one-line UserError: an
    unknown name, or photons above the cross-section tables (:data:`.photon_xs.MAX_ENERGY_MEV`) with a yield above
    :data:`MIN_PHOTON_YIELD`. For the commands' first step, before any image is read or kernel computed."""
    from ImagingBasics.errors import UserError

    from .photon_xs import MAX_ENERGY_MEV

    decay = load_decay_data(nuclide)
    energies = np.concatenate([decay.gamma.energies_mev, decay.xray.energies_mev])
    yields = np.concatenate([decay.gamma.yields_per_decay, decay.xray.yields_per_decay])
    emitted = energies[yields > MIN_PHOTON_YIELD]
    if emitted.size and float(emitted.max()) > MAX_ENERGY_MEV:
        raise UserError(f"{decay.nuclide} emits photons up to {1000 * float(emitted.max()):.0f} keV; the dose engine's "
                        f"photon cross-section tables end at {1000 * MAX_ENERGY_MEV:g} keV (Lu-177, I-131 and Tc-99m are "
                        "within them)")
    return decay


def voxel_s_values(nuclide: str = "Lu-177", spacing_mm: Sequence[float] = (4.8, 4.8, 4.8), size: int = 7,
                   n_decays: int = 100_000, density_g_cm3: float = KERNEL_DENSITY_G_CM3, seed: int = 0,
                   device: str = "cpu", photons: bool = True, photon_size: Optional[int] = None,
                   material: int = SOFT_TISSUE, photon_density_g_cm3: Optional[float] = None) -> VoxelSValues:
    """Electron and photon voxel S values on a ``size``^3 grid (odd; source in the centre voxel).

    ``photon_size`` (odd, at least ``size``; default ``size``) sets the photon kernel's grid, whose reach is
    decimetres (Li 2020: 9x9x9 electron and 99x99x99 photon kernels).

    ``material``: index into :data:`.materials.MATERIALS` of the homogeneous medium (default soft tissue); the
    electrons are transported in it at ``density_g_cm3``, the photons at ``photon_density_g_cm3`` (default the same
    density). Each kernel's S values are per mass of its own medium (the tissue-specific kernels of
    :mod:`.tissue_kernels` take the photons at soft-tissue density, the electrons at the tissue's).
    """
    from .electron_transport import electron_tables, transport_electrons
    from .photon_transport import isotropic_directions, transport_photons, uniform_grid
    from .photon_xs import photon_table

    if size % 2 == 0 or size < 1:
        raise ValueError("the kernel size must be odd")
    decay = load_decay_data(nuclide)
    rng = np.random.default_rng(seed)
    spacing = tuple(float(s) for s in spacing_mm)
    voxel_mass_kg = density_g_cm3 * np.prod(spacing) / 1000.0 / 1000.0  # mm3 -> cm3, g -> kg
    c = size // 2

    materials, density = uniform_grid((size, size, size), material, density_g_cm3)
    emissions = sample_emissions(decay, n_decays, rng)
    e, w = emissions.electron_mev, emissions.electron_weight
    result = transport_electrons(_source_positions(rng, len(e), (c, c, c), spacing), isotropic_directions(len(e), rng),
                                 e, w, materials, density, spacing, electron_tables(), device=device, seed=seed)
    electron = dose_per_decay_to_s_value(result.deposit_mev / n_decays, voxel_mass_kg)

    big = photon_size or size
    if big % 2 == 0 or big < size:
        raise ValueError("the photon kernel size must be odd and at least the electron kernel size")
    photon = np.zeros((big, big, big))
    if photons and len(emissions.photon_mev):
        photon_density = float(photon_density_g_cm3 or density_g_cm3)
        pm, pd = uniform_grid((big, big, big), material, photon_density)
        bc = big // 2
        n_ph = len(emissions.photon_mev)
        r = transport_photons(_source_positions(rng, n_ph, (bc, bc, bc), spacing), isotropic_directions(n_ph, rng),
                              emissions.photon_mev, pm, pd, spacing, photon_table(), device=device, seed=seed + 1)
        dep = r.deposit_mev * emissions.photon_weight
        dep[bc, bc, bc] += emissions.local_mev
        dep /= n_decays  # MeV per decay
        photon = dose_per_decay_to_s_value(dep, photon_density * np.prod(spacing) / 1e6)
    return VoxelSValues(electron, photon, spacing, decay.nuclide, n_decays)


def kernel_parameters(nuclide: str, spacing_mm, size: int, photon_size: int, decays: int, seed: int,
                      material: Optional[str] = None, density_g_cm3: float = KERNEL_DENSITY_G_CM3,
                      photon_density_g_cm3: Optional[float] = None) -> dict:
    """The parameters that identify a kernel pair (stored in kernel.json; a cached pair is reused when they match).

    ``material`` (a name of :data:`.materials.MATERIALS`), ``density_g_cm3`` and ``photon_density_g_cm3``: the medium
    of a tissue-specific pair (:mod:`.tissue_kernels`); the soft-tissue pair of Li 2020 (the default) keeps the
    parameters it always had, so existing kernel folders stay valid."""
    from .decay import normalise_nuclide_name

    params = {"nuclide": normalise_nuclide_name(nuclide), "spacing_mm": [float(s) for s in spacing_mm],
              "size": int(size), "photon_size": int(photon_size), "decays": int(decays), "seed": int(seed),
              "density_g_cm3": float(density_g_cm3), "units": "mGy/(MBq*s)", "version": 1}
    if material is not None:
        params.update(material=str(material), version=2,
                      photon_density_g_cm3=float(photon_density_g_cm3 if photon_density_g_cm3 is not None
                                                 else density_g_cm3))
    return params


def write_kernel_folder(k: VoxelSValues, params: dict, folder) -> dict:
    """electron_kernel.nrrd, photon_kernel.nrrd and kernel.json (written last: its presence marks a complete pair)."""
    from pathlib import Path

    from ImagingBasics.files import write_json
    from ImagingBasics.imageio import write_volume
    from ImagingBasics.volume import Volume

    folder = Path(folder)
    spacing = tuple(float(s) for s in params["spacing_mm"])
    write_volume(Volume(k.electron.astype(np.float32), spacing), folder / "electron_kernel.nrrd")
    write_volume(Volume(k.photon.astype(np.float32), spacing), folder / "photon_kernel.nrrd")
    c = k.electron.shape[0] // 2
    t = k.total
    summary = {"parameters": params, "self": float(t[c, c, c]), "electron_self": float(k.electron[c, c, c]),
               "face_neighbour_mean": float(np.mean([t[c, c, c + 1], t[c, c, c - 1], t[c, c + 1, c], t[c, c - 1, c],
                                                     t[c + 1, c, c], t[c - 1, c, c]])) if c >= 1 else None}
    write_json(summary, folder / "kernel.json")
    return summary


def read_kernel_folder(folder, params: Optional[dict] = None):
    """(electron, photon) arrays of a kernel folder, or None when absent (or made with other ``params``)."""
    import json
    from pathlib import Path

    from ImagingBasics.imageio import read_volume

    folder = Path(folder)
    meta = folder / "kernel.json"
    if not meta.is_file() or (params is not None and json.loads(meta.read_text()).get("parameters") != params):
        return None
    return (read_volume(folder / "electron_kernel.nrrd").array.astype(np.float32),
            read_volume(folder / "photon_kernel.nrrd").array.astype(np.float32))



