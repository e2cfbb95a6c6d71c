"""The Lu-177 torso phantom: anatomy, known kinetics, SPECT simulation, Monte Carlo truth by compartments, files."""

import json

import numpy as np
import pytest

from DoseCNNLib.cli import main as dosecnn
from DoseCNNLib.phantoms import kinetics as K
from DoseCNNLib.phantoms import torso as T
from DoseCNNLib.phantoms.case import generate_case, time_tag
from DoseCNNLib.phantoms.spect_sim import SpectModel, simulate_spect
from ImagingBasics.imageio import read_volume
from ImagingBasics.volume import Volume

COARSE = ((96, 80, 24), (4.0, 4.0, 8.0))  # 384 x 320 x 192 mm: the whole small field of view, coarse voxels


@pytest.fixture(scope="module")
def case():
    return generate_case(3, grid_override=COARSE, mc_decays=60_000, mc_batches=3)


def test_anatomy_has_every_organ_with_plausible_hu_and_volume(case):
    lab, hu = case.labels.array, case.ct.array.astype(float)
    ml = case.ct.voxel_volume_ml
    volumes = {name: (lab == v).sum() * ml for v, name in T.LABELS.items()}
    assert 900 < volumes["liver"] < 3000 and 80 < volumes["right kidney"] < 300 and 60 < volumes["spleen"] < 400
    assert volumes["lungs"] > 100 and volumes["bone"] > 100 and volumes["bowel"] > 50
    assert np.median(hu[lab == 6]) < -700 and 40 < np.median(hu[lab == 2]) < 80 and np.median(hu[lab == 0]) < -900
    assert np.percentile(hu[lab == 7], 90) > 500  # cortical bone
    assert (hu[lab == 8] < -800).any()  # bowel gas: a heterogeneity the density-scaled VDK mishandles
    lesions = [v for v in np.unique(lab) if v >= T.LESION_LABEL_START]
    assert len(lesions) == len(case.meta["torso"]["lesions"]) >= 2


def test_true_activity_follows_the_known_kinetics(case):
    meta, lab = case.meta, case.labels.array
    voxel_ml = case.ct.voxel_volume_ml
    liver = meta["kinetics"]["liver"]
    kin = K.CompartmentKinetics(liver["amplitudes_mbq_ml"], liver["half_lives_h"])
    for t, a in zip(case.times_h, case.activity_bq):
        measured = a.array[lab == 2].mean() / (voxel_ml * 1e6)  # MBq/mL
        assert measured == pytest.approx(float(kin.concentration(t)), rel=1e-5)
    total_tia = sum(c["tia_mbq_h"] for c in meta["kinetics"].values())
    assert case.tia_mbq_h.array.sum(dtype=np.float64) == pytest.approx(total_tia, rel=1e-4)
    # activity falls with time; the kidneys' cortex is hotter than the medulla
    totals = [a.array.sum(dtype=np.float64) for a in case.activity_bq]
    assert all(x > y for x, y in zip(totals, totals[1:]))
    k = meta["kinetics"]
    assert k["right kidney cortex"]["amplitudes_mbq_ml"][0] > k["right kidney medulla"]["amplitudes_mbq_ml"][0]


def test_kinetics_integral_is_analytic():
    kin = K.CompartmentKinetics([2.0, 1.0], [10.0, 50.0])
    t = np.linspace(0, 2000, 200001)
    numeric = float(np.sum(0.5 * (kin.concentration(t[1:]) + kin.concentration(t[:-1])) * np.diff(t)))
    assert kin.integral() == pytest.approx(numeric, rel=1e-4)
    m = K.mono(0.5, 50.0)
    assert float(m.concentration(24.0)) == pytest.approx(0.5)


