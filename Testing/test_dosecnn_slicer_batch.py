"""The DoseCNN Slicer batch script: its argument handling as a plain function, and the script's ``main`` in Slicer (a
real MRML scene, Testing/slicer_real.py): the files loaded with ``slicer.util.loadVolume``/``loadLabelVolume``/
``loadSegmentation``, the run through the module's Logic as ``slicer.util.getModuleLogic`` finds it, the outputs saved
with ``slicer.util.saveNode`` by the real storage nodes."""

import csv

import numpy as np
import pytest
from tiny_images import write_tiny_ct, write_tiny_image, write_weights_archive

from DoseCNNLib.slicer_glue.batch import parse_batch_arguments
from ImagingBasics.errors import UserError


@pytest.fixture
def files(tmp_path):
    for name in ("spect.nrrd", "spect2.nrrd", "mc.nrrd"):
        write_tiny_image(tmp_path / name)  # real files: the batch script checks one time point's inputs up front
    write_tiny_image(tmp_path / "labels.nrrd", "labels")
    (tmp_path / "organs.seg.nrrd").write_bytes(b"x")  # a segmentation: Slicer's reader decides (existence checked)
    write_weights_archive(tmp_path / "w.pt")
    for name in ("ct.nrrd", "ct2.nrrd"):
        write_tiny_ct(tmp_path / name)  # real CTs: the batch script checks every CT up front
    (tmp_path / "tp.csv").write_text("time_h,spect,ct,activity_mbq\n96,spect2.nrrd,ct2.nrrd,2500\n24,spect.nrrd,ct.nrrd,5000\n")
    return tmp_path


def test_one_time_point(files):
    r = parse_batch_arguments(["--spect", str(files / "spect.nrrd"), "--ct", str(files / "ct.nrrd"), "--activity-mbq",
                               "5000", "--labels", str(files / "labels.nrrd"), "--out", str(files / "out")])
    assert not r.integrate and r.by_activity and r.activity_mbq == 5000.0 and r.bq_per_count is None
    assert (r.spect, r.ct, r.out) == (str(files / "spect.nrrd"), str(files / "ct.nrrd"), files / "out")
    assert (r.method, r.weights, r.device, r.labels_are_segmentation) == ("vdk", None, "auto", False)
    r = parse_batch_arguments(["--spect", str(files / "spect.nrrd"), "--ct", str(files / "ct.nrrd"), "--calibration",
                               "12.5", "--labels", str(files / "organs.seg.nrrd"), "--reference", str(files / "mc.nrrd"),
                               "--method", "cnn", "--weights", str(files / "w.pt"), "--device", "cpu", "--out", "o"])
    assert not r.by_activity and r.bq_per_count == 12.5 and r.labels_are_segmentation
    assert (r.method, r.weights, r.device, r.reference) == ("cnn", str(files / "w.pt"), "cpu", str(files / "mc.nrrd"))


def test_a_manifest_of_time_points(files):
    r = parse_batch_arguments(["--manifest", str(files / "tp.csv"), "--fit", "trapezoid", "--start", "zero",
                               "--no-register", "--registration-metric", "mattes", "--out", str(files / "out")])
    assert r.integrate and r.by_activity
    assert [t.time_h for t in r.time_points] == [24.0, 96.0]  # sorted by time
    assert r.time_points[0].spect == str((files / "spect.nrrd").resolve()) and r.time_points[1].activity_mbq == 2500.0
    assert r.ct == str((files / "ct.nrrd").resolve())  # the reference CT: the first time point's
    assert (r.fit, r.start, r.register, r.registration_metric) == ("trapezoid", "zero", False, "mattes")
    r = parse_batch_arguments(["--manifest", str(files / "tp.csv"), "--reference-ct", str(files / "ct2.nrrd"),
                               "--out", "o"])
    assert r.ct == str(files / "ct2.nrrd") and (r.fit, r.register) == ("mono", True)


