"""Photon interaction coefficients: NIST XCOM values for water, interpolation, material order, range checks."""

import numpy as np
import pytest

from DoseCNNLib.physics.materials import MATERIALS, Material
from DoseCNNLib.physics.photon_xs import build_photon_table, mass_attenuation_cm2_g, photon_table
from ImagingBasics.errors import UserError

WATER = {"H": 0.111894, "O": 0.888106}


@pytest.mark.parametrize("energy_kev, xcom_cm2_g", [(30, 0.3756), (100, 0.1707), (200, 0.1370), (500, 0.09687)])
def test_water_total_attenuation_matches_nist_xcom(energy_kev, xcom_cm2_g):
    """NIST XCOM, water, total attenuation with coherent scattering."""
    assert mass_attenuation_cm2_g(WATER, np.array([energy_kev / 1000]))[0] == pytest.approx(xcom_cm2_g, rel=0.01)


def test_table_interpolation_and_physics_ordering():
    table = photon_table()
    assert table.materials == tuple(m.name for m in MATERIALS)
    e = np.array([0.0113, 0.0652, 0.1130, 0.2084, 0.3213])  # off-grid energies, Lu-177's lines among them
    for i, m in enumerate(MATERIALS):
        direct = mass_attenuation_cm2_g(m.composition, e)
        np.testing.assert_allclose(table.total(i, e), direct, rtol=0.005)
    soft, bone = MATERIALS.index(next(m for m in MATERIALS if m.name == "soft tissue")), len(MATERIALS) - 1
    low = table.interpolate(bone, np.array([0.03]))[0]
    assert low[0] > low[1]  # bone at 30 keV: photoelectric above Compton (calcium, phosphorus)
    high = table.interpolate(soft, np.array([0.208]))[0]
    assert high[1] / high.sum() > 0.95  # soft tissue at 208 keV: Compton dominates
    assert table.total(bone, np.array([0.05]))[0] > 1.5 * table.total(soft, np.array([0.05]))[0]


def test_energies_outside_the_tables_are_refused():
    table = photon_table()
    with pytest.raises(UserError, match="1-800 keV"):
        table.total(0, np.array([0.9]))
    custom = build_photon_table((Material("water", float("inf"), WATER, 1.0),), n_energies=50)
    assert custom.mu_rho.shape == (1, 50, 3)
