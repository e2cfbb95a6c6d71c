"""The Volume value type: validation, geometry helpers and immutability."""

from __future__ import annotations

import numpy as np
import pytest

from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume


def test_rejects_non_3d_bad_spacing_and_sheared_direction():
    with pytest.raises(UserError, match="3D"):
        Volume(np.zeros((4, 5)))
    with pytest.raises(UserError, match="positive"):
        Volume(np.zeros((2, 2, 2)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(UserError, match="finite"):
        Volume(np.zeros((2, 2, 2)), origin=(0.0, np.nan, 0.0))
    with pytest.raises(UserError, match="orthonormal"):
        Volume(np.zeros((2, 2, 2)), direction=np.diag([1.0, 2.0, 1.0]))


def test_index_and_physical_points_are_inverse():
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    v = Volume(np.zeros((3, 4, 5), np.int16), (0.5, 2.0, 3.0), (10.0, -5.0, 7.0), rot)
    ijk = np.array([[0, 0, 0], [4, 3, 2], [1.5, 0.25, 1.0]])
    lps = v.index_to_lps(ijk)
    np.testing.assert_allclose(lps[0], v.origin)
    np.testing.assert_allclose(lps[1], np.array(v.origin) + rot @ (np.array([4, 3, 2]) * np.array(v.spacing)))
    np.testing.assert_allclose(v.lps_to_index(lps), ijk, atol=1e-12)
    assert v.size == (5, 4, 3) and v.shape == (3, 4, 5)
    assert v.voxel_volume_ml == pytest.approx(0.5 * 2.0 * 3.0 / 1000.0)


def test_with_array_keeps_geometry_and_checks_shape():
    v = Volume(np.zeros((2, 3, 4)), (1, 2, 3), (4, 5, 6))
    w = v.with_array(np.ones((2, 3, 4), np.float32))
    assert w.same_geometry(v) and w.array.dtype == np.float32
    assert not v.array.any()  # the original is untouched
    with pytest.raises(UserError, match="does not match"):
        v.with_array(np.ones((3, 3, 4)))
    moved = Volume(v.array, v.spacing, (4.0, 5.0, 6.5))
    assert not moved.same_geometry(v)


def test_describe_is_one_line_with_geometry():
    v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), (0.977, 0.977, 2.5))
    text = v.describe()
    assert "\n" not in text and "4x3x2 voxels" in text and "0.977x0.977x2.5 mm" in text and "0..23" in text
