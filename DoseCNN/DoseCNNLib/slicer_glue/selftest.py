"""A small synthetic Lu-177 patient for the DoseCNN module's self-test (in Slicer) and its tests here (pure Python).

A coarse torso from :mod:`DoseCNNLib.phantoms.torso` (default 128 x 96 x 24 voxels of 1.96 x 1.96 x 3 mm, a voxel size whose
kernels are bundled: no kernel has to be computed) with a made-up DOTATATE-like activity: each organ a uniform
concentration decaying mono-exponentially (the numbers are the 24 h values and effective half-lives of
:mod:`DoseCNNLib.phantoms.kinetics`), no blur, no noise. The "SPECT" is the activity itself (Bq per voxel: calibration 1 Bq per
count), so a test knows the activity in the field of view exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np

from ImagingBasics.volume import Volume

#: the test's voxel size (mm): the bundled 1.96 x 1.96 x 3 mm Lu-177 kernels apply
SPACING_MM = (1.96, 1.96, 3.0)
#: (MBq/mL at 24 h, effective half-life h) per uptake compartment (lesions: one value for all)
UPTAKE = {"liver": (0.18, 70.0), "spleen": (0.35, 65.0), "kidney cortex": (0.50, 50.0), "kidney medulla": (0.18, 50.0),
          "lesion": (1.5, 90.0), "remainder": (0.012, 40.0)}


@dataclass
class SelfTestCase:
    ct: Volume  # HU, float32
    labels: Volume  # uint8: torso_phantom.LABELS and lesions
    names: Dict[int, str]
    concentration_24h: np.ndarray  # MBq/mL per voxel at 24 h
    half_life_h: np.ndarray  # effective half-life per voxel (h; inf where there is no activity)

    def activity_bq(self, time_h: float) -> Volume:
        """The activity (Bq per voxel) at ``time_h`` hours after administration, on the CT grid (float32)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            decay = np.where(np.isfinite(self.half_life_h), np.exp(-np.log(2.0) * (time_h - 24.0) / self.half_life_h), 0.0)
        bq = self.concentration_24h * decay * self.ct.voxel_volume_ml * 1e6
        return self.ct.with_array(bq.astype(np.float32))

    def total_activity_mbq(self, time_h: float) -> float:
        return float(self.activity_bq(time_h).array.sum(dtype=np.float64) / 1e6)


def small_case(seed: int = 3, size_xyz: Tuple[int, int, int] = (128, 96, 24),
               spacing_mm: Sequence[float] = SPACING_MM) -> SelfTestCase:
    """The self-test patient (module docstring); deterministic for a seed."""
    from ..phantoms import torso as T

    rng = np.random.default_rng(seed)
    params = T.draw_torso(rng, n_lesions=(2, 2))
    grid = T.centred_grid(tuple(size_xyz), tuple(float(s) for s in spacing_mm))
    hu, labels, compartments = T.torso_on_grid(params, grid, rng)
    concentration = np.zeros(grid.shape, np.float32)
    half_life = np.full(grid.shape, np.inf, np.float32)
    for name, mask in compartments.items():
        kind = "lesion" if name.startswith("lesion") else name.replace("right ", "").replace("left ", "")
        if kind in UPTAKE:
            concentration[mask], half_life[mask] = UPTAKE[kind]
    names = dict(T.LABELS)
    for i in range(len(params.lesions)):
        names[T.LESION_LABEL_START + i] = f"lesion {T.LESION_LABEL_START + i}"
    return SelfTestCase(grid.with_array(hu.astype(np.float32)), grid.with_array(labels.astype(np.uint8)), names,
                        concentration, half_life)
