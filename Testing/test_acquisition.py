"""The randomised CT acquisition of the synthetic phantoms (synthetic/acquisition.py) and the phantoms' physiology.

What must hold: the truth perfusion, lungs, lobes and SPECT do not depend on the acquisition (only the CT does);
every drawn parameter stays in its documented range and is written to meta.json; the noise and blur models do what
their docstrings say (noise standard deviation, noise power moving to higher frequencies with sharper kernels, the
kernel's MTF50, the slice profile's FWHM); the lobes have the proportions of supine CT and the truth gives the lower
lobes the larger perfusion shares.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from CTPerfusionMappingLib.synthetic import acquisition as AQ
from CTPerfusionMappingLib.synthetic.anatomy import LOBE_NAMES
from CTPerfusionMappingLib.synthetic.cohort import generate_case
from CTPerfusionMappingLib.synthetic.params import LOBE_VOLUME_SHARES, draw_case_params
from ImagingBasics.errors import UserError

SMALL_PIXEL_MM = 3.90625


def small_acquisition(**changes) -> AQ.AcquisitionParams:
    """An acquisition on the small phantoms' own grid with every effect switched on."""
    p = AQ.AcquisitionParams(kernel_sharpness=0.8, relative_dose=0.2, slice_thickness_mm=5.0, pixel_mm=SMALL_PIXEL_MM,
                             contrast_hu=200.0, hu_offset=15.0, lung_density_factor=1.3, breathing_mm=6.0,
                             downsampled_mm=None, apex_cut_mm=0.0, base_cut_mm=0.0, lateral_fov_fraction=1.05)
    return replace(p, **changes)


@pytest.fixture(scope="module")
def plain_case():
    return generate_case(11, "small", pathology_probabilities={"tumour": 1.0, "emphysema": 1.0})


def test_truth_lungs_lobes_and_spect_do_not_depend_on_the_acquisition(plain_case):
    acquired = generate_case(11, "small", pathology_probabilities={"tumour": 1.0, "emphysema": 1.0},
                             acquisition=small_acquisition())
    for key in ("truth", "lungs", "lobes", "pathology", "spect"):
        assert np.array_equal(getattr(acquired, key).array, getattr(plain_case, key).array), key
        assert getattr(acquired, key).same_geometry(getattr(plain_case, key)), key
    assert not np.array_equal(acquired.ct.array, plain_case.ct.array)
    assert acquired.meta["acquisition"]["enabled"] and not plain_case.meta["acquisition"]["enabled"]


def test_contrast_offset_and_noise_show_in_the_ct(plain_case):
    acquired = generate_case(11, "small", pathology_probabilities={"tumour": 1.0, "emphysema": 1.0},
                             acquisition=small_acquisition(breathing_mm=0.0))
    shift = acquired.ct.array.astype(float) - plain_case.ct.array
    body = plain_case.ct.array > -500
    enhanced = body & (shift > 120.0)  # blood: heart, great vessels, pulmonary arteries
    assert enhanced.sum() * acquired.ct.voxel_volume_ml > 300.0  # at least the heart's volume
    assert 190.0 < float(np.median(shift[enhanced])) < 240.0  # contrast 200 HU + offset 15 HU
    assert abs(float(np.median(shift[body & ~enhanced])) - 15.0) < 5.0  # elsewhere the calibration offset


def test_a_shallower_breath_makes_the_lungs_denser_and_nothing_else(plain_case):
    plain = small_acquisition(lung_density_factor=1.0, breathing_mm=0.0, contrast_hu=0.0, hu_offset=0.0)
    shallow = replace(plain, lung_density_factor=1.5)
    a = generate_case(11, "small", pathology_probabilities={"tumour": 1.0, "emphysema": 1.0}, acquisition=plain)
    b = generate_case(11, "small", pathology_probabilities={"tumour": 1.0, "emphysema": 1.0}, acquisition=shallow)
    lungs = plain_case.lungs.array > 0
    fraction = lambda case: float(np.median(case.ct.array[lungs].astype(float) + 1000.0))  # noqa: E731
    assert fraction(b) / fraction(a) == pytest.approx(1.5, rel=0.1)
    assert abs(float(np.median(b.ct.array[~lungs]) - np.median(a.ct.array[~lungs]))) < 1.0
    assert np.array_equal(a.truth.array, b.truth.array)


