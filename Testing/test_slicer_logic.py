"""The Slicer module's Logic end to end, with a test double of the `slicer` package (Testing/slicer_double.py).

The module file is imported with the double in place of Slicer; the Logic's ``process`` (the keywords a script, the
batch script and the Widget use) then exports real nodes' voxels, runs the real ``ctpm run`` child process and
imports its results into (double) nodes, exactly as it would in Slicer.
"""

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
from slicer_double import ScalarVolumeNodeDouble, SegmentationNodeDouble, load_module, make_slicer_double

from CTPerfusionMappingLib.network import NetworkConfig, build_model
from CTPerfusionMappingLib.synthetic.cohort import generate_case
from CTPerfusionMappingLib.weights import save_weights
from ImagingBasics import slicer_nodes
from ImagingBasics.errors import UserError

MODULE = Path(__file__).resolve().parents[1] / "CTPerfusionMapping" / "CTPerfusionMapping.py"


@pytest.fixture(scope="module")
def case():
    return generate_case(6, "small", pathology_probabilities={"tumour": 1.0})


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    config = NetworkConfig(base_channels=2, max_channels=4)
    save_weights(build_model(config), config, path, metadata={"note": "random weights for tests"})
    return path


@pytest.fixture
def module(monkeypatch, tmp_path):
    doubles = make_slicer_double(str(tmp_path))
    mod = load_module(monkeypatch, doubles, MODULE, "CTPerfusionMapping_under_test")
    return mod, doubles["slicer"], tmp_path


def _node(volume, name):
    node = ScalarVolumeNodeDouble(name)
    slicer_nodes.update_node_from_volume(node, volume)
    return node


def _arguments(case, tiny_weights, **changes):
    """The keywords of CTPerfusionMappingLogic.process for the case (a tiny network, on the CPU)."""
    arguments = dict(inputCT=_node(case.ct, "CT"), inputSPECT=_node(case.spect, "SPECT"), weightsFile=str(tiny_weights),
                     device="cpu")
    arguments.update(changes)
    return arguments


def test_logic_runs_the_pipeline_and_creates_the_output_nodes(module, case, tiny_weights):
    mod, slicer, tmp = module
    logic = mod.CTPerfusionMappingLogic()
    arguments = _arguments(case, tiny_weights)
    ct_before = slicer_nodes.array_from_image_data(arguments["inputCT"].GetImageData())
    assert logic.inputProblem(**arguments) is None
    progress = []
    outputs = logic.process(**arguments, timeoutSeconds=300, onProgress=lambda f, step: progress.append(step))
    assert progress[-1] == "done" and "registration" in progress
    assert set(outputs) == {"outputPerfusion", "outputFunctional", "outputTable"}

    perfusion = slicer_nodes.volume_from_node(outputs["outputPerfusion"])
    assert perfusion.shape == case.ct.shape and perfusion.same_geometry(case.ct)
    assert np.isfinite(perfusion.array).all() and 0.0 <= perfusion.array.min() and perfusion.array.max() <= 1.0
    display = outputs["outputPerfusion"].GetDisplayNode()
    assert display.color_node_id == "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"
    assert display.window_min_max == (0.0, 1.0) and not display.auto_window_level
    assert slicer.viewer_layers == {"background": arguments["inputCT"], "foreground": outputs["outputPerfusion"],
                                    "opacity": 0.5}

    seg = outputs["outputFunctional"]
    names = [seg.GetSegmentation().GetNthSegment(i).GetName() for i in range(seg.GetSegmentation().GetNumberOfSegments())]
    assert names[:2] == ["low function", "high function"] and "right lower third" in names
    high = seg.masks[seg.GetSegmentation().GetNthSegmentID(1)]
    low = seg.masks[seg.GetSegmentation().GetNthSegmentID(0)]
    assert high.shape == case.ct.shape and high.any() and low.any() and not (high & low).any()

    table = outputs["outputTable"].GetTable()
    rows = table.GetNumberOfRows()
    assert table.GetColumnByName("name").GetValue(rows - 1) == "both lungs" and rows == 9  # 6 thirds + 3 lung rows
    assert -1.0 <= table.GetColumnByName("spearman").GetValue(rows - 1) <= 1.0
    assert outputs["outputTable"].GetColumnUnitLabel("volume_ml") == "mL"
    assert "Spearman R vs SPECT" in logic.summary
    np.testing.assert_array_equal(slicer_nodes.array_from_image_data(arguments["inputCT"].GetImageData()), ct_before)
    assert not list(tmp.glob("ctpm-*")), "temporary files left behind"

    again = logic.process(**arguments, **outputs, timeoutSeconds=300)  # a second run fills the same output nodes
    assert again == outputs and outputs["outputTable"].GetTable().GetNumberOfRows() == rows
    assert len([n for n in slicer.mrmlScene.nodes if isinstance(n, ScalarVolumeNodeDouble)]) == 1


