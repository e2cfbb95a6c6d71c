"""The CTPerfusionMapping module's Logic end to end on a real MRML scene (slicer-core; Testing/slicer_real.py).

The module file is imported as Slicer imports it; the Logic's ``process`` (the keywords a script, the batch script and
the Widget use) exports real nodes' voxels, runs the real ``ctpm run`` child process and fills real output nodes
(volume, segmentation, table, their display nodes) through the real ``slicer.util`` and module logics. Where the
inputs lie in world coordinates (a parent transform, an oblique and axis-flipped CT), the outputs are compared with the
CT and with each other voxel by voxel in RAS.
"""

import inspect
import re
import time
from pathlib import Path

import numpy as np
import pytest
from slicer_real import (
    DicomDatabaseStandIn,
    dice,
    mask_on_volume_grid,
    reoriented,
    rotation_ras,
    segment_ids,
    segment_world_points,
    voxel_ras,
)

from CTPerfusionMappingLib.network import NetworkConfig, build_model
from CTPerfusionMappingLib.slicer_glue.segments import PERFUSION_COLOUR_NODE_ID
from CTPerfusionMappingLib.synthetic.cohort import generate_case
from CTPerfusionMappingLib.weights import save_weights
from ImagingBasics import slicer_nodes
from ImagingBasics.errors import UserError

LOBES = {4: "lung_upper_lobe_right", 5: "lung_middle_lobe_right", 6: "lung_lower_lobe_right",
         7: "lung_upper_lobe_left", 8: "lung_lower_lobe_left"}
#: TotalSegmentator's "standard segment names" (its terminology labels) for its lobe label names
STANDARD_NAMES = {"lung_upper_lobe_right": "upper lobe of right lung", "lung_middle_lobe_right": "middle lobe of right lung",
                  "lung_lower_lobe_right": "lower lobe of right lung", "lung_upper_lobe_left": "upper lobe of left lung",
                  "lung_lower_lobe_left": "lower lobe of left lung", "heart": "heart"}


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
def module(real_slicer):
    return real_slicer.module("CTPerfusionMapping")


def _arguments(real, case, tiny_weights, transform=None, **changes):
    """The keywords of CTPerfusionMappingLogic.process for the case (a tiny network, on the CPU)."""
    arguments = dict(inputCT=real.add_volume(case.ct, "CT", transform),
                     inputSPECT=real.add_volume(case.spect, "SPECT", transform), weightsFile=str(tiny_weights),
                     device="cpu")
    arguments.update(changes)
    return arguments


def _names(segmentation_node):
    return list(segment_ids(segmentation_node))


def _column(table_node, key):
    table = table_node.GetTable()
    return [table.GetColumnByName(key).GetValue(i) for i in range(table.GetNumberOfRows())]


