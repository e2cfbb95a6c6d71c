"""The DoseCNN Slicer batch script: its argument handling as a plain function, and the script itself with the test
double of Slicer and a Logic double that checks the keywords against the real Logic's ``process``."""

import inspect
from pathlib import Path

import pytest
from slicer_double import ScalarVolumeNodeDouble, TableNodeDouble, load_module, make_slicer_double
from tiny_images import tiny_ct, write_tiny_ct

from DoseCNNLib.slicer_glue.batch import parse_batch_arguments
from ImagingBasics import slicer_nodes
from ImagingBasics.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "DoseCNN" / "Resources" / "Scripts" / "DoseCNNBatch.py"
MODULE = ROOT / "DoseCNN" / "DoseCNN.py"


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


class LogicDouble:
    """The module's Logic as the batch script sees it: ``process`` takes exactly the keywords of the real
    ``DoseCNNLogic.process`` (checked), records them and returns output nodes (with a table when labels are given)."""

    summary = "maximum dose rate 1 mGy/s"

    def __init__(self, signature):
        self.signature = signature
        self.calls = []

    def process(self, **keywords):
        self.signature.bind(None, **keywords)
        self.calls.append(keywords)

        def volume():
            node = ScalarVolumeNodeDouble("dose")
            slicer_nodes.update_node_from_volume(node, tiny_ct())
            return node

        outputs = {"outputAbsorbedDose": volume(), "outputTimePointDoseRates": [volume() for _ in keywords["timePoints"]]
                   } if keywords["timePoints"] is not None else {"outputDoseRate": volume()}
        if keywords["inputSegmentation"] is not None or keywords["inputLabelmap"] is not None:
            outputs.update(outputTable=TableNodeDouble(), outputDVHTable=TableNodeDouble())
        return outputs


@pytest.fixture
def script(monkeypatch, tmp_path):
    module = load_module(monkeypatch, make_slicer_double(str(tmp_path)), MODULE, "DoseCNN_for_batch")
    logic = LogicDouble(inspect.signature(module.DoseCNNLogic.process))
    doubles = make_slicer_double(str(tmp_path))
    doubles["slicer"].module_logics["DoseCNN"] = logic
    return load_module(monkeypatch, doubles, SCRIPT, "DoseCNNBatch_under_test"), logic, doubles["slicer"]


def test_the_script_runs_one_time_point_through_the_logic(script, files, capsys):
    script, logic, slicer = script
    write_tiny_ct(files / "spect.nrrd")
    out = files / "out"
    assert script.main(["--spect", str(files / "spect.nrrd"), "--ct", str(files / "ct.nrrd"), "--calibration", "12.5",
                        "--labels", str(files / "organs.seg.nrrd"), "--method", "cnn", "--device", "cpu",
                        "--out", str(out)]) == 0
    (call,) = logic.calls
    assert (call["bqPerCount"], call["activityMBq"], call["method"], call["device"]) == (12.5, None, "cnn", "cpu")
    assert call["timePoints"] is None and call["inputSegmentation"] is not None and call["inputLabelmap"] is None
    assert sorted(Path(path).name for path in slicer.saved) == ["dose_rate.nrrd", "dvh.csv", "segments.csv"]
    assert "1 of 1 cases done" in capsys.readouterr().out


def test_the_script_runs_a_manifest_through_the_logic(script, files, capsys):
    script, logic, slicer = script
    for name in ("spect.nrrd", "spect2.nrrd"):
        write_tiny_ct(files / name)
    out = files / "out"
    assert script.main(["--manifest", str(files / "tp.csv"), "--fit", "trapezoid", "--no-register", "--out",
                        str(out)]) == 0
    (call,) = logic.calls
    assert [(p.hours, p.activityMBq) for p in call["timePoints"]] == [(24.0, 5000.0), (96.0, 2500.0)]
    assert (call["fitModel"], call["registerCTs"], call["bqPerCount"], call["inputSPECT"]) == ("trapezoid", False, None,
                                                                                                None)
    assert call["timePoints"][0].ct is call["inputCT"]  # the reference CT: the first time point's, loaded once
    assert sorted(Path(path).name for path in slicer.saved) == ["absorbed_dose.nrrd", "dose_rate_24h.nrrd",
                                                                "dose_rate_96h.nrrd"]
    assert script.main(["--manifest", str(files / "tp.csv"), "--fit", "cubic", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: --fit: invalid choice 'cubic' (choose from mono, bi, trapezoid)\n"
    assert len(logic.calls) == 1
