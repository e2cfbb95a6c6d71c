"""Tissue-specific voxel dose kernels (``--method vdk-tissue``): classes, kernels, dose rate against Monte Carlo."""

import json

import numpy as np
import pytest

from ImagingBasics.imageio import read_volume, write_volume
from ImagingBasics.volume import Volume

SPACING = (4.0, 4.0, 4.0)
DECAYS = 20_000


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """Lung, soft-tissue and bone kernels at 4 mm from the Monte Carlo engine (few decays), in a cache folder."""
    from DoseCNNLib.physics.tissue_kernels import tissue_kernels_for

    cache = tmp_path_factory.mktemp("kernels")
    return tissue_kernels_for(SPACING, cache_root=cache, decays=DECAYS), cache


def _box(hu: float, n: int = 21):
    ct = Volume(np.full((n, n, n), hu, np.int16), SPACING)
    activity = ct.with_array(np.zeros((n, n, n), np.float32))
    c = n // 2
    activity.array[c - 2:c + 3, c - 2:c + 3, c - 2:c + 3] = 1e6  # 125 MBq in a 2 cm cube
    return ct, activity


def test_kernel_classes_follow_the_monte_carlo_materials():
    from DoseCNNLib.physics.materials import MATERIALS, material_index
    from DoseCNNLib.physics.tissue_kernels import KERNEL_MEDIA, kernel_class

    hu = np.array([-1024, -951, -950, -800, -201, -200, -51, -50, 0, 149, 150, 900, 3000], float)
    names = [KERNEL_MEDIA[c].name if c >= 0 else "air" for c in kernel_class(hu)]
    assert names == ["air", "air", "lung", "lung", "lung", "soft tissue", "soft tissue", "soft tissue", "soft tissue",
                     "soft tissue", "bone", "bone", "bone"]
    materials = [MATERIALS[i].name for i in material_index(hu)]  # the engine's own classes at the same HU
    assert materials[4:6] == ["lung", "adipose"] and materials[9:11] == ["soft tissue", "cortical bone"]


def test_kernels_conserve_energy_and_are_cached(kernels):
    from DoseCNNLib.physics.tissue_kernels import tissue_kernels_for

    k, cache = kernels
    # electrons: rho x sum(S) is the energy per decay, the same in every medium (nothing escapes the kernel grids)
    energy = {n: k.electron_density(n) * float(k.electron[n].sum()) for n in k.electron}
    assert max(energy.values()) / min(energy.values()) < 1.02
    assert k.electron["lung"].shape[0] >= 9 and k.photon["lung"] is k.photon["soft tissue"]
    assert k.photon["bone"].sum() > 1.15 * k.photon["soft tissue"].sum()  # photoelectric absorption of bone
    folders = sorted(p.parent.name for p in cache.glob("*/kernel.json"))
    assert [f.split("_", 3)[-1] for f in folders] == ["20000", "bone-electron", "bone-photon", "lung-electron",
                                                      "soft-tissue-photon"]
    again = tissue_kernels_for(SPACING, cache_root=cache, decays=DECAYS)  # read back, not recomputed
    np.testing.assert_array_equal(again.electron["bone"], k.electron["bone"])


def test_equals_vdk_in_soft_tissue_and_is_linear(kernels):
    from DoseCNNLib.physics.tissue_kernels import tissue_vdk_dose_rate
    from DoseCNNLib.physics.vdk import vdk_dose_rate

    k, _ = kernels
    ct, activity = _box(13)  # 13 HU: 1.040 g/cm3 with Li 2020's calibration, the kernels' density
    tissue, _ = tissue_vdk_dose_rate(activity, ct, k)
    vdk, _ = vdk_dose_rate(activity, ct, k.electron["soft tissue"], k.photon["soft tissue"])
    np.testing.assert_allclose(tissue.array, vdk.array, rtol=1e-3, atol=1e-6 * vdk.array.max())
    double, _ = tissue_vdk_dose_rate(activity.with_array(2 * activity.array), ct, k)
    np.testing.assert_allclose(double.array, 2 * tissue.array, rtol=1e-5, atol=1e-9)


def test_agrees_with_monte_carlo_in_lung_where_density_scaling_does_not(kernels):
    from DoseCNNLib.physics.monte_carlo import run_mc
    from DoseCNNLib.physics.tissue_kernels import tissue_vdk_dose_rate
    from DoseCNNLib.physics.vdk import vdk_dose_rate

    k, _ = kernels
    ct, activity = _box(-800)  # lung, 0.16 g/cm3: the electrons' range (~1 cm) is half the source cube
    source = activity.array > 0
    mc = run_mc(activity, ct, n_decays=100_000, batches=4, seed=3).dose_rate_mgy_s.array[source].mean()
    tissue = tissue_vdk_dose_rate(activity, ct, k)[0].array[source].mean()
    vdk = vdk_dose_rate(activity, ct, k.electron["soft tissue"], k.photon["soft tissue"])[0].array[source].mean()
    assert abs(tissue / mc - 1) < 0.04
    assert vdk / mc > 1.10  # the soft-tissue kernel keeps the electrons' energy in the cube


def test_target_choice_of_electron_kernels_overdoses_lung_beside_active_tissue(kernels):
    """The measured alternative (electron kernel by the target's tissue) counts soft-tissue sources as lung."""
    from DoseCNNLib.physics.tissue_kernels import tissue_vdk_dose_rate

    k, _ = kernels
    ct = Volume(np.full((15, 15, 15), -800, np.int16), SPACING)
    ct.array[:, :, :7] = 40  # soft tissue on one side
    activity = ct.with_array(np.where(ct.array > 0, 1e6, 0.0).astype(np.float32))
    by_source = tissue_vdk_dose_rate(activity, ct, k)[0].array
    by_target = tissue_vdk_dose_rate(activity, ct, k, electrons_by="target")[0].array
    lung = ct.array < -500
    assert by_target[lung].sum() > 3 * by_source[lung].sum()
    np.testing.assert_allclose(by_source[~lung].sum(), by_target[~lung].sum(), rtol=1e-4)


def test_run_command_accepts_vdk_tissue(tmp_path, kernels, monkeypatch, capsys):
    from DoseCNNLib import options
    from DoseCNNLib.cli import main as dosecnn
    from DoseCNNLib.dosimetry.pipeline import METHODS

    assert "vdk-tissue" in METHODS and "vdk-tissue" in options.METHOD.choices
    k, _ = kernels
    monkeypatch.setattr("DoseCNNLib.physics.tissue_kernels.tissue_kernels_for", lambda *a, **kw: k)
    ct, _ = _box(40, 12)
    ct.array[:, :, :5] = -800
    ct.array[:, :2] = 700
    ct.array[0] = -1000
    spect = ct.with_array(np.zeros(ct.shape, np.float32))
    spect.array[4:8, 4:8, 3:9] = 10.0
    write_volume(ct, tmp_path / "ct.nrrd")
    write_volume(spect, tmp_path / "spect.nrrd")
    assert dosecnn(["run", "--spect", str(tmp_path / "spect.nrrd"), "--ct", str(tmp_path / "ct.nrrd"),
                    "--activity-mbq", "50", "--method", "vdk-tissue", "--out", str(tmp_path / "o")]) == 0
    dose = read_volume(tmp_path / "o" / "dose_rate.nrrd").array
    assert np.all(np.isfinite(dose)) and dose.max() > 0 and np.all(dose[0] == 0)  # air: no dose
    summary = json.loads((tmp_path / "o" / "run.json").read_text())
    assert summary["method"] == "vdk-tissue" and summary["kernel_classes"]["bone"] > 0
    capsys.readouterr()
