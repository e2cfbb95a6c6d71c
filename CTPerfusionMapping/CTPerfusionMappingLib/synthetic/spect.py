"""A simulated Tc-99m MAA perfusion SPECT of a synthetic case.

Model (our choices where the papers are silent): the activity is the truth perfusion in the lungs plus a
faint soft-tissue background (free pertechnetate, scatter) of ``background_fraction`` times the mean lung
activity inside the body; it is blurred by a Gaussian system response of ``fwhm_mm`` (12-15 mm, the
reconstructed resolution of a LEHR collimator at lung distances), sampled on the SPECT grid through a rigid
misalignment, scaled to ``total_counts`` expected counts and given Poisson noise, then lightly smoothed
(Gaussian, 0.5 voxel) as reconstruction post-filters do. Output: counts per voxel, float32.

The misalignment is a rigid ITK Euler3DTransform about the CT centre that maps a point of the CT's
physical space (LPS mm) to the point of the SPECT's physical space where the same anatomy appears.
That is exactly the transform a registration with the CT fixed and the SPECT moving should recover, and
``SimpleITK.Resample(spect, ct, transform)`` undoes the misalignment.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from ImagingBasics.gaussian import SIGMA_PER_FWHM
from ImagingBasics.resample import resample, resample_image
from ImagingBasics.volume import Volume, to_sitk


def misalignment_transform(rotation_deg: Sequence[float], translation_mm: Sequence[float], centre_mm: Sequence[float]):
    """The SimpleITK Euler3DTransform (CT point -> SPECT point) of a recorded misalignment."""
    import SimpleITK as sitk

    t = sitk.Euler3DTransform()
    t.SetCenter([float(v) for v in centre_mm])
    t.SetRotation(*[float(np.deg2rad(a)) for a in rotation_deg])
    t.SetTranslation([float(v) for v in translation_mm])
    return t


def transform_from_meta(meta: Dict):
    """The misalignment transform recorded in a case's ``meta.json`` (see :func:`misalignment_transform`)."""
    m = meta["spect"]["misalignment"]
    return misalignment_transform(m["rotation_deg"], m["translation_mm"], m["centre_mm"])


def transform_matrix(transform) -> np.ndarray:
    """4x4 homogeneous matrix (LPS mm) of an affine/rigid SimpleITK transform."""
    m = np.eye(4)
    a = np.array(transform.GetMatrix()).reshape(3, 3)
    c = np.array(transform.GetCenter())
    m[:3, :3] = a
    m[:3, 3] = np.array(transform.GetTranslation()) + c - a @ c
    return m


def simulate_spect(
    activity_ct: Volume,
    spect_reference: Volume,
    fwhm_mm: float,
    total_counts: float,
    transform,
    rng: np.random.Generator,
) -> Volume:
    """Blur, misalign, sample, scale and add Poisson noise: a SPECT in counts on ``spect_reference``'s grid."""
    import SimpleITK as sitk

    img = sitk.Cast(to_sitk(activity_ct), sitk.sitkFloat32)
    blurred = sitk.SmoothingRecursiveGaussian(img, float(fwhm_mm * SIGMA_PER_FWHM))
    sampled = resample_image(blurred, spect_reference, transform.GetInverse())
    expected = np.clip(sitk.GetArrayFromImage(sampled).astype(np.float64), 0.0, None)
    total = expected.sum()
    if total > 0:
        expected *= total_counts / total
    counts = rng.poisson(expected).astype(np.float32)
    noisy = spect_reference.with_array(counts)
    post = sitk.SmoothingRecursiveGaussian(to_sitk(noisy), float(0.5 * min(spect_reference.spacing)))
    return spect_reference.with_array(np.clip(sitk.GetArrayFromImage(post), 0.0, None).astype(np.float32))


def resample_to_reference(moving: Volume, reference: Volume, transform=None, linear: bool = True) -> Volume:
    """``moving`` resampled onto ``reference``'s grid through ``transform`` (reference point -> moving point), voxel
    type kept."""
    return resample(moving, reference, transform, "linear" if linear else "nearest", dtype=None)


def partial_volume_normalised(spect_on_ct: Volume, lung_mask: np.ndarray, fwhm_mm: float) -> np.ndarray:
    """SPECT on the CT grid divided by the lung mask blurred with the SPECT resolution, inside the lungs.

    A simple partial-volume correction at the lung border: counts spill out of the lungs over about one FWHM,
    so border voxels read low by the fraction of lung in their neighbourhood. Used to compare a SPECT with its
    truth perfusion; 0 outside ``lung_mask``.
    """
    import SimpleITK as sitk

    mask = spect_on_ct.with_array(lung_mask.astype(np.float32))
    blurred = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(to_sitk(mask), float(fwhm_mm * SIGMA_PER_FWHM)))
    out = spect_on_ct.array.astype(np.float32) / np.maximum(blurred, 0.05)
    return np.where(lung_mask, out, 0.0).astype(np.float32)
