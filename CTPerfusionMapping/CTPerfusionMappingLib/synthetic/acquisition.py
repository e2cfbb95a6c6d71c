"""A randomised CT acquisition: how one scanner, protocol and patient breath turn the phantom's anatomy into a CT.

The phantom's anatomy is first rendered noise-free on a base grid (grid.py); the acquisition then makes the CT that a
particular scanner would have written:

==========================  ===========================================================================================
contrast                    iodinated contrast in the blood: heart, great vessels and pulmonary vessels +100..+300 HU
                            (applied while rendering, since only the renderer knows which voxels hold blood)
inspiration                 the lung parenchyma's tissue fraction (HU + 1000) scaled by ``lung_density_factor``:
                            below 1 a deep inspiration or hyperinflated lungs, above 1 a shallow free breath as in
                            SPECT/CT (also applied while rendering; the lungs' shape and the perfusion stay)
breathing                   motion blur along the body axis that grows from the apex (none) to the bases
                            (``breathing_mm``: diaphragm excursion during the acquisition)
slice profile               blur along z to the nominal slice thickness (slice sensitivity profile, FWHM = thickness)
reconstruction kernel       in-plane blur to the kernel's MTF50 (smooth kernels ~0.3 lp/mm, sharp lung kernels
                            ~0.75 lp/mm), plus the edge overshoot of sharp kernels
reconstruction grid         pixel 0.6-1.0 mm (512 matrix; the field of view fits the body or, for a partial field of
                            view, cuts the body's sides) and slices at the thickness
quantum noise               filtered back-projection noise: a ramp-shaped noise power spectrum times the kernel's MTF,
                            its level set by dose (low-dose to standard), kernel, pixel and slice thickness
calibration                 an offset of the whole HU scale (water not exactly at 0 HU)
downsampling                optionally the whole CT averaged onto 3-5.5 mm voxels with 4-7 mm slices, as the small
                            public CTs were (CIP)
partial field of view       the apex or the bases cut off in z; the reconstruction circle (-1024 HU outside)
==========================  ===========================================================================================

Every parameter is drawn by :func:`draw_acquisition` from its own random stream (the anatomy, the truth perfusion
and the SPECT do not change when the acquisition is switched on or off) and is written to ``meta.json``.

The distributions are this project's choices, sized on clinical chest CT protocols (standard-dose and low-dose
screening CT, thin and thick slices, soft and lung kernels) and on the real CTs in the project's test data. The
Gaussian MTF model: MTF(f) = exp(-2 pi^2 sigma^2 f^2), so sigma = sqrt(ln 2 / (2 pi^2)) / MTF50. The noise power
spectrum of filtered back-projection rises linearly with spatial frequency (the ramp filter) and is rolled off by the
kernel: NPS(f) ~ f MTF(f)^2 (Hanson, Med Phys 1979). Noise standard deviation scales as
1 / sqrt(dose x slice thickness).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from ImagingBasics.gaussian import SIGMA_PER_FWHM
from ImagingBasics.resample import resample
from ImagingBasics.volume import Volume

#: the matrix of a clinical CT reconstruction (pixels per row)
MATRIX = 512
#: slice thicknesses of clinical chest CT protocols (mm)
SLICE_THICKNESSES_MM = (0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
#: the kernel's MTF50 (line pairs per mm) at sharpness 0 (smooth, soft-tissue kernel) and 1 (sharp lung kernel)
MTF50_SMOOTH_LP_MM = 0.30
MTF50_SHARP_LP_MM = 0.75
#: noise (HU, standard deviation) of a standard-dose scan with a smooth kernel, 1.25 mm slices, 0.8 mm pixels
NOISE_REFERENCE_HU = 22.0
#: how much a fully sharp kernel multiplies the noise (its MTF keeps the high frequencies the ramp filter boosts)
SHARP_KERNEL_NOISE_GAIN = 5.0
#: the base grid's slice spacing lies in this range (mm): fine enough for the slice profile to average sub-slices
BASE_SLICE_RANGE_MM = (1.25, 2.5)
OUTSIDE_FOV_HU = -1024.0
SIGMA_PER_MTF50 = math.sqrt(math.log(2.0) / (2.0 * math.pi**2))


@dataclass(frozen=True)
class AcquisitionParams:
    """One CT acquisition (see the module docstring); lengths in mm, CT numbers in HU."""

    kernel_sharpness: float  # 0 smooth (soft-tissue kernel) .. 1 sharp (lung kernel)
    relative_dose: float  # 1 standard dose, 0.1 low-dose screening
    slice_thickness_mm: float
    pixel_mm: float  # in-plane pixel of the reconstruction
    contrast_hu: float  # added to blood (0: no contrast)
    hu_offset: float  # calibration error added to every voxel
    lung_density_factor: float  # the parenchyma's tissue fraction relative to the phantom's (1: unchanged)
    breathing_mm: float  # diaphragm excursion during the acquisition (0: a good breath-hold)
    downsampled_mm: Optional[Tuple[float, float]]  # (pixel, slice) of a downsampled copy, or None
    apex_cut_mm: float  # lung apex left out of the field of view (0: whole lungs)
    base_cut_mm: float  # lung bases left out of the field of view
    lateral_fov_fraction: float  # field of view / body width (< 1: the body's sides are cut off)

    @property
    def mtf50_lp_mm(self) -> float:
        return kernel_mtf50(self.kernel_sharpness)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mtf50_lp_mm"] = self.mtf50_lp_mm
        d["noise_hu"] = noise_sd_hu(self)
        d["downsampled_mm"] = list(self.downsampled_mm) if self.downsampled_mm else None
        return d


def acquisition_rng(seed: int) -> np.random.Generator:
    """The acquisition's own random stream for case ``seed`` (independent of the anatomy's stream)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0xAC9]))


