"""VDK dose rate with density scaling (Li 2020): convolution, agreement with Monte Carlo in soft tissue, calibration."""

import numpy as np
import pytest
from scipy import signal

from DoseCNNLib.physics.kernel_library import bundled_kernel_pair
from DoseCNNLib.physics.kernels import voxel_s_values
from DoseCNNLib.physics.monte_carlo import run_mc
from DoseCNNLib.physics.vdk import activity_from_counts, fft_convolve_same, vdk_dose_rate
from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume


def test_fft_convolution_equals_direct_convolution():
    rng = np.random.default_rng(0)
    v = rng.uniform(0, 1, (9, 11, 13))
    k = rng.uniform(0, 1, (5, 3, 7))
    np.testing.assert_allclose(fft_convolve_same(v, k), signal.convolve(v, k, mode="same"), rtol=1e-4, atol=1e-5)


def test_vdk_agrees_with_monte_carlo_in_soft_tissue_and_zeroes_air():
    shape, spacing = (16, 16, 16), 2.0
    hu = np.zeros(shape, np.int16)
    hu[:, :, :2] = -1000  # an air layer
    ct = Volume(hu, (spacing,) * 3)
    activity = np.zeros(shape, np.float32)
    activity[5:11, 5:11, 5:11] = 1e6 / 216  # 1 MBq in a 12 mm cube
    act = ct.with_array(activity)
    k = voxel_s_values("Lu-177", (spacing,) * 3, size=7, n_decays=100_000, photon_size=31, seed=2)
    dose, parts = vdk_dose_rate(act, ct, k.electron, k.photon)
    mc = run_mc(act, ct, n_decays=200_000, batches=4, seed=3).dose_rate_mgy_s.array
    inside = (slice(6, 10),) * 3
    assert dose.array[inside].mean() == pytest.approx(mc[inside].mean(), rel=0.05)
    assert (dose.array[:, :, :2] == 0).all() and 0 < parts["photon_kernel_sum"] < parts["electron_kernel_sum"]
    assert dose.same_geometry(ct) and dose.array.min() >= 0


def test_density_scaling_is_004s_in_lung_and_bounded_in_gas_pockets():
    shape = (5, 5, 5)
    hu = np.zeros(shape, np.int16)
    hu[2, 2, 1] = -700  # lung, 0.267 g/cm3
    hu[2, 2, 3] = -949  # gas at the air cut: Li 2020's calibration gives (almost) zero density here
    ct = Volume(hu, (2.0, 2.0, 2.0))
    act = ct.with_array(np.ones(shape, np.float32))
    delta = np.ones((1, 1, 1), np.float32)  # each voxel keeps its own activity: dose = activity x 1.04 / rho
    dose = vdk_dose_rate(act, ct, delta, np.zeros((1, 1, 1), np.float32))[0].array / 1e-6
    assert dose[2, 2, 2] == pytest.approx(1.04 / 1.02351, rel=1e-4)
    assert dose[2, 2, 1] == pytest.approx(1.04 / (1.02351 - 0.756), rel=1e-3)
    assert dose[2, 2, 3] == pytest.approx(1.04 / 0.05, rel=1e-4)  # bounded, not 1.04 / 0.0012


def test_calibrations_and_resampling():
    ct = Volume(np.zeros((8, 8, 8), np.int16), (2.0, 2.0, 2.0))
    spect = Volume(np.zeros((4, 4, 4), np.float32), (4.0, 4.0, 4.0), (1.0, 1.0, 1.0))
    spect.array[1:3, 1:3, 1:3] = 100.0  # 800 counts
    by_total = activity_from_counts(spect, ct, total_activity_mbq=2.0)
    assert by_total.same_geometry(ct) and by_total.array.sum() == pytest.approx(2e6, rel=1e-6)
    by_factor = activity_from_counts(spect, ct, bq_per_count=10.0)
    assert by_factor.array.sum() == pytest.approx(8000.0, rel=1e-6)
    with pytest.raises(UserError, match="exactly one calibration"):
        activity_from_counts(spect, ct)
    with pytest.raises(UserError, match="on the CT grid"):
        vdk_dose_rate(spect, ct, np.ones((1, 1, 1)), np.ones((1, 1, 1)))


def test_the_bundled_kernel_pair_is_found_by_voxel_size():
    pair = bundled_kernel_pair((0.98, 0.98, 3.0))
    assert pair is not None and pair[0].shape == (9, 9, 9) and pair[1].shape == (99, 99, 99)
    assert pair[0][4, 4, 4] > 100 * pair[1][4, 4, 4]  # the self voxel is an electron matter
    assert bundled_kernel_pair((4.0, 4.0, 4.0)) is None


def test_combined_kernel_is_the_sum_with_centres_aligned():
    from DoseCNNLib.physics.vdk import combined_kernel

    e = np.zeros((3, 3, 3))
    e[1, 1, 1] = 5.0
    p = np.ones((7, 7, 7))
    c = combined_kernel(e, p)
    assert c.shape == (7, 7, 7) and c[3, 3, 3] == 6.0 and c.sum() == pytest.approx(e.sum() + p.sum())
