"""Tiny synthetic dose problems for the residual dose CNN tests (test_cnn_*.py): a CT, an activity map, small kernels.

The kernels are small Gaussians (not Monte Carlo voxel S values) so that no test computes real kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

from ImagingBasics.volume import Volume

SPACING = (4.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module: these networks are tiny, and two threads on a shared two-core machine
    can wait on each other for seconds."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_kernels(spacing=SPACING, electron_size: int = 3, photon_size: int = 5):
    """(electron, photon) kernels in mGy/(MBq s) for a voxel size (mm): normalised Gaussians holding Lu-177's
    electron energy (0.1479 MeV per decay, all absorbed: 0.0228 mGy/s per MBq in 1 mL) and a share of its photons'."""
    def gauss(n, sigma, total):
        r = np.arange(n) - n // 2
        g = np.exp(-(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) / (2 * sigma ** 2))
        return (g / g.sum() * total).astype(np.float32)

    voxel_ml = float(np.prod(spacing)) / 1000.0
    return gauss(electron_size, 0.5, 0.0228 / voxel_ml), gauss(photon_size, 1.5, 0.0015 / voxel_ml)


def tiny_ct_and_activity(seed: int = 0, shape=(16, 32, 32), spacing=SPACING):
    """A body ellipse (soft tissue, a lung-like region, a bone disk) in air, and Gaussian activity blobs (Bq/voxel)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    cy, cx = ny / 2 + rng.uniform(-1, 1), nx / 2 + rng.uniform(-1, 1)
    body = ((y - cy) / (0.38 * ny)) ** 2 + ((x - cx) / (0.42 * nx)) ** 2 < 1
    hu = np.where(body, 30.0, -1000.0)
    lung = ((y - cy + 0.1 * ny) / (0.15 * ny)) ** 2 + ((x - cx - 0.18 * nx) / (0.12 * nx)) ** 2 < 1
    hu[lung] = -800.0
    bone = ((y - cy - 0.22 * ny) ** 2 + (x - cx) ** 2) < (0.06 * nx) ** 2
    hu[bone] = 900.0
    activity = np.where(body, 2e3, 0.0)
    for _ in range(4):
        c = rng.uniform([0, cy - 0.25 * ny, cx - 0.3 * nx], [nz, cy + 0.25 * ny, cx + 0.3 * nx])
        s = rng.uniform(1.0, 2.5)
        activity += rng.uniform(2e4, 2e5) * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * s * s))
    activity[~body] = 0.0
    ct = Volume(hu.astype(np.int16), spacing, (-10.0, 20.0, 5.0))
    return ct, ct.with_array(activity.astype(np.float32))


def learnable_reference(activity: Volume, ct: Volume, vdk: Volume, strength: float = 0.4) -> Volume:
    """A stand-in for Monte Carlo: the VDK map plus a local term (the activity blurred in-plane, twice as strong in
    lung-like tissue), zero in air. The difference from VDK is a function of the network's inputs: it can be learned."""
    from scipy import ndimage

    from DoseCNNLib.physics.materials import density_from_hu_li2020

    voxel_ml = float(np.prod(ct.spacing)) / 1000.0
    blurred = ndimage.gaussian_filter(activity.array.astype(np.float64) / 1e6, (0.0, 1.0, 1.0)) * 0.0228 / voxel_ml
    extra = strength * blurred * np.where(density_from_hu_li2020(ct.array) < 0.5, 2.0, 1.0)
    ref = np.where(ct.array < -950, 0.0, vdk.array + extra)
    return ct.with_array(ref.astype(np.float32))