@pytest.mark.parametrize("argv, message", [
    (["--out", "o"], "one of the arguments --spect --manifest is required"),
    (["--spect", "{d}/spect.nrrd", "--manifest", "{d}/tp.csv", "--out", "o"], "not allowed with"),
    (["--spect", "{d}/spect.nrrd", "--activity-mbq", "1", "--out", "o"], "--spect needs --ct"),
    (["--spect", "{d}/spect.nrrd", "--ct", "{d}/ct.nrrd", "--out", "o"], "give a calibration"),
    (["--spect", "{d}/spect.nrrd", "--ct", "{d}/ct.nrrd", "--activity-mbq", "-5", "--out", "o"], "must be positive"),
    (["--spect", "{d}/spect.nrrd", "--ct", "{d}/ct.nrrd", "--activity-mbq", "2e6", "--out", "o"],
     "--activity-mbq must be positive and at most 100000 MBq, got 2e"),
    (["--spect", "{d}/spect.nrrd", "--ct", "{d}/ct.nrrd", "--activity-mbq", "5", "--calibration", "2", "--out", "o"],
     "not allowed with"),
    (["--spect", "{d}/none.nrrd", "--ct", "{d}/ct.nrrd", "--activity-mbq", "5", "--out", "o"], "SPECT not found"),
    (["--spect", "{d}/spect.nrrd", "--ct", "{d}/ct.nrrd", "--activity-mbq", "5", "--labels", "{d}/x.nrrd", "--out", "o"],
     "labels not found"),
    (["--spect", "{d}/spect.nrrd", "--ct", "{d}/ct.nrrd", "--activity-mbq", "5", "--weights", "{d}/w.pt", "--out", "o"],
     "--weights goes with --method cnn"),
    (["--spect", "{d}/spect.nrrd", "--ct", "{d}/ct.nrrd", "--activity-mbq", "5", "--method", "mc", "--out", "o"],
     "invalid choice"),
    (["--spect", "{d}/spect.nrrd", "--ct", "{d}/ct.nrrd", "--activity-mbq", "5", "--reference-ct", "{d}/ct.nrrd",
      "--out", "o"], "--reference-ct goes with --manifest"),
    (["--manifest", "{d}/tp.csv", "--activity-mbq", "5", "--out", "o"], "a column of the CSV"),
    (["--manifest", "{d}/tp.csv", "--fit", "bi", "--out", "o"], "at least 3 time points"),
    (["--manifest", "{d}/missing.csv", "--out", "o"], "not found"),
    (["--manifest", "{d}/tp.csv", "--ct", "{d}/ct.nrrd", "--reference-ct", "{d}/ct2.nrrd", "--out", "o"],
     "different CTs"),
])
def test_bad_arguments_are_one_line_user_errors(files, argv, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        parse_batch_arguments([a.format(d=files) for a in argv])


def test_a_manifest_mixing_calibrations_is_refused(files):
    (files / "mixed.csv").write_text("time_h,spect,ct,activity_mbq,bq_per_count\n"
                                     "24,spect.nrrd,ct.nrrd,5000,\n96,spect2.nrrd,ct.nrrd,,10\n")
    with pytest.raises(UserError, match="one calibration for all time points"):
        parse_batch_arguments(["--manifest", str(files / "mixed.csv"), "--out", "o"])
    (files / "factors.csv").write_text("time_h,spect,ct,bq_per_count\n24,spect.nrrd,ct.nrrd,10\n96,spect2.nrrd,ct.nrrd,10\n")
    r = parse_batch_arguments(["--manifest", str(files / "factors.csv"), "--out", "o"])
    assert not r.by_activity and r.time_points[1].bq_per_count == 10.0


@pytest.fixture(scope="module")
def torso():
    from DoseCNNLib.slicer_glue.selftest import small_case

    return small_case(seed=3, size_xyz=(112, 88, 20))


@pytest.fixture
def script(real_slicer):
    real_slicer.module("DoseCNN")  # loaded, as Slicer loads its modules before running the script
    return real_slicer.batch_script("DoseCNN")


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_script_runs_one_time_point_with_a_segmentation_file(real_slicer, script, torso, tmp_path, capsys):
    from ImagingBasics.imageio import read_volume, write_volume

    slicer = real_slicer.slicer
    write_volume(torso.ct, tmp_path / "ct.nrrd")
    write_volume(torso.activity_bq(24.0), tmp_path / "spect.nrrd")
    ct = real_slicer.add_volume(torso.ct, "CT")  # the organs segmented in Slicer and saved as a .seg.nrrd
    segmentation = real_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    for value in (2, 5):
        segment = segmentation.GetSegmentation().AddEmptySegment(torso.names[value], torso.names[value])
        slicer.util.updateSegmentBinaryLabelmapFromArray((torso.labels.array == value).astype(np.uint8), segmentation,
                                                         segment, ct)
    assert slicer.util.saveNode(segmentation, str(tmp_path / "organs.seg.nrrd"))
    out = tmp_path / "out"
    assert script.main(["--spect", str(tmp_path / "spect.nrrd"), "--ct", str(tmp_path / "ct.nrrd"), "--activity-mbq",
                        str(torso.total_activity_mbq(24.0)), "--labels", str(tmp_path / "organs.seg.nrrd"),
                        "--device", "cpu", "--out", str(out)]) == 0
    assert "1 of 1 cases done" in capsys.readouterr().out
    assert sorted(path.name for path in out.iterdir()) == ["dose_rate.nrrd", "dvh.csv", "dvh.schema.csv",
                                                           "segments.csv", "segments.schema.csv"]
    dose = read_volume(out / "dose_rate.nrrd")
    assert dose.same_geometry(torso.ct) and dose.array.max() > 0
    rows = _rows(out / "segments.csv")
    assert [row["name"] for row in rows] == ["liver", "spleen"]
    liver = dose.array[torso.labels.array == 2].mean()
    assert float(rows[0]["mean_dose_rate_mgy_s"]) == pytest.approx(liver, rel=1e-3)
    assert list(_rows(out / "dvh.csv")[0]) == ["dose", "volume_percent_1", "volume_percent_2"]
    assert "mGy/s" in (out / "segments.schema.csv").read_text()  # the units go beside the table
    assert not list(real_slicer.temporary.iterdir())


def test_the_script_runs_a_manifest_of_time_points_with_a_label_map(real_slicer, script, torso, tmp_path, capsys):
    from ImagingBasics.imageio import read_volume, write_volume

    write_volume(torso.ct, tmp_path / "ct.nrrd")
    write_volume(torso.labels, tmp_path / "labels.nrrd")
    for hours in (24.0, 96.0):
        write_volume(torso.activity_bq(hours), tmp_path / f"spect{hours:g}.nrrd")
    (tmp_path / "tp.csv").write_text("time_h,spect,ct,activity_mbq\n"
                                     f"96,spect96.nrrd,ct.nrrd,{torso.total_activity_mbq(96.0)}\n"
                                     f"24,spect24.nrrd,ct.nrrd,{torso.total_activity_mbq(24.0)}\n")
    out = tmp_path / "out"
    assert script.main(["--manifest", str(tmp_path / "tp.csv"), "--labels", str(tmp_path / "labels.nrrd"), "--fit",
                        "trapezoid", "--no-register", "--device", "cpu", "--out", str(out)]) == 0
    assert "1 of 1 cases done" in capsys.readouterr().out
    assert {"absorbed_dose.nrrd", "dose_rate_24h.nrrd", "dose_rate_96h.nrrd", "segments.csv", "dvh.csv"} <= {
        path.name for path in out.iterdir()}
    absorbed = read_volume(out / "absorbed_dose.nrrd")
    early, late = (read_volume(out / f"dose_rate_{h}h.nrrd").array for h in (24, 96))
    liver = torso.labels.array == 2
    assert absorbed.same_geometry(torso.ct) and early[liver].mean() > late[liver].mean() > 0
    assert _rows(out / "segments.csv")[0]["name"] == "label 1"
    assert script.main(["--manifest", str(tmp_path / "tp.csv"), "--fit", "cubic", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: --fit: invalid choice 'cubic' (choose from mono, bi, trapezoid)\n"
