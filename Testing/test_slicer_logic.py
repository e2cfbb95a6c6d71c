"""The Slicer module's Logic end to end, with a test double of the `slicer` package (Testing/slicer_double.py).

The module file is imported with the double in place of Slicer; the Logic then exports real nodes' voxels, runs the
real ``ctpm run`` child process and imports its results into (double) nodes, exactly as it would in Slicer.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from slicer_double import ScalarVolumeNodeDouble, SegmentationNodeDouble, make_slicer_double

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
    for name, mod in doubles.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("CTPerfusionMapping_under_test", MODULE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, doubles["slicer"], tmp_path


def _node(volume, name):
    node = ScalarVolumeNodeDouble(name)
    slicer_nodes.update_node_from_volume(node, volume)
    return node


def _parameters(mod, case, tiny_weights, **changes):
    logic = mod.CTPerfusionMappingLogic()
    p = logic.getParameterNode()
    p.inputCT = _node(case.ct, "CT")
    p.inputSPECT = _node(case.spect, "SPECT")
    p.useBundledModel = False
    p.weightsFile = str(tiny_weights)
    p.device = "cpu"
    for k, v in changes.items():
        setattr(p, k, v)
    return logic, p


def test_logic_runs_the_pipeline_and_creates_the_output_nodes(module, case, tiny_weights):
    mod, slicer, tmp = module
    logic, p = _parameters(mod, case, tiny_weights)
    ct_before = slicer_nodes.array_from_image_data(p.inputCT.GetImageData())
    assert logic.inputProblem(p) is None
    progress = []
    logic.process(p, timeoutSeconds=300, onProgress=lambda f, step: progress.append(step))
    assert progress[-1] == "done" and "registration" in progress

    perfusion = slicer_nodes.volume_from_node(p.outputPerfusion)
    assert perfusion.shape == case.ct.shape and perfusion.same_geometry(case.ct)
    assert np.isfinite(perfusion.array).all() and 0.0 <= perfusion.array.min() and perfusion.array.max() <= 1.0
    display = p.outputPerfusion.GetDisplayNode()
    assert display.color_node_id == "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"
    assert display.window_min_max == (0.0, 1.0) and not display.auto_window_level
    assert slicer.viewer_layers == {"background": p.inputCT, "foreground": p.outputPerfusion, "opacity": 0.5}

    seg = p.outputFunctional
    names = [seg.GetSegmentation().GetNthSegment(i).GetName() for i in range(seg.GetSegmentation().GetNumberOfSegments())]
    assert names[:2] == ["low function", "high function"] and "right lower third" in names
    high = seg.masks[seg.GetSegmentation().GetNthSegmentID(1)]
    low = seg.masks[seg.GetSegmentation().GetNthSegmentID(0)]
    assert high.shape == case.ct.shape and high.any() and low.any() and not (high & low).any()

    table = p.outputTable.GetTable()
    rows = table.GetNumberOfRows()
    assert table.GetColumnByName("name").GetValue(rows - 1) == "both lungs" and rows == 9  # 6 thirds + 3 lung rows
    assert -1.0 <= table.GetColumnByName("spearman").GetValue(rows - 1) <= 1.0
    assert p.outputTable.GetColumnUnitLabel("volume_ml") == "mL"
    assert "Spearman R vs SPECT" in logic.summary
    np.testing.assert_array_equal(slicer_nodes.array_from_image_data(p.inputCT.GetImageData()), ct_before)
    assert not list(tmp.glob("ctpm-*")), "temporary files left behind"

    again_perfusion = p.outputPerfusion
    logic.process(p, timeoutSeconds=300)  # a second run fills the same output nodes
    assert p.outputPerfusion is again_perfusion and p.outputTable.GetTable().GetNumberOfRows() == rows
    assert len([n for n in slicer.mrmlScene.nodes if isinstance(n, ScalarVolumeNodeDouble)]) == 1


def test_a_given_lobe_segmentation_gives_lobe_rows(module, case, tiny_weights):
    mod, slicer, _ = module
    seg = SegmentationNodeDouble("lobes")
    for value, sid in ((4, "lung_upper_lobe_right"), (5, "lung_middle_lobe_right"), (6, "lung_lower_lobe_right"),
                       (7, "lung_upper_lobe_left"), (8, "lung_lower_lobe_left")):
        segment_id = seg.GetSegmentation().AddEmptySegment(sid, sid.replace("_", " "))
        seg.masks[segment_id] = case.lobes.array == value
    logic, p = _parameters(mod, case, tiny_weights, inputSPECT=None, inputSegmentation=seg,
                           segmentationSource="Given segmentation")
    logic.process(p, timeoutSeconds=300)
    table = p.outputTable.GetTable()
    names = [table.GetColumnByName("name").GetValue(i) for i in range(table.GetNumberOfRows())]
    assert names == ["RUL", "RML", "RLL", "LUL", "LLL", "right lung", "left lung", "both lungs"]
    assert table.GetColumnByName("spearman") is None  # no SPECT, no agreement columns
    assert "Spearman" not in logic.summary


def test_input_problems_and_child_errors_reach_the_user(module, case, tiny_weights):
    mod, _, tmp = module
    logic, p = _parameters(mod, case, tiny_weights)
    p.inputCT = None
    assert logic.inputProblem(p) == "Select a CT volume"
    logic, p = _parameters(mod, case, tiny_weights, segmentationSource="Given segmentation")
    assert "segmentation" in logic.inputProblem(p)
    logic, p = _parameters(mod, case, tiny_weights, weightsFile=str(tmp / "nothing.pt"))
    assert logic.inputProblem(p).startswith("Model weights file not found")
    with pytest.raises(UserError, match="not found"):
        logic.process(p)
    logic, p = _parameters(mod, case, tiny_weights, segmentationSource="TotalSegmentator")
    with pytest.raises(RuntimeError, match="TotalSegmentator is not installed"):
        logic.process(p)
    logic, p = _parameters(mod, case, tiny_weights)
    p.inputCT = _node(case.spect, "SPECT given as CT")  # the child refuses a non-CT with its own message
    with pytest.raises(UserError, match="CT"):
        logic.process(p, timeoutSeconds=300)
    assert p.outputPerfusion is None
    assert not list(tmp.glob("ctpm-*"))


def test_cancel_stops_the_child_and_cleans_up(module, case, tiny_weights):
    mod, _, tmp = module
    logic, p = _parameters(mod, case, tiny_weights)
    job = logic.start(p)
    job.cancel()
    assert job.process.returncode is not None and not Path(job.workdir).exists()
    with pytest.raises(UserError, match="cancelled"):
        logic.finish(job, p)
    assert p.outputPerfusion is None


def test_missing_packages_are_named_with_how_to_install_them(module, case, tiny_weights, monkeypatch):
    import importlib.util

    mod, _, _ = module
    logic, p = _parameters(mod, case, tiny_weights)
    assert logic.missingPackages() == {}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(UserError, match=r"missing Python packages: skimage \(slicer.util.pip_install\(\"scikit-image\"\)\)"):
        logic.start(p)


def test_brainsfit_registers_the_spect_in_slicer_when_installed(monkeypatch, tmp_path, case, tiny_weights):
    doubles = make_slicer_double(str(tmp_path), with_brains=True)
    for name, mod in doubles.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("CTPerfusionMapping_brains", MODULE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    slicer = doubles["slicer"]
    logic, p = _parameters(mod, case, tiny_weights)
    files = logic.exportInputs(p, str(tmp_path))
    (fit_name, fit), (resample_name, resample) = slicer.cli_calls
    assert fit_name == "brainsfit" and fit["fixedVolume"] is p.inputCT and fit["movingVolume"] is p.inputSPECT
    assert fit["useRigid"] and fit["costMetric"] == "MMI"
    assert resample_name == "brainsresample" and resample["referenceVolume"] is p.inputCT
    assert resample["warpTransform"] is fit["linearTransform"]
    from ImagingBasics.imageio import read_volume

    assert files["spectRegistered"] and read_volume(files["spect"]).same_geometry(case.ct)  # on the CT grid
    assert not slicer.mrmlScene.nodes  # temporary transform and volume removed
    p.registrationMethod = "Built-in"  # the user's choice wins
    slicer.cli_calls.clear()
    assert "spectRegistered" not in logic.exportInputs(p, str(tmp_path)) and not slicer.cli_calls
    failing = make_slicer_double(str(tmp_path), with_brains=True, fail_cli={"brainsfit"})
    monkeypatch.setattr(mod, "slicer", failing["slicer"])
    p.registrationMethod = "Automatic"
    with pytest.raises(RuntimeError, match="BRAINSFit registration failed: brainsfit: simulated failure"):
        logic.exportInputs(p, str(tmp_path))


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


def _load_module(monkeypatch, doubles, name):
    for key, mod in doubles.items():
        monkeypatch.setitem(sys.modules, key, mod)
    spec = importlib.util.spec_from_file_location(name, MODULE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    mod = _load_module(monkeypatch, doubles, "CTPerfusionMapping_ts")
    logic, p = _parameters(mod, case, tiny_weights, inputSPECT=None)
    files = logic.exportInputs(p, str(tmp_path))
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
    mod = _load_module(monkeypatch, doubles, "CTPerfusionMapping_cip")
    logic, p = _parameters(mod, case, tiny_weights, segmentationSource="Chest Imaging Platform")
    logic.process(p, timeoutSeconds=300)
    (name, params), = doubles["slicer"].cli_calls
    assert name == "generatepartiallunglabelmap" and params["ctFileName"].endswith("ct.nrrd")
    table = p.outputTable.GetTable()
    names = [table.GetColumnByName("name").GetValue(i) for i in range(table.GetNumberOfRows())]
    assert names[:6] == ["left upper third", "left middle third", "left lower third", "right upper third",
                         "right middle third", "right lower third"]
    failing = make_slicer_double(str(tmp_path), cip_mask=cip_mask, fail_cli={"generatepartiallunglabelmap"})
    monkeypatch.setattr(mod, "slicer", failing["slicer"])
    with pytest.raises(RuntimeError, match="Chest Imaging Platform lung segmentation failed"):
        logic.process(p)
