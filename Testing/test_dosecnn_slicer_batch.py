"""The DoseCNN Slicer batch script's argument handling, as a plain function (the script itself needs Slicer)."""

import ast
from pathlib import Path

import pytest
from tiny_images import write_tiny_ct

from DoseCNNLib.slicer_glue.batch import parse_batch_arguments
from ImagingBasics.errors import UserError

SCRIPT = Path(__file__).resolve().parents[1] / "DoseCNN" / "Resources" / "Scripts" / "DoseCNNBatch.py"


@pytest.fixture
def files(tmp_path):
    for name in ("spect.nrrd", "spect2.nrrd", "labels.nrrd", "organs.seg.nrrd", "mc.nrrd", "w.pt"):
        (tmp_path / name).write_bytes(b"x")
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


def test_the_script_uses_the_parser_and_exits_with_a_status():
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"), feature_version=(3, 9))
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert {"parse_batch_arguments", "slicer.util.getModuleLogic", "slicer.util.exit", "_save", "logic.process",
            "logic.inputProblem", "slicer.util.saveNode", "slicer.util.loadVolume"} <= calls
    assert {"slicer.util.loadSegmentation", "slicer.util.loadLabelVolume"} <= calls
    script = SCRIPT.read_text(encoding="utf-8")
    for field in ("inputCT", "inputSPECT", "inputSegmentation", "inputLabelmap", "inputReference", "timePoints",
                  "activityMBq", "bqPerCount", "fitModel", "startMode", "registerCTs", "registrationMetric"):
        assert f"p.{field}" in script, f"the batch script never sets {field}"
