"""The voxelised patient as the transport codes see it: materials and densities on a grid, positions in mm.

A grid ``[z, y, x]`` of material indices and densities (g/cm3) with voxel spacing (sx, sy, sz) mm; positions are in
mm from the grid's corner (voxel (i, j, k) spans [i sx, (i+1) sx) ...). Photon and electron transport share it.

The lookups work on whole batches of particles at once (one tensor operation per quantity, never a loop over
particles): a particle's voxel (i, j, k) = floor(position / spacing), its flat index (k ny + j) nx + i into the
grid's memory, and the material and density stored there.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def transport_device(device):
    """The device the particle transport runs on: ``device``, but the CPU for Apple MPS, which has no float64 (the
    energy tallies are float64), with a warning."""
    import torch

    if torch.device(device).type != "mps":
        return device
    import warnings

    warnings.warn("Apple MPS has no float64, which the Monte Carlo tallies need: the transport runs on the CPU",
                  RuntimeWarning, stacklevel=3)
    return "cpu"


def grid_tensor(array, device):
    """A grid as a torch tensor on ``device`` without a copy when it already is one (or a CPU numpy array)."""
    import torch

    if isinstance(array, torch.Tensor):
        return array.to(device)
    return torch.as_tensor(np.ascontiguousarray(array), device=device)


class VoxelGrid:
    """Materials (kept uint8) and densities (kept in their own precision) on ``device`` (the CPU for Apple MPS:
    :func:`transport_device`); lookups cast what they gather, so a patient-size grid is never copied. ``dtype``: the
    floating type of the particles' positions.

    Positions and directions of a batch of particles are component-major, ``[3, n]`` (rows x, y, z), so that each
    operation on them runs along the particles."""

    def __init__(self, materials, density_g_cm3, spacing_mm: Sequence[float], device, dtype):
        import torch

        device = transport_device(device)
        self.materials = grid_tensor(materials, device)
        self.density = grid_tensor(density_g_cm3, device)
        self.shape = tuple(self.materials.shape)  # (nz, ny, nx)
        nz, ny, nx = self.shape
        self.size = nz * ny * nx
        self.dtype = dtype
        self.device = self.materials.device
        self.spacing = torch.as_tensor(spacing_mm, device=device, dtype=dtype).reshape(3, 1)  # (sx, sy, sz) mm
        self.extent = self.spacing * torch.tensor([[nx], [ny], [nz]], device=device, dtype=dtype)
        self._upper = torch.tensor([[nx - 1], [ny - 1], [nz - 1]], device=device)
        self._strides = torch.tensor([[1], [nx], [nx * ny]], device=device)  # flat index = i + nx j + nx ny k
        self._materials_flat = self.materials.reshape(-1)
        self._density_flat = self.density.reshape(-1)
        self._max_density = None

    @property
    def max_density(self) -> float:
        """The largest density (g/cm3) of the grid (computed once: a whole-grid scan)."""
        if self._max_density is None:
            self._max_density = float(self.density.max())
        return self._max_density

    def inside(self, positions):
        """True where positions ``[3, n]`` (x, y, z mm) lie in the grid."""
        return ((positions >= 0) & (positions < self.extent)).all(0)

    def voxel_coordinates(self, positions):
        """floor(position / spacing) of positions ``[3, n]``: the voxel (i, j, k) as whole numbers of the positions'
        floating type (shared by :meth:`flat_index` and the electrons' distance to the voxel faces)."""
        import torch

        return torch.floor(positions / self.spacing)

    def flat_index(self, positions, voxel_coordinates=None):
        """Flat voxel index (int64) ``[n]`` of positions ``[3, n]`` (a position outside the grid gets its nearest
        voxel's: a valid index, for lookups whose results are discarded); pass ``voxel_coordinates``
        (:meth:`voxel_coordinates` of the same positions) when already computed."""
        import torch

        ijk = self.voxel_coordinates(positions) if voxel_coordinates is None else voxel_coordinates
        return (torch.minimum(ijk.long().clamp_(min=0), self._upper) * self._strides).sum(0)

    def material_at(self, flat):
        """Material index (int64) of the voxels ``flat``."""
        return self._materials_flat.index_select(0, flat).long()

    def density_at(self, flat):
        """Density (g/cm3, the positions' type) of the voxels ``flat``."""
        return self._density_flat.index_select(0, flat).to(self.dtype)

    def to_numpy(self, flat_values) -> np.ndarray:
        """A flat per-voxel tensor as a ``[z, y, x]`` numpy array."""
        return flat_values.reshape(self.shape).cpu().numpy()


def indices(mask):
    """The positions (int64) where the boolean ``mask`` ``[n]`` is True, in order. (On the CPU numpy's
    ``flatnonzero`` does this several times faster than ``torch.nonzero``; the result shares its memory.)"""
    import torch

    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.nonzero().squeeze(1)


def select(index, *tensors):
    """The particles ``index`` (int64 ``[k]``) of each batch tensor (``[n]`` or component-major ``[c, n]``), in
    order: the compaction of a batch to the particles still tracked. (A ``[c, n]`` tensor is gathered row by row,
    which torch does several times faster than along its last dimension.)"""
    import torch

    out = []
    for t in tensors:
        if t.dim() == 1:
            out.append(t.index_select(0, index))
        else:
            rows = torch.empty((len(t), len(index)), dtype=t.dtype, device=t.device)
            for component, row in zip(t, rows):
                torch.index_select(component, 0, index, out=row)
            out.append(rows)
    return tuple(out)
