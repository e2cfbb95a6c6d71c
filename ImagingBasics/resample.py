"""Putting a volume on another grid: the one resampler of the project (through SimpleITK).

Every step that moves voxels between grids calls one of these:

* :func:`resample` -- values that are intensive (HU, dose rate, perfusion, probabilities): linear or
  nearest-neighbour interpolation, ``default`` outside the input;
* :func:`resample_amount` -- amounts per voxel (activity in Bq per voxel, counts): resampled as concentrations
  (divided by the voxel volume before, multiplied by the new voxel volume after), so that a region keeps its
  amount; optionally scaled so that the total is kept exactly;
* :func:`resample_labels` -- label maps: nearest neighbour, the voxel type kept, with one-line errors when the map
  does not overlap the reference;
* :func:`resample_image` -- the same for a SimpleITK image, for steps that work on SimpleITK images throughout
  (registration working grids).

``transform`` follows ITK's convention: it maps a point of the **reference** grid (LPS mm) to the point of the
input that is sampled there (None: the identity, both images in one frame of reference).
"""

from __future__ import annotations

import numpy as np

from .errors import UserError
from .volume import Volume, from_sitk, to_sitk

#: interpolation names -> SimpleITK interpolator names
INTERPOLATIONS = {"linear": "sitkLinear", "nearest": "sitkNearestNeighbor"}
#: numpy voxel types -> SimpleITK pixel type names
_PIXEL_TYPES = {np.dtype(np.float32): "sitkFloat32", np.dtype(np.float64): "sitkFloat64",
                np.dtype(np.uint8): "sitkUInt8", np.dtype(np.int8): "sitkInt8", np.dtype(np.uint16): "sitkUInt16",
                np.dtype(np.int16): "sitkInt16", np.dtype(np.uint32): "sitkUInt32", np.dtype(np.int32): "sitkInt32",
                np.dtype(np.int64): "sitkInt64", np.dtype(np.uint64): "sitkUInt64"}


def _interpolator(interpolation: str):
    import SimpleITK as sitk

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    return getattr(sitk, INTERPOLATIONS[interpolation])


def _pixel_type(dtype):
    import SimpleITK as sitk

    return getattr(sitk, _PIXEL_TYPES[np.dtype(dtype)])


def resample_image(image, reference: Volume, transform=None, interpolation: str = "linear", default: float = 0.0,
                   dtype=np.float32, extrapolate: bool = False):
    """A SimpleITK ``image`` on the grid of ``reference`` (size, spacing, origin, direction), as a SimpleITK image of
    voxel type ``dtype`` (None: the input's). ``extrapolate``: outside the input, the nearest input voxel's value
    instead of ``default``."""
    import SimpleITK as sitk

    t = transform if transform is not None else sitk.Transform()
    pixel = image.GetPixelID() if dtype is None else _pixel_type(dtype)
    return sitk.Resample(image, list(reference.size), t, _interpolator(interpolation), reference.origin,
                         reference.spacing, tuple(float(v) for v in reference.direction.reshape(-1)), float(default),
                         pixel, extrapolate)


def resample(volume: Volume, reference: Volume, transform=None, interpolation: str = "linear", default: float = 0.0,
             dtype=np.float32, extrapolate: bool = False) -> Volume:
    """``volume`` on the grid of ``reference`` (its array is not used), interpolated linearly or by nearest neighbour,
    ``default`` outside ``volume`` (or, with ``extrapolate``, the nearest input voxel's value); voxel type ``dtype``
    (None: the input's). The input is cast to ``dtype`` before interpolating, so a linear resampling of integers to
    float32 interpolates in float32."""
    import SimpleITK as sitk

    image = to_sitk(volume)
    if dtype is not None and image.GetPixelID() != _pixel_type(dtype):
        image = sitk.Cast(image, _pixel_type(dtype))
    return from_sitk(resample_image(image, reference, transform, interpolation, default, dtype, extrapolate))


def resample_amount(volume: Volume, reference: Volume, transform=None, keep_total: bool = False,
                    dtype=np.float64) -> Volume:
    """Amounts per voxel (e.g. Bq per voxel) on the grid of ``reference``: resampled linearly as concentrations (per
    mm^3) and multiplied by the new voxel volume, so a region keeps its amount (what falls outside the reference grid
    is lost).

    ``keep_total``: scale the result so that its sum equals the input's (for an activity map whose field of view is
    inside the reference); a UserError when nothing of the input lands on the reference grid.
    """
    a = volume.array.astype(dtype) / dtype(np.prod(volume.spacing))
    out = resample(volume.with_array(a), reference, transform, "linear", 0.0, dtype)
    out = out.with_array(out.array * dtype(np.prod(reference.spacing)))
    if not keep_total:
        return out
    total = float(out.array.sum(dtype=np.float64))
    if total <= 0:
        raise UserError("the activity map does not overlap the CT")
    return out.with_array(out.array * (float(volume.array.astype(np.float64).sum()) / total))


def resample_labels(labels: Volume, reference: Volume, name: str = "the label map") -> Volume:
    """A label map on the grid of the CT ``reference`` (nearest neighbour, 0 outside; voxel type kept, booleans as
    uint8).

    Returns the input itself when the geometries already match. Raises a one-line UserError when the label map and
    the reference do not overlap at all, or when none of its labels falls inside the reference.
    """
    if labels.same_geometry(reference):
        return labels
    a = np.asarray(labels.array)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    inside = resample(labels.with_array(np.ones(a.shape, dtype=np.uint8)), reference, interpolation="nearest",
                      dtype=None).array
    if not inside.any():
        raise UserError(f"{name} and the CT do not overlap in space; check that the label map belongs to this CT")
    out = resample(labels.with_array(a), reference, interpolation="nearest", dtype=None).array
    if a.any() and not out.any():
        raise UserError(f"none of the labels of {name} fall inside the CT; check that the label map belongs to this "
                        "CT")
    return reference.with_array(out.astype(a.dtype, copy=False))