def test_spect_keeps_counts_calibration_and_blurs():
    grid = T.centred_grid((64, 64, 32), (3.0, 3.0, 3.0))
    a = np.zeros(grid.shape, np.float32)
    a[16, 32, 32] = 500e6  # 500 MBq in one voxel
    model = SpectModel(noise_gain=1e-9, post_filter_voxels=0.0)  # no noise: the expected counts
    spect, info = simulate_spect(grid.with_array(a), model, np.random.default_rng(0))
    assert spect.spacing == (4.8, 4.8, 4.8) and spect.size[0] == 128
    assert spect.array.sum() * model.bq_per_count / 1e6 == pytest.approx(500.0, rel=0.02)  # calibration exact
    # the point spreads to the model's FWHM: fit the profile's second moment
    k, j, i = np.unravel_index(np.argmax(spect.array), spect.shape)
    profile = spect.array[k, j, :].astype(float)
    x = (np.arange(profile.size) - i) * 4.8
    sigma = np.sqrt((profile * x ** 2).sum() / profile.sum())
    assert 2.355 * sigma == pytest.approx(11.0, rel=0.2)
    noisy, _ = simulate_spect(grid.with_array(a), SpectModel(), np.random.default_rng(1))
    assert noisy.array.sum() == pytest.approx(spect.array.sum(), rel=0.05) and not np.allclose(noisy.array, spect.array)


def test_osem_spect_of_a_phantom_matches_the_gaussian_model_in_total_and_calibration():
    model = SpectModel(reconstruction="osem", matrix=80, views=32, iterations=4, subsets=4)
    osem_case = generate_case(3, grid_override=COARSE, times_h=(24.0,), mc_decays=0, spect_model=model)
    gauss_case = generate_case(3, grid_override=COARSE, times_h=(24.0,), mc_decays=0,
                               spect_model=SpectModel(matrix=80))
    o, g = osem_case.spect[0].array, gauss_case.spect[0].array
    assert o.shape == g.shape and np.isfinite(o).all() and o.min() >= 0
    assert o.sum() == pytest.approx(g.sum(), rel=0.05)  # both calibrated: counts = MBq x sensitivity x duration
    info = osem_case.meta["spect"][0]
    assert info["reconstruction"] == "osem" and info["projection_counts"] < 0.6 * info["counts"]  # attenuated


def test_monte_carlo_truth_is_linear_in_the_compartments(case):
    lab = case.labels.array
    ratio_t0 = case.activity_bq[0].array.sum(dtype=np.float64) / case.activity_bq[-1].array.sum(dtype=np.float64)
    d0, d3 = case.dose_rate_mgy_s[0].array, case.dose_rate_mgy_s[-1].array
    assert d0[lab == 2].mean() > d3[lab == 2].mean() > 0 and ratio_t0 > 1
    # the kidneys (cortex uptake) get more dose rate per activity than the lungs
    assert d0[lab == 3].mean() > 5 * d0[lab == 6].mean()
    # the absorbed dose (from the compartments' TIAs) equals the time integral of the dose rate: a mono-exponential
    # through the liver's mean dose rates, integrated analytically, agrees (the liver's own kinetics dominate)
    rates = np.array([d.array[lab == 2].mean() for d in case.dose_rate_mgy_s])
    slope, intercept = np.polyfit(np.asarray(case.times_h), np.log(rates), 1)
    integral_gy = np.exp(intercept) / -slope * 3600.0 / 1000.0
    assert case.absorbed_dose_gy.array[lab == 2].mean() == pytest.approx(integral_gy, rel=0.05)
    assert np.isfinite(case.dose_rate_sd_mgy_s[0].array).all()
    # liver dose rate within a factor of the local-deposition estimate (electrons absorbed locally, density ~1.05)
    liver_mbq_ml = case.activity_bq[1].array[lab == 2].mean() / (case.ct.voxel_volume_ml * 1e6)
    local = liver_mbq_ml * 1e6 * 0.1479 * 1.602e-13 / 1.05e-3 * 1e3  # mGy/s from electrons only
    assert case.dose_rate_mgy_s[1].array[lab == 2].mean() == pytest.approx(local, rel=0.25)


