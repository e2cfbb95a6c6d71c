"""HU -> density (Li 2020's calibration or a scanner's own) and HU -> material class with ICRU-44 compositions."""

import numpy as np
import pytest

from DoseCNNLib.physics.materials import (
    AIR_DENSITY_G_CM3,
    MATERIALS,
    DensityCalibration,
    density_from_hu_li2020,
    material_index,
)
from ImagingBasics.errors import UserError


def test_density_follows_the_papers_bilinear_calibration():
    rho = density_from_hu_li2020(np.array([-1000.0, -500.0, 0.0, 1.0, 100.0, 1000.0]))
    np.testing.assert_allclose(rho, [AIR_DENSITY_G_CM3, 0.48351, 1.02351, 1.03176, 1.10007, 1.72107], rtol=1e-5)
    assert rho.dtype == np.float32


def test_a_scanner_calibration_interpolates_and_extrapolates(tmp_path):
    cal = DensityCalibration((-1000.0, 0.0, 1000.0), (0.001, 1.0, 1.6))
    np.testing.assert_allclose(cal(np.array([-500.0, 500.0, 2000.0, -1100.0])),
                               [0.5005, 1.3, 2.2, AIR_DENSITY_G_CM3], rtol=1e-5)
    (tmp_path / "cal.csv").write_text("hu,density\n1000,1.6\n-1000,0.001\n0,1.0\n")
    assert DensityCalibration.from_csv(tmp_path / "cal.csv") == cal
    (tmp_path / "bad.csv").write_text("HU,rho\n0,1\n")
    with pytest.raises(UserError, match="columns 'hu' and 'density'"):
        DensityCalibration.from_csv(tmp_path / "bad.csv")
    with pytest.raises(UserError, match="increase strictly"):
        DensityCalibration((0.0, 0.0), (1.0, 1.1))
    with pytest.raises(UserError, match="not found"):
        DensityCalibration.from_csv(tmp_path / "none.csv")


def test_material_classes_and_compositions():
    idx = material_index(np.array([-1000, -951, -950, -201, -200, -51, -50, 149, 150, 1500]))
    names = [MATERIALS[i].name for i in idx]
    assert names == ["air", "air", "lung", "lung", "adipose", "adipose", "soft tissue", "soft tissue", "cortical bone",
                     "cortical bone"]
    for m in MATERIALS:
        assert sum(m.composition.values()) == pytest.approx(1.0, abs=0.002), m.name
    with pytest.raises(UserError, match="NaN"):
        material_index(np.array([0.0, np.nan]))


def test_real_lu177_patient_ct_has_lung_soft_tissue_and_bone(shared_data):
    from ImagingBasics.imageio import read_volume

    ct = read_volume(shared_data / "real" / "lu177_dotatate_patient15" / "patient15_LuDOTATATE_attn.h33")
    hu = ct.array.astype(np.float64) - 1000.0  # stored as HU + 1000
    counts = np.bincount(material_index(hu).ravel(), minlength=len(MATERIALS))
    share = counts / counts.sum()
    assert share[1] > 0.01 and share[3] > 0.2 and share[4] > 0.005  # lung, soft tissue, bone all present
    rho = density_from_hu_li2020(hu)
    assert 0.9 < np.median(rho[material_index(hu) == 3]) < 1.2


def test_density_calibration_is_the_same_for_numpy_and_torch():
    import torch

    hu = np.array([-1000.0, -500.0, -1.0, 0.0, 1.0, 100.0, 1000.0])
    np.testing.assert_allclose(density_from_hu_li2020(torch.tensor(hu)).numpy(), density_from_hu_li2020(hu), rtol=1e-6)
