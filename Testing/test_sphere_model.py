"""Absorbed fractions in spheres (issue 6, point 5): analytic photon bounds, the engine between them, and Lu-177 sphere
S values against the published table."""

import numpy as np
import pytest
import torch

from DoseCNNLib.physics.photon_transport import sample_klein_nishina
from DoseCNNLib.physics.sphere_model import (
    LU177_SOFT_TISSUE_SPHERES,
    SPHERE_DENSITY_G_CM3,
    compare_with_reference,
    escape_probability,
    klein_nishina_energy_transfer_fraction,
    mc_photon_absorbed_fraction,
    photon_absorbed_fraction_bounds,
)


def test_escape_probability_against_direct_sampling_of_path_lengths():
    rng = np.random.default_rng(0)
    n = 400_000
    r = rng.uniform(0, 1, (n, 3))
    r = r[(r ** 2).sum(1) <= 1][:100_000]  # uniform in the unit sphere
    d = rng.normal(size=r.shape)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b = (r * d).sum(1)
    s = -b + np.sqrt(b * b - (r * r).sum(1) + 1.0)  # distance to the surface along d
    for tau in (0.05, 0.5, 2.0, 8.0):
        assert float(escape_probability(tau)) == pytest.approx(np.exp(-tau * s).mean(), rel=5e-3)
    assert float(escape_probability(1e-6)) == pytest.approx(1 - 0.75e-6, abs=1e-9)
    assert float(escape_probability(500.0)) == pytest.approx(3 / (4 * 500.0), rel=2e-3)


def test_klein_nishina_energy_transfer_fraction_matches_textbook_values_and_the_sampler():
    # Attix, Introduction to Radiological Physics and Radiation Dosimetry (1986), fig. 7.6: 0.138 at 0.1 MeV, 0.440 at 1 MeV
    assert klein_nishina_energy_transfer_fraction(0.1) == pytest.approx(0.138, abs=0.002)
    assert klein_nishina_energy_transfer_fraction(1.0) == pytest.approx(0.440, abs=0.002)
    gen = torch.Generator().manual_seed(1)
    e = torch.full((200_000,), 0.208, dtype=torch.float64)
    scattered, _ = sample_klein_nishina(e, gen)
    sampled = float((1 - scattered / e).mean())
    assert sampled == pytest.approx(klein_nishina_energy_transfer_fraction(0.208), rel=0.01)


@pytest.mark.parametrize("energy_mev", [0.113, 0.208])
def test_monte_carlo_photon_absorbed_fractions_lie_between_the_bounds(energy_mev):
    fractions = []
    for radius in (2.0, 20.0, 100.0):
        lower, upper = photon_absorbed_fraction_bounds(energy_mev, radius)
        phi = mc_photon_absorbed_fraction(energy_mev, radius, n=200_000, voxels_per_radius=12, seed=3)
        assert lower * 0.98 < phi < upper
        fractions.append((phi, lower))
    small_phi, small_lower = fractions[0]
    assert small_phi == pytest.approx(small_lower, rel=0.15)  # a 2 mm sphere: single interactions dominate
    assert fractions[0][0] < fractions[1][0] < fractions[2][0]


@pytest.mark.parametrize("radius_mm", [1.0, 10.0, 60.0])
def test_lu177_sphere_absorbed_energy_agrees_with_the_published_s_values(radius_mm):
    c = compare_with_reference(radius_mm, n_decays=20_000, seed=5, voxels_per_radius=12)
    assert c["ratio"] == pytest.approx(1.0, abs=0.03)
    assert c["mass_g_voxelised"] == pytest.approx(c["mass_g_reference"], rel=0.03)


def test_reference_table_is_self_consistent():
    for radius, mass, _s in LU177_SOFT_TISSUE_SPHERES:
        assert mass == pytest.approx(4 / 3 * np.pi * (radius / 10) ** 3 * SPHERE_DENSITY_G_CM3, rel=0.015)
    s_values = [s for _, _, s in LU177_SOFT_TISSUE_SPHERES]
    assert all(a > b for a, b in zip(s_values, s_values[1:]))
