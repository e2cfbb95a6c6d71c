"""Every random choice of one synthetic case, drawn from one seeded generator and recorded in ``meta.json``.

The distributions below are this project's choices (the papers describe real patients, not phantoms).
They aim at adult chest anatomy as seen on CT: lung volumes of about 3-7 L, parenchyma near -850 HU,
lobes in the proportions of supine CT (LOBE_VOLUME_SHARES), and the pathologies that change perfusion in the papers' cohorts
(Ren 2021 Front Oncol, Ren 2022 Front Oncol, Ren 2021 IJROBP: emphysema, lung cancer, pulmonary embolism, pneumonia).

Default pathology probabilities per case (each drawn independently; override them with
``pathology_probabilities``):

==============  =====  ==============================================================================
pathology       p      what it does
==============  =====  ==============================================================================
emphysema       0.35   low-attenuation regions and bullae, upper-lobe predominant; perfusion near zero
tumour          0.50   one 1-6 cm soft-tissue mass; encased/compressed arteries lower downstream perfusion
embolism        0.30   1-4 occluded arteries; wedge-shaped pleura-based defects; subtle mosaic attenuation
opacities       0.30   1-3 ground-glass or consolidation blobs; consolidation lowers perfusion (hypoxic
                       vasoconstriction), ground glass barely does
==============  =====  ==============================================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from ImagingBasics.errors import UserError

#: Lobe volumes as shares of both lungs on supine inspiratory CT (mean, SD; 32 volunteers; Yamada et al.,
#: Respiration 2020): the fissure heights below are drawn so that the phantoms' mean shares lie within one SD of these
#: (tested). With the gravity and apex-to-base perfusion gradients the lower lobes then carry the largest perfusion
#: shares, as in supine MAA SPECT (Bailey et al., Semin Nucl Med 2019), and the right lung about 52 % of it (Cheng et
#: al., Congenit Heart Dis 2006: 52.5 +- 2.1 % in 206 normal scans).
LOBE_VOLUME_SHARES: Dict[str, Tuple[float, float]] = {
    "RUL": (0.179, 0.024), "RML": (0.093, 0.016), "RLL": (0.265, 0.026), "LUL": (0.231, 0.021), "LLL": (0.232, 0.024),
}

#: the right lung's share of perfusion in normal scans (mean, SD; Cheng et al., Congenit Heart Dis 2006)
RIGHT_SHARE_MEAN_SD = (0.525, 0.021)

DEFAULT_PATHOLOGY_PROBABILITIES: Dict[str, float] = {
    "emphysema": 0.35,
    "tumour": 0.50,
    "embolism": 0.30,
    "opacities": 0.30,
}


@dataclass(frozen=True)
class AnatomyParams:
    """Body and thorax shape (mm, LPS: x to the patient's left, y posterior, z superior; z = 0 at the lung bases)."""

    body_semi_lr_mm: float  # half-width of the body ellipse
    body_semi_ap_mm: float  # half-depth of the body ellipse
    fat_mm: float  # subcutaneous fat thickness
    muscle_mm: float  # chest-wall muscle thickness
    lung_height_mm: float  # lung base (posterior recess) to apex
    mediastinum_half_width_mm: float
    heart_semi_axes_mm: tuple  # (x, y, z) half-axes of the heart ellipsoid
    heart_shift_lr_mm: float  # heart centre, to the patient's left of the midline
    dome_height_right_mm: float  # diaphragm dome height above the lung base
    dome_height_left_mm: float
    oblique_fissure_low: float  # oblique fissure height at the anterior lung border, fraction of lung height
    oblique_fissure_high_right: float  # ... and at the posterior border, right lung
    oblique_fissure_high_left: float  # ... left lung
    horizontal_fissure: float  # right horizontal fissure height, fraction of lung height
    fissure_tilt: float  # lateral tilt of the fissure planes (fraction of height across a lung)


@dataclass(frozen=True)
class TissueParams:
    """Hounsfield units and texture of the lung parenchyma and the CT noise."""

    parenchyma_hu: float  # mean healthy parenchyma, non-dependent
    gravity_hu: float  # extra density from anterior to posterior (dependent lung); drawn independently of the
    # perfusion's gravity_gain, and down to none, so that a network learns the perfusion gradient from the anatomy and
    # not only from the CT's dependent density (real COPD CTs can show none while MAA still shows the gradient)
    texture_hu: float  # amplitude of the fine parenchymal texture (secondary lobules, small vessels)
    blood_volume_hu: float  # density added per unit of relative territorial perfusion above 1 (capillary blood)
    noise_hu: float  # CT quantum noise (standard deviation) at 1 mm^3 voxels


@dataclass(frozen=True)
class PerfusionParams:
    """Physiology of the truth perfusion (dimensionless factors)."""

    gravity_gain: float  # posterior / anterior perfusion ratio minus 1 (supine patient)
    basal_gain: float  # base / apex perfusion ratio minus 1
    branch_sigma: float  # SD of the uneven flow split at every arterial branching (vessels.split_flow_factors)
    leaf_volume_ml: float  # volume of a terminal arterial territory
    right_share: float  # the right lung's share of the healthy perfusion (Cheng 2006: 52.5 +- 2.1 %)


@dataclass(frozen=True)
class SpectParams:
    """The Tc-99m MAA SPECT acquisition."""

    fwhm_mm: float  # system resolution (reconstructed), full width at half maximum
    total_counts: float  # expected counts in the reconstructed volume
    background_fraction: float  # soft-tissue background relative to the mean lung activity
    misalignment_rotation_deg: tuple  # Euler angles about x, y, z (ITK Euler3DTransform convention)
    misalignment_translation_mm: tuple  # (x, y, z) translation


@dataclass(frozen=True)
class CaseParams:
    anatomy: AnatomyParams
    tissue: TissueParams
    perfusion: PerfusionParams
    spect: SpectParams
    pathologies: Dict[str, bool]
    slice_thickness_mm: float

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def check_pathology_probabilities(probabilities: Optional[Mapping[str, float]]) -> Dict[str, float]:
    """The default probabilities updated with ``probabilities``; unknown names or values outside 0..1 are errors."""
    merged = dict(DEFAULT_PATHOLOGY_PROBABILITIES)
    for name, p in (probabilities or {}).items():
        if name not in merged:
            raise UserError(f"unknown pathology {name!r}; choose from {', '.join(sorted(merged))}")
        if not 0.0 <= float(p) <= 1.0:
            raise UserError(f"the probability of {name} must be between 0 and 1, got {p}")
        merged[name] = float(p)
    return merged


def random_rotation_deg(rng: np.random.Generator, max_angle_deg: float) -> tuple:
    """Euler angles (deg) of a rotation about a random axis by an angle uniform in 0..``max_angle_deg``."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.0, max_angle_deg))
    # small rotations: Euler angles about x, y, z are close to the rotation vector's components;
    # the exact matrix is whatever these angles give, and that is what meta.json records.
    return tuple(float(v) for v in np.rad2deg(axis * angle))


def random_translation_mm(rng: np.random.Generator, max_mm: float) -> tuple:
    """A translation in a random direction with a length uniform in 0..``max_mm``."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return tuple(float(v) for v in direction * rng.uniform(0.0, max_mm))


def draw_case_params(
    rng: np.random.Generator,
    size: str,
    pathology_probabilities: Optional[Mapping[str, float]] = None,
    max_misalignment_mm: float = 10.0,
    max_misalignment_deg: float = 5.0,
) -> CaseParams:
    """Draw all case-level parameters (pathology locations are drawn later, from the same generator)."""
    probs = check_pathology_probabilities(pathology_probabilities)
    u = rng.uniform
    fat_mm, muscle_mm = u(5, 22), u(8, 14)
    wall_mm = fat_mm + muscle_mm + 12.0  # fat + muscle + rib layer (anatomy.RIB_LAYER_MM)
    anatomy = AnatomyParams(
        body_semi_lr_mm=wall_mm + u(125, 150),  # thoracic cavity half-width 125-150 mm
        body_semi_ap_mm=wall_mm + u(88, 105),  # thoracic cavity half-depth 88-105 mm
        fat_mm=fat_mm,
        muscle_mm=muscle_mm,
        lung_height_mm=u(220, 270),
        mediastinum_half_width_mm=u(22, 32),
        heart_semi_axes_mm=(u(55, 70), u(45, 55), u(50, 62)),
        heart_shift_lr_mm=u(10, 30),
        dome_height_right_mm=u(45, 70),
        dome_height_left_mm=u(35, 60),
        oblique_fissure_low=u(0.12, 0.22),  # lobe volumes as on supine CT (LOBE_VOLUME_SHARES above)
        oblique_fissure_high_right=u(0.80, 0.90),
        oblique_fissure_high_left=u(0.81, 0.91),
        horizontal_fissure=u(0.57, 0.65),
        fissure_tilt=u(-0.12, 0.12),
    )
    tissue = TissueParams(
        parenchyma_hu=u(-900, -860),
        gravity_hu=u(0, 80),  # from none (emphysematous lungs, e.g. a CIP COPD CT) to a clear dependent density
        texture_hu=u(18, 30),
        blood_volume_hu=u(8.0, 16.0),
        noise_hu=u(12, 25),
    )
    perfusion = PerfusionParams(
        gravity_gain=u(0.3, 1.0),
        basal_gain=u(0.0, 0.4),
        branch_sigma=u(0.10, 0.16),  # heterogeneity of the 10 mL territories about that of generator version 3
        leaf_volume_ml=u(8.0, 14.0),
        right_share=float(np.clip(rng.normal(RIGHT_SHARE_MEAN_SD[0], RIGHT_SHARE_MEAN_SD[1]), 0.46, 0.59)),
    )
    spect = SpectParams(
        fwhm_mm=u(12.0, 15.0),
        total_counts=float(10 ** u(6.5, 7.1)),  # ~3-12 million counts (111 MBq MAA, ~15-30 min acquisition)
        background_fraction=u(0.01, 0.04),
        misalignment_rotation_deg=random_rotation_deg(rng, max_misalignment_deg),
        misalignment_translation_mm=random_translation_mm(rng, max_misalignment_mm),
    )
    pathologies = {name: bool(rng.uniform() < p) for name, p in sorted(probs.items())}
    thickness = 5.0 if size == "small" else float(rng.choice([1.25, 2.5, 3.75]))
    return CaseParams(anatomy, tissue, perfusion, spect, pathologies, thickness)