def test_the_widget_maps_its_parameter_node_onto_the_logic_keywords(module):
    mod, _, _ = module
    p = mod.CTPerfusionMappingParameterNode()
    ct, spect = ScalarVolumeNodeDouble("CT"), ScalarVolumeNodeDouble("SPECT")
    p.inputCT, p.inputSPECT, p.useBundledModel, p.weightsFile, p.highPercentile = ct, spect, True, "w.pt", 80.0
    arguments = mod.CTPerfusionMappingWidget.logicArguments(p)
    inspect.signature(mod.CTPerfusionMappingLogic.process).bind(None, **arguments)  # every key is a keyword of process
    assert arguments["inputCT"] is ct and arguments["weightsFile"] is None  # the bundled model
    assert arguments["highPercentile"] is None and arguments["threshold"] == 0.66  # no percentile split
    p.useBundledModel, p.splitAtPercentile = False, True
    arguments = mod.CTPerfusionMappingWidget.logicArguments(p)
    assert arguments["weightsFile"] == "w.pt" and arguments["highPercentile"] == 80.0
    assert mod.CTPerfusionMappingLogic().inputProblem(**arguments) == "Model weights file not found: w.pt"


def test_a_given_lobe_segmentation_gives_lobe_rows(module, case, tiny_weights):
    mod, slicer, _ = module
    seg = SegmentationNodeDouble("lobes")
    for value, sid in ((4, "lung_upper_lobe_right"), (5, "lung_middle_lobe_right"), (6, "lung_lower_lobe_right"),
                       (7, "lung_upper_lobe_left"), (8, "lung_lower_lobe_left")):
        segment_id = seg.GetSegmentation().AddEmptySegment(sid, sid.replace("_", " "))
        seg.masks[segment_id] = case.lobes.array == value
    logic = mod.CTPerfusionMappingLogic()
    outputs = logic.process(**_arguments(case, tiny_weights, inputSPECT=None, inputSegmentation=seg,
                                         segmentationSource="Given segmentation"), timeoutSeconds=300)
    table = outputs["outputTable"].GetTable()
    names = [table.GetColumnByName("name").GetValue(i) for i in range(table.GetNumberOfRows())]
    assert names == ["RUL", "RML", "RLL", "LUL", "LLL", "right lung", "left lung", "both lungs"]
    assert table.GetColumnByName("spearman") is None  # no SPECT, no agreement columns
    assert "Spearman" not in logic.summary


