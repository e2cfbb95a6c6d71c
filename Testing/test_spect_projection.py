"""Projection-domain SPECT (issue 7, point 1): projector geometry, attenuation, collimator response, OSEM."""

import numpy as np
import pytest
import torch

from DoseCNNLib.phantoms.spect_projection import Projector, osem, simulate_projections_and_reconstruct, system_fwhm_mm
from DoseCNNLib.phantoms.spect_sim import SpectModel, simulate_spect

N, NZ, VOXEL = 48, 8, 4.8


def _disc(radius_px: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2.0
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius_px ** 2


def test_collimator_resolution_formula():
    assert system_fwhm_mm(0.0, 2.94, 40.64, 3.9) == pytest.approx(np.hypot(3.9, 2.94))
    assert system_fwhm_mm(100.0) == pytest.approx(10.9, abs=0.2)  # a medium-energy collimator at 10 cm
    assert system_fwhm_mm(200.0) > system_fwhm_mm(100.0)


def test_projection_keeps_counts_without_attenuation_and_attenuates_by_the_path_length():
    nz = 20  # room for the axial blur: counts blurred beyond the first and last slice are lost, as on a camera
    source = torch.zeros((nz, N, N))
    disc = torch.as_tensor(_disc(3.0))
    source[10][disc] = 1.0 / float(disc.sum())  # 1 MBq in a 29 mm disc at the centre
    free = Projector(np.zeros((nz, N, N), np.float32), VOXEL, views=16, orbit_radius_mm=200)
    # bilinear rotation keeps a compact source's total within 2 % at any angle (a one-voxel source: within ~7 %)
    assert free.forward(source, list(range(16))).sum(dim=(1, 2)).numpy() == pytest.approx(np.ones(16), rel=0.025)
    mu = np.zeros((nz, N, N), np.float32)
    mu[:, _disc(15.0)] = 0.015  # a water-like cylinder of 72 mm radius
    attenuated = Projector(mu, VOXEL, views=16, orbit_radius_mm=200).forward(source, list(range(16)))
    # exp(-mu x path to the cylinder's surface towards the detector), averaged over the source disc
    rng = np.random.default_rng(0)
    r, phi = 3.0 * VOXEL * np.sqrt(rng.uniform(0, 1, 100_000)), rng.uniform(0, 2 * np.pi, 100_000)
    x, y = r * np.cos(phi), r * np.sin(phi)
    expected = np.exp(-0.015 * (np.sqrt((15.25 * VOXEL) ** 2 - x ** 2) + y)).mean()
    assert attenuated.sum(dim=(1, 2)).numpy() == pytest.approx(np.full(16, expected), rel=0.06)


def test_the_point_spread_widens_with_the_distance_from_the_detector():
    nz = 20
    proj = Projector(np.zeros((nz, N, N), np.float32), VOXEL, views=4, orbit_radius_mm=200)
    source = torch.zeros((nz, N, N))
    source[10, 24, 24] = 1.0  # one voxel; view 0 sees it at 200 mm (+ half a voxel), view 2 from the other side
    p = proj.forward(source, [0, 2])
    near, far = (p[v].sum(dim=0).numpy() for v in (0, 1))  # summed over z: the in-plane line spread
    assert near.sum() == pytest.approx(far.sum(), rel=1e-3)

    def fwhm_px(profile):
        x = np.arange(len(profile))
        mean = (profile * x).sum() / profile.sum()
        return np.sqrt((profile * (x - mean) ** 2).sum() / profile.sum()) * 2.3548

    assert fwhm_px(near) * VOXEL == pytest.approx(system_fwhm_mm(200.0), rel=0.15)
    assert fwhm_px(far) == pytest.approx(fwhm_px(near), rel=0.15)  # the same depth from the opposite head
    off = torch.zeros((nz, N, N))
    off[10, 5, 24] = 1.0  # near row 0: close to the detector of view 0
    q = proj.forward(off, [0, 2])
    assert fwhm_px(q[0].sum(dim=0).numpy()) < fwhm_px(q[1].sum(dim=0).numpy())


def test_back_projection_is_the_adjoint_of_the_projection():
    mu = np.zeros((NZ, N, N), np.float32)
    mu[:, _disc(18.0)] = 0.014
    proj = Projector(mu, VOXEL, views=12, orbit_radius_mm=200)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((NZ, N, N), generator=gen) * torch.as_tensor(_disc(20.0), dtype=torch.float32)
    y = torch.rand((12, NZ, N), generator=gen)
    views = list(range(12))
    lhs = float((proj.forward(x, views) * y).sum())
    rhs = float((x * proj.back(y, views)).sum())
    assert lhs == pytest.approx(rhs, rel=0.02)


def test_osem_recovers_totals_and_improves_a_hot_sphere_with_iterations():
    mu = np.zeros((NZ, N, N), np.float32)
    body = _disc(18.0)
    mu[:, body] = 0.014
    hot = _disc(2.5, cx=6.0)
    activity = np.zeros((NZ, N, N), np.float32)
    activity[:, body] = 2e6
    activity[3:6][:, hot] = 2e7
    proj = Projector(mu, VOXEL, views=32, orbit_radius_mm=200, counts_per_mbq_view=500.0)
    truth = torch.as_tensor(activity / 1e6)
    expected = proj.forward(truth, list(range(32)))
    recovery = []
    for iterations in (2, 12):
        image = osem(expected, proj, iterations=iterations, subsets=4).numpy()
        assert image.sum() == pytest.approx(truth.sum().item(), rel=0.03)
        recovery.append(image[4][hot].mean() / 20.0)
    away = _disc(14.0) & ~_disc(10.0, cx=6.0)  # the background, away from the hot sphere's spill-over and the edge
    assert image[2:6][:, away].mean() == pytest.approx(2.0, rel=0.05)
    assert 0.3 < recovery[0] < recovery[1] < 1.05


def test_noisy_reconstruction_is_calibrated_in_counts():
    mu = np.zeros((NZ, N, N), np.float32)
    body = _disc(18.0)
    mu[:, body] = 0.014
    activity = np.where(body, 5e6, 0.0)[None].repeat(NZ, 0).astype(np.float32)
    counts, info = simulate_projections_and_reconstruct(activity, mu, VOXEL, 32, 1200.0, 16.0,
                                                        np.random.default_rng(2), iterations=4, subsets=4,
                                                        orbit_radius_mm=200)
    assert counts.sum() == pytest.approx(activity.sum() / 1e6 * 16.0 * 1200.0, rel=0.03)  # attenuation corrected
    assert info["projection_counts"] < 0.8 * counts.sum()  # the projections themselves are attenuated
    assert info["projection_counts"] == pytest.approx(info["expected_projection_counts"], rel=0.01)


def test_spect_model_chooses_osem_and_needs_the_ct():
    from ImagingBasics.volume import Volume

    hu = np.full((10, 40, 40), -1000, np.int16)
    yy, xx = np.mgrid[:40, :40] - 19.5
    hu[:, xx ** 2 + yy ** 2 <= 15 ** 2] = 20
    ct = Volume(hu, (4.0, 4.0, 6.0))
    activity = ct.with_array(np.where(hu > -500, 1e5, 0.0).astype(np.float32))
    model = SpectModel(reconstruction="osem", matrix=40, views=16, iterations=2, subsets=2)
    spect, info = simulate_spect(activity, model, np.random.default_rng(0), ct=ct)
    assert spect.array.shape[1:] == (40, 40) and spect.spacing == (4.8, 4.8, 4.8)
    assert spect.array.sum() == pytest.approx(activity.array.sum() / model.bq_per_count, rel=0.1)
    assert info["reconstruction"] == "osem" and info["projection_counts"] > 0
    with pytest.raises(ValueError, match="needs the CT"):
        simulate_spect(activity, model, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown SPECT reconstruction"):
        SpectModel(reconstruction="fbp")