def test_logic_runs_the_pipeline_and_fills_real_output_nodes_twice(real_slicer, module, case, tiny_weights):
    slicer = real_slicer.slicer
    logic = module.CTPerfusionMappingLogic()
    arguments = _arguments(real_slicer, case, tiny_weights)
    ct = arguments["inputCT"]
    ct_before = slicer.util.arrayFromVolume(ct).copy()
    assert logic.inputProblem(**arguments) is None
    progress = []
    outputs = logic.process(**arguments, timeoutSeconds=300, onProgress=lambda f, step: progress.append(step))
    assert progress[-1] == "done" and "registration" in progress
    assert set(outputs) == {"outputPerfusion", "outputFunctional", "outputTable"}

    perfusion_node = outputs["outputPerfusion"]
    assert perfusion_node.IsA("vtkMRMLScalarVolumeNode") and perfusion_node.GetName() == "CT perfusion"
    perfusion = slicer_nodes.volume_from_node(perfusion_node)
    assert perfusion.shape == case.ct.shape and perfusion.same_geometry(case.ct)
    assert np.isfinite(perfusion.array).all() and 0.0 <= perfusion.array.min() and perfusion.array.max() <= 1.0
    display = perfusion_node.GetDisplayNode()
    assert display.GetColorNodeID() == PERFUSION_COLOUR_NODE_ID and display.GetColorNode() is not None
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    assert real_slicer.slice_layers() == [(ct.GetID(), perfusion_node.GetID(), 0.5)] * 3

    seg = outputs["outputFunctional"]
    names = _names(seg)
    assert names[:2] == ["low function", "high function"] and "right lower third" in names
    assert list(segment_ids(seg).values())[:2] == ["low_function", "high_function"]
    high = slicer.util.arrayFromSegmentBinaryLabelmap(seg, "high_function", ct)
    low = slicer.util.arrayFromSegmentBinaryLabelmap(seg, "low_function", ct)
    assert high.dtype == np.int16 and high.shape == case.ct.shape
    assert high.any() and low.any() and not (high & low).any()
    assert seg.GetDisplayNode() is not None

    table_node = outputs["outputTable"]
    table = table_node.GetTable()
    rows = table.GetNumberOfRows()
    assert _column(table_node, "name")[-1] == "both lungs" and rows == 9  # 6 thirds + 3 lung rows
    assert table.GetColumnByName("name").GetClassName() == "vtkStringArray"
    assert table.GetColumnByName("volume_ml").GetClassName() == "vtkDoubleArray"
    assert table_node.GetColumnUnitLabel("volume_ml") == "mL" and table_node.GetColumnTitle("spearman") == "Spearman R"
    assert table_node.GetUseColumnTitleAsColumnHeader()
    assert -1.0 <= _column(table_node, "spearman")[-1] <= 1.0
    assert "Spearman R vs SPECT" in logic.summary
    assert re.search(r"posterior/anterior right \d\.\d\d, left \d\.\d\d \(SPECT \d\.\d\d, \d\.\d\d\)", logic.summary)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct), ct_before)
    assert not list(real_slicer.temporary.glob("ctpm-*")), "temporary files left behind"

    nodes = real_slicer.node_ids()
    again = logic.process(**arguments, **outputs, timeoutSeconds=300)  # a second run fills the same output nodes
    assert again == outputs and real_slicer.node_ids() == nodes  # no extra node, none removed
    assert _names(seg) == names and table.GetNumberOfRows() == rows
    assert not real_slicer.orphan_display_nodes()
    assert not real_slicer.vtk_errors(), real_slicer.vtk_errors()


@pytest.mark.parametrize("placement", ["parent transform", "oblique flipped CT"])
def test_outputs_coincide_with_the_ct_in_world_coordinates(real_slicer, module, case, tiny_weights, placement):
    """The perfusion map lies on the CT's voxels in RAS; the functional and region segments coincide with it there."""
    slicer = real_slicer.slicer
    moved = rotation_ras(10.0, (20.0, 10.0, -5.0), degrees_about_r=4.0)
    if placement == "parent transform":
        transform = real_slicer.add_linear_transform(moved, "patient position")
        arguments = _arguments(real_slicer, case, tiny_weights, transform=transform, inputSPECT=None)
    else:
        arguments = dict(inputCT=real_slicer.add_volume(reoriented(case.ct, moved, flip_i=True), "CT"),
                         weightsFile=str(tiny_weights), device="cpu")
    ct = arguments["inputCT"]
    logic = module.CTPerfusionMappingLogic()
    outputs = logic.process(**arguments, timeoutSeconds=300)
    perfusion_node, seg = outputs["outputPerfusion"], outputs["outputFunctional"]
    np.testing.assert_allclose(voxel_ras(perfusion_node), voxel_ras(ct), atol=1e-3)  # voxel by voxel in RAS

    perfusion = slicer.util.arrayFromVolume(perfusion_node)
    ids = segment_ids(seg)
    high = mask_on_volume_grid(segment_world_points(seg, ids["high function"]), perfusion_node)
    expected_high = perfusion >= 0.66 * perfusion.max()
    assert dice(high, expected_high) >= 0.99, dice(high, expected_high)
    lungs = high | mask_on_volume_grid(segment_world_points(seg, ids["low function"]), perfusion_node)
    regions = np.zeros_like(lungs)
    for name, segment_id in ids.items():
        if name not in ("high function", "low function"):
            regions |= mask_on_volume_grid(segment_world_points(seg, segment_id), perfusion_node)
    assert dice(regions, lungs) >= 0.99 and perfusion[~lungs].max() == 0.0
    exported = slicer.util.arrayFromSegmentBinaryLabelmap(seg, ids["high function"], ct) > 0  # Slicer's resampling
    assert dice(exported, expected_high) >= 0.99
    assert not real_slicer.vtk_errors(), real_slicer.vtk_errors()