def test_input_problems_and_child_errors_reach_the_user(module, case, tiny_weights):
    mod, slicer, tmp = module
    logic = mod.CTPerfusionMappingLogic()
    assert logic.inputProblem(**_arguments(case, tiny_weights, inputCT=None)) == "Select a CT volume"
    assert "segmentation" in logic.inputProblem(**_arguments(case, tiny_weights, segmentationSource="Given segmentation"))
    arguments = _arguments(case, tiny_weights, weightsFile=str(tmp / "nothing.pt"))
    assert logic.inputProblem(**arguments).startswith("Model weights file not found")
    with pytest.raises(UserError, match="not found"):
        logic.process(**arguments)
    with pytest.raises(RuntimeError, match="TotalSegmentator is not installed"):
        logic.process(**_arguments(case, tiny_weights, segmentationSource="TotalSegmentator"))
    with pytest.raises(UserError, match=r"^threshold must be from 0.05 to 0.95, got 0.99$"):  # before anything runs
        logic.process(**_arguments(case, tiny_weights, threshold=0.99))
    arguments = _arguments(case, tiny_weights, inputCT=_node(case.spect, "SPECT given as CT"))
    with pytest.raises(UserError, match="CT"):  # the child refuses a non-CT with its own message
        logic.process(**arguments, timeoutSeconds=300)
    assert not slicer.mrmlScene.nodes  # no output node
    assert not list(tmp.glob("ctpm-*"))


def test_cancel_stops_the_child_and_cleans_up(module, case, tiny_weights):
    mod, slicer, tmp = module
    logic = mod.CTPerfusionMappingLogic()
    job = logic.process(**_arguments(case, tiny_weights), waitForCompletion=False)
    job.cancel()
    assert job.process.returncode is not None and not Path(job.workdir).exists()
    with pytest.raises(UserError, match="cancelled"):
        logic.finish(job)
    assert not slicer.mrmlScene.nodes


def test_missing_packages_are_named_with_how_to_install_them(module, case, tiny_weights, monkeypatch):
    import importlib.util

    mod, _, _ = module
    logic = mod.CTPerfusionMappingLogic()
    assert logic.missingPackages() == {}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(UserError, match=r"missing Python packages: skimage \(slicer.util.pip_install\(\"scikit-image\"\)\)"):
        logic.process(**_arguments(case, tiny_weights))


def test_brainsfit_registers_the_spect_in_slicer_when_installed(monkeypatch, tmp_path, case, tiny_weights):
    doubles = make_slicer_double(str(tmp_path), with_brains=True)
    mod = load_module(monkeypatch, doubles, MODULE, "CTPerfusionMapping_brains")
    slicer = doubles["slicer"]
    logic = mod.CTPerfusionMappingLogic()
    request = mod.PerfusionRequest(**_arguments(case, tiny_weights))
    files = logic.exportInputs(request, str(tmp_path))
    (fit_name, fit), (resample_name, resample) = slicer.cli_calls
    assert fit_name == "brainsfit" and fit["fixedVolume"] is request.inputCT and fit["movingVolume"] is request.inputSPECT
    assert fit["useRigid"] and fit["costMetric"] == "MMI"
    assert resample_name == "brainsresample" and resample["referenceVolume"] is request.inputCT
    assert resample["warpTransform"] is fit["linearTransform"]
    from ImagingBasics.imageio import read_volume

    assert files["spectRegistered"] and read_volume(files["spect"]).same_geometry(case.ct)  # on the CT grid
    assert not slicer.mrmlScene.nodes  # temporary transform and volume removed
    request.registrationMethod = "Built-in"  # the user's choice wins
    slicer.cli_calls.clear()
    assert "spectRegistered" not in logic.exportInputs(request, str(tmp_path)) and not slicer.cli_calls
    failing = make_slicer_double(str(tmp_path), with_brains=True, fail_cli={"brainsfit"})
    monkeypatch.setattr(mod, "slicer", failing["slicer"])
    monkeypatch.setattr(sys.modules["SlicerModuleBase.logic"], "slicer", failing["slicer"])  # runCLI is the base's
    request.registrationMethod = "Automatic"
    with pytest.raises(RuntimeError, match="BRAINSFit registration failed: brainsfit: simulated failure"):
        logic.exportInputs(request, str(tmp_path))