def test_phantom_command_writes_a_case_and_the_manifests(tmp_path, capsys, monkeypatch):
    import DoseCNNLib.phantoms.case as P

    monkeypatch.setitem(T.GRIDS, "small", COARSE)
    assert dosecnn(["phantom", "--out", str(tmp_path), "--n", "1", "--mc-decays", "30000", "--times", "24", "96",
                    "--preview", "--quiet"]) == 0
    folder = tmp_path / "case000"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["times_h"] == [24.0, 96.0] and (folder / "preview.png").is_file()
    for t in (24.0, 96.0):
        for stem in ("activity", "spect", "dose_rate_mc", "dose_rate_mc_sd"):
            assert (folder / f"{stem}_{time_tag(t)}.nrrd").is_file()
    ct = read_volume(folder / "ct.nrrd")
    assert isinstance(ct, Volume) and ct.array.dtype == np.int16
    rows = (tmp_path / "cohort.csv").read_text().splitlines()
    assert rows[0].startswith("id,case,time_h,ct,spect,reference") and len(rows) == 3
    assert (folder / "timepoints.csv").read_text().splitlines()[0] == "time_h,spect,ct,bq_per_count"
    assert (folder / "labels.csv").read_text().splitlines()[:3] == ["label,name", "1,body", "2,liver"]
    assert P.time_tag(4.0) == "t004h"
    assert dosecnn(["phantom", "--out", str(tmp_path / "x"), "--mc-decays", "10"]) == 2
    assert "--mc-decays" in capsys.readouterr().err


def test_phantom_resume_keeps_finished_cases_and_remakes_the_rest(tmp_path, monkeypatch):
    """A stopped cohort continues: whole cases of the same request are kept untouched, a damaged one and one a killed
    run was writing (its temporary folder removed) are made again, identical to an uninterrupted run."""
    import shutil

    import DoseCNNLib.phantoms.case as P

    monkeypatch.setitem(T.GRIDS, "small", COARSE)
    command = ["phantom", "--out", str(tmp_path), "--n", "2", "--mc-decays", "20000", "--times", "24", "--quiet"]
    assert dosecnn(command) == 0
    assert not list(tmp_path.glob(".*partial*"))  # written through a temporary folder, renamed when whole
    first = read_volume(tmp_path / "case001" / "dose_rate_mc_t024h.nrrd").array
    kept = (tmp_path / "case000" / "ct.nrrd").stat().st_mtime_ns
    (tmp_path / "case001" / "spect_t024h.nrrd").unlink()
    shutil.copytree(tmp_path / "case000", tmp_path / ".case001.partial-4242")  # what a killed run was writing
    assert dosecnn(command + ["--resume"]) == 0
    assert (tmp_path / "case000" / "ct.nrrd").stat().st_mtime_ns == kept
    np.testing.assert_array_equal(read_volume(tmp_path / "case001" / "dose_rate_mc_t024h.nrrd").array, first)
    assert (tmp_path / "case001" / "spect_t024h.nrrd").is_file() and not list(tmp_path.glob(".*partial*"))
    assert len((tmp_path / "cohort.csv").read_text().splitlines()) == 3
    folder = tmp_path / "case000"
    assert P.is_complete_case(folder, 0, "small", [24.0], 20000)
    for other in ((1, "small", [24.0], 20000, None), (0, "full", [24.0], 20000, None), (0, "small", [4.0], 20000, None),
                  (0, "small", [24.0], 0, None), (0, "small", [24.0], 20000, SpectModel(reconstruction="osem"))):
        assert not P.is_complete_case(folder, *other), other
    assert not P.is_complete_case(folder, 0, "small", [24.0], 20000, preview=True)


