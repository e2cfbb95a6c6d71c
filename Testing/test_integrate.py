"""dosecnn integrate end to end on a tiny synthetic patient with known mono-exponential kinetics, CTs of later time
points shifted (registration), the manifest's errors, and the CT-to-CT registration on its own."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from DoseCNNLib.cli import main as dosecnn
from DoseCNNLib.dosimetry.integrate import read_time_manifest, register_ct_to_ct, to_reference_frame
from ImagingBasics.errors import UserError
from ImagingBasics.imageio import read_volume, write_volume
from ImagingBasics.volume import Volume

SPACING = (4.0, 4.0, 4.0)
SHAPE = (12, 24, 24)  # z, y, x
TIMES_H = (4.0, 24.0, 96.0)
SHIFTS_MM = ((0.0, 0.0, 0.0), (4.0, -8.0, 0.0), (-4.0, 4.0, 4.0))  # patient position per time point (x, y, z)
BQ_PER_COUNT = 1000.0
#: label: (name, centre offset from the body centre (x, y, z) mm, semi-axes mm, HU, MBq/mL at t = 0, T_eff h)
ORGANS = {1: ("liver", (-14.0, -4.0, 0.0), (16.0, 14.0, 12.0), 60, 0.4, 60.0),
          2: ("kidney", (18.0, 10.0, -2.0), (8.0, 8.0, 10.0), 30, 1.0, 40.0),
          3: ("tumour", (12.0, -14.0, 6.0), (7.0, 7.0, 7.0), 45, 2.0, 100.0)}
BODY = ((36.0, 30.0, 18.0), 0.02, 20.0)  # semi-axes mm, MBq/mL at t = 0, T_eff h (background)


@pytest.fixture(scope="module")
def small_kernels():
    from DoseCNNLib.physics.kernels import voxel_s_values

    k = voxel_s_values("Lu-177", SPACING, size=5, n_decays=5000, photon_size=9)
    return k.electron.astype(np.float32), k.photon.astype(np.float32)


@pytest.fixture
def fast_kernels(monkeypatch, small_kernels):
    """kernel_pair_for (read by pipeline.dose_rate_map at call time) returns the small test kernels."""
    monkeypatch.setattr("DoseCNNLib.physics.kernel_library.kernel_pair_for", lambda *args, **kwargs: small_kernels)
    return small_kernels


def _inside(centre, axes) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(SHAPE, SPACING[::-1])), indexing="ij")
    return ((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 + ((z - centre[2]) / axes[2]) ** 2 <= 1


def phantom(shift_mm):
    """(CT in HU, labels, activity at t = 0 in Bq per voxel, decay constants per voxel 1/h) with the patient moved by
    ``shift_mm``: whole voxels, so every time point is the same voxelised anatomy."""
    centre = np.array([46.0, 46.0, 22.0]) + np.asarray(shift_mm)
    ct = np.full(SHAPE, -1000, np.int16)
    labels = np.zeros(SHAPE, np.uint8)
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    body = _inside(centre, BODY[0])
    ct[body] = 20
    a0 = np.where(body, BODY[1] * 1e6 * voxel_ml, 0.0)
    lam = np.where(body, math.log(2) / BODY[2], 0.0)
    ct[_inside(centre + [0.0, 22.0, 0.0], (6.0, 6.0, 20.0))] = 700  # a spine for the registration
    ct[_inside(centre + [-16.0, 12.0, 4.0], (10.0, 8.0, 8.0))] = -800  # some lung
    for value, (_, offset, axes, hu, conc, t_eff) in ORGANS.items():
        inside = _inside(centre + np.asarray(offset), axes)
        ct[inside] = hu
        labels[inside] = value
        a0[inside] = conc * 1e6 * voxel_ml
        lam[inside] = math.log(2) / t_eff
    return ct, labels, a0, lam


def write_case(folder: Path, shifts=SHIFTS_MM) -> Path:
    rows = []
    for i, (t, shift) in enumerate(zip(TIMES_H, shifts)):
        ct, _, a0, lam = phantom(shift)
        write_volume(Volume(ct, SPACING), folder / f"ct{i}.nrrd")
        counts = a0 * np.exp(-lam * t) / BQ_PER_COUNT
        write_volume(Volume(counts.astype(np.float32), SPACING), folder / f"spect{i}.nrrd")
        rows.append({"time_h": t, "spect": f"spect{i}.nrrd", "ct": f"ct{i}.nrrd", "bq_per_count": BQ_PER_COUNT})
    _, labels, _, _ = phantom(shifts[0])
    write_volume(Volume(labels, SPACING), folder / "labels.nrrd")
    manifest = folder / "manifest.csv"
    _write_rows(rows, manifest)
    return manifest


def _write_rows(rows, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_integrate_recovers_the_time_integrated_activity_and_dose(tmp_path, fast_kernels, capsys):
    from DoseCNNLib.physics.vdk import vdk_dose_rate

    manifest = write_case(tmp_path)
    out = tmp_path / "out"
    assert dosecnn(["integrate", str(manifest), "--labels", str(tmp_path / "labels.nrrd"), "--names", "1=liver",
                    "2=kidney", "3=tumour", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "kidney" in printed.out and "time point 2/3" in printed.err
    expected = {"absorbed_dose.nrrd", "tia.nrrd", "organs.csv", "dvh.csv", "dvh.png", "time_activity.png",
                "integrate.json"}
    assert expected <= {p.name for p in out.iterdir()} and not [p for p in out.iterdir() if p.name.startswith(".")]
    summary = json.loads((out / "integrate.json").read_text())
    ct0, labels, a0, lam = phantom(SHIFTS_MM[0])
    # the registrations found the patient's shifts (reference point -> later CT's point = + shift)
    for tp, shift in zip(summary["time_points"], SHIFTS_MM):
        matrix = np.array(tp["registration"]["matrix_lps"])
        np.testing.assert_allclose(matrix[:3, 3], shift, atol=0.5)
        assert tp["registration"]["rotation_deg"] < 0.5
    assert summary["time_points"][0]["registration"]["skipped"].startswith("the reference CT itself")
    # every organ's TIA within 5 % of A0 / lambda, from the organ fit and from the voxel map
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    organs = {r["label"]: r for r in summary["organs"]}
    for value, (name, _, _, _, conc, t_eff) in ORGANS.items():
        inside = labels == value
        truth = conc * inside.sum() * voxel_ml * t_eff / math.log(2)  # MBq*h
        assert organs[value]["name"] == name
        assert organs[value]["tia_mbq_h"] == pytest.approx(truth, rel=0.05)
        assert organs[value]["tia_voxel_map_mbq_h"] == pytest.approx(truth, rel=0.05)
        assert organs[value]["effective_half_life_h"] == pytest.approx(t_eff, rel=0.05)
    # the absorbed dose against the same VDK applied to the true time-integrated activity (Bq*h -> mGy/s*h -> Gy)
    ct = Volume(ct0, SPACING)
    true_tia = ct.with_array(np.where(lam > 0, a0 / np.where(lam > 0, lam, 1.0), 0.0))
    dose_of_truth, _ = vdk_dose_rate(true_tia, ct, *fast_kernels)
    dose_of_truth = dose_of_truth.array * 3.6
    dose = read_volume(out / "absorbed_dose.nrrd")
    assert dose.same_geometry(ct)
    for value in ORGANS:
        inside = labels == value
        truth = float(dose_of_truth[inside].mean())
        assert organs[value]["mean_dose_gy_voxel_map"] == pytest.approx(truth, rel=0.05)
        assert organs[value]["mean_dose_gy_organ_fit"] == pytest.approx(truth, rel=0.05)
        assert float(dose.array[inside].mean()) == pytest.approx(organs[value]["mean_dose_gy_voxel_map"], rel=1e-5)
        assert organs[value]["d98_gy"] <= organs[value]["d50_gy"] <= organs[value]["d2_gy"] <= organs[value]["max_gy"]
    tia = read_volume(out / "tia.nrrd")
    assert float(tia.array.sum()) == pytest.approx(float(true_tia.array.sum()) / 1e6, rel=0.05)
    # voxels just outside the body get a trace of activity by interpolation at some time points: they cannot be fitted
    assert summary["fit"] == "mono" and summary["voxel_fits"]["activity"]["fallback_share"] < 1e-3
    with open(out / "dvh.csv") as f:
        dvh = list(csv.DictReader(f))
    assert {r["name"] for r in dvh} == {"liver", "kidney", "tumour"} and float(dvh[0]["volume_percent"]) == 100.0


def test_integrate_without_registration_and_with_the_trapezoid(tmp_path, fast_kernels):
    manifest = write_case(tmp_path, shifts=[(0.0, 0.0, 0.0)] * 3)
    out = tmp_path / "out"
    assert dosecnn(["integrate", str(manifest), "--fit", "trapezoid", "--no-register", "--out", str(out)]) == 0
    summary = json.loads((out / "integrate.json").read_text())
    assert all(tp["registration"]["skipped"] for tp in summary["time_points"])
    assert summary["organs"] == [] and not (out / "organs.csv").exists() and (out / "absorbed_dose.nrrd").is_file()
    _, _, a0, lam = phantom(SHIFTS_MM[0])
    # three points and a fitted tail: the trapezoid overestimates a convex curve, but not by much
    truth = float(np.sum(np.where(lam > 0, a0 / np.where(lam > 0, lam, 1.0), 0.0))) / 1e6
    assert truth < summary["total_tia_mbq_h"] < 1.15 * truth


def test_manifest_errors_are_user_errors(tmp_path, capsys):
    manifest = write_case(tmp_path, shifts=[(0.0, 0.0, 0.0)] * 3)
    specs = read_time_manifest(manifest)
    assert [s.time_h for s in specs] == list(TIMES_H) and specs[0].spect == tmp_path / "spect0.nrrd"
    row = {"time_h": 4, "spect": "spect0.nrrd", "ct": "ct0.nrrd"}
    cases = {"lacks the column": [{"time_h": 4, "spect": "spect0.nrrd"}] * 2,
             "calibration column": [row, {**row, "time_h": 24}],
             "exactly one": [{**row, "activity_mbq": 5, "bq_per_count": 2}, {**row, "time_h": 24, "activity_mbq": 5,
                                                                               "bq_per_count": ""}],
             "at least 2 time points": [{**row, "activity_mbq": 5}],
             "share a time point": [{**row, "activity_mbq": 5}, {**row, "activity_mbq": 6}],
             "not found": [{**row, "activity_mbq": 5}, {**row, "time_h": 24, "ct": "none.nrrd", "activity_mbq": 5}],
             "positive": [{**row, "activity_mbq": 5}, {**row, "time_h": 24, "activity_mbq": -5}],
             "hours after administration": [{**row, "activity_mbq": 5}, {**row, "time_h": -3, "activity_mbq": 5}]}
    for message, rows in cases.items():
        bad = tmp_path / "bad.csv"
        _write_rows(rows, bad)
        assert dosecnn(["integrate", str(bad), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (message, err)
    assert dosecnn(["integrate", str(manifest), "--names", "liver", "--out", str(tmp_path / "o")]) == 2
    assert "VALUE=NAME" in capsys.readouterr().err
    write_volume(Volume(np.zeros((3, 3, 3), np.uint8), SPACING), tmp_path / "wrong_labels.nrrd")
    assert dosecnn(["integrate", str(manifest), "--labels", str(tmp_path / "wrong_labels.nrrd"), "--out",
                    str(tmp_path / "o")]) == 2
    assert "reference CT's grid" in capsys.readouterr().err


def test_ct_registration_and_resampling_into_the_reference_frame():
    fixed = Volume(phantom((0.0, 0.0, 0.0))[0], SPACING)
    shifted = phantom((-4.0, 8.0, 4.0))[0]
    # the later CT also covers less: its first slices are cut, so the body centroids (the start) no longer match
    moving = Volume(shifted[4:], SPACING, (0.0, 0.0, 4 * SPACING[2]))
    reg = register_ct_to_ct(fixed, moving)
    np.testing.assert_allclose(reg.matrix_lps[:3, 3], (-4.0, 8.0, 4.0), atol=0.5)
    assert reg.rotation_deg < 0.5 and reg.iterations > 5 and reg.summary()["registered"]
    moving = Volume(shifted, SPACING)
    reg = register_ct_to_ct(fixed, moving)
    assert reg.translation_mm == pytest.approx(math.sqrt(96), abs=0.5)
    mattes = register_ct_to_ct(fixed, moving, metric="mattes")  # runs; mutual information is coarse on 7000 voxels
    assert np.all(np.isfinite(mattes.matrix_lps)) and mattes.translation_mm < 20.0
    with pytest.raises(UserError, match="metric"):
        register_ct_to_ct(fixed, moving, metric="ncc")
    back = to_reference_frame(moving.with_array(moving.array.astype(np.float32)), fixed, reg.transform)
    inner = (slice(2, -2),) * 3
    assert np.mean(np.abs(back.array[inner] - fixed.array[inner])) < 10.0  # HU, after a sub-voxel residual
    activity = Volume(np.ones((6, 12, 12), np.float32), (8.0, 8.0, 8.0), (2.0, 2.0, 2.0))  # Bq per 8 mm voxel
    fine = to_reference_frame(activity, fixed, None, per_voxel=True)  # 4 mm voxels hold an eighth
    assert float(fine.array[4:8, 8:16, 8:16].mean()) == pytest.approx(1 / 8, rel=1e-5)