def test_a_cut_apex_keeps_the_truth_where_the_lungs_are_in_view(plain_case):
    acquired = generate_case(11, "small", pathology_probabilities={"tumour": 1.0, "emphysema": 1.0},
                             acquisition=small_acquisition(apex_cut_mm=30.0))
    nz = acquired.ct.shape[0]
    assert nz < plain_case.ct.shape[0]
    assert np.allclose(acquired.ct.origin, plain_case.ct.origin)
    lungs = plain_case.lungs.array[:nz] > 0
    scale = plain_case.truth.array[:nz][lungs].mean()  # the truth is relative: mean 1 over the lungs in view
    assert acquired.truth.array[lungs].mean() == pytest.approx(1.0, rel=1e-4)
    assert np.allclose(acquired.truth.array, plain_case.truth.array[:nz] / scale, rtol=1e-4, atol=1e-6)
    assert np.array_equal(acquired.lungs.array, plain_case.lungs.array[:nz])
    lung_top = np.flatnonzero(plain_case.lungs.array.any(axis=(1, 2))).max()
    assert lung_top >= nz  # the lungs reached above the cut field of view
    assert acquired.meta["lung_volume_ml"]["right"] < plain_case.meta["lung_volume_ml"]["right"]


def test_a_downsampled_ct_keeps_the_lobar_perfusion_shares(plain_case):
    acquired = generate_case(11, "small", pathology_probabilities={"tumour": 1.0, "emphysema": 1.0},
                             acquisition=small_acquisition(downsampled_mm=(6.0, 8.0)))
    assert acquired.ct.spacing[0] > 5.5 and acquired.ct.spacing[2] > 7.5
    for key in ("truth", "lungs", "lobes"):
        assert getattr(acquired, key).same_geometry(acquired.ct), key

    def shares(case):
        t, lobes = case.truth.array, case.lobes.array
        total = sum(float(t[lobes == k].sum()) for k in LOBE_NAMES)
        return np.array([float(t[lobes == k].sum()) / total for k in sorted(LOBE_NAMES)])

    assert np.abs(shares(acquired) - shares(plain_case)).max() < 0.02
    plain_ml = sum(plain_case.meta["lung_volume_ml"].values())
    assert abs(sum(acquired.meta["lung_volume_ml"].values()) - plain_ml) / plain_ml < 0.06


def test_drawn_parameters_stay_in_their_documented_ranges():
    draws = []
    for seed in range(400):
        body = draw_case_params(np.random.default_rng(seed), "full").anatomy.body_semi_lr_mm
        draws.append((AQ.draw_acquisition(AQ.acquisition_rng(seed), "full", body), body))
    for p, body in draws:
        assert 0.0 <= p.kernel_sharpness <= 1.0
        assert 0.1 <= p.relative_dose <= 1.0
        assert p.slice_thickness_mm in AQ.SLICE_THICKNESSES_MM
        assert p.contrast_hu == 0.0 or 100.0 <= p.contrast_hu <= 300.0
        assert -20.0 <= p.hu_offset <= 20.0
        assert p.breathing_mm == 0.0 or 2.0 <= p.breathing_mm <= 10.0
        assert p.apex_cut_mm == 0.0 or p.base_cut_mm == 0.0
        assert p.downsampled_mm is None or (3.0 <= p.downsampled_mm[0] <= 5.5 and 4.0 <= p.downsampled_mm[1] <= 7.0)
        assert 0.55 <= p.lung_density_factor <= 1.75
        if p.lateral_fov_fraction > 1.0:  # the field of view holds the whole body
            assert 0.6 <= p.pixel_mm <= 1.0 and p.pixel_mm * AQ.MATRIX >= 2.0 * body
        else:  # a partial field of view cuts the body's sides, not the lungs
            assert 0.88 <= p.lateral_fov_fraction <= 0.95
            assert p.pixel_mm * AQ.MATRIX < 2.0 * body
    share = {name: np.mean([bool(f(p)) for p, _ in draws]) for name, f in {
        "contrast": lambda p: p.contrast_hu, "breathing": lambda p: p.breathing_mm,
        "downsampled": lambda p: p.downsampled_mm, "cut": lambda p: p.apex_cut_mm or p.base_cut_mm}.items()}
    assert 0.22 < share["contrast"] < 0.38 and 0.13 < share["breathing"] < 0.27
    assert 0.10 < share["downsampled"] < 0.23 and 0.10 < share["cut"] < 0.23
    density = np.array([p.lung_density_factor for p, _ in draws])
    assert 0.13 < (density < 0.85).mean() < 0.27 and 0.13 < (density > 1.2).mean() < 0.27
    noise = [AQ.noise_sd_hu(p) for p, _ in draws]
    assert min(noise) < 25.0 and max(noise) > 150.0  # standard dose smooth kernel to low-dose sharp kernel


