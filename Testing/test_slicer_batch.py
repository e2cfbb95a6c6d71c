"""The Slicer batch script: its argument handling as a plain function, and the script itself with the test double of
Slicer and a Logic double that checks the keywords against the real Logic's ``process``."""

import inspect
from pathlib import Path

import pytest
from slicer_double import ScalarVolumeNodeDouble, SegmentationNodeDouble, TableNodeDouble, load_module, make_slicer_double
from tiny_images import tiny_ct, write_tiny_ct

from CTPerfusionMappingLib.slicer_glue.batch import parse_batch_arguments
from ImagingBasics import slicer_nodes
from ImagingBasics.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "CTPerfusionMapping" / "Resources" / "Scripts" / "CTPerfusionMappingBatch.py"
MODULE = ROOT / "CTPerfusionMapping" / "CTPerfusionMapping.py"


@pytest.fixture
def files(tmp_path):
    for name in ("spect.nrrd", "lobes.nrrd", "w.pt"):
        (tmp_path / name).write_bytes(b"x")
    write_tiny_ct(tmp_path / "ct.nrrd")  # a real CT: one case's CT is checked up front
    return tmp_path


def test_one_case(files):
    r = parse_batch_arguments(["--ct", str(files / "ct.nrrd"), "--spect", str(files / "spect.nrrd"), "--out",
                               str(files / "out"), "--device", "cpu", "--threshold", "0.7", "--no-register"])
    assert len(r.cases) == 1 and r.cases[0].out == files / "out" and r.cases[0].spect == str(files / "spect.nrrd")
    assert (r.device, r.threshold, r.register, r.weights, r.segmentation_source) == ("cpu", 0.7, False, None, "Automatic")
    r = parse_batch_arguments(["--ct", str(files / "ct.nrrd"), "--lobes", str(files / "lobes.nrrd"), "--out", "o",
                               "--weights", str(files / "w.pt")])
    assert r.segmentation_source == "Given segmentation" and r.weights == str(files / "w.pt")
    assert r.registration_method == "Automatic"
    r = parse_batch_arguments(["--ct", str(files / "ct.nrrd"), "--out", "o", "--registration", "Built-in"])
    assert r.registration_method == "Built-in"


def test_manifest_cases_get_their_own_folders(files):
    (files / "cases.csv").write_text("id,ct,spect\np1,ct.nrrd,spect.nrrd\np2,ct.nrrd,\n")
    r = parse_batch_arguments(["--manifest", str(files / "cases.csv"), "--out", str(files / "out")])
    assert [c.case_id for c in r.cases] == ["p1", "p2"]
    assert r.cases[0].out == files / "out" / "p1" and r.cases[0].ct == str((files / "ct.nrrd").resolve())
    assert r.cases[1].spect is None


@pytest.mark.parametrize("argv, message", [
    (["--out", "o"], "one of the arguments --ct --manifest is required"),
    (["--ct", "a.nrrd", "--manifest", "m.csv", "--out", "o"], "not allowed with"),
    (["--ct", "{d}/ct.nrrd"], "--out"),
    (["--ct", "{d}/missing.nrrd", "--out", "o"], "missing.nrrd not found"),
    (["--ct", "{d}/ct.nrrd", "--out", "o", "--threshold", "1.5"], "--threshold"),
    (["--ct", "{d}/ct.nrrd", "--out", "o", "--device", "tpu"], "invalid choice"),
    (["--ct", "{d}/ct.nrrd", "--out", "o", "--weights", "{d}/none.pt"], "weights not found"),
    (["--manifest", "{d}/ct.nrrd", "--spect", "{d}/spect.nrrd", "--out", "o"], "go with --ct"),
])
def test_bad_arguments_are_one_line_user_errors(files, argv, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        parse_batch_arguments([a.format(d=files) for a in argv])


class LogicDouble:
    """The module's Logic as the batch script sees it: ``process`` takes exactly the keywords of the real
    ``CTPerfusionMappingLogic.process`` (checked), records them and returns output nodes; a case without a SPECT
    fails, as a case whose run fails."""

    summary = "lungs 4000 mL"

    def __init__(self, signature):
        self.signature = signature
        self.calls = []

    def process(self, **keywords):
        self.signature.bind(None, **keywords)
        self.calls.append(keywords)
        if keywords["inputSPECT"] is None:
            raise UserError("simulated failure")
        perfusion = ScalarVolumeNodeDouble("perfusion")
        slicer_nodes.update_node_from_volume(perfusion, tiny_ct())
        return {"outputPerfusion": perfusion, "outputFunctional": SegmentationNodeDouble(),
                "outputTable": TableNodeDouble()}


def test_the_script_runs_each_case_through_the_logic_and_saves_its_outputs(monkeypatch, tmp_path, capsys):
    module = load_module(monkeypatch, make_slicer_double(str(tmp_path)), MODULE, "CTPerfusionMapping_for_batch")
    logic = LogicDouble(inspect.signature(module.CTPerfusionMappingLogic.process))
    doubles = make_slicer_double(str(tmp_path))
    doubles["slicer"].module_logics["CTPerfusionMapping"] = logic
    script = load_module(monkeypatch, doubles, SCRIPT, "CTPerfusionMappingBatch_under_test")
    for name in ("ct.nrrd", "spect.nrrd"):
        write_tiny_ct(tmp_path / name)
    (tmp_path / "cases.csv").write_text("id,ct,spect\np1,ct.nrrd,spect.nrrd\np2,ct.nrrd,\n")
    out = tmp_path / "out"
    assert script.main(["--manifest", str(tmp_path / "cases.csv"), "--out", str(out), "--threshold", "0.7",
                        "--no-register", "--device", "cpu", "--uncertainty"]) == 1  # p2 failed, p1 done
    first, second = logic.calls
    assert (first["threshold"], first["registerSPECT"], first["device"], first["uncertainty"]) == (0.7, False, "cpu", True)
    assert first["highPercentile"] is None and first["weightsFile"] is None and first["segmentationSource"] == "Automatic"
    assert second["inputSPECT"] is None
    saved = doubles["slicer"].saved
    assert sorted(Path(path).relative_to(out).as_posix() for path in saved) == [
        "p1/functional.seg.nrrd", "p1/perfusion.nrrd", "p1/regions.csv"]
    captured = capsys.readouterr()
    assert "error: case p2: simulated failure" in captured.err and "1 of 2 cases done; failed: p2" in captured.out
    assert script.main(["--ct", str(tmp_path / "ct.nrrd"), "--out", str(out), "--high-percentile", "99.5"]) == 2
    assert capsys.readouterr().err == "error: --high-percentile must be from 1 to 99, got 99.5\n"
    assert len(logic.calls) == 2  # nothing ran
