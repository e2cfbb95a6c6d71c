"""Hounsfield units of a synthetic chest CT: tissue values, lung parenchyma, texture and quantum noise.

Values are typical non-contrast chest CT numbers (HU). Lung parenchyma: ``parenchyma_hu`` (about -860) plus a
gravity gradient of ``gravity_hu`` from front to back, mosaic attenuation downstream of emboli, a fine
correlated texture (``texture_hu``: secondary lobules and sub-resolution vessels, correlation length 1.2 mm),
emphysema (towards -975 HU), bullae (-995 HU), opacities, fissures (0.5 mm pleura, partial volume),
vessels (blood, +40 HU) and bronchi (air lumen with a soft-tissue wall), all mixed by partial volume.
Quantum noise is white with ``noise_hu`` at 1 mm^3 voxels, scaled by 1/sqrt(voxel volume).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from scipy import ndimage

from . import anatomy as A
from .params import TissueParams

TISSUE_HU = {
    A.AIR: -1000.0, A.FAT: -100.0, A.MUSCLE: 45.0, A.CORTICAL_BONE: 650.0, A.CANCELLOUS_BONE: 230.0,
    A.BLOOD: 40.0, A.AIRWAY: -1000.0, A.AIRWAY_WALL: 30.0, A.LUNG_RIGHT: -860.0, A.LUNG_LEFT: -860.0,
    A.DISC: 85.0, A.CANAL: 15.0, A.LIVER: 58.0, A.ABDOMEN: 35.0, A.MEDIASTINAL_FAT: -90.0, A.CARTILAGE: 130.0,
}
BLOOD_HU = 40.0
TUMOUR_HU = 35.0
EMPHYSEMA_HU = -975.0
BULLA_HU = -995.0
PLEURA_HU = 40.0
PLEURA_THICKNESS_MM = 0.5
TEXTURE_CORRELATION_MM = 1.2


def base_tissue_hu(tissue: np.ndarray) -> np.ndarray:
    """HU of every voxel from its tissue class (lungs filled in later)."""
    lut = np.zeros(256, dtype=np.float32)
    for k, v in TISSUE_HU.items():
        lut[k] = v
    return lut[tissue]


def correlated_noise(shape, spacing_mm, correlation_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of unit standard deviation, smoothed to ``correlation_mm`` (at least half a voxel)."""
    sigma = [max(correlation_mm / s, 0.5) for s in spacing_mm[::-1]]  # (z, y, x) voxels
    n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return n / (n.std() + 1e-9)


def parenchyma_hu(
    p: TissueParams,
    y_norm: np.ndarray,
    texture: np.ndarray,
    mosaic_hu: np.ndarray,
    territorial_perfusion: np.ndarray,
    ground_glass_hu: Optional[np.ndarray] = None,
    consolidation_weight: Optional[np.ndarray] = None,
    consolidation_hu: Optional[np.ndarray] = None,
    emphysema: Optional[np.ndarray] = None,
    bulla: Optional[np.ndarray] = None,
) -> np.ndarray:
    """HU of the lung parenchyma (before vessels, bronchi, fissures and tumour).

    Capillary blood links density to perfusion only weakly: ``blood_volume_hu`` per unit of relative territorial
    perfusion, and a texture whose amplitude (sub-resolution vessels) grows with the square root of it. A CNN can
    read the texture; a monotone function of (smoothed) HU cannot.
    """
    q = np.clip(territorial_perfusion, 0.1, 3.0)
    hu = p.parenchyma_hu + p.gravity_hu * y_norm + mosaic_hu + p.blood_volume_hu * (q - 1.0)
    hu = hu + p.texture_hu * np.sqrt(q) * texture
    if ground_glass_hu is not None:
        hu = hu + ground_glass_hu
    if consolidation_weight is not None:
        w = consolidation_weight
        hu = (1.0 - w) * hu + w * (consolidation_hu + 0.3 * p.texture_hu * texture)
    if emphysema is not None:
        hu = (1.0 - emphysema) * hu + emphysema * (EMPHYSEMA_HU + 10.0 * texture)
    if bulla is not None:
        hu = np.where(bulla, BULLA_HU, hu)
    return hu.astype(np.float32)


def mix(hu: np.ndarray, fraction: np.ndarray, value: float) -> np.ndarray:
    """Partial-volume mixing: a ``fraction`` of each voxel is replaced by material of ``value`` HU."""
    return (1.0 - fraction) * hu + fraction * value


def fissure_fraction(distance_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Fraction of a voxel occupied by a 0.5 mm pleural sheet at ``distance_mm`` (triangular partial volume)."""
    w = max(voxel_mm, PLEURA_THICKNESS_MM)
    return (PLEURA_THICKNESS_MM / w) * np.clip(1.0 - distance_mm / w, 0.0, 1.0)


def add_quantum_noise(hu: np.ndarray, noise_hu: float, voxel_mm3: float, rng: np.random.Generator) -> np.ndarray:
    sigma = noise_hu / np.sqrt(max(voxel_mm3, 1e-6))
    return hu + sigma * rng.standard_normal(hu.shape, dtype=np.float32)


def to_int16_hu(hu: np.ndarray) -> np.ndarray:
    """Round and clip to the CT range -1024..3071 HU, as int16."""
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def lung_fractions(occupancy: Dict[str, np.ndarray]) -> np.ndarray:
    """Fraction of each voxel that is capillary-bearing parenchyma (not vessel, bronchus or tumour)."""
    frac = np.ones_like(occupancy["vessel"])
    for key in ("vessel", "bronchus_lumen", "bronchus_wall"):
        frac *= 1.0 - occupancy[key]
    return frac
