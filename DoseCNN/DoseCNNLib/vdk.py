"""Voxel dose kernel (VDK) dose rate with density scaling, as in the DoseCNN paper (004; SCIENCE.md).

    D(x) = [ (A * K_electron)(x) + (A * K_photon)(x) ] x 1.04 / rho(x)

A: activity per voxel (MBq) on the CT grid; K: the electron and photon voxel S values of soft tissue at the CT's
voxel size (mGy/(MBq s), :mod:`.kernels`); rho: density from HU (004's calibration unless another is given); 1.04:
the kernels' soft-tissue density (g/cm3). Convolutions by FFT (torch, CPU or CUDA), same-size output. Air voxels
(below -950 HU) get zero dose: dividing by the density of air would turn the kernel's tail into nonsense.

Activity from a SPECT: :func:`activity_from_counts` with a calibration factor (Bq per count) or the total activity in
the field of view (MBq), after resampling the SPECT onto the CT grid (keeping its total).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from CTPerfusionMappingLib.errors import UserError
from CTPerfusionMappingLib.volume import Volume

from .kernels import KERNEL_DENSITY_G_CM3

AIR_HU = -950.0
BUNDLED_KERNELS = Path(__file__).resolve().parent.parent / "Resources" / "Kernels"


def activity_from_counts(spect: Volume, ct: Volume, bq_per_count: Optional[float] = None,
                         total_activity_mbq: Optional[float] = None) -> Volume:
    """Activity (Bq per voxel) on the CT grid from a SPECT in counts: one of the two calibrations is required."""
    if (bq_per_count is None) == (total_activity_mbq is None):
        raise UserError("give exactly one calibration: Bq per count, or the total activity in the field of view (MBq)")
    a = spect.array.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise UserError("the SPECT holds NaN or infinite values")
    if a.min() < 0:
        a = np.maximum(a, 0.0)  # reconstruction undershoot: no negative activity
    spect = spect.with_array(a)
    if not spect.same_geometry(ct):
        from .mc import _resample_activity

        spect = _resample_activity(spect, ct)
    counts = float(spect.array.sum())
    if counts <= 0:
        raise UserError("the SPECT has no counts inside the CT's field of view")
    factor = bq_per_count if bq_per_count is not None else total_activity_mbq * 1e6 / counts
    if factor <= 0:
        raise UserError("the calibration must be positive")
    return spect.with_array(spect.array * factor)


def fft_convolve_same(volume: np.ndarray, kernel: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Linear (zero-padded) convolution of a ``[z, y, x]`` volume with an odd-sized kernel, cropped to the volume."""
    import torch

    v = torch.as_tensor(np.asarray(volume, dtype=np.float32), device=device)
    k = torch.as_tensor(np.asarray(kernel, dtype=np.float32), device=device)
    if any(s % 2 == 0 for s in k.shape):
        raise ValueError("the kernel must have odd sizes")
    full = [vs + ks - 1 for vs, ks in zip(v.shape, k.shape)]
    fv = torch.fft.rfftn(v, s=full)
    fv *= torch.fft.rfftn(k, s=full)
    out = torch.fft.irfftn(fv, s=full)
    h = [ks // 2 for ks in k.shape]
    return out[h[0]:h[0] + v.shape[0], h[1]:h[1] + v.shape[1], h[2]:h[2] + v.shape[2]].cpu().numpy()


def bundled_kernel_pair(spacing_mm, nuclide: str = "Lu-177") -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The shipped (electron, photon) kernels for this voxel size, or None (``dosecnn kernel`` makes others)."""
    from CTPerfusionMappingLib.imageio import read_volume

    for folder in sorted(BUNDLED_KERNELS.glob(f"{nuclide}_*")):
        electron = read_volume(folder / "electron_kernel.nrrd")
        if np.allclose(electron.spacing, spacing_mm, atol=1e-3):
            return electron.array.astype(np.float32), read_volume(folder / "photon_kernel.nrrd").array.astype(np.float32)
    return None


def vdk_dose_rate(activity_bq: Volume, ct: Volume, electron_kernel: np.ndarray, photon_kernel: np.ndarray,
                  density_calibration=None, device: str = "cpu") -> Tuple[Volume, dict]:
    """Dose rate (mGy/s) on the CT grid by VDK convolution with density scaling (see the module docstring)."""
    from .materials import density_from_hu_004

    if not activity_bq.same_geometry(ct):
        raise UserError("the activity map must be on the CT grid (resample it first, e.g. activity_from_counts)")
    hu = ct.array.astype(np.float64)
    density = density_calibration(hu) if density_calibration is not None else density_from_hu_004(hu)
    a_mbq = activity_bq.array.astype(np.float64) / 1e6
    electron = fft_convolve_same(a_mbq, electron_kernel, device)
    photon = fft_convolve_same(a_mbq, photon_kernel, device)
    scale = np.where(hu < AIR_HU, 0.0, KERNEL_DENSITY_G_CM3 / density)
    dose = np.maximum((electron + photon) * scale, 0.0)  # FFT round-off can leave -1e-12 far from the sources
    parts = {"electron_mgy_s": float((electron * scale).sum()), "photon_mgy_s": float((photon * scale).sum())}
    return ct.with_array(dose.astype(np.float32)), parts