def test_the_acquisition_stream_is_its_own():
    a = AQ.draw_acquisition(AQ.acquisition_rng(5), "full", 180.0)
    b = AQ.draw_acquisition(AQ.acquisition_rng(5), "full", 180.0)
    c = AQ.draw_acquisition(AQ.acquisition_rng(6), "full", 180.0)
    assert a == b and a != c
    small = AQ.draw_acquisition(AQ.acquisition_rng(5), "small", 180.0)
    assert (small.pixel_mm, small.slice_thickness_mm, small.downsampled_mm) == (SMALL_PIXEL_MM, 5.0, None)


def _radial_mean_frequency(noise: np.ndarray, pixel_mm: float) -> float:
    power = (np.abs(np.fft.rfft2(noise)) ** 2).mean(axis=0)
    fy = np.fft.fftfreq(noise.shape[1], d=pixel_mm)[:, None]
    fx = np.fft.rfftfreq(noise.shape[2], d=pixel_mm)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    return float((power * f).sum() / power.sum())


def test_fbp_noise_has_its_standard_deviation_and_sharper_kernels_move_it_to_higher_frequencies():
    rng = np.random.default_rng(0)
    smooth = AQ.fbp_noise((6, 128, 128), 0.8, 0.0, 30.0, rng)
    sharp = AQ.fbp_noise((6, 128, 128), 0.8, 1.0, 30.0, rng)
    assert smooth.std() == pytest.approx(30.0, rel=1e-3) and sharp.std() == pytest.approx(30.0, rel=1e-3)
    f_smooth, f_sharp = _radial_mean_frequency(smooth, 0.8), _radial_mean_frequency(sharp, 0.8)
    assert f_sharp > 1.3 * f_smooth
    # ramp-shaped: almost no power at the lowest frequencies, unlike white noise
    white = rng.standard_normal((6, 128, 128))
    assert _radial_mean_frequency(smooth, 0.8) > 0.5 * _radial_mean_frequency(white, 0.8)
    # neighbouring slices are independent
    assert abs(np.corrcoef(smooth[0].ravel(), smooth[1].ravel())[0, 1]) < 0.05


@pytest.mark.parametrize("sharpness", [0.0, 0.5, 1.0])
def test_the_kernel_blur_has_the_kernels_mtf50(sharpness):
    pixel = 0.25  # fine enough that sampling does not shape the MTF
    line = np.zeros((1, 1, 512), np.float32)
    line[0, 0, 256] = 1.0
    image = np.repeat(line, 64, axis=1)  # a line source along y: its x profile is the line spread function
    lsf = AQ.kernel_blur(image, pixel, sharpness)[0, 32]
    mtf = np.abs(np.fft.rfft(lsf))
    mtf /= mtf[0]
    f = np.fft.rfftfreq(lsf.size, d=pixel)
    mtf50 = float(np.interp(0.5, mtf[::-1], f[::-1]))
    assert mtf50 == pytest.approx(AQ.kernel_mtf50(sharpness), rel=0.02)


def test_the_slice_profile_has_the_nominal_thickness():
    spacing = 0.5
    slab = np.zeros((200, 4, 4), np.float32)
    slab[100] = 1.0  # a thin sheet: its z profile after blurring is the slice sensitivity profile
    profile = AQ.slice_profile_blur(slab, spacing, 5.0)[:, 2, 2]
    above = np.flatnonzero(profile >= profile.max() / 2)
    fwhm = (above[-1] - above[0] + 1) * spacing
    assert fwhm == pytest.approx(5.0, abs=2 * spacing)
    assert profile.sum() == pytest.approx(1.0, rel=1e-3)


