"""dosecnn kernel and dosecnn mc from the command line: outputs, reuse, errors."""

import json

import numpy as np
import pytest

from DoseCNNLib.cli import main as dosecnn
from ImagingBasics.imageio import read_volume, write_volume
from ImagingBasics.volume import Volume


def test_kernel_command_writes_and_reuses(tmp_path, capsys):
    out = tmp_path / "k"
    args = ["kernel", "--spacing", "4.8", "4.8", "4.8", "--size", "3", "--photon-size", "7", "--decays", "5000",
            "--out", str(out)]
    assert dosecnn(args) == 0
    e = read_volume(out / "electron_kernel.nrrd")
    p = read_volume(out / "photon_kernel.nrrd")
    assert e.shape == (3, 3, 3) and p.shape == (7, 7, 7) and e.spacing == p.spacing == (4.8, 4.8, 4.8)
    meta = json.loads((out / "kernel.json").read_text())
    assert meta["parameters"]["nuclide"] == "Lu-177" and 0.15 < meta["self"] < 0.25  # mGy/(MBq s) at 4.8 mm
    assert (out / "kernel.png").is_file()
    capsys.readouterr()
    assert dosecnn(args) == 0
    assert "reused" in capsys.readouterr().out
    assert dosecnn(["kernel", "--spacing", "1", "1", "1", "--size", "4", "--out", str(out)]) == 2
    assert "odd" in capsys.readouterr().err


def test_mc_command_writes_dose_rate_and_uncertainty(tmp_path, capsys):
    ct = Volume(np.zeros((8, 8, 8), np.int16), (3.0, 3.0, 3.0))
    ct.array[-1] = -1000  # a water box with air on one side: a CT in HU
    activity = ct.with_array(np.zeros((8, 8, 8), np.float32))
    activity.array[3:5, 3:5, 3:5] = 1.0
    write_volume(ct, tmp_path / "ct.nrrd")
    write_volume(activity, tmp_path / "activity.nrrd")
    assert dosecnn(["mc", "--activity", str(tmp_path / "activity.nrrd"), "--ct", str(tmp_path / "ct.nrrd"),
                    "--activity-scale", "1e6", "--decays", "4000", "--batches", "2", "--quiet",
                    "--out", str(tmp_path / "out")]) == 0
    dose = read_volume(tmp_path / "out" / "dose_rate.nrrd")
    assert dose.same_geometry(ct) and dose.array[3:5, 3:5, 3:5].mean() > 10 * dose.array[0, 0, 0]
    summary = json.loads((tmp_path / "out" / "mc.json").read_text())
    assert summary["total_activity_bq"] == 8e6 and summary["decays"] == 4000
    assert dosecnn(["mc", "--activity", str(tmp_path / "none.nrrd"), "--ct", str(tmp_path / "ct.nrrd"), "--out",
                    str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_run_command_gives_the_vdk_dose_rate_and_an_organ_table(tmp_path, capsys):
    from DoseCNNLib.physics.kernel_library import kernel_pair_for
    from DoseCNNLib.physics.vdk import activity_from_counts, vdk_dose_rate

    ct = Volume(np.zeros((10, 10, 10), np.int16), (4.0, 4.0, 4.0))
    ct.array[-1] = -1000  # a water box with air on one side: a CT in HU
    spect = Volume(np.zeros((5, 5, 5), np.float32), (8.0, 8.0, 8.0), (2.0, 2.0, 2.0))
    spect.array[2, 2, 2] = 500.0
    labels = ct.with_array(np.zeros((10, 10, 10), np.uint8))
    labels.array[4:6, 4:6, 4:6] = 3
    for name, vol in (("ct", ct), ("spect", spect), ("labels", labels)):
        write_volume(vol, tmp_path / f"{name}.nrrd")
    cache = tmp_path / "kernels"
    args = ["run", "--spect", str(tmp_path / "spect.nrrd"), "--ct", str(tmp_path / "ct.nrrd"), "--labels",
            str(tmp_path / "labels.nrrd"), "--activity-mbq", "5", "--kernel-cache", str(cache), "--out", str(tmp_path / "o")]
    assert dosecnn(args) == 0
    dose = read_volume(tmp_path / "o" / "dose_rate.nrrd")
    electron, photon = kernel_pair_for(ct.spacing, cache_root=cache)  # computed once, then read from the cache
    assert len(list(cache.glob("*/kernel.json"))) == 1
    expected, _ = vdk_dose_rate(activity_from_counts(spect, ct, total_activity_mbq=5.0), ct, electron, photon)
    np.testing.assert_allclose(dose.array, expected.array, rtol=1e-5, atol=1e-9)
    summary = json.loads((tmp_path / "o" / "run.json").read_text())
    assert summary["total_activity_mbq"] == 5.0 and summary["labels"][0]["label"] == 3
    assert summary["labels"][0]["mean_dose_rate_mgy_s"] > 0 and (tmp_path / "o" / "overview.png").is_file()
    assert "label    3" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # no calibration: argparse's own error, status 2
        dosecnn(args[:7] + ["--out", str(tmp_path / "o2")])
    assert exc.value.code == 2 and "--activity-mbq --calibration is required" in capsys.readouterr().err
    assert dosecnn(args[:7] + ["--activity-mbq", "-1", "--out", str(tmp_path / "o3")]) == 2
    assert "must be positive" in capsys.readouterr().err
