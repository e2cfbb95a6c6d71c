"""Photon Monte Carlo: Klein-Nishina sampling, free paths, energy conservation, reproducibility."""

import numpy as np
import pytest
import torch

from DoseCNNLib.physics.materials import MATERIALS
from DoseCNNLib.physics.photon_transport import (
    absorb_below_cutoff,
    choose_interaction,
    is_real_collision,
    isotropic_directions,
    rotate_direction,
    sample_free_path_cm,
    sample_klein_nishina,
    sample_thomson_cosine,
    transport_photons,
    uniform_grid,
)
from DoseCNNLib.physics.photon_xs import photon_table

SOFT = [m.name for m in MATERIALS].index("soft tissue")
BONE = [m.name for m in MATERIALS].index("cortical bone")


def _kn_density(mu, alpha):
    p = 1.0 / (1.0 + alpha * (1.0 - mu))
    return p ** 2 * (p + 1.0 / p - 1.0 + mu ** 2)


@pytest.mark.parametrize("energy_mev", [0.0208, 0.2084])
def test_klein_nishina_sampling_follows_the_cross_section(energy_mev):
    gen = torch.Generator().manual_seed(4)
    e = torch.full((200_000,), energy_mev, dtype=torch.float64)
    e_new, mu = sample_klein_nishina(e, gen)
    alpha = energy_mev / 0.51099895
    np.testing.assert_allclose(e_new.numpy(), energy_mev / (1 + alpha * (1 - mu.numpy())), rtol=1e-12)  # kinematics
    edges = np.linspace(-1, 1, 21)
    fine = np.linspace(-1, 1, 20001)
    dens = _kn_density(fine, alpha)
    cdf = np.concatenate([[0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    expected = np.diff(np.interp(edges, fine, cdf)) / cdf[-1] * len(e)
    counts, _ = np.histogram(mu.numpy(), edges)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 45  # 19 degrees of freedom; p ~ 1e-3
    mean_transfer = 1 - float((e_new / e).mean())  # mean fraction given to the electron, vs the analytic integral
    analytic = np.sum(dens * (1 - 1 / (1 + alpha * (1 - fine)))) / np.sum(dens)
    assert mean_transfer == pytest.approx(analytic, rel=0.01)


def test_rotation_keeps_unit_vectors_and_the_scattering_angle():
    gen = torch.Generator().manual_seed(1)
    d = torch.tensor(isotropic_directions(1000, np.random.default_rng(2))).T.contiguous()  # [3, n]: u, v, w rows
    d[:, 0] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # the pole
    d[:, 1] = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    cos_t = torch.rand(1000, generator=gen, dtype=torch.float64) * 2 - 1
    new = rotate_direction(d, cos_t, gen)
    np.testing.assert_allclose(new.norm(dim=0).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose((new * d).sum(0).numpy(), cos_t.numpy(), atol=1e-9)


def test_first_collisions_are_exponential_with_the_tables_mu():
    table = photon_table()
    materials, density = uniform_grid((400, 4, 4), SOFT, 1.06)  # 400 x 1 mm deep along z
    n = 40_000
    pos = np.tile([2.0, 2.0, 0.0], (n, 1))
    direction = np.tile([0.0, 0.0, 1.0], (n, 1))
    first = []
    transport_photons(pos, direction, np.full(n, 0.2084), materials, density, (1.0, 1.0, 1.0), table, seed=3,
                      first_collision_mm=first)
    depth_cm = np.array(first)[:, 2] / 10.0
    mu = table.total(SOFT, np.array([0.2084]))[0] * 1.06
    assert len(first) > 0.99 * n  # nearly all interact within 40 cm
    assert depth_cm.mean() == pytest.approx(1 / mu, rel=0.02)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_energy_is_conserved_and_runs_are_reproducible(dtype):
    dtype = getattr(torch, dtype)
    table = photon_table()
    materials, density = uniform_grid((20, 20, 20), SOFT, 1.06)
    materials[:, :, 12:15], density[:, :, 12:15] = BONE, 1.92  # a bone slab
    rng = np.random.default_rng(5)
    n = 5000
    pos = np.tile([40.0, 40.0, 40.0], (n, 1)) + rng.uniform(-2, 2, (n, 3))
    energies = rng.choice([0.1130, 0.2084], n)
    args = (pos, isotropic_directions(n, rng), energies, materials, density, (4.0, 4.0, 4.0), table)
    result = transport_photons(*args, seed=9, dtype=dtype)
    assert result.deposit_mev.sum() + result.escaped_mev == pytest.approx(result.emitted_mev, rel=1e-12)
    assert 0.1 < result.deposit_mev.sum() / result.emitted_mev < 0.9  # an 8 cm cube keeps part of it
    again = transport_photons(*args, seed=9, dtype=dtype)
    assert np.array_equal(result.deposit_mev, again.deposit_mev)
    other = transport_photons(*args, seed=10, dtype=dtype)
    assert not np.array_equal(result.deposit_mev, other.deposit_mev)
    per_gram = result.deposit_mev / (density * 0.064)  # MeV/g; voxels of 0.064 cm3
    near_bone, near_soft = per_gram[:, 8:12, 12:15].mean(), per_gram[:, 8:12, 6:9].mean()
    assert near_bone > 0 and near_soft > 0


def test_woodcock_steps_free_path_and_real_collision_probability():
    gen = torch.Generator().manual_seed(6)
    majorant = torch.full((200_000,), 2.0, dtype=torch.float64)  # 1/cm
    path = sample_free_path_cm(majorant, gen)
    assert float(path.min()) >= 0 and float(path.mean()) == pytest.approx(0.5, rel=0.01)  # 1 / mu_max
    real = is_real_collision(torch.full_like(majorant, 0.5), majorant, gen)
    assert float(real.double().mean()) == pytest.approx(0.25, abs=0.005)  # mu / mu_max


def test_interaction_types_in_proportion_to_the_partial_coefficients():
    gen = torch.Generator().manual_seed(7)
    partial = torch.tensor([[0.02], [0.05], [0.03]], dtype=torch.float64).repeat(1, 200_000)  # cm2/g, [3, n]
    photo, compton, coherent = choose_interaction(partial, gen)
    assert bool((photo.int() + compton.int() + coherent.int() == 1).all())  # exactly one each
    fractions = [float(m.double().mean()) for m in (photo, compton, coherent)]
    np.testing.assert_allclose(fractions, [0.2, 0.5, 0.3], atol=0.005)
    kept, absorbed = absorb_below_cutoff(torch.tensor([0.0005, 0.001, 0.2], dtype=torch.float64), 0.001)
    assert absorbed.tolist() == [True, False, False] and kept.tolist() == [0.0, 0.001, 0.2]


def test_thomson_sampling_follows_the_distribution():
    gen = torch.Generator().manual_seed(3)
    mu = sample_thomson_cosine(200_000, gen, "cpu", torch.float64).numpy()
    edges = np.linspace(-1, 1, 21)
    expected = np.diff(0.5 * (edges + edges ** 3 / 3)) / (4 / 3) * len(mu)  # (1 + mu^2) / 2 normalised on [-1, 1]
    counts, _ = np.histogram(mu, edges)
    assert np.sum((counts - expected) ** 2 / expected) < 45  # 19 degrees of freedom; p ~ 1e-3


def test_small_batches_fly_through_many_virtual_collisions_to_the_right_free_path():
    """Lung (0.26 g/cm3) next to one bone voxel: the majorant is ~7 times lung's mu, so most tentative collisions are
    virtual, and batches below SMALL_BATCH photons fly several of them per round (woodcock_flight). The first real
    collision must still be exponential with lung's mu, in float32 and float64."""
    from DoseCNNLib.physics.photon_transport import SMALL_BATCH

    table = photon_table()
    lung = [m.name for m in MATERIALS].index("lung")
    materials, density = uniform_grid((400, 3, 3), lung, 0.26)  # 40 cm deep along z, 1 mm voxels
    materials[0, 0, 0], density[0, 0, 0] = BONE, 1.92
    mu = table.total(lung, np.array([0.1129]))[0] * 0.26  # 1/cm
    n = 400
    assert n * 8 <= SMALL_BATCH  # several tentative collisions per round
    for dtype in (torch.float64, torch.float32):
        depths = []
        for seed in range(25):
            first = []
            transport_photons(np.tile([1.5, 1.5, 0.0], (n, 1)), np.tile([0.0, 0.0, 1.0], (n, 1)), np.full(n, 0.1129),
                              materials, density, (1.0, 1.0, 1.0), table, seed=seed, first_collision_mm=first,
                              dtype=dtype)
            depths.extend(np.array(first)[:, 2] / 10.0)
        depths = np.array(depths)
        mean_free_path = 1 / mu  # ~24 cm; depths beyond the 40 cm grid are missing: compare the truncated mean
        truncated = mean_free_path - 40.0 * np.exp(-40.0 * mu) / (1 - np.exp(-40.0 * mu))
        assert len(depths) == pytest.approx(25 * n * (1 - np.exp(-40.0 * mu)), rel=0.03)
        assert depths.mean() == pytest.approx(truncated, rel=0.03)
