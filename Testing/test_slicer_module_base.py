"""The shared Slicer glue (SlicerModuleBase) on its own: the job bookkeeping (no Slicer), the batch runner, and the
Widget base's setup, parameter node, Apply -> poll -> finish / Cancel cycle on a real child process and a real MRML scene
(slicer-core; Testing/slicer_real.py), with stand-ins of the few Qt widgets the base touches (Testing/slicer_double.py;
Qt itself is not tested)."""

import sys
import time
import types
from pathlib import Path

import pytest

from ImagingBasics.errors import UserError
from SlicerModuleBase.batch import runBatch
from SlicerModuleBase.jobs import startJob

ROOT = Path(__file__).resolve().parents[1]


def _python(code):
    return [sys.executable, "-c", code]


# --- jobs ------------------------------------------------------------------------------------------------------------
def test_a_job_leaves_no_folder_behind(tmp_path):
    def export(request, folder):
        (Path(folder) / "input.txt").write_text(request)
        return {"input": str(Path(folder) / "input.txt")}

    def command(request, inputs, out):
        return _python(f"import json; print('@ctpm ' + json.dumps({{'done': True, 'out': {out!r}}}))")

    job = startJob(str(tmp_path), "job-", "request", export, command, env=None)
    assert Path(job.workdir).parent == tmp_path and job.inputs["input"].endswith("input.txt")
    assert job.wait(60) == 0 and job.outputFolder().endswith("out")
    job.cleanup()
    assert not list(tmp_path.iterdir())

    def failing_export(request, folder):
        raise UserError("cannot export")

    with pytest.raises(UserError, match="cannot export"):
        startJob(str(tmp_path), "job-", "request", failing_export, command, env=None)
    assert not list(tmp_path.iterdir())
    slow = startJob(str(tmp_path), "job-", "request", export, lambda *a: _python("import time; time.sleep(60)"), None)
    with pytest.raises(UserError, match="did not finish within 1 s"):
        slow.wait(1)
    assert not list(tmp_path.iterdir())
    cancelled = startJob(str(tmp_path), "job-", "request", export, lambda *a: _python("import time; time.sleep(60)"),
                         None)
    cancelled.cancel()
    assert not list(tmp_path.iterdir())
    with pytest.raises(UserError, match="cancelled"):
        cancelled.outputFolder()


# --- the batch runner ------------------------------------------------------------------------------------------------
def test_the_batch_runner_checks_first_and_runs_every_case(monkeypatch, capsys):
    def parse(argv):
        if argv:
            raise UserError(f"bad argument {argv[0]}")
        return types.SimpleNamespace(cases=[types.SimpleNamespace(case_id=i) for i in ("a", "b", "c")])

    monkeypatch.setitem(sys.modules, "slicer", types.ModuleType("slicer"))  # not touched for bad arguments
    assert runBatch(["--x"], parse, "Module", None) == 2
    assert capsys.readouterr().err == "error: bad argument --x\n"
    ran = []

    def run_case(logic, request, case):
        ran.append((logic, case.case_id))
        if case.case_id == "b":
            raise UserError("b is broken")

    slicer = types.ModuleType("slicer")
    slicer.util = types.SimpleNamespace(getModuleLogic={"Module": "the logic"}.__getitem__)
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    assert runBatch([], parse, "Module", run_case) == 1
    assert ran == [("the logic", "a"), ("the logic", "b"), ("the logic", "c")]  # a failed case does not stop the batch
    captured = capsys.readouterr()
    assert captured.err == "error: case b: b is broken\n" and "2 of 3 cases done; failed: b" in captured.out


# --- the Widget base -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def case():
    from CTPerfusionMappingLib.synthetic.cohort import generate_case

    return generate_case(6, "small", pathology_probabilities={"tumour": 1.0})


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from CTPerfusionMappingLib.network import NetworkConfig, build_model
    from CTPerfusionMappingLib.weights import save_weights

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    config = NetworkConfig(base_channels=2, max_channels=4)
    save_weights(build_model(config), config, path, metadata={"note": "random weights for tests"})
    return path


def _run_to_the_end(widget, seconds=300):
    """Poll as the Widget's QTimer does, until the job has ended; the status texts shown on the way."""
    shown, start = set(), time.monotonic()
    while widget._job is not None and time.monotonic() - start < seconds:
        widget._poll()
        shown.add(widget.ui.statusLabel.text)
        time.sleep(0.05)
    return shown


