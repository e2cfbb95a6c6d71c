"""Figures show every file in the radiological convention, whatever orientation the file stores (ImagingBasics.display)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ImagingBasics.display import EDGE_LETTERS, label_orientation, radiological_view
from ImagingBasics.volume import Volume, direction_from_code

CODES = ["".join(letters) for axes in itertools.permutations(("LR", "PA", "SI"))
         for letters in itertools.product(*axes)]


def _canonical(shape_zyx=(5, 6, 7)) -> np.ndarray:
    """A volume in LPS index order whose every voxel value names its own (x, y, z) position."""
    z, y, x = np.indices(shape_zyx)
    return (100 * z + 10 * y + x).astype(np.float32)


def _stored_as(canonical: np.ndarray, code: str, spacing_lps=(1.0, 2.0, 3.0)) -> Volume:
    """The same patient stored with index axes along ``code``: each stored voxel takes the canonical voxel at its
    LPS position (found through Volume.index_to_lps, independently of the code under test)."""
    direction = direction_from_code(code)
    nz, ny, nx = canonical.shape
    size_lps = np.array([nx, ny, nz])
    sizes = np.abs(direction.T) @ size_lps  # stored (ni, nj, nk)
    spacing = tuple(float(s) for s in np.abs(direction.T) @ np.array(spacing_lps))
    # origin: the stored index 0 lies at the canonical corner where every stored axis starts
    start = np.where((direction @ np.ones(3)) < 0, (size_lps - 1) * np.array(spacing_lps), 0.0)
    shape = (int(sizes[2]), int(sizes[1]), int(sizes[0]))
    stored = Volume(np.zeros(shape, np.float32), spacing, tuple(start), direction)
    k, j, i = np.indices(shape)
    lps = stored.index_to_lps(np.stack([i, j, k], axis=-1).astype(float))
    cx, cy, cz = (np.rint(lps[..., a] / spacing_lps[a]).astype(int) for a in range(3))
    stored.array[...] = canonical[cz, cy, cx]
    return stored


@pytest.mark.parametrize("code", CODES)
def test_every_orientation_is_shown_the_same(code):
    canonical = _canonical()
    view = radiological_view(_stored_as(canonical, code))
    assert np.array_equal(view.array, canonical)
    assert view.spacing_xyz_mm == (1.0, 2.0, 3.0)


def test_slices_follow_the_radiological_convention():
    canonical = _canonical()
    view = radiological_view(_stored_as(canonical, "RAI"))
    axial = view.axial(2)
    assert axial[0, 0] == 100 * 2 + 0 + 0  # top-left: anterior (y = 0) and the patient's right (x = 0)
    assert axial[-1, -1] == 200 + 10 * 5 + 6  # bottom-right: posterior, patient's left
    coronal = view.coronal(3)
    assert coronal[0, 0] == 100 * 4 + 30  # top-left: head (highest z), patient's right
    sagittal = view.sagittal(1)
    assert sagittal[0, 0] == 100 * 4 + 0 + 1 and sagittal[0, -1] == 400 + 50 + 1  # anterior left, posterior right
    assert view.extent("axial") == [0.0, 7.0, 12.0, 0.0]
    assert view.extent("coronal") == [0.0, 7.0, 15.0, 0.0]


def test_labels_are_written_at_the_edges():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    label_orientation(ax, "coronal")
    assert sorted(t.get_text() for t in ax.texts) == sorted(EDGE_LETTERS["coronal"])
    left = min(ax.texts, key=lambda t: t.get_position()[0])
    assert left.get_text() == "R"
    plt.close(fig)