def test_a_lobe_label_map_gives_lobe_rows(real_slicer, module, case, tiny_weights):
    labels = real_slicer.add_volume(case.lobes, "lobes", label=True)
    logic = module.CTPerfusionMappingLogic()
    outputs = logic.process(**_arguments(real_slicer, case, tiny_weights, inputSPECT=None, inputLabelmap=labels),
                            timeoutSeconds=300)
    assert _column(outputs["outputTable"], "name") == ["RUL", "RML", "RLL", "LUL", "LLL", "right lung", "left lung",
                                                       "both lungs"]
    assert _names(outputs["outputFunctional"])[2:] == ["RUL", "RML", "RLL", "LUL", "LLL"]
    assert outputs["outputTable"].GetTable().GetColumnByName("spearman") is None  # no SPECT, no agreement columns
    assert "Spearman" not in logic.summary


def test_a_segmentation_with_totalsegmentator_names_gives_lobe_rows(real_slicer, module, case, tiny_weights):
    """TotalSegmentator's output as Slicer holds it: segment IDs its label names, names its standard names, other
    organs beside the lobes."""
    from slicer_double import totalsegmentator_module

    def labels_of_ct(ct):
        labels = np.where(np.isin(case.lobes.array, list(LOBES)), case.lobes.array + 6, 0).astype(np.uint8)  # 10-14
        labels[(case.lobes.array == 0) & (case.ct.array > 0)] = 51  # not a lung: ignored
        return ct.with_array(labels)

    totalsegmentator = totalsegmentator_module(labels_of_ct, {**{v + 6: n for v, n in LOBES.items()}, 51: "heart"},
                                               STANDARD_NAMES)
    arguments = _arguments(real_slicer, case, tiny_weights, inputSPECT=None, segmentationSource="Given segmentation")
    seg = real_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "TotalSegmentator")
    totalsegmentator.TotalSegmentatorLogic().process(arguments["inputCT"], seg, task="total")
    assert "lung_lower_lobe_left" in segment_ids(seg).values() and "lower lobe of left lung" in segment_ids(seg)
    outputs = module.CTPerfusionMappingLogic().process(**arguments, inputSegmentation=seg, timeoutSeconds=300)
    assert _column(outputs["outputTable"], "name")[:5] == ["RUL", "RML", "RLL", "LUL", "LLL"]
    rul = _column(outputs["outputTable"], "volume_ml")[0]
    assert rul == pytest.approx((case.lobes.array == 4).sum() * case.ct.voxel_volume_ml, abs=0.01)  # CSV: 2 decimals


def test_a_ct_loaded_from_a_prone_dicom_series_gets_the_position_warning(real_slicer, module, case, tiny_weights,
                                                                          tmp_path, monkeypatch):
    """The exported NRRD has no patient position: the Logic reads it through Slicer's DICOM database and hands it to
    the child, whose metrics carry the warning that the Logic reports."""
    from dicom_images import write_ct_volume

    truth = write_ct_volume(tmp_path / "prone", case.ct, patient_position="HFP")
    monkeypatch.setattr(real_slicer.slicer, "dicomDatabase", DicomDatabaseStandIn(tmp_path / "prone"), raising=False)
    logic = module.CTPerfusionMappingLogic()
    arguments = _arguments(real_slicer, case, tiny_weights, inputSPECT=None)
    arguments["inputCT"].SetAttribute("DICOM.instanceUIDs", " ".join(truth["sop_uids"]))
    logic.process(**arguments, timeoutSeconds=300)
    assert len([w for w in logic.warnings if "head first, prone (DICOM PatientPosition HFP)" in w]) == 1
    arguments["inputCT"].SetAttribute("DICOM.instanceUIDs", "")  # the same CT from a file: nothing to warn about
    logic.process(**arguments, timeoutSeconds=300)
    assert not [w for w in logic.warnings if "PatientPosition" in w]


