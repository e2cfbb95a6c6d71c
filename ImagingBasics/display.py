"""Slices of a volume as a radiologist looks at them, whatever the order in which the file stores its voxels.

A file may store its voxels in any patient orientation (LPS for most DICOM series, RAS for many NIfTI files, LAI
for GATE's Interfile CTs, feet first or head first). Figures must not depend on it: :func:`radiological_view`
reorders and flips the array (no resampling) so that the index grows towards the patient's left (x), back (y)
and head (z), and the slice functions then show

- axial slices seen from the feet: patient's right on the viewer's left, anterior at the top;
- coronal slices seen from the front: patient's right on the viewer's left, head at the top;
- sagittal slices seen from the patient's left: anterior on the viewer's left, head at the top.

This is the radiological convention of DICOM viewers and of 3D Slicer's default slice views.
:func:`label_orientation` writes the patient directions (R/L, A/P, S/I) at the edges of a panel.

An oblique direction matrix is shown along the nearest patient axes (:func:`~.volume.orientation_code`); the
figure is then approximate, which is what a viewer without resampling shows too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from .volume import Volume, orientation_code

#: index letters of the radiological view array (axis 0, 1, 2 of an (z, y, x) array grow to S, P, L)
_VIEW_CODE = "LPS"
#: letters at the (left, right, top, bottom) edges of each view
EDGE_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}


@dataclass(frozen=True)
class RadiologicalView:
    """A volume's voxels reordered to (z to S, y to P, x to L) and the voxel size along those axes."""

    array: np.ndarray  # (z, y, x), a view on the original where possible
    spacing_xyz_mm: Tuple[float, float, float]

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.array.shape)

    def axial(self, k: int) -> np.ndarray:
        """Axial slice ``k`` (counted from the feet): rows anterior to posterior, columns right to left."""
        return self.array[k]

    def coronal(self, j: int) -> np.ndarray:
        """Coronal slice ``j`` (counted from the front): rows head to feet, columns right to left."""
        return self.array[::-1, j, :]

    def sagittal(self, i: int) -> np.ndarray:
        """Sagittal slice ``i`` (counted from the right): rows head to feet, columns anterior to posterior."""
        return self.array[::-1, :, i]

    def extent(self, view: str) -> List[float]:
        """``imshow`` extent in mm (left, right, bottom, top) so that pixels keep their true aspect ratio."""
        sx, sy, sz = self.spacing_xyz_mm
        nz, ny, nx = self.shape
        width, height = {"axial": (nx * sx, ny * sy), "coronal": (nx * sx, nz * sz), "sagittal": (ny * sy, nz * sz)}[view]
        return [0.0, width, height, 0.0]

    def cut(self, view: str, index: int) -> np.ndarray:
        """The slice of ``view`` ("axial", "coronal" or "sagittal") at ``index`` along that view's normal."""
        return {"axial": self.axial, "coronal": self.coronal, "sagittal": self.sagittal}[view](index)


def radiological_view(volume: Volume) -> RadiologicalView:
    """``volume``'s array reordered and flipped so that z grows to the head, y to the back and x to the patient's left.

    No voxel is resampled: only axes are swapped and reversed, following the volume's orientation code.
    """
    code = orientation_code(volume.direction)  # letter of array index (i, j, k)
    array = np.asarray(volume.array)
    spacing = list(volume.spacing)
    # array axes are (k, j, i); for each view axis (x, y, z) find the index axis along the same patient axis
    axes_ijk = []
    flips = []
    for wanted in _VIEW_CODE:  # L, P, S
        pair = {"L": "LR", "P": "PA", "S": "SI"}[wanted]
        index_axis = next(n for n, letter in enumerate(code) if letter in pair)
        axes_ijk.append(index_axis)
        flips.append(code[index_axis] != wanted)
    # the view array is (z, y, x): array axis of index axis n is 2 - n
    order = [2 - axes_ijk[2], 2 - axes_ijk[1], 2 - axes_ijk[0]]
    out = np.transpose(array, order)
    for view_axis, flip in zip((2, 1, 0), flips):  # flips are in x, y, z order
        if flip:
            out = np.flip(out, axis=view_axis)
    return RadiologicalView(out, (spacing[axes_ijk[0]], spacing[axes_ijk[1]], spacing[axes_ijk[2]]))


def centre_slices(mask_view: np.ndarray) -> Dict[str, int]:
    """Axial, coronal and sagittal slice indices through the middle of a mask given as a radiological view array
    (the array's centre where the mask is empty)."""
    if not mask_view.any():
        return {"axial": mask_view.shape[0] // 2, "coronal": mask_view.shape[1] // 2,
                "sagittal": mask_view.shape[2] // 2}
    middle = [int(np.round(np.nonzero(mask_view.any(axis=tuple(a for a in range(3) if a != axis)))[0].mean()))
              for axis in range(3)]
    return {"axial": middle[0], "coronal": middle[1], "sagittal": middle[2]}


def label_orientation(ax, view: str, color: str = "yellow", fontsize: float = 9) -> None:
    """Write the patient directions at the four edges of a panel drawn from :class:`RadiologicalView` slices."""
    import matplotlib.patheffects as effects

    left, right, top, bottom = EDGE_LETTERS[view]
    outline = [effects.withStroke(linewidth=2, foreground="black")]
    style = {"transform": ax.transAxes, "color": color, "fontsize": fontsize, "fontweight": "bold",
             "path_effects": outline}
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
