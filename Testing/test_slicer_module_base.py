"""The shared Slicer glue (SlicerModuleBase) on its own: the job bookkeeping (no Slicer), the batch runner, and the
Widget base's Apply -> poll -> finish / Cancel cycle on a real child process, with the slicer stand-in and a stand-in of
the few Qt widgets the base touches (Slicer cannot run here)."""

import sys
import time
import types
from pathlib import Path

import pytest
from slicer_double import ScalarVolumeNodeDouble, load_module, make_slicer_double

from ImagingBasics import slicer_nodes
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

    doubles = make_slicer_double("unused")
    doubles["slicer"].module_logics["Module"] = "the logic"
    monkeypatch.setitem(sys.modules, "slicer", doubles["slicer"])
    assert runBatch([], parse, "Module", run_case) == 1
    assert ran == [("the logic", "a"), ("the logic", "b"), ("the logic", "c")]  # a failed case does not stop the batch
    captured = capsys.readouterr()
    assert captured.err == "error: case b: b is broken\n" and "2 of 3 cases done; failed: b" in captured.out


# --- the Widget base -------------------------------------------------------------------------------------------------
class WidgetDouble:
    """A Qt widget as the Widget base touches it: text, value, enabled, toolTip, shown or hidden."""

    def __init__(self):
        self.text, self.value, self.enabled, self.toolTip, self.visible = "", 0, True, "", True

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False


class UiDouble:
    """``self.ui``: every widget name gives a WidgetDouble."""

    def __getattr__(self, name):
        widget = WidgetDouble()
        setattr(self, name, widget)
        return widget


class TimerDouble:
    active = False

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


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


def test_the_widget_base_runs_polls_finishes_and_cancels(monkeypatch, tmp_path, case, tiny_weights):
    doubles = make_slicer_double(str(tmp_path))
    dialogs = []

    class ErrorDisplay:  # slicer.util.tryWithErrorDisplay: shows the error in a dialog instead of raising it
        def __init__(self, message, waitCursor=False):
            self.message = message

        def __enter__(self):
            return self

        def __exit__(self, kind, error, trace):
            if error is not None:
                dialogs.append((self.message, str(error)))
            return True

    doubles["slicer"].util.tryWithErrorDisplay = ErrorDisplay
    mod = load_module(monkeypatch, doubles, ROOT / "CTPerfusionMapping" / "CTPerfusionMapping.py", "CTPM_widget")
    widget = mod.CTPerfusionMappingWidget()
    widget.ui, widget.logic, widget._timer = UiDouble(), mod.CTPerfusionMappingLogic(), TimerDouble()
    p = mod.CTPerfusionMappingParameterNode()
    widget._parameterNode = p
    widget._checkCanApply()
    assert not widget.ui.applyButton.enabled and widget.ui.statusLabel.text == "Select a CT volume"
    p.inputCT = ScalarVolumeNodeDouble("CT")
    slicer_nodes.update_node_from_volume(p.inputCT, case.ct)
    p.useBundledModel, p.weightsFile, p.device = False, str(tiny_weights), "cpu"
    widget._checkCanApply()
    assert widget.ui.applyButton.enabled and widget.ui.statusLabel.text == "Ready"
    assert not widget.ui.percentileSliderWidget.enabled and widget.ui.weightsPathLineEdit.enabled  # the module's hook

    widget.onApplyButton()
    assert widget._job is not None and widget._timer.active and widget.ui.cancelButton.visible
    assert not widget.ui.applyButton.enabled
    steps, t0 = set(), time.monotonic()
    while widget._job is not None and time.monotonic() - t0 < 300:
        widget._poll()
        steps.add(widget.ui.statusLabel.text)
        time.sleep(0.05)
    assert not dialogs, dialogs
    assert "Network..." in steps and widget.ui.statusLabel.text.startswith("Done: lungs")
    assert isinstance(p.outputPerfusion, ScalarVolumeNodeDouble) and p.outputTable is not None  # stored in the node
    assert not widget._timer.active and not widget.ui.progressBar.visible and widget.ui.applyButton.enabled

    widget.onApplyButton()  # again, then Cancel
    job = widget._job
    widget.onCancelButton()
    assert widget._job is None and widget.ui.statusLabel.text == "Cancelled" and not Path(job.workdir).exists()
    widget._parameterNode = None  # a closed scene: Apply cannot start
    widget._checkCanApply()
    assert widget.ui.statusLabel.text == "no parameters"


def test_the_runs_quality_warnings_reach_the_status_line_and_the_log(monkeypatch, tmp_path, caplog):
    import json
    import logging

    doubles = make_slicer_double(str(tmp_path))
    mod = load_module(monkeypatch, doubles, ROOT / "CTPerfusionMapping" / "CTPerfusionMapping.py", "CTPM_warnings")
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
    logic.summary = "x"
    logic.reportWarnings(str(tmp_path / "nothing"))  # no results file: no warnings
    assert logic.warnings == [] and logic.summary == "x"