def test_a_case_on_the_real_gate_patient(shared_data, tmp_path):
    folder = shared_data / "real" / "lu177_dotatate_patient15"
    out = tmp_path / "p"
    assert dosecnn(["phantom", "--gate-phantom", str(folder / "patient15_LuDOTATATE_attn.h33"),
                    str(folder / "patient15_LuDOTATATE_src.h33"), "--out", str(out), "--mc-decays", "40000",
                    "--times", "24", "--quiet"]) == 0
    meta = json.loads((out / "patient15" / "meta.json").read_text())
    rows = {r["name"]: r for r in meta["per_label"]}
    assert 900 < rows["liver"]["volume_ml"] < 1200 and 90 < rows["spleen"]["volume_ml"] < 120  # the upstream organs
    assert rows["right kidney"]["mean_absorbed_dose_gy"] > 5 * rows["lungs"]["mean_absorbed_dose_gy"] > 0
    ct = read_volume(out / "patient15" / "ct.nrrd")
    labels = read_volume(out / "patient15" / "labels.nrrd").array
    assert np.median(ct.array[labels == 6]) < -600 and np.median(ct.array[labels == 2]) > 20
    liver, kidneys = _centre_lps(ct, labels == 2), _centre_lps(ct, np.isin(labels, (3, 4)))
    assert liver[2] > kidneys[2] + 20  # the written files keep the anatomical orientation: liver above the kidneys


def _centre_lps(volume, mask):
    """The LPS position (mm) of the centroid of a mask."""
    k, j, i = np.nonzero(mask)
    return volume.index_to_lps(np.array([i.mean(), j.mean(), k.mean()]))


def test_the_gate_patient_is_read_in_anatomical_orientation(shared_data):
    from DoseCNNLib.phantoms.gate_patient import COUCH_CODE, read_gate_patient

    folder = shared_data / "real" / "lu177_dotatate_patient15"
    ct, codes = read_gate_patient(folder / "patient15_LuDOTATATE_attn.h33", folder / "patient15_LuDOTATATE_src.h33")
    body = _centre_lps(ct, ct.array > -300)
    liver, spleen = _centre_lps(ct, codes == 15000), _centre_lps(ct, codes == 16000)
    kidneys = _centre_lps(ct, np.isin(codes, (17000, 18000)))
    spine = _centre_lps(ct, (ct.array > 200) & (codes != COUCH_CODE))
    couch = _centre_lps(ct, codes == COUCH_CODE)
    # LPS: x grows to the patient's left, y posterior, z superior
    assert liver[2] > kidneys[2] + 20 and spleen[2] > kidneys[2]  # liver and spleen above the kidneys
    assert liver[0] < body[0] < spleen[0]  # liver on the patient's right, spleen on the left
    assert spine[1] > body[1] and couch[1] > spine[1] + 50  # spine behind the body's centre, couch further behind
    with pytest.warns(UserWarning, match="Interfile gives no image orientation; assumed LPS"):
        read_volume(folder / "patient15_LuDOTATATE_attn.h33")  # without the caller's orientation: a warning


def test_label_names_from_pairs_or_the_phantoms_csv(tmp_path):
    from DoseCNNLib.dosimetry.pipeline import label_names_from_args
    from ImagingBasics.errors import UserError

    assert label_names_from_args(["1=liver", "3= right kidney"]) == {1: "liver", 3: "right kidney"}
    (tmp_path / "labels.csv").write_text("label,name\n2,liver\n10,lesion 10 (liver)\n")
    assert label_names_from_args([str(tmp_path / "labels.csv")]) == {2: "liver", 10: "lesion 10 (liver)"}
    (tmp_path / "wrong.csv").write_text("value,organ\n2,liver\n")
    for bad in (["liver"], ["x=liver"], [str(tmp_path / "missing.csv")], [str(tmp_path / "wrong.csv")]):
        with pytest.raises(UserError):
            label_names_from_args(bad)


def test_phantom_command_passes_the_spect_model(tmp_path, monkeypatch):
    import DoseCNNLib.phantoms.case as P

    seen = {}

    def fake_cohort(out, n, seed, size, times, mc, device, prefix, preview, say, spect_model, **options):
        seen["model"] = spect_model
        return []

    monkeypatch.setattr(P, "generate_cohort", fake_cohort)
    assert dosecnn(["phantom", "--out", str(tmp_path), "--spect", "osem", "--quiet"]) == 0
    assert seen["model"].reconstruction == "osem" and seen["model"].views == 128 and seen["model"].iterations == 16
    assert dosecnn(["phantom", "--out", str(tmp_path), "--quiet"]) == 0
    assert seen["model"].reconstruction == "gaussian"
