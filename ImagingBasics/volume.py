"""The image value type shared by every step: a voxel array with its geometry.

Conventions (the same as ITK/SimpleITK, DICOM and NRRD "left-posterior-superior"):

* ``array`` is indexed ``[k, j, i]`` = ``[z, y, x]`` (SimpleITK's ``GetArrayFromImage`` order and
  Slicer's ``arrayFromVolume`` order).
* ``spacing`` (mm), ``origin`` (mm) and the columns of ``direction`` are given in ``(x, y, z)`` = ``(i, j, k)``
  order; ``origin`` is the physical position of the centre of voxel ``[0, 0, 0]`` in patient LPS coordinates.
* the physical LPS point of voxel index ``(i, j, k)`` is ``origin + direction @ (spacing * (i, j, k))``.

Slicer's world is RAS; :func:`ijk_to_ras_matrix` and :func:`volume_from_ijk_to_ras` convert between the two.
A Volume is treated as immutable: every step returns a new one and never writes into its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Tuple

import numpy as np

from .errors import UserError

#: LPS <-> RAS: negate the first two physical axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _vec3(values: Sequence[float], name: str) -> Tuple[float, float, float]:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise UserError(f"{name} must be three finite numbers, got {values!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image: ``array[z, y, x]`` plus spacing (mm), origin (mm, LPS) and a 3x3 direction matrix."""

    array: np.ndarray
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise UserError(f"a volume must be 3D, got an array of shape {arr.shape}")
        spacing = _vec3(self.spacing, "spacing")
        if min(spacing) <= 0:
            raise UserError(f"voxel spacing must be positive, got {spacing} mm")
        direction = np.array(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise UserError("the direction matrix is not orthonormal (sheared or scaled image axes are not supported)")
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", _vec3(self.origin, "origin"))
        object.__setattr__(self, "direction", direction)

    # --- geometry -------------------------------------------------------------------------------
    @property
    def shape(self) -> Tuple[int, int, int]:
        """Array shape ``(nz, ny, nx)``."""
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def size(self) -> Tuple[int, int, int]:
        """Image size in ITK order ``(nx, ny, nz)``."""
        nz, ny, nx = self.shape
        return (nx, ny, nz)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (cm^3)."""
        return float(np.prod(self.spacing)) / 1000.0

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Physical LPS points (mm) of continuous voxel indices ``ijk`` given as ``(..., 3)`` in (i, j, k) order."""
        ijk = np.asarray(ijk, dtype=float)
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing)) @ self.direction.T

    def lps_to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) indices of physical LPS points (mm) given as ``(..., 3)``."""
        points = np.asarray(points, dtype=float)
        return ((points - np.asarray(self.origin)) @ self.direction) / np.asarray(self.spacing)

    def same_geometry(self, other: Volume, tol_mm: float = 1e-3) -> bool:
        """True when both volumes have the same shape, spacing, origin and direction (within ``tol_mm``)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol_mm)
            and np.allclose(self.origin, other.origin, atol=tol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-5)
        )

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume with the same geometry and another array of the same shape."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise UserError(f"array shape {array.shape} does not match the volume shape {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction)

    def describe(self) -> str:
        """One line for logs: shape, spacing, origin and value range."""
        a = self.array
        nx, ny, nz = self.size
        sx, sy, sz = self.spacing
        if np.iscomplexobj(a):  # no order, no range: the magnitudes (casting to float would warn and drop a part)
            a = np.abs(a)
        finite = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"), float("nan"))
        return (
            f"{nx}x{ny}x{nz} voxels, {sx:.3g}x{sy:.3g}x{sz:.3g} mm, origin ({self.origin[0]:.1f}, "
            f"{self.origin[1]:.1f}, {self.origin[2]:.1f}) mm LPS, {a.dtype}, values {lo:.4g}..{hi:.4g}"
        )



# --- orientation codes ----------------------------------------------------------------------------
#: the LPS unit vector of each patient direction letter
_DIRECTION_LETTERS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}


def direction_from_code(code: str) -> np.ndarray:
    """The 3x3 direction matrix of an orientation code: the patient direction in which the index i, j and k grows.

    ``"LPS"`` (i to the patient's left, j posterior, k superior) is the identity; ``"RAS"`` is diag(-1, -1, 1);
    ``"LAI"`` is a rotation of 180 degrees about the left-right axis, diag(1, -1, -1). Each of the pairs L/R, P/A
    and S/I must appear once.
    """
    letters = str(code).strip().upper()
    if len(letters) != 3 or any(c not in _DIRECTION_LETTERS for c in letters):
        raise UserError(f"orientation code {code!r} must be three letters out of L/R, P/A, S/I (e.g. LPS)")
    matrix = np.array([_DIRECTION_LETTERS[c] for c in letters], dtype=float).T
    if abs(abs(np.linalg.det(matrix)) - 1.0) > 1e-9:
        raise UserError(f"orientation code {code!r} names one patient axis twice; each of L/R, P/A, S/I must appear once")
    return matrix


def orientation_code(direction: np.ndarray) -> str:
    """The orientation code (e.g. "LPS") of the patient direction closest to each index axis of ``direction``."""
    letters = []
    for column in np.asarray(direction, dtype=float).T:
        axis = int(np.argmax(np.abs(column)))
        letters.append(("LPS" if column[axis] > 0 else "RAI")[axis])
    return "".join(letters)


# --- SimpleITK ----------------------------------------------------------------------------------
def to_sitk(volume: Volume):
    """A SimpleITK image with the same voxels and geometry (the array is copied)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array), isVector=False)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(float(v) for v in volume.direction.reshape(-1)))
    return image


def from_sitk(image) -> Volume:
    """A Volume from a 3D scalar SimpleITK image (geometry kept exactly, array copied)."""
    if image.GetDimension() != 3:
        raise UserError(f"expected a 3D image, got a {image.GetDimension()}D image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(
            f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image)"
        )
    import SimpleITK as sitk

    return Volume(
        sitk.GetArrayFromImage(image),
        image.GetSpacing(),
        image.GetOrigin(),
        np.array(image.GetDirection(), dtype=float).reshape(3, 3),
    )


# --- Slicer's IJK-to-RAS matrix -------------------------------------------------------------------
def ijk_to_ras_matrix(volume: Volume) -> np.ndarray:
    """Slicer's 4x4 IJK-to-RAS matrix of a volume (``vtkMRMLVolumeNode.GetIJKToRASMatrix``).

    Column ``c`` of the upper 3x3 is the RAS step (mm) of one voxel along index axis ``c``
    (i, j, k); the last column is the RAS position of voxel (0, 0, 0).
    """
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS @ volume.direction @ np.diag(volume.spacing)
    m[:3, 3] = LPS_TO_RAS @ np.asarray(volume.origin)
    return m


def volume_from_ijk_to_ras(array: np.ndarray, ijk_to_ras: np.ndarray) -> Volume:
    """The Volume of a ``[k, j, i]`` array placed by Slicer's 4x4 IJK-to-RAS matrix (inverse of :func:`ijk_to_ras_matrix`)."""
    m = np.asarray(ijk_to_ras, dtype=float)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise UserError("the IJK-to-RAS matrix must be a finite 4x4 matrix")
    lps = LPS_TO_RAS @ m[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    if np.any(spacing <= 0):
        raise UserError("the IJK-to-RAS matrix has a zero-length axis")
    return Volume(np.asarray(array), tuple(spacing), tuple(LPS_TO_RAS @ m[:3, 3]), lps / spacing)