def lung_density(parenchyma_hu: np.ndarray, factor: float) -> np.ndarray:
    """The parenchyma at another inspiration level: its tissue fraction (HU + 1000, per 1000) times ``factor``."""
    return (-1000.0 + (parenchyma_hu + 1000.0) * np.float32(factor)).astype(np.float32)


def draw_acquisition(rng: np.random.Generator, size: str, body_semi_lr_mm: float) -> AcquisitionParams:
    """Draw one acquisition. ``small`` phantoms keep their coarse 3.9 mm x 5 mm grid (no resampling, no
    downsampling); ``full`` phantoms get a drawn reconstruction grid and, one case in six, a downsampled copy."""
    u = rng.uniform
    sharp = float(rng.choice([u(0.0, 0.35), u(0.35, 0.7), u(0.7, 1.0)]))
    dose = float(10 ** u(-1.0, 0.0))  # low-dose screening (0.1) to standard dose (1)
    contrast = float(u(100.0, 300.0)) if u() < 0.3 else 0.0
    offset = float(u(-20.0, 20.0))
    breath = u()
    density = float(u(0.85, 1.2) if breath < 0.6 else (u(0.55, 0.85) if breath < 0.8 else u(1.2, 1.75)))
    breathing = float(u(2.0, 10.0)) if u() < 0.2 else 0.0
    cut = u()
    apex_cut = float(u(10.0, 40.0)) if cut < 0.08 else 0.0
    base_cut = float(u(10.0, 30.0)) if 0.08 <= cut < 0.16 else 0.0
    lateral = float(u(0.88, 0.95)) if u() < 0.15 else 1.05  # 0.88 x the body still holds both lungs
    if size == "small":
        return AcquisitionParams(sharp, dose, 5.0, 3.90625, contrast, offset, density, breathing, None, apex_cut,
                                 base_cut, 1.05)
    thickness = float(rng.choice(SLICE_THICKNESSES_MM))
    fitted_pixel = lateral * 2.0 * body_semi_lr_mm / MATRIX  # the smallest pixel whose field of view holds that much
    pixel = float(max(u(0.6, 1.0), fitted_pixel)) if lateral > 1.0 else float(fitted_pixel)
    down = (float(u(3.0, 5.5)), float(u(4.0, 7.0))) if u() < 1.0 / 6.0 else None
    return AcquisitionParams(sharp, dose, thickness, pixel, contrast, offset, density, breathing, down, apex_cut,
                             base_cut, lateral)


def kernel_mtf50(sharpness: float) -> float:
    """MTF50 (lp/mm) of a reconstruction kernel of ``sharpness`` 0 (smooth) .. 1 (sharp)."""
    return MTF50_SMOOTH_LP_MM + (MTF50_SHARP_LP_MM - MTF50_SMOOTH_LP_MM) * float(sharpness)


def gaussian_sigma_mm(mtf50_lp_mm: float) -> float:
    """The sigma (mm) of a Gaussian blur whose MTF falls to 0.5 at ``mtf50_lp_mm``: sqrt(ln 2 / (2 pi^2)) / MTF50."""
    return SIGMA_PER_MTF50 / mtf50_lp_mm


def noise_sd_hu(p: AcquisitionParams) -> float:
    """Noise standard deviation (HU) in a uniform region of the reconstruction: NOISE_REFERENCE_HU scaled by
    1 / sqrt(relative dose x thickness / 1.25 mm) and by the kernel's gain. Pixels finer than 0.8 mm only oversample
    the kernel (no change); coarser pixels average the noise (x 0.8 mm / pixel)."""
    gain = 1.0 + (SHARP_KERNEL_NOISE_GAIN - 1.0) * p.kernel_sharpness**2
    return float(NOISE_REFERENCE_HU * gain * min(1.0, 0.8 / p.pixel_mm)
                 / math.sqrt(p.relative_dose * p.slice_thickness_mm / 1.25))


