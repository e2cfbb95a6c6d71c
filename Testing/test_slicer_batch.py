"""The Slicer batch script's argument handling, as a plain function (the script itself needs Slicer)."""

import ast
from pathlib import Path

import pytest
from tiny_images import write_tiny_ct

from CTPerfusionMappingLib.slicer_glue.batch import parse_batch_arguments
from ImagingBasics.errors import UserError

SCRIPT = Path(__file__).resolve().parents[1] / "CTPerfusionMapping" / "Resources" / "Scripts" / "CTPerfusionMappingBatch.py"


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


def test_the_script_uses_the_parser_and_exits_with_a_status():
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"), feature_version=(3, 9))
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert {"parse_batch_arguments", "slicer.util.getModuleLogic", "slicer.util.exit", "_save"} <= calls
    assert "slicer.util.saveNode" in calls and "logic.process" in calls