def test_the_widget_base_sets_up_runs_polls_finishes_and_cancels(real_slicer, case, tiny_weights):
    scene = real_slicer.scene
    ui = real_slicer.install_qt_ui()
    mod = real_slicer.module("CTPerfusionMapping")
    labels = real_slicer.add_volume(case.lobes, "lobes", label=True)
    ct = real_slicer.add_volume(case.ct, "CT")
    widget = mod.CTPerfusionMappingWidget()
    widget.setup()  # loads the .ui (a stand-in), makes the Logic, starts the device probe, takes the parameter node
    try:
        assert Path(widget.layout.widgets[0].path) == ROOT / "CTPerfusionMapping" / "Resources" / "UI" / \
            "CTPerfusionMapping.ui" and widget.layout.widgets[0].scene is scene
        p = widget._parameterNode
        assert p.parameterNode is widget.logic.getParameterNode() and p.inputCT is ct  # the first CT, not the label map
        assert labels.GetID() != ct.GetID()
        assert ui.applyButton.enabled and ui.statusLabel.text == "Ready"
        p.inputCT = None  # the parameter node's Modified event updates the Apply button (a real VTK observer)
        assert not ui.applyButton.enabled and ui.statusLabel.text == "Select a CT volume"
        p.inputCT = ct
        widget._setPath("weightsFile", str(tiny_weights))  # the path line edit's signal
        p.useBundledModel, p.device = False, "cpu"
        assert ui.applyButton.enabled and ui.statusLabel.text == "Ready"
        assert not ui.percentileSliderWidget.enabled and ui.weightsPathLineEdit.enabled  # the module's hook

        widget.onApplyButton()
        assert widget._job is not None and widget._timer.active and ui.cancelButton.visible and not ui.applyButton.enabled
        shown = _run_to_the_end(widget)
        assert "Network..." in shown and ui.statusLabel.text.startswith("Done: lungs")
        perfusion = p.outputPerfusion
        assert perfusion is not None and perfusion.IsA("vtkMRMLScalarVolumeNode")  # stored in the parameter node
        assert p.outputTable is not None and p.outputFunctional is not None
        assert not widget._timer.active and not ui.progressBar.visible and ui.applyButton.enabled

        nodes = real_slicer.node_ids()
        widget.onApplyButton()  # again, then Cancel
        job = widget._job
        widget.onCancelButton()
        assert widget._job is None and ui.statusLabel.text == "Cancelled" and not Path(job.workdir).exists()
        assert ui.applyButton.enabled and real_slicer.node_ids() == nodes and p.outputPerfusion is perfusion

        scene.Clear()  # closing the scene: the widget lets go of the parameter node
        assert widget._parameterNode is None
        widget._checkCanApply()
        assert ui.statusLabel.text == "no parameters" and not ui.applyButton.enabled
    finally:
        widget.cleanup()


def test_after_a_failed_run_apply_is_enabled_again(real_slicer, case, tiny_weights):
    """slicer.util.tryWithErrorDisplay shows the error and raises it again: the Widget must still re-enable Apply."""
    ui = real_slicer.install_qt_ui()
    mod = real_slicer.module("CTPerfusionMapping")
    real_slicer.add_volume(case.spect, "not a CT")
    widget = mod.CTPerfusionMappingWidget()
    widget.setup()
    try:
        p = widget._parameterNode
        p.useBundledModel, p.weightsFile, p.device, p.segmentationSource = False, str(tiny_weights), "cpu", "Built-in"
        widget.onApplyButton()
        with pytest.raises(UserError, match="CT"):  # the error display re-raises it into Slicer's console
            _run_to_the_end(widget)
        assert widget._job is None and ui.statusLabel.text == "Failed" and ui.applyButton.enabled
        assert not ui.cancelButton.visible and not ui.progressBar.visible
    finally:
        widget.cleanup()


def test_the_runs_quality_warnings_reach_the_status_line_and_the_log(real_slicer, tmp_path, caplog):
    import json
    import logging

    mod = real_slicer.module("CTPerfusionMapping")
    logic = mod.CTPerfusionMappingLogic()
    (tmp_path / "metrics.json").write_text(json.dumps({"warnings": [
        {"code": "lung_truncated", "message": "the right lung is cut by the field of view at its top", "values": {}},
        {"code": "coarse_voxels", "message": "the CT has coarse voxels", "values": {}}]}))
    logic.summary = "lungs 4348 mL"
    with caplog.at_level(logging.WARNING):
        logic.reportWarnings(str(tmp_path))
    assert logic.warnings == ["the right lung is cut by the field of view at its top", "the CT has coarse voxels"]
    assert logic.summary == ("lungs 4348 mL; 2 warnings: the right lung is cut by the field of view at its top "
                             "(all in the log)")
    assert [r.getMessage() for r in caplog.records] == [f"CTPerfusionMappingLogic: {w}" for w in logic.warnings]
    table = logic.warningsTable()  # every warning in a table node of the scene, with its code
    assert table.GetName() == "CTPerfusionMapping quality warnings" and table.GetNumberOfRows() == 2
    assert [table.GetCellText(r, 0) for r in range(2)] == ["lung_truncated", "coarse_voxels"]
    assert table.GetCellText(0, 1) == logic.warnings[0] and table.GetColumnTitle("message") == "Warning"
    again = mod.CTPerfusionMappingLogic()  # a new Logic (the module reloaded) fills the same node
    again.reportWarnings(str(tmp_path))
    assert again.warningsTable() is table and table.GetNumberOfRows() == 2
    assert real_slicer.scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() == 1
    logic.summary = "x"
    logic.reportWarnings(str(tmp_path / "nothing"))  # no results file: no warnings, and none left from the last run
    assert logic.warnings == [] and logic.summary == "x" and table.GetNumberOfRows() == 0
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "run.json").write_text(json.dumps({"warnings": ["an old file's warning as a string"]}))
    dose = real_slicer.module("DoseCNN").DoseCNNLogic()  # each module its own table
    dose.reportWarnings(str(fresh))
    assert dose.warningsTable() is not table and dose.warningsTable().GetCellText(0, 0) == "warning"