def test_the_widget_maps_its_parameter_node_onto_the_logic_keywords(real_slicer, module, case):
    p = module.CTPerfusionMappingParameterNode(module.CTPerfusionMappingLogic().getParameterNode())
    ct, spect = real_slicer.add_volume(case.ct, "CT"), real_slicer.add_volume(case.spect, "SPECT")
    p.inputCT, p.inputSPECT, p.useBundledModel, p.weightsFile, p.highPercentile = ct, spect, True, "w.pt", 80.0
    arguments = module.CTPerfusionMappingWidget.logicArguments(p)
    inspect.signature(module.CTPerfusionMappingLogic.process).bind(None, **arguments)  # all keywords of process
    assert arguments["inputCT"] is ct and arguments["weightsFile"] is None  # the bundled model
    assert arguments["highPercentile"] is None and arguments["threshold"] == 0.66  # no percentile split
    p.useBundledModel, p.splitAtPercentile = False, True
    arguments = module.CTPerfusionMappingWidget.logicArguments(p)
    assert arguments["weightsFile"] == "w.pt" and arguments["highPercentile"] == 80.0
    assert module.CTPerfusionMappingLogic().inputProblem(**arguments) == "Model weights file not found: w.pt"


def test_input_problems_and_a_failing_child_leave_the_scene_unchanged(real_slicer, module, case, tiny_weights):
    logic = module.CTPerfusionMappingLogic()
    arguments = _arguments(real_slicer, case, tiny_weights)
    nodes = real_slicer.node_ids()
    assert logic.inputProblem(**dict(arguments, inputCT=None)) == "Select a CT volume"
    assert "segmentation" in logic.inputProblem(**dict(arguments, segmentationSource="Given segmentation"))
    missing = dict(arguments, weightsFile=str(real_slicer.temporary / "nothing.pt"))
    assert logic.inputProblem(**missing).startswith("Model weights file not found")
    with pytest.raises(UserError, match="not found"):
        logic.process(**missing)
    with pytest.raises(RuntimeError, match="TotalSegmentator is not installed"):
        logic.process(**dict(arguments, segmentationSource="TotalSegmentator"))
    with pytest.raises(UserError, match=r"^threshold must be from 0.05 to 0.95, got 0.99$"):  # before anything runs
        logic.process(**dict(arguments, threshold=0.99))
    assert real_slicer.node_ids() == nodes
    not_a_ct = dict(arguments, inputCT=arguments["inputSPECT"], inputSPECT=None)
    with pytest.raises(UserError, match="CT"):  # the child refuses a non-CT with its own one-line message
        logic.process(**not_a_ct, timeoutSeconds=300)
    assert real_slicer.node_ids() == nodes  # no output node, nothing removed
    assert not list(real_slicer.temporary.glob("ctpm-*"))


def test_cancel_mid_run_stops_the_child_and_leaves_the_scene_unchanged(real_slicer, module, case, tiny_weights):
    logic = module.CTPerfusionMappingLogic()
    arguments = _arguments(real_slicer, case, tiny_weights)
    nodes = real_slicer.node_ids()
    steps = []
    job = logic.process(**arguments, waitForCompletion=False, onProgress=lambda f, step: steps.append((f, step)))
    start = time.monotonic()
    while job.poll() and not steps and time.monotonic() - start < 120:  # until the child reports its first step
        time.sleep(0.05)
    assert steps and job.poll(), "the child ended before it could be cancelled"
    job.cancel()
    assert job.process.returncode is not None and not Path(job.workdir).exists()
    with pytest.raises(UserError, match="cancelled"):
        logic.finish(job)
    assert real_slicer.node_ids() == nodes and not list(real_slicer.temporary.glob("ctpm-*"))


def test_missing_packages_are_named_with_how_to_install_them(real_slicer, module, case, tiny_weights, monkeypatch):
    import importlib.util

    logic = module.CTPerfusionMappingLogic()
    assert logic.missingPackages() == {}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(UserError, match=r"missing Python packages: skimage \(slicer.util.pip_install\(\"scikit-image\"\)\)"):
        logic.process(**_arguments(real_slicer, case, tiny_weights))