def test_breathing_blurs_the_bases_and_spares_the_apex():
    z = np.arange(0.0, 200.0, 2.0)
    stripes = 100.0 * np.sin(2.0 * np.pi * z / 8.0)  # a period as long as the excursion: averaged away at the bases
    hu = np.repeat(np.repeat(stripes[:, None, None], 3, axis=1), 3, axis=2).astype(np.float32)
    out = AQ.breathing_blur(hu, z, 200.0, 8.0, 2.0)
    contrast_base = out[:10].max() - out[:10].min()  # z 0-18 mm: weight 0.91-1
    contrast_apex = out[-10:].max() - out[-10:].min()
    assert contrast_apex > 180.0 and contrast_base < 40.0


def test_an_unknown_acquisition_is_refused():
    with pytest.raises(UserError, match="unknown acquisition"):
        generate_case(1, "small", acquisition="scanner9")


def test_phantom_command_writes_the_acquisition_and_can_switch_it_off(tmp_path):
    from CTPerfusionMappingLib.cli import main as ctpm

    assert ctpm(["phantom", "--out", str(tmp_path / "on"), "--n", "1", "--seed", "4", "--quiet", "--workers", "1"]) == 0
    assert ctpm(["phantom", "--out", str(tmp_path / "off"), "--n", "1", "--seed", "4", "--quiet", "--workers", "1",
                 "--acquisition", "none"]) == 0
    on = json.loads((tmp_path / "on" / "case000" / "meta.json").read_text())["acquisition"]
    off = json.loads((tmp_path / "off" / "case000" / "meta.json").read_text())["acquisition"]
    assert off == {"enabled": False}
    assert on["enabled"] and {"kernel_sharpness", "relative_dose", "noise_hu", "mtf50_lp_mm", "contrast_hu",
                              "hu_offset", "breathing_mm", "slice_thickness_mm", "pixel_mm"} <= set(on)


# --- the phantoms' physiology ---------------------------------------------------------------------------------------
def _lobe_shares(seeds, size="small"):
    from CTPerfusionMappingLib.synthetic import anatomy as A
    from CTPerfusionMappingLib.synthetic import perfusion as PF
    from CTPerfusionMappingLib.synthetic.grid import axis_coordinates, ct_grid, model_grid

    volume, perfusion = [], []
    for seed in seeds:
        p = draw_case_params(np.random.default_rng(seed), size)
        thorax = A.Thorax(p.anatomy)
        xs, ys, zs = axis_coordinates(model_grid(ct_grid(size, 5.0, p.anatomy.lung_height_mm)))
        lobes = A.evaluate_on_grid(thorax, xs, ys, zs)["lobes"]
        z, y, _ = np.meshgrid(zs, ys, xs, indexing="ij")
        w = (PF.gravity_factor(y, thorax.cavity_ap, p.perfusion.gravity_gain)
             * PF.basal_factor(z, p.anatomy.lung_height_mm, p.perfusion.basal_gain))
        v = np.array([(lobes == k).sum() for k in sorted(LOBE_NAMES)], float)
        f = np.array([w[lobes == k].sum() for k in sorted(LOBE_NAMES)])
        volume.append(v / v.sum())
        perfusion.append(f / f.sum())
    return np.array(volume), np.array(perfusion)


def test_lobes_have_the_proportions_of_supine_ct_and_the_lower_lobes_the_larger_perfusion():
    volume, perfusion = _lobe_shares(range(10))
    names = [LOBE_NAMES[k] for k in sorted(LOBE_NAMES)]
    for i, name in enumerate(names):
        mean, sd = LOBE_VOLUME_SHARES[name]
        assert abs(volume[:, i].mean() - mean) < sd, name  # cohort mean within one published SD of the mean
    rul, rml, rll, lul, lll = perfusion.mean(axis=0)
    assert rll > rul and lll > lul  # supine MAA: the lower lobes carry the largest shares
    right = perfusion[:, :3].sum(axis=1)
    assert 0.48 < right.mean() < 0.57 and math.isclose(perfusion.sum(axis=1).mean(), 1.0)


def test_the_truth_gives_the_right_lung_its_drawn_share_of_healthy_perfusion():
    none = {"emphysema": 0.0, "tumour": 0.0, "embolism": 0.0, "opacities": 0.0}
    for seed in (1000, 1003):
        case = generate_case(seed, "small", pathology_probabilities=none)
        truth, lungs = case.truth.array, case.lungs.array
        share = float(truth[lungs == 1].sum() / truth[lungs > 0].sum())
        drawn = case.meta["params"]["perfusion"]["right_share"]
        assert 0.46 <= drawn <= 0.59 and share == pytest.approx(drawn, abs=0.01)
