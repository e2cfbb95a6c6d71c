"""ICRP-107 decay data: Lu-177's published energies per decay, beta sampling, other nuclides, names."""

import numpy as np
import pytest

from DoseCNNLib.physics.decay import load_decay_data, normalise_nuclide_name
from ImagingBasics.errors import UserError


def test_lu177_energies_per_decay_are_icrp107s():
    lu = load_decay_data("Lu-177")
    assert lu.half_life_s / 86400 == pytest.approx(6.647)
    assert lu.electron_energy_per_decay_mev == pytest.approx(0.1479, abs=0.0005)  # 0.1333 + 0.0135 + 0.0011
    assert lu.beta_minus_mean_energy_per_decay_mev == pytest.approx(0.1333, abs=0.0002)
    assert lu.internal_conversion.energy_per_decay_mev == pytest.approx(0.0135, abs=0.0001)
    assert lu.auger.energy_per_decay_mev == pytest.approx(0.0011, abs=0.0001)
    assert lu.gamma.energy_per_decay_mev == pytest.approx(0.0316, abs=0.0001)
    assert lu.xray.energy_per_decay_mev == pytest.approx(0.0035, abs=0.0001)
    yields = dict(zip(np.round(lu.gamma.energies_mev * 1000, 1), lu.gamma.yields_per_decay))
    assert yields[208.4] == pytest.approx(0.110, abs=0.002) and yields[113.0] == pytest.approx(0.064, abs=0.001)
    assert lu.decay_constant_per_s == pytest.approx(np.log(2) / (6.647 * 86400))


def test_the_beta_spectrum_agrees_with_the_branch_table_and_samples_it():
    lu = load_decay_data("Lu-177")
    spectrum = lu.beta_minus
    assert spectrum.yield_per_decay == pytest.approx(1.0, abs=0.005)
    assert spectrum.mean_energy_mev == pytest.approx(0.1333, rel=0.005)
    assert spectrum.energies_mev.max() == pytest.approx(0.498, abs=0.001)  # Lu-177's end point
    e = spectrum.sample(np.random.default_rng(1), 400_000)
    assert e.min() >= 0.0 and e.max() <= 0.4978
    assert e.mean() == pytest.approx(spectrum.mean_energy_mev, rel=0.003)
    counts, edges = np.histogram(e, bins=spectrum.energies_mev)  # each bin gets its share of the area
    expected = 0.5 * (spectrum.density_per_mev[1:] + spectrum.density_per_mev[:-1]) * np.diff(edges)
    expected = expected / expected.sum() * len(e)
    big = expected > 2000
    assert np.all(np.abs(counts[big] - expected[big]) < 5 * np.sqrt(expected[big]))
    again = spectrum.sample(np.random.default_rng(1), 400_000)
    assert np.array_equal(e, again)  # seeded


@pytest.mark.parametrize("name, half_life_s, electrons_mev", [
    ("Y-90", 64.1 * 3600, 0.9331), ("I-131", 8.0207 * 86400, 0.1917), ("Tc-99m", 6.015 * 3600, 0.0159)])
def test_other_nuclides_are_a_table_away(name, half_life_s, electrons_mev):
    d = load_decay_data(name)
    assert d.half_life_s == pytest.approx(half_life_s, rel=1e-3)
    assert d.electron_energy_per_decay_mev == pytest.approx(electrons_mev, rel=0.02)


def test_nuclide_names():
    assert [normalise_nuclide_name(n) for n in ("lu177", "177Lu", "Lu 177", "LU-177", "tc99m", "99mTc")] == \
        ["Lu-177", "Lu-177", "Lu-177", "Lu-177", "Tc-99m", "Tc-99m"]
    with pytest.raises(UserError, match="not a nuclide name"):
        normalise_nuclide_name("lutetium")
    with pytest.raises(UserError, match="Xx-999 is not in the ICRP-107"):
        load_decay_data("Xx-999")


def test_dosecnn_decay_prints_the_table_and_draws_it(tmp_path, capsys):
    import matplotlib.image as mpimg

    from DoseCNNLib.cli import main as dosecnn

    assert dosecnn(["decay", "--nuclide", "lu177", "--plot", str(tmp_path / "lu.png")]) == 0
    out = capsys.readouterr().out
    assert "Lu-177: half-life 6.647 d" in out and "electrons 0.1479 MeV/decay" in out
    assert "gamma   208.4 keV   11.00 %" in out
    image = mpimg.imread(tmp_path / "lu.png")
    assert image.shape[1] > 600 and image[..., :3].std() > 0.05
    assert dosecnn(["decay", "--nuclide", "Zz-1"]) == 2
    assert capsys.readouterr().err.startswith("error: Zz-1 is not in the ICRP-107")