def base_slice_spacing_mm(thickness_mm: float) -> float:
    """The slice spacing (mm) the anatomy is rendered at before the slice profile: half the thickness, within
    BASE_SLICE_RANGE_MM (thin reconstructions are interpolated from 1.25 mm renderings)."""
    lo, hi = BASE_SLICE_RANGE_MM
    return float(min(max(thickness_mm / 2.0, lo), hi))


# --- steps on the base grid (the noise-free anatomy) --------------------------------------------------------------
def breathing_blur(hu: np.ndarray, z_mm: np.ndarray, lung_height_mm: float, excursion_mm: float,
                   spacing_z_mm: float, steps: int = 7) -> np.ndarray:
    """Motion blur along z: each slice averages the anatomy over a displacement from 0 to ``excursion_mm``, scaled by
    how low the slice lies (full excursion at the lung bases, none at the apex)."""
    if excursion_mm <= 0:
        return hu
    out = np.zeros_like(hu)
    weight = np.clip(1.0 - z_mm / lung_height_mm, 0.0, 1.0)[:, None, None]  # 1 at the bases, 0 at the apex
    for t in (np.arange(steps) + 0.5) / steps:  # positions uniform over the excursion
        out += ndimage.shift(hu, (t * excursion_mm / spacing_z_mm, 0.0, 0.0), order=1, mode="nearest")
    out /= steps
    return (weight * out + (1.0 - weight) * hu).astype(np.float32)


def slice_profile_blur(hu: np.ndarray, spacing_z_mm: float, thickness_mm: float) -> np.ndarray:
    """Blur along z to a Gaussian slice sensitivity profile of FWHM ``thickness_mm`` (what the sampling at
    ``spacing_z_mm`` already does is not blurred twice)."""
    sigma2 = (thickness_mm * SIGMA_PER_FWHM) ** 2 - (spacing_z_mm * SIGMA_PER_FWHM) ** 2
    if sigma2 <= 0:
        return hu
    return ndimage.gaussian_filter1d(hu, math.sqrt(sigma2) / spacing_z_mm, axis=0).astype(np.float32)


def kernel_blur(hu: np.ndarray, pixel_mm: float, sharpness: float) -> np.ndarray:
    """In-plane blur to the kernel's MTF50 (Gaussian MTF)."""
    sigma_vox = gaussian_sigma_mm(kernel_mtf50(sharpness)) / pixel_mm
    return ndimage.gaussian_filter(hu, (0.0, sigma_vox, sigma_vox)).astype(np.float32)


# --- steps on the reconstruction grid -----------------------------------------------------------------------------
def edge_enhancement(hu: np.ndarray, pixel_mm: float, sharpness: float, radius_mm: float = 1.0) -> np.ndarray:
    """The overshoot of sharp kernels at edges: an unsharp mask of amount 1.5 x sharpness over ``radius_mm`` (a fully
    sharp kernel overshoots a skin edge by about 40 % of the step, as a sharp lung kernel does on a real CT)."""
    amount = 1.5 * float(sharpness)
    if amount <= 0:
        return hu
    smooth = ndimage.gaussian_filter(hu, (0.0, radius_mm / pixel_mm, radius_mm / pixel_mm))
    return (hu + amount * (hu - smooth)).astype(np.float32)


def fbp_noise(shape: Tuple[int, int, int], pixel_mm: float, sharpness: float, sd_hu: float,
              rng: np.random.Generator) -> np.ndarray:
    """Noise of filtered back-projection, slice by slice independent: white noise shaped in the plane to
    NPS(f) ~ f MTF(f)^2 (amplitude sqrt(f) MTF(f)), scaled to a standard deviation of ``sd_hu``."""
    nz, ny, nx = shape
    fy = np.fft.fftfreq(ny, d=pixel_mm)[:, None]
    fx = np.fft.rfftfreq(nx, d=pixel_mm)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    sigma = gaussian_sigma_mm(kernel_mtf50(sharpness))
    amplitude = (np.sqrt(f) * np.exp(-2.0 * math.pi**2 * sigma**2 * f * f)).astype(np.float32)
    out = np.empty(shape, np.float32)
    for k in range(nz):
        white = rng.standard_normal((ny, nx), dtype=np.float32)
        out[k] = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(ny, nx))
    return out * np.float32(sd_hu / (out.std() + 1e-12))


def reconstruction_circle(hu: np.ndarray, grid: Volume) -> np.ndarray:
    """-1024 HU outside the circle inscribed in the reconstructed field of view (centred on the grid)."""
    nz, ny, nx = hu.shape
    yy = (np.arange(ny) - (ny - 1) / 2.0)[:, None]
    xx = (np.arange(nx) - (nx - 1) / 2.0)[None, :]
    outside = (xx / (nx / 2.0)) ** 2 + (yy / (ny / 2.0)) ** 2 > 1.0
    return np.where(outside[None], np.float32(OUTSIDE_FOV_HU), hu)


