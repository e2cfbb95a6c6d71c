"""Rigid-registration primitives shared by the SPECT-to-CT registration (perfusion) and the CT-to-CT registration of
time points (dosimetry): transforms as 4x4 LPS matrices, their size, working grids, and reproducible sampling seeds.

Convention (ITK's): a transform maps a **fixed-image physical point (LPS mm) to the moving-image point** that shows
the same anatomy, so ``SimpleITK.Resample(moving, fixed, transform)`` puts the moving image on the fixed grid.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from .errors import UserError


def transform_to_matrix(transform) -> np.ndarray:
    """4x4 homogeneous LPS matrix of a rigid/affine SimpleITK transform (fixed point -> moving point).

    ``None`` is the identity. Matrix transforms are read exactly; others (composite, generic) are sampled at the
    origin and the unit vectors, which is exact for any affine map.
    """
    m = np.eye(4)
    if transform is None:
        return m
    t = transform
    if t.GetName() == "CompositeTransform" and t.GetNumberOfTransforms() == 1:
        t = t.GetNthTransform(0)
    if t.GetDimension() == 3 and all(hasattr(t, name) for name in ("GetMatrix", "GetCenter", "GetTranslation")):
        a = np.array(t.GetMatrix(), dtype=float).reshape(3, 3)
        c = np.array(t.GetCenter(), dtype=float)
        m[:3, :3] = a
        m[:3, 3] = np.array(t.GetTranslation(), dtype=float) + c - a @ c
        return m
    pts = np.vstack([np.zeros(3), np.eye(3)])
    mapped = np.array([t.TransformPoint(tuple(float(v) for v in p)) for p in pts])
    m[:3, 3] = mapped[0]
    m[:3, :3] = (mapped[1:] - mapped[0]).T
    return m


def apply_transform(transform, points: np.ndarray) -> np.ndarray:
    """Points ``(n, 3)`` (LPS mm) mapped by a rigid/affine transform (fixed point -> moving point)."""
    m = transform_to_matrix(transform)
    return points @ m[:3, :3].T + m[:3, 3]


def mean_displacement_mm(transform_a, transform_b, points_lps: np.ndarray) -> Tuple[float, float]:
    """Mean and maximum distance (mm) between where two rigid/affine transforms send the points ``(n, 3)``."""
    pts = np.asarray(points_lps, dtype=float).reshape(-1, 3)
    if pts.shape[0] == 0:
        raise UserError("no points given to measure the displacement")
    d = np.linalg.norm(apply_transform(transform_a, pts) - apply_transform(transform_b, pts), axis=1)
    return float(d.mean()), float(d.max())


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """The rotation angle (degrees) of the upper 3x3 of a rigid 4x4 (or 3x3) matrix."""
    cos = (np.trace(matrix[:3, :3]) - 1.0) / 2.0
    return float(np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0))))


def shrink_factors(spacing: Sequence[float], target_mm: float) -> List[int]:
    """Integer block sizes (x, y, z) that bring voxels of ``spacing`` (mm) to about ``target_mm``."""
    return [max(1, int(round(target_mm / s))) for s in spacing]


def block_average(image, factors: Sequence[int]):
    """A SimpleITK image block-averaged by integer ``factors`` (``BinShrink``; the image itself when all are 1)."""
    import SimpleITK as sitk

    return sitk.BinShrink(image, [int(f) for f in factors]) if any(f > 1 for f in factors) else image


def itk_seed(seed: int) -> int:
    """SimpleITK seed for ``seed``: never 0, which SimpleITK reads as "seed from the wall clock" (not reproducible)."""
    return int(seed) % 2147483646 + 1