def test_brainsfit_registers_the_spect_in_slicer_when_installed(real_slicer, module, case, tiny_weights):
    from ImagingBasics.imageio import read_volume

    real_slicer.install_cli_modules("brainsfit", "brainsresample")
    logic = module.CTPerfusionMappingLogic()
    request = module.PerfusionRequest(**_arguments(real_slicer, case, tiny_weights))
    nodes = real_slicer.node_ids()
    files = logic.exportInputs(request, str(real_slicer.temporary))
    (fit_name, fit), (resample_name, resample) = real_slicer.cli_calls
    assert fit_name == "brainsfit" and fit["fixedVolume"] is request.inputCT and fit["movingVolume"] is request.inputSPECT
    assert fit["useRigid"] and fit["costMetric"] == "MMI"
    assert resample_name == "brainsresample" and resample["referenceVolume"] is request.inputCT
    assert resample["warpTransform"] is fit["linearTransform"]
    assert files["spectRegistered"] and read_volume(files["spect"]).same_geometry(case.ct)  # on the CT grid
    assert real_slicer.node_ids() == nodes  # temporary transform, volume and CLI nodes removed
    request.registrationMethod = "Built-in"  # the user's choice wins
    real_slicer.cli_calls.clear()
    assert "spectRegistered" not in logic.exportInputs(request, str(real_slicer.temporary))
    assert not real_slicer.cli_calls
    real_slicer.install_cli_modules("brainsfit", "brainsresample", fail={"brainsfit"})
    request.registrationMethod = "Automatic"
    with pytest.raises(RuntimeError, match="BRAINSFit registration failed: brainsfit: simulated failure"):
        logic.exportInputs(request, str(real_slicer.temporary))
    assert real_slicer.node_ids() == nodes


def test_device_line_comes_from_a_child_process(module):
    from ImagingBasics.process import PipelineProcess

    logic = module.CTPerfusionMappingLogic()
    lines = []
    probe = PipelineProcess(logic.deviceProbeCommand(), on_text=lines.append).start()
    assert probe.wait(timeout_s=120) == 0
    text = logic.deviceText(lines)
    assert text.startswith("auto uses ") and "torch " in text
    assert logic.deviceText([], "boom") == "Device detection failed: boom"


def test_totalsegmentator_lobes_are_used_when_installed(real_slicer, module, case, tiny_weights):
    from slicer_double import totalsegmentator_module

    from ImagingBasics.imageio import read_volume

    totalsegmentator = totalsegmentator_module(
        lambda ct: ct.with_array(np.where(case.lobes.array > 0, case.lobes.array + 6, 0).astype(np.uint8)),
        {v + 6: n for v, n in LOBES.items()}, STANDARD_NAMES)
    real_slicer.install_extension("totalsegmentator", totalsegmentator)
    logic = module.CTPerfusionMappingLogic()
    request = module.PerfusionRequest(**_arguments(real_slicer, case, tiny_weights, inputSPECT=None))
    nodes = real_slicer.node_ids()
    files = logic.exportInputs(request, str(real_slicer.temporary))
    assert totalsegmentator.calls == ["total"] and files["labelsSource"] == "cip"
    np.testing.assert_array_equal(read_volume(files["lobes"]).array, case.lobes.array)
    assert real_slicer.node_ids() == nodes  # the temporary segmentation is removed


def test_chest_imaging_platform_lungs_are_used_when_installed(real_slicer, module, case, tiny_weights):
    from CTPerfusionMappingLib.labels import lung_thirds

    def cip_mask(ct):  # lung thirds as CIP writes them, with an airway type (2) in the high byte of some voxels
        thirds = lung_thirds(case.lungs).array.astype(np.uint16)
        thirds[::7][thirds[::7] > 0] |= 2 << 8
        return ct.with_array(thirds)

    real_slicer.install_cli_modules("generatepartiallunglabelmap", cip_mask=cip_mask)
    logic = module.CTPerfusionMappingLogic()
    arguments = _arguments(real_slicer, case, tiny_weights, inputSPECT=None, segmentationSource="Chest Imaging Platform")
    outputs = logic.process(**arguments, timeoutSeconds=300)
    (name, params), = real_slicer.cli_calls
    assert name == "generatepartiallunglabelmap" and params["ctFileName"].endswith("ct.nrrd")
    assert _column(outputs["outputTable"], "name")[:6] == ["left upper third", "left middle third", "left lower third",
                                                           "right upper third", "right middle third",
                                                           "right lower third"]
    real_slicer.install_cli_modules("generatepartiallunglabelmap", cip_mask=cip_mask,
                                    fail={"generatepartiallunglabelmap"})
    with pytest.raises(RuntimeError, match="Chest Imaging Platform lung segmentation failed"):
        logic.process(**arguments)


def test_the_self_test_passes_on_the_real_scene(real_slicer, module, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        real_slicer.slicer.selfTests["CTPerfusionMapping"]()  # as Slicer's self-test runner calls it
    assert "Test passed" in caplog.text
    assert len(real_slicer.nodes("vtkMRMLSegmentationNode")) == 1 and real_slicer.nodes("vtkMRMLTableNode")
    assert not list(real_slicer.temporary.iterdir())
