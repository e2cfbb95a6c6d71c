"""Tissue-specific voxel dose kernels (``dosecnn run --method vdk-tissue``): lung, soft tissue and bone.

Li 2020's VDK (:mod:`.vdk`) convolves the activity with one soft-tissue kernel and scales the result by
1.04 / rho(x). That is exact for the energy the electrons of soft-tissue sources leave in a voxel, but wrong twice
over elsewhere (bench/results/mc_validation.md, slab phantom): photon dose per unit mass hardly depends on the local
density (a photon's mean free path at 113-208 keV is ~7 cm of water, far more than a voxel), so dividing it by a lung
density of 0.12 g/cm3 makes it ~9 times too high; and in bone the photoelectric absorption of calcium and phosphorus
raises the photon dose per unit mass, which density scaling (1.04 / 1.2-1.9) lowers instead.
Multiple voxel S value methods (Lee et al., J Nucl Med 2018, "whole-body voxel-based personalized dosimetry: the
multiple voxel S-value approach for heterogeneous media with nonuniform activity distributions"; Khazaee Moghadam
et al., Cancer Biother Radiopharm 2016, tissue-specific dose kernels) replace the one kernel with one per tissue class
(Dieudonne et al., J Nucl Med 2013, measured the density-scaled kernel's errors against Monte Carlo in the abdomen).
Ours, per voxel class c (air, lung, soft tissue = adipose + soft tissue, bone; :func:`kernel_class`, the HU intervals
the Monte Carlo engine uses for its materials, :data:`.materials.MATERIALS`):

    D(x) = [ sum_c rho_c (A_c * K^e_c)(x) ] / rho(x)  +  (A * K^p_{c(x)})(x)        (mGy/s; zero in air)

* Electrons by the SOURCE voxel's class: A_c is the activity (MBq) in voxels of class c, K^e_c the electron voxel S
  values of a homogeneous medium of class c's composition at its kernel density rho_c (:data:`KERNEL_MEDIA`), so
  rho_c K^e_c is the energy the electrons of one decay leave per voxel; dividing by the target voxel's density
  (bounded below at :data:`.vdk.MIN_SCALING_DENSITY_G_CM3`, as in :mod:`.vdk`) turns it into dose. Energy is
  conserved (an electron's energy crossing a lung border is not multiplied by the density ratio twice), the electrons
  of lung sources spread as far as they do in lung, and the soft-tissue part is exactly Li 2020's. Within a class the
  kernel's shape is that of the class's kernel density (no interpolation between classes: the energy scaling above is
  what keeps organ means right when a voxel's density differs from rho_c).
* Photons by the TARGET voxel's class, without density scaling: K^p_c is the photon voxel S value (dose per unit mass
  of class c's composition) at the soft-tissue density 1.04 g/cm3, i.e. the photon fluence of a soft-tissue body (the
  lungs and bones of a patient are small against the photon mean free path) times class c's energy absorption.
  Lung and soft tissue have the same photon kernel (ICRU 44 lung and soft tissue: mass attenuation coefficients within
  0.3 % at 30-208 keV, photoelectric included), bone its own (photoelectric absorption 8 times soft tissue's at 113 keV).
  The photon kernels reach :data:`PHOTON_REACH_MM` (120 mm) instead of Li 2020's 48 mm, which holds less than half of
  the photon energy absorbed within 12 cm (0.115 against 0.255 mGy/(MBq*s) summed over the kernel at 1.96 x 1.96 x 3
  mm): in organs without much uptake of their own (cortical bone, lung, the rest of the body) the photons from the
  liver, kidneys and spleen are a large part of the dose. To keep that affordable the photon dose is computed on a grid
  of about 2 mm (:func:`photon_grid_factors`: a 0.98 mm CT's voxels binned 2 x 2 in-plane) and interpolated back
  (trilinear), as photon dose varies over centimetres.

The alternative, electrons chosen by the TARGET voxel's class (``electrons_by="target"``, the usual reading of multiple
voxel S value methods), counts every source within a lung electron's range (~1 cm) as if it were lung: beside the
liver the lungs receive ~1/rho_lung times too much. It was measured on held-out phantoms and is kept for that
comparison only (bench/validate_tissue_vdk.py, docs/METHODS.md).

Kernels (:func:`tissue_kernels_for`): the soft-tissue electron kernel is Li 2020's
(:func:`.kernel_library.kernel_pair_for`: bundled, cached or computed); the others come from the same Monte Carlo engine
(:func:`.kernels.voxel_s_values`, a point source uniform in the central voxel of a homogeneous medium): lung electrons
(lung composition at :data:`LUNG_KERNEL_DENSITY_G_CM3`, a grid holding their CSDA range), bone electrons (cortical
bone composition at :data:`BONE_KERNEL_DENSITY_G_CM3`), soft-tissue and bone photons (each composition at 1.04
g/cm3, on the photon grid). Each is bundled when shipped (``Resources/Kernels/<nuclide>_<voxel>mm_<medium>-<part>``),
else cached like the soft-tissue pair (``~/.cache/dosecnn/kernels/<nuclide>_<voxel>mm_<decays>_<medium>-<part>``,
parameters in kernel.json) or computed once (1e6 decays each, a few minutes on two CPU cores for a new voxel size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume

from .kernels import KERNEL_DENSITY_G_CM3
from .materials import MATERIALS, material_index

#: electron kernel density of lung (g/cm3): -800 HU with Li 2020's calibration; patients' lungs are -850 to -700 HU
#: (0.10-0.27 g/cm3), our phantoms' -840 HU (0.12 g/cm3)
LUNG_KERNEL_DENSITY_G_CM3 = 0.16
#: electron kernel density of bone (g/cm3): trabecular bone (about +245 HU), where bone's activity (the marrow) is
BONE_KERNEL_DENSITY_G_CM3 = 1.20


@dataclass(frozen=True)
class KernelMedium:
    """One kernel class: its name, the :data:`.materials.MATERIALS` entries it covers, the composition its kernels are
    computed with, and their densities (g/cm3); ``photon_as`` names the class whose photon kernel it shares."""

    name: str
    materials: Tuple[str, ...]
    composition: str
    electron_density_g_cm3: float
    photon_density_g_cm3: float = KERNEL_DENSITY_G_CM3
    photon_as: Optional[str] = None


#: the kernel classes in increasing CT number (air, below -950 HU, gets no dose and no kernel)
KERNEL_MEDIA: Tuple[KernelMedium, ...] = (
    KernelMedium("lung", ("lung",), "lung", LUNG_KERNEL_DENSITY_G_CM3, photon_as="soft tissue"),
    KernelMedium("soft tissue", ("adipose", "soft tissue"), "soft tissue", KERNEL_DENSITY_G_CM3),
    KernelMedium("bone", ("cortical bone",), "cortical bone", BONE_KERNEL_DENSITY_G_CM3),
)
MEDIUM_NAMES = tuple(m.name for m in KERNEL_MEDIA)
_MATERIAL_NAMES = [m.name for m in MATERIALS]


def kernel_class(hu: np.ndarray) -> np.ndarray:
    """int8 kernel class of each voxel: index into :data:`KERNEL_MEDIA`, -1 for air. The HU intervals are those of
    the Monte Carlo engine's materials (:func:`.materials.material_index`: air < -950 <= lung < -200 <= adipose < -50
    <= soft tissue < 150 <= bone)."""
    lookup = np.full(len(MATERIALS), -1, np.int8)
    for c, medium in enumerate(KERNEL_MEDIA):
        for name in medium.materials:
            lookup[_MATERIAL_NAMES.index(name)] = c
    return lookup[material_index(hu)]


@dataclass
class TissueKernels:
    """Electron and photon voxel S values (mGy/(MBq*s)) per kernel class on one voxel size."""

    electron: Dict[str, np.ndarray]  # on the CT's voxels
    photon: Dict[str, np.ndarray]  # on the photon grid's voxels (the CT's binned by photon_factors)
    spacing_mm: Tuple[float, float, float]
    photon_factors: Tuple[int, int, int] = (1, 1, 1)  # binning (x, y, z) of the photon grid

    def electron_density(self, name: str) -> float:
        return next(m.electron_density_g_cm3 for m in KERNEL_MEDIA if m.name == name)


def electron_kernel_size(spacing_mm, density_g_cm3: float, nuclide: str = "Lu-177", composition: str = "soft tissue",
                         minimum: int = 9) -> int:
    """Odd electron kernel size (voxels per side) that holds the CSDA range of the nuclide's most energetic electron
    in ``composition`` at ``density_g_cm3`` along the finest axis (at least ``minimum``, Li 2020's 9)."""
    from .decay import load_decay_data
    from .electron_stopping import csda_range_g_cm2, electron_medium

    d = load_decay_data(nuclide)
    energies = [float(d.internal_conversion.energies_mev.max(initial=0.0))]
    if d.beta_minus is not None:
        energies.append(float(d.beta_minus.energies_mev.max()))
    comp = MATERIALS[_MATERIAL_NAMES.index(composition)].composition
    range_mm = float(csda_range_g_cm2(np.array([max(energies)]), electron_medium(comp, 1.0))[0]) / density_g_cm3 * 10
    half = int(np.ceil(range_mm / float(min(spacing_mm))))
    return max(minimum, 2 * half + 1)


#: how far the photon kernels reach from the source voxel (mm, along the finest axis of their grid): Li 2020's 99^3
#: kernel at 0.98 mm reaches 48 mm, which holds less than half of the photon energy a body absorbs (the 113 and
#: 208 keV photons' mean free path in water is ~7 cm); cortical bone, lung and the body outside the organs with uptake
#: get most of their dose from those photons
PHOTON_REACH_MM = 120.0
#: photon dose is computed on a grid of at least this spacing (mm; voxels binned by integer factors, the dose
#: interpolated back): photon dose varies over centimetres, and a kernel of PHOTON_REACH_MM at 0.98 mm would be 245^3
PHOTON_GRID_MM = 2.0


def photon_grid_factors(spacing_mm) -> Tuple[int, int, int]:
    """Integer binning factors (x, y, z) of the photon grid: round(PHOTON_GRID_MM / spacing), at least 1."""
    return tuple(max(1, int(round(PHOTON_GRID_MM / float(s)))) for s in spacing_mm)


def photon_kernel_size(spacing_mm) -> int:
    """Odd photon kernel size (voxels per side) reaching :data:`PHOTON_REACH_MM` along the finest axis."""
    return 2 * int(np.ceil(PHOTON_REACH_MM / float(min(spacing_mm)))) + 1


def medium_folder_name(params: dict, medium: str, part: str, decays: Optional[int] = None) -> str:
    """``<nuclide>_<voxel>mm[_<decays>]_<medium>-<part>``: the folder of one class's kernel (bundled folders have
    no decays)."""
    voxel = "x".join(f"{s:g}" for s in params["spacing_mm"])
    return (f"{params['nuclide']}_{voxel}mm" + (f"_{decays}" if decays is not None else "")
            + f"_{medium.replace(' ', '-')}-{part}")


def medium_kernel(medium: KernelMedium, part: str, spacing_mm, nuclide: str = "Lu-177", cache_root=None,
                  decays: int = 1_000_000, device: str = "cpu", progress=None, seed: int = 0) -> np.ndarray:
    """The ``part`` ("electron" or "photon") voxel S values (mGy/(MBq*s)) of one kernel class at ``spacing_mm``:
    bundled when a folder with the same medium, part and voxel size ships, else cached in ``cache_root`` (default
    ``~/.cache/dosecnn/kernels``), else computed now with :func:`.kernels.voxel_s_values` and cached. Electron kernels
    hold the CSDA range (:func:`electron_kernel_size`), photon kernels reach :data:`PHOTON_REACH_MM`."""
    from .kernel_library import bundled_kernel_pair
    from .kernels import kernel_parameters, read_kernel_folder, voxel_s_values, write_kernel_folder

    if part not in ("electron", "photon"):
        raise ValueError("part must be 'electron' or 'photon'")
    key = f"{medium.name} {part}s"
    bundled = bundled_kernel_pair(spacing_mm, nuclide, medium=key)
    if bundled is not None:
        return bundled[0 if part == "electron" else 1]
    size = electron_kernel_size(spacing_mm, medium.electron_density_g_cm3, nuclide, medium.composition)
    photons = part == "photon"
    photon_size = max(photon_kernel_size(spacing_mm), size) if photons else size
    params = kernel_parameters(nuclide, spacing_mm, size, photon_size, decays, seed, material=medium.composition,
                               density_g_cm3=medium.electron_density_g_cm3,
                               photon_density_g_cm3=medium.photon_density_g_cm3 if photons else None)
    params["medium"] = key
    root = Path(cache_root) if cache_root else Path.home() / ".cache" / "dosecnn" / "kernels"
    folder = root / medium_folder_name(params, medium.name, part, decays)
    pair = read_kernel_folder(folder, params)
    if pair is None:
        if progress is not None:
            progress(f"computing the {params['nuclide']} {medium.name} {part} kernel for {params['spacing_mm']} mm "
                     f"voxels ({decays} decays)")
        k = voxel_s_values(params["nuclide"], spacing_mm, size, decays, medium.electron_density_g_cm3, seed=seed,
                           device=device, photons=photons, photon_size=photon_size,
                           material=_MATERIAL_NAMES.index(medium.composition),
                           photon_density_g_cm3=medium.photon_density_g_cm3)
        write_kernel_folder(k, params, folder)
        pair = k.electron.astype(np.float32), k.photon.astype(np.float32)
    return pair[0 if part == "electron" else 1]


def tissue_kernels_for(spacing_mm, nuclide: str = "Lu-177", cache_root=None, decays: int = 1_000_000,
                       device: str = "cpu", progress=None) -> TissueKernels:
    """The kernels of every class in :data:`KERNEL_MEDIA` for a CT voxel size: electron kernels on the CT's voxels
    (soft tissue: Li 2020's, :func:`.kernel_library.kernel_pair_for`), photon kernels on the photon grid
    (:func:`photon_grid_factors`); see the module docstring."""
    from .kernel_library import kernel_pair_for

    spacing = tuple(float(s) for s in spacing_mm)
    factors = photon_grid_factors(spacing)
    photon_spacing = tuple(s * f for s, f in zip(spacing, factors))
    electron = {"soft tissue": kernel_pair_for(spacing, nuclide, cache_root, decays, device, progress)[0]}
    photon = {}
    for medium in KERNEL_MEDIA:
        if medium.name != "soft tissue":
            electron[medium.name] = medium_kernel(medium, "electron", spacing, nuclide, cache_root, decays, device,
                                                  progress)
        if medium.photon_as is None:
            photon[medium.name] = medium_kernel(medium, "photon", photon_spacing, nuclide, cache_root, decays,
                                                device, progress)
    for medium in KERNEL_MEDIA:
        if medium.photon_as is not None:
            photon[medium.name] = photon[medium.photon_as]
    return TissueKernels(electron, photon, spacing, factors)


def _binned(a: np.ndarray, factors_xyz) -> np.ndarray:
    """Sums over blocks of ``factors_xyz`` voxels of a ``[z, y, x]`` array (zero-padded to whole blocks)."""
    fx, fy, fz = factors_xyz
    nz, ny, nx = a.shape
    pad = [(0, -nz % fz), (0, -ny % fy), (0, -nx % fx)]
    b = np.pad(a, pad)
    return b.reshape(b.shape[0] // fz, fz, b.shape[1] // fy, fy, b.shape[2] // fx, fx).sum(axis=(1, 3, 5))


def photon_dose(a_mbq: np.ndarray, kernel: np.ndarray, factors_xyz, device: str = "cpu"):
    """Photon dose rate (mGy/s, a torch tensor on the CT grid) of an activity array (MBq per voxel): the activity
    binned by ``factors_xyz`` (x, y, z), convolved with the photon kernel of the binned voxels, and interpolated back
    (trilinear, between the binned voxels' centres) when binned."""
    import torch

    from .vdk import fft_convolve_same

    if tuple(factors_xyz) == (1, 1, 1):
        return fft_convolve_same(a_mbq, kernel, device, as_tensor=True)
    coarse = fft_convolve_same(_binned(a_mbq, factors_xyz), kernel, device, as_tensor=True)
    fx, fy, fz = factors_xyz
    fine = torch.nn.functional.interpolate(coarse[None, None], scale_factor=(fz, fy, fx), mode="trilinear",
                                           align_corners=False)[0, 0]
    return fine[:a_mbq.shape[0], :a_mbq.shape[1], :a_mbq.shape[2]]


def tissue_vdk_dose_rate(activity_bq: Volume, ct: Volume, kernels: TissueKernels, density_calibration=None,
                         device: str = "cpu", electrons_by: str = "source") -> Tuple[Volume, dict]:
    """Dose rate (mGy/s) on the CT grid with the tissue-specific kernels (formula in the module docstring).

    ``electrons_by``: "source" (the method) or "target" (the alternative measured in bench/validate_tissue_vdk.py:
    D_e(x) = rho_c(x) (A * K^e_c(x))(x) / rho(x)). ``density_calibration``: HU -> g/cm3 (default Li 2020's)."""
    import torch

    from .materials import AIR_HU, density_from_hu_li2020
    from .vdk import MIN_SCALING_DENSITY_G_CM3, fft_convolve_same

    if electrons_by not in ("source", "target"):
        raise ValueError("electrons_by must be 'source' or 'target'")
    if not activity_bq.same_geometry(ct):
        raise UserError("the activity map must be on the CT grid (resample it first, e.g. activity_from_counts)")
    if not np.allclose(ct.spacing, kernels.spacing_mm, atol=1e-3):
        raise UserError(f"the kernels were made for {kernels.spacing_mm} mm voxels, the CT has {tuple(ct.spacing)}")
    a_mbq = activity_bq.array.astype(np.float32) / 1e6
    classes = kernel_class(ct.array)
    hu = np.asarray(ct.array, dtype=np.float64)
    density = (density_calibration(hu) if density_calibration is not None else density_from_hu_li2020(hu))
    rho = torch.as_tensor(np.maximum(density, MIN_SCALING_DENSITY_G_CM3).astype(np.float32), device=device)
    cls = torch.as_tensor(classes, device=device)

    energy = torch.zeros(a_mbq.shape, dtype=torch.float32, device=device)  # electrons: rho_c x S, (g/cm3) mGy/s
    photon = torch.zeros_like(energy)
    for c, medium in enumerate(KERNEL_MEDIA):
        rho_c = kernels.electron_density(medium.name)
        present = classes == c
        if electrons_by == "source":
            if np.any(present & (a_mbq > 0)):
                energy += rho_c * fft_convolve_same(np.where(present, a_mbq, 0.0), kernels.electron[medium.name],
                                                    device, as_tensor=True)
        elif present.any():
            conv = fft_convolve_same(a_mbq, kernels.electron[medium.name], device, as_tensor=True)
            energy += torch.where(cls == c, rho_c * conv, torch.zeros_like(conv))
    done = set()
    for medium in KERNEL_MEDIA:
        name = medium.photon_as or medium.name
        if name in done:
            continue
        done.add(name)
        targets = torch.zeros_like(cls, dtype=torch.bool)
        for c2, m2 in enumerate(KERNEL_MEDIA):
            if (m2.photon_as or m2.name) == name:
                targets |= cls == c2
        if bool(targets.any()):
            conv = photon_dose(a_mbq, kernels.photon[name], kernels.photon_factors, device)
            photon += torch.where(targets, conv, torch.zeros_like(conv))
    dose = energy / rho + photon
    dose.masked_fill_(torch.as_tensor(hu < AIR_HU, device=device), 0.0).clamp_(min=0.0)  # FFT round-off: -1e-12
    total_mbq = float(a_mbq.sum(dtype=np.float64))
    info = {"kernel_classes": {m.name: int((classes == c).sum()) for c, m in enumerate(KERNEL_MEDIA)},
            "electrons_by": electrons_by, "total_activity_mbq_in_kernel": total_mbq}
    return ct.with_array(dose.cpu().numpy().astype(np.float32)), info


def tissue_vdk_from_counts(spect: Volume, ct: Volume, bq_per_count: Optional[float] = None,
                           activity_mbq: Optional[float] = None, nuclide: str = "Lu-177",
                           kernel_cache: Optional[Path] = None, device: str = "cpu",
                           progress: Optional[Callable[[str], None]] = None) -> Tuple[Volume, Volume, Dict[str, object]]:
    """A SPECT in counts -> (activity in Bq per voxel on the CT grid, tissue-specific VDK dose rate in mGy/s, info):
    the same checks and calibration as :func:`.vdk.vdk_from_counts`, then :func:`tissue_kernels_for` and
    :func:`tissue_vdk_dose_rate`."""
    from ImagingBasics.quality import warning_dicts
    from ImagingBasics.validation import check_ct

    from .vdk import activity_from_counts, check_calibration

    ct_warnings = check_ct(ct)
    check_calibration(bq_per_count, activity_mbq)
    activity = activity_from_counts(spect, ct, bq_per_count, activity_mbq)
    kernels = tissue_kernels_for(ct.spacing, nuclide, kernel_cache, device=device, progress=progress)
    dose, info = tissue_vdk_dose_rate(activity, ct, kernels, device=device)
    info = {"nuclide": nuclide, "total_activity_mbq": float(activity.array.sum(dtype=np.float64) / 1e6),
            "kernel_sizes": {m.name: [int(kernels.electron[m.name].shape[0]), int(kernels.photon[m.name].shape[0])]
                             for m in KERNEL_MEDIA},
            "kernel_classes": info["kernel_classes"], "warnings": warning_dicts(ct_warnings)}
    return activity, dose, info
