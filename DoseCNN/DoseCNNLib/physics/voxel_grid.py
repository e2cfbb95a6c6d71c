"""The voxelised patient as the transport codes see it: materials and densities on a grid, positions in mm.

A grid ``[z, y, x]`` of material indices and densities (g/cm3) with voxel spacing (sx, sy, sz) mm; positions are in
mm from the grid's corner (voxel (i, j, k) spans [i sx, (i+1) sx) ...). Photon and electron transport share it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def grid_tensor(array, device):
    """A grid as a torch tensor on ``device`` without a copy when it already is one (or a CPU numpy array)."""
    import torch

    if isinstance(array, torch.Tensor):
        return array.to(device)
    return torch.as_tensor(np.ascontiguousarray(array), device=device)


class VoxelGrid:
    """Materials (kept uint8) and densities (kept in their own precision) on ``device``; lookups cast what they
    gather, so a patient-size grid is never copied."""

    def __init__(self, materials, density_g_cm3, spacing_mm: Sequence[float], device: str, dtype):
        import torch

        self.materials = grid_tensor(materials, device)
        self.density = grid_tensor(density_g_cm3, device)
        self.shape = tuple(self.materials.shape)  # (nz, ny, nx)
        nz, ny, nx = self.shape
        self.size = nz * ny * nx
        self.dtype = dtype
        self.spacing = torch.as_tensor(spacing_mm, device=device, dtype=dtype)
        self.extent = self.spacing * torch.tensor([nx, ny, nz], device=device, dtype=dtype)
        self._upper = torch.tensor([nx - 1, ny - 1, nz - 1], device=device)

    def inside(self, positions):
        """True where ``[n, 3]`` positions (x, y, z mm) lie in the grid."""
        return ((positions >= 0) & (positions < self.extent)).all(-1)

    def flat_index(self, positions):
        """Flat voxel index of positions inside the grid (rounding at the far faces is clamped)."""
        import torch

        ijk = torch.minimum(torch.floor(positions / self.spacing).long(), self._upper)
        nz, ny, nx = self.shape
        return (ijk[:, 2] * ny + ijk[:, 1]) * nx + ijk[:, 0]

    def material_at(self, flat):
        return self.materials.reshape(-1)[flat].long()

    def density_at(self, flat):
        return self.density.reshape(-1)[flat].to(self.dtype)

    def to_numpy(self, flat_values) -> np.ndarray:
        """A flat per-voxel tensor as a ``[z, y, x]`` numpy array."""
        return flat_values.reshape(self.shape).cpu().numpy()
