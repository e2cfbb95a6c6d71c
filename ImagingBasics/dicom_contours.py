"""Planar contours <-> binary masks on one slice, in pixel index coordinates (no DICOM here).

* :func:`mask_to_polygons`: the boundaries of a 2D mask as closed polygons, by marching squares at level 0.5
  (:func:`skimage.measure.find_contours`) on the mask padded with background, so that every polygon closes, also at
  the image border. On a binary image the level-0.5 line runs halfway between inside and outside pixel centres: a
  pixel centre lies inside the polygons exactly when the pixel is in the mask. Outer boundaries and the boundaries
  of holes come out as separate polygons; points on the straight line through their neighbours (within 1/100
  pixel) are dropped.
* :func:`polygons_to_mask`: a pixel is inside when its centre lies inside an odd number of the slice's polygons
  (the even-odd rule), by a scanline fill over all the slice's polygons at once: the crossings of the edges with
  each pixel row's centre line toggle the pixels right of them. A hole written as its own contour, or joined to the
  outer boundary by a zero-width "keyhole" cut, is thereby left out, whatever the contours' winding directions.

Coordinates are ``(row, column)`` = ``(y, x)`` continuous pixel indices (pixel centres at integers).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

#: collinear points are removed when they deviate less than this (pixels) from the line through their neighbours
SIMPLIFY_TOLERANCE_PX = 0.01


def mask_to_polygons(mask: np.ndarray) -> List[np.ndarray]:
    """The closed boundary polygons (each ``(n, 2)`` row/column, first point not repeated) of a 2D boolean mask."""
    from skimage.measure import find_contours

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a 2D mask is needed, got shape {mask.shape}")
    if not mask.any():
        return []
    rows, cols = np.nonzero(mask)
    r0, c0 = rows.min(), cols.min()
    crop = mask[r0: rows.max() + 1, c0: cols.max() + 1]
    polygons = []
    for contour in find_contours(np.pad(crop, 1).astype(np.float32), 0.5):
        if np.allclose(contour[0], contour[-1]):
            contour = contour[:-1]
        corners = _without_collinear_points(contour)
        if len(corners) >= 3:
            polygons.append(corners + np.array([r0 - 1.0, c0 - 1.0]))
    return polygons


def _without_collinear_points(points: np.ndarray) -> np.ndarray:
    """The closed polygon ``points`` without the points that lie on the straight line through their two neighbours
    (the same outline with fewer points: marching squares puts a point on every pixel edge it crosses)."""
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    a, b = points - before, after - points
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return points[np.abs(cross) > SIMPLIFY_TOLERANCE_PX * (np.hypot(a[:, 0], a[:, 1]) + np.hypot(b[:, 0], b[:, 1]))]


def polygons_to_mask(polygons: Sequence[np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
    """The 2D boolean mask of ``shape`` whose pixel centres are inside an odd number of ``polygons`` (row, column).

    A scanline fill over all polygons at once: on each pixel row, the crossings of the polygon edges with the row's
    centre line (an edge counts for the rows ``min(y) <= row < max(y)``, so a vertex on the line is counted once)
    toggle the pixels whose centres lie right of the crossing; a pixel is inside when toggled an odd number of times.
    """
    ny, nx = shape
    edges = [_edges(np.asarray(p, dtype=float)) for p in polygons if len(p) >= 3]
    if not edges:
        return np.zeros(shape, dtype=bool)
    y0, x0, y1, x1 = np.concatenate(edges, axis=1)
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.clip(np.ceil(low), 0, ny).astype(np.int64)
    stop = np.clip(np.ceil(high), 0, ny).astype(np.int64)
    counts = np.maximum(stop - first, 0)
    edge = np.repeat(np.arange(len(y0)), counts)
    row = first[edge] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    x_cross = x0[edge] + (row - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    start = np.clip(np.floor(x_cross).astype(np.int64) + 1, 0, nx)  # first pixel centre strictly right of it
    toggles = np.zeros((ny, nx + 1), dtype=np.int32)
    np.add.at(toggles, (row, start), 1)
    return (np.cumsum(toggles, axis=1)[:, :nx] % 2).astype(bool)


def _edges(points: np.ndarray) -> np.ndarray:
    """``(4, n)``: y0, x0, y1, x1 of the closed polygon's edges that are not horizontal."""
    following = np.roll(points, -1, axis=0)
    keep = points[:, 0] != following[:, 0]
    return np.stack([points[keep, 0], points[keep, 1], following[keep, 0], following[keep, 1]])