# --- grids --------------------------------------------------------------------------------------------------------
def reconstruction_grid(base: Volume, p: AcquisitionParams, lung_height_mm: float) -> Volume:
    """The grid the scanner reconstructs: ``pixel_mm`` in a square matrix over the base grid's centre (MATRIX
    pixels for full-size phantoms, the base grid itself for small ones), slices at the thickness over the base
    grid's z range less the cut apex or bases."""
    nx0 = base.size[0]
    if abs(p.pixel_mm - base.spacing[0]) < 1e-6 and abs(p.slice_thickness_mm - base.spacing[2]) < 1e-6 \
            and p.apex_cut_mm == 0 and p.base_cut_mm == 0:
        return base
    n = MATRIX if nx0 == MATRIX else nx0
    centre_xy = np.asarray(base.origin[:2]) + np.asarray(base.spacing[:2]) * (np.asarray(base.size[:2]) - 1) / 2.0
    origin_xy = centre_xy - p.pixel_mm * (n - 1) / 2.0
    z0 = base.origin[2]
    z1 = base.origin[2] + base.spacing[2] * (base.size[2] - 1)
    if p.base_cut_mm > 0:
        z0 = p.base_cut_mm
    if p.apex_cut_mm > 0:
        z1 = lung_height_mm - p.apex_cut_mm
    nz = int(math.floor((z1 - z0) / p.slice_thickness_mm)) + 1
    return Volume(np.zeros((nz, n, n), np.float32), (p.pixel_mm, p.pixel_mm, p.slice_thickness_mm),
                  (float(origin_xy[0]), float(origin_xy[1]), float(z0)))


def downsampled_grid(recon: Volume, pixel_mm: float, slice_mm: float) -> Volume:
    """A coarser grid over the same field of view."""
    extent = np.asarray(recon.spacing) * np.asarray(recon.size)
    size = (int(round(extent[0] / pixel_mm)), int(round(extent[1] / pixel_mm)), max(int(round(extent[2] / slice_mm)), 1))
    spacing = (extent[0] / size[0], extent[1] / size[1], extent[2] / size[2])
    corner = np.asarray(recon.origin) - np.asarray(recon.spacing) / 2.0
    origin = corner + np.asarray(spacing) / 2.0
    return Volume(np.zeros(size[::-1], np.float32), spacing, tuple(float(v) for v in origin))


def downsample(hu: Volume, grid: Volume) -> Volume:
    """Average onto a coarser grid: a Gaussian anti-aliasing blur of FWHM = the new voxel, then linear interpolation."""
    sigma = [max(math.sqrt(max(n ** 2 - o ** 2, 0.0)) * SIGMA_PER_FWHM / o, 0.0)
             for n, o in zip(grid.spacing[::-1], hu.spacing[::-1])]
    blurred = hu.with_array(ndimage.gaussian_filter(hu.array, sigma).astype(np.float32))
    return resample(blurred, grid, extrapolate=True)


def acquire(anatomy_hu: Volume, p: AcquisitionParams, lung_height_mm: float, rng: np.random.Generator) -> Volume:
    """The CT (float HU) the acquisition ``p`` makes of the noise-free ``anatomy_hu`` (contrast already rendered):
    breathing, slice profile and kernel blur on the base grid, resampling to the reconstruction grid, edge
    enhancement, quantum noise, calibration offset, optional downsampling, the reconstruction circle."""
    base = anatomy_hu
    z_mm = base.origin[2] + base.spacing[2] * np.arange(base.size[2])
    hu = breathing_blur(base.array.astype(np.float32), z_mm, lung_height_mm, p.breathing_mm, base.spacing[2])
    hu = slice_profile_blur(hu, base.spacing[2], p.slice_thickness_mm)
    hu = kernel_blur(hu, base.spacing[0], p.kernel_sharpness)
    recon = reconstruction_grid(base, p, lung_height_mm)
    ct = resample(base.with_array(hu), recon, extrapolate=True) if recon is not base else base.with_array(hu)
    hu = edge_enhancement(ct.array, p.pixel_mm, p.kernel_sharpness)
    hu = hu + fbp_noise(hu.shape, p.pixel_mm, p.kernel_sharpness, noise_sd_hu(p), rng) + np.float32(p.hu_offset)
    ct = ct.with_array(hu)
    if p.downsampled_mm:
        ct = downsample(ct, downsampled_grid(ct, *p.downsampled_mm))
    if p.lateral_fov_fraction < 1.0 or ct.size[0] == MATRIX:
        ct = ct.with_array(reconstruction_circle(ct.array, ct))
    return ct
