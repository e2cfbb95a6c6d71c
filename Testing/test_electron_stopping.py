"""Electron stopping powers and CSDA ranges computed from ICRU 37's formulas, against NIST ESTAR for water."""

import numpy as np
import pytest

from DoseCNNLib.physics.electron_stopping import (
    collision_stopping_power,
    csda_range_g_cm2,
    electron_medium,
    electron_table,
    total_stopping_power,
)
from DoseCNNLib.physics.materials import MATERIALS

WATER = electron_medium({"H": 0.111894, "O": 0.888106}, 1.0)


def test_water_mean_excitation_energy_is_icru37s():
    assert WATER.mean_excitation_ev == pytest.approx(75.0, rel=0.02)
    assert WATER.z_over_a == pytest.approx(0.55508, rel=1e-3)


@pytest.mark.parametrize("t_mev, estar", [(0.01, 22.56), (0.05, 6.603), (0.1, 4.115), (0.5, 2.034), (1.0, 1.849)])
def test_water_collision_stopping_power_matches_estar(t_mev, estar):
    assert collision_stopping_power(np.array([t_mev]), WATER)[0] == pytest.approx(estar, rel=0.01)


@pytest.mark.parametrize("t_mev, estar", [(0.01, 2.515e-4), (0.1, 1.431e-2), (0.5, 0.1766), (1.0, 0.4367)])
def test_water_csda_range_matches_estar(t_mev, estar):
    assert csda_range_g_cm2(np.array([t_mev]), WATER)[0] == pytest.approx(estar, rel=0.02)


def test_material_table_orders_and_lu177_ranges():
    table = electron_table()
    soft = table.materials.index("soft tissue")
    bone = table.materials.index("cortical bone")
    i = np.searchsorted(table.energies_mev, 0.1)
    assert table.stopping_power[bone, i] < table.stopping_power[soft, i]  # lower Z/A, higher I
    assert np.all(np.diff(table.csda_range[soft]) > 0)  # ranges grow with energy
    soft_density = next(m for m in MATERIALS if m.name == "soft tissue").nominal_density_g_cm3
    end_point_mm = 10 * np.interp(0.498, table.energies_mev, table.csda_range[soft]) / soft_density
    mean_beta_mm = 10 * np.interp(0.1333, table.energies_mev, table.csda_range[soft]) / soft_density
    assert 1.5 < end_point_mm < 2.0 and 0.15 < mean_beta_mm < 0.3  # Lu-177: max ~1.7 mm, mean ~0.2 mm
    assert total_stopping_power(np.array([1.0]), WATER)[0] / collision_stopping_power(np.array([1.0]), WATER)[0] \
        == pytest.approx(1.007, abs=0.004)  # ESTAR: radiative 0.01293 of total 1.862 at 1 MeV