def test_device_line_comes_from_a_child_process(module):
    from ImagingBasics.process import PipelineProcess

    mod, _, _ = module
    logic = mod.CTPerfusionMappingLogic()
    lines = []
    probe = PipelineProcess(logic.deviceProbeCommand(), on_text=lines.append).start()
    assert probe.wait(timeout_s=120) == 0
    text = logic.deviceText(lines)
    assert text.startswith("auto uses ") and "torch " in text
    assert logic.deviceText([], "boom") == "Device detection failed: boom"


def test_totalsegmentator_lobes_are_used_when_installed(monkeypatch, tmp_path, case, tiny_weights):
    import types

    doubles = make_slicer_double(str(tmp_path))
    doubles["slicer"].modules.totalsegmentator = object()
    calls = []

    class TotalSegmentatorLogicDouble:
        # the newest signature: positional parameters after the first two differ between versions
        def process(self, inputVolume, outputSegmentation, cpu=False, task=None, interactive=False,
                    sequenceBrowserNode=None, subset=None):
            calls.append(task)
            for value, sid in ((4, "lung_upper_lobe_right"), (5, "lung_middle_lobe_right"), (6, "lung_lower_lobe_right"),
                               (7, "lung_upper_lobe_left"), (8, "lung_lower_lobe_left"), (0, "heart")):
                segment_id = outputSegmentation.GetSegmentation().AddEmptySegment(sid, sid)
                outputSegmentation.masks[segment_id] = case.lobes.array == value if value else case.lobes.array == 99

    doubles["TotalSegmentator"] = types.SimpleNamespace(TotalSegmentatorLogic=TotalSegmentatorLogicDouble)
    mod = load_module(monkeypatch, doubles, MODULE, "CTPerfusionMapping_ts")
    logic = mod.CTPerfusionMappingLogic()
    files = logic.exportInputs(mod.PerfusionRequest(**_arguments(case, tiny_weights, inputSPECT=None)), str(tmp_path))
    assert calls == ["total"] and files["labelsSource"] == "cip"
    from ImagingBasics.imageio import read_volume

    np.testing.assert_array_equal(read_volume(files["lobes"]).array, case.lobes.array)
    assert not doubles["slicer"].mrmlScene.nodes  # the temporary segmentation is removed


def test_chest_imaging_platform_lungs_are_used_when_installed(monkeypatch, tmp_path, case, tiny_weights):
    from CTPerfusionMappingLib.labels import lung_thirds

    def cip_mask(ct):  # lung thirds as CIP writes them, with an airway type (2) in the high byte of some voxels
        thirds = lung_thirds(case.lungs).array.astype(np.uint16)
        thirds[::7][thirds[::7] > 0] |= 2 << 8
        return ct.with_array(thirds)

    doubles = make_slicer_double(str(tmp_path), cip_mask=cip_mask)
    mod = load_module(monkeypatch, doubles, MODULE, "CTPerfusionMapping_cip")
    logic = mod.CTPerfusionMappingLogic()
    arguments = _arguments(case, tiny_weights, segmentationSource="Chest Imaging Platform")
    outputs = logic.process(**arguments, timeoutSeconds=300)
    (name, params), = doubles["slicer"].cli_calls
    assert name == "generatepartiallunglabelmap" and params["ctFileName"].endswith("ct.nrrd")
    table = outputs["outputTable"].GetTable()
    names = [table.GetColumnByName("name").GetValue(i) for i in range(table.GetNumberOfRows())]
    assert names[:6] == ["left upper third", "left middle third", "left lower third", "right upper third",
                         "right middle third", "right lower third"]
    failing = make_slicer_double(str(tmp_path), cip_mask=cip_mask, fail_cli={"generatepartiallunglabelmap"})
    monkeypatch.setattr(mod, "slicer", failing["slicer"])
    monkeypatch.setattr(sys.modules["SlicerModuleBase.logic"], "slicer", failing["slicer"])  # runCLI is the base's
    with pytest.raises(RuntimeError, match="Chest Imaging Platform lung segmentation failed"):
        logic.process(**arguments)
