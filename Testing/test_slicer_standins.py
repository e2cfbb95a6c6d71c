"""The real MRML scene of the module tests and this project's stand-ins for what slicer-core lacks
(Testing/slicer_real.py, Testing/slicer_double.py), checked against the real library where its behaviour can be
observed, and against the semantics of Slicer's sources where it cannot (the parameter node wrapper: Slicer's
Base/Python/slicer/parameterNodeWrapper/validators.py, serializers.py, wrapper.py, parameterPack.py).

These are also the facts where the earlier hand-written double of MRML was wrong: the CLI status flags, the IDs of
segments, the one parameter node per module that survives ``mrmlScene.Clear()``, int16 segment arrays, display nodes
left behind without the Data module's logic, colour node IDs that exist only with the Colors logic or its files.
"""

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from tiny_images import tiny_ct

from ImagingBasics.imageio import read_volume, write_volume
from ImagingBasics.slicer_nodes import volume_from_node
from ImagingBasics.volume import Volume

ROOT = Path(__file__).resolve().parents[1]


def _oblique_volume(dtype=np.int16) -> Volume:
    a = math.radians(25.0)
    direction = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    direction = direction @ np.diag([1.0, -1.0, 1.0])  # and a flipped axis
    return Volume(np.arange(4 * 5 * 6, dtype=dtype).reshape(4, 5, 6), (0.8, 1.1, 2.5), (-120.0, 40.0, 300.0),
                  direction)


def _same_in_world(a: Volume, b: Volume) -> bool:
    """The same voxel values at the same places (whatever the order of the voxels in memory): b resampled onto a's
    grid by nearest neighbour equals a."""
    import SimpleITK as sitk

    from ImagingBasics.volume import to_sitk

    on_a = sitk.Resample(to_sitk(b), to_sitk(a), sitk.Transform(), sitk.sitkNearestNeighbor, -1)
    return bool(np.array_equal(sitk.GetArrayFromImage(on_a), a.array))


def test_the_colour_nodes_the_modules_name_exist_with_the_colors_logic(real_slicer):
    from CTPerfusionMappingLib.slicer_glue.segments import PERFUSION_COLOUR_NODE_ID
    from DoseCNNLib.slicer_glue.results import DOSE_COLOUR_NODE_ID

    slicer, colors = real_slicer.slicer, real_slicer.logics["Colors"]
    assert PERFUSION_COLOUR_NODE_ID == colors.GetFileColorNodeID("ColdToHotRainbow.txt")  # the real ID of a colour file
    assert DOSE_COLOUR_NODE_ID == colors.GetPETColorNodeID(slicer.vtkMRMLPETProceduralColorNode.PETheat)
    cold_to_hot = real_slicer.scene.GetNodeByID(PERFUSION_COLOUR_NODE_ID)
    assert cold_to_hot.GetNumberOfColors() == 256
    first, last = [0.0] * 4, [0.0] * 4
    cold_to_hot.GetColor(0, first)
    cold_to_hot.GetColor(255, last)
    assert first[2] > first[0] and last[0] > last[2]  # blue to red
    assert real_slicer.scene.GetNodeByID(DOSE_COLOUR_NODE_ID) is not None
    assert real_slicer.scene.GetNodeByID(colors.GetDefaultLabelMapColorNodeID()) is not None
    bare = slicer.vtkMRMLScene()  # a scene without the Colors logic has neither
    assert bare.GetNodeByID(PERFUSION_COLOUR_NODE_ID) is None and bare.GetNodeByID(DOSE_COLOUR_NODE_ID) is None
    assert not real_slicer.vtk_errors()


def test_volume_files_load_and_save_through_the_real_storage_nodes(real_slicer, tmp_path):
    slicer = real_slicer.slicer
    volume = _oblique_volume()
    write_volume(volume, tmp_path / "ct scan.nrrd")
    node = slicer.util.loadVolume(str(tmp_path / "ct scan.nrrd"))
    assert node.GetClassName() == "vtkMRMLScalarVolumeNode" and node.GetName() == "ct scan"
    loaded = volume_from_node(node)
    assert _same_in_world(volume, loaded) and loaded.spacing == pytest.approx(volume.spacing)
    # Slicer's reader keeps IJK-to-RAS right-handed: this left-handed grid comes back with its slices reversed
    np.testing.assert_array_equal(loaded.array, volume.array[::-1])
    assert real_slicer.nodes("vtkMRMLSliceCompositeNode")[0].GetBackgroundVolumeID() == node.GetID()  # shown
    label = slicer.util.loadLabelVolume(str(tmp_path / "ct scan.nrrd"))
    assert label.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    with pytest.raises(RuntimeError, match="Failed to load node from file"):
        slicer.util.loadVolume(str(tmp_path / "missing.nrrd"))
    node.SetName("renamed")
    assert slicer.util.saveNode(node, str(tmp_path / "saved.nrrd"))
    assert _same_in_world(volume, read_volume(tmp_path / "saved.nrrd"))
    assert slicer.util.saveNode(node, str(tmp_path / "new folder" / "saved.nrrd"))  # the writer makes the folder
    assert not slicer.util.saveNode(node, str(tmp_path / "saved.nrrd" / "x.nrrd"))  # False (no exception), as in Slicer


def test_segmentations_and_tables_round_trip_through_their_storage_nodes(real_slicer, tmp_path):
    import vtk

    slicer, scene = real_slicer.slicer, real_slicer.scene
    ct = real_slicer.add_volume(tiny_ct(), "CT")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    mask = np.zeros(tiny_ct().shape, np.uint8)
    mask[2:5, 3:6, 4:8] = 1
    segment = segmentation.GetSegmentation().AddEmptySegment("liver", "liver", (0.8, 0.3, 0.2))
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segment, ct)
    assert slicer.util.saveNode(segmentation, str(tmp_path / "organs.seg.nrrd"))
    loaded = slicer.util.loadSegmentation(str(tmp_path / "organs.seg.nrrd"))
    assert loaded.GetSegmentation().GetNthSegmentID(0) == "liver"
    assert loaded.GetSegmentation().GetNthSegment(0).GetName() == "liver"
    back = slicer.util.arrayFromSegmentBinaryLabelmap(loaded, "liver", ct)
    assert back.dtype == np.int16  # segment arrays are int16, whatever went in
    np.testing.assert_array_equal(back, mask)

    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "regions")
    column = vtk.vtkDoubleArray()
    column.SetName("volume_ml")
    column.InsertNextValue(812.5)
    table.AddColumn(column)
    table.SetColumnUnitLabel("volume_ml", "mL")
    assert slicer.util.saveNode(table, str(tmp_path / "regions.csv"))
    assert (tmp_path / "regions.csv").read_text().splitlines() == ['"volume_ml"', "812.5"]
    assert "mL" in (tmp_path / "regions.schema.csv").read_text()  # the column properties go beside it
    again = slicer.util.loadTable(str(tmp_path / "regions.csv"))
    assert again.GetColumnUnitLabel("volume_ml") == "mL" and again.GetTable().GetValue(0, 0).ToDouble() == 812.5


def test_cli_runs_return_real_cli_nodes_with_their_status_flags(real_slicer):
    from ImagingBasics.slicer_nodes import volume_from_node as to_volume  # noqa: F401 (the stand-in's dependency)
    from SlicerModuleBase.logic import PipelineLogic

    slicer = real_slicer.slicer
    cli_class = slicer.vtkMRMLCommandLineModuleNode
    assert (cli_class.Completed, cli_class.ErrorsMask, cli_class.CompletedWithErrors) == (32, 64, 96)
    real_slicer.install_cli_modules("generatepartiallunglabelmap", fail={"generatepartiallunglabelmap"})
    before = real_slicer.scene.GetNumberOfNodes()
    cli = slicer.cli.runSync(slicer.modules.generatepartiallunglabelmap, None,
                             {"ctFileName": "ct.nrrd", "outputLungMaskFileName": "lungs.nrrd"})
    assert cli.IsA("vtkMRMLCommandLineModuleNode") and cli.GetStatus() == cli.CompletedWithErrors
    assert cli.GetStatus() & cli.ErrorsMask and cli.GetErrorText().endswith("simulated failure")
    real_slicer.scene.RemoveNode(cli)
    with pytest.raises(RuntimeError, match="^lungs failed: generatepartiallunglabelmap: simulated failure$"):
        PipelineLogic().runCLI(slicer.modules.generatepartiallunglabelmap, {"ctFileName": "ct.nrrd",
                                                                            "outputLungMaskFileName": "l.nrrd"}, "lungs")
    assert real_slicer.scene.GetNumberOfNodes() == before  # runCLI removes the CLI node
    with pytest.raises(AssertionError, match="has no parameter"):
        slicer.cli.runSync(slicer.modules.generatepartiallunglabelmap, None, {"inputVolume": None})


def test_a_modules_parameter_node_is_one_singleton_that_survives_clear(real_slicer):
    mod = real_slicer.module("CTPerfusionMapping")
    logic, scene = mod.CTPerfusionMappingLogic(), real_slicer.scene
    node = logic.getParameterNode()
    assert node is logic.getParameterNode() and node is mod.CTPerfusionMappingLogic().getParameterNode()
    assert node.GetSingletonTag() == "CTPerfusionMapping" and node.GetAttribute("ModuleName") == "CTPerfusionMapping"
    p = mod.CTPerfusionMappingParameterNode(node)
    p.threshold = 0.7
    scene.Clear()
    assert logic.getParameterNode() is node  # the same node, reset by the close
    assert node.GetAttribute("ModuleName") == "CTPerfusionMapping" and p.threshold == 0.66
    assert len(logic.getAllParameterNodes()) == 1


def test_the_parameter_node_wrapper_validates_and_stores_as_slicers_does(real_slicer):
    mod = real_slicer.module("CTPerfusionMapping")
    node = mod.CTPerfusionMappingLogic().getParameterNode()
    p = mod.CTPerfusionMappingParameterNode(node)
    assert node.GetParameter("threshold") == "0.66" and node.GetParameter("registerSPECT") == "True"  # defaults written
    assert node.GetParameter("segmentationSource") == "Automatic" and p.inputCT is None
    p.threshold = 0.95  # WithinRange is inclusive
    with pytest.raises(ValueError, match=r"^Value must be within range \[0.05, 0.95\], is 0.951$"):
        p.threshold = 0.951
    with pytest.raises(ValueError):
        p.threshold = math.nan
    with pytest.raises(TypeError):  # the type is checked before the range
        p.threshold = "0.5"
    assert p.threshold == 0.95 and node.GetParameter("threshold") == "0.95"  # a refused value changes nothing
    p.threshold = 1 - 0.5  # an int or float
    with pytest.raises(ValueError, match="must be in one of the following"):
        p.device = "tpu"
    ct = real_slicer.add_volume(tiny_ct(), "CT")
    p.inputCT = ct
    assert p.inputCT is ct and node.GetNodeReferenceID("inputCT") == ct.GetID()
    labels = real_slicer.add_volume(tiny_ct(), "labels", label=True)
    p.inputCT = labels  # a label map is a scalar volume node (its subclass)
    with pytest.raises(TypeError):
        p.inputCT = real_slicer.scene.AddNewNodeByClass("vtkMRMLTableNode")
    real_slicer.scene.RemoveNode(labels)
    assert p.inputCT is None  # the reference goes with the node


def test_lists_of_parameter_packs_are_stored_and_written_back(real_slicer):
    mod = real_slicer.module("DoseCNN")
    node = mod.DoseCNNLogic().getParameterNode()
    p = mod.DoseCNNParameterNode(node)
    assert list(p.timePoints) == [] and node.GetParameter("timePoints.len") == "0"
    spect = real_slicer.add_volume(tiny_ct(), "SPECT")
    p.timePoints = [mod.DoseTimePoint(spect=spect, ct=None, hours=4.0), mod.DoseTimePoint(spect, None, 24.0, 5.0)]
    assert node.GetParameter("timePoints.len") == "2" and node.GetParameter("timePoints.1.hours") == "24.0"
    point = p.timePoints[1]
    assert point.spect is spect and point.ct is None and point.activityMBq == 5.0
    point.hours = 48.0  # a pack read from the node writes itself back
    assert p.timePoints[1].hours == 48.0
    with pytest.raises(ValueError, match="within range"):
        point.hours = -1.0
    with pytest.raises(ValueError, match="within range"):
        mod.DoseTimePoint(spect=spect, activityMBq=2e6)
    with pytest.raises(TypeError, match="unexpected keyword"):
        mod.DoseTimePoint(spect=spect, time=4.0)
    points = p.timePoints
    points.append(mod.DoseTimePoint(spect=spect, hours=96.0))  # the list writes itself back
    assert [t.hours for t in p.timePoints] == [4.0, 48.0, 96.0]
    with pytest.raises(ValueError):
        p.activityMBq = 2e5
    assert p.activityMBq == 0.0


def test_segment_ids_and_display_nodes_are_as_mrml_makes_them(real_slicer):
    slicer, scene = real_slicer.slicer, real_slicer.scene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    ids = [segmentation.GetSegmentation().AddEmptySegment("high_function", "high function") for _ in range(3)]
    assert ids == ["high_function", "high_function_1", "high_function_2"]
    node = real_slicer.add_volume(tiny_ct(), "CT")
    display = node.GetDisplayNode()
    scene.RemoveNode(node)
    assert scene.GetNodeByID(display.GetID()) is None and not real_slicer.orphan_display_nodes()  # the Data logic
    bare = slicer.vtkMRMLScene()  # no Data module logic: the display node stays behind
    volume = bare.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    volume.CreateDefaultDisplayNodes()
    bare.RemoveNode(volume)
    assert bare.GetNumberOfNodesByClass("vtkMRMLScalarVolumeDisplayNode") == 1


def test_slicer_util_finds_the_scripted_modules_logic_and_self_test(real_slicer):
    slicer = real_slicer.slicer
    mod = real_slicer.module("DoseCNN")
    logic = slicer.util.getModuleLogic("DoseCNN")
    assert isinstance(logic, mod.DoseCNNLogic) and slicer.util.getModuleLogic("DoseCNN") is logic
    assert slicer.util.getModuleWidget("DoseCNN").logic is logic
    assert Path(slicer.util.modulePath("DoseCNN")) == ROOT / "DoseCNN" / "DoseCNN.py"
    assert callable(slicer.selfTests["DoseCNN"])
    assert real_slicer.module_manager.module("DoseCNN").title == "DoseCNN"
    with pytest.raises(RuntimeError, match="Could not find module"):
        slicer.util.getModuleLogic("NoSuchModule")


def test_errors_are_reraised_after_the_error_display_and_messages_logged(real_slicer, caplog):
    slicer = real_slicer.slicer
    with pytest.raises(ValueError, match="boom"):
        with slicer.util.tryWithErrorDisplay("It failed.", waitCursor=True):
            raise ValueError("boom")
    assert real_slicer.app.overrideCursors == []  # the wait cursor is restored
    with caplog.at_level(logging.INFO):
        slicer.util.delayDisplay("Running the pipeline", 100)
    assert "Running the pipeline" in caplog.text
    ct = real_slicer.add_volume(tiny_ct(), "CT")
    slicer.util.setSliceViewerLayers(background=ct, foreground=ct, foregroundOpacity=0.5)
    assert real_slicer.slice_layers() == [(ct.GetID(), ct.GetID(), 0.5)] * 3


def test_the_totalsegmentator_stand_in_reads_its_labels_as_the_extension_does(real_slicer):
    from slicer_double import totalsegmentator_module

    slicer = real_slicer.slicer
    ct_volume = tiny_ct()
    labels = np.zeros(ct_volume.shape, np.uint8)
    labels[1:4] = 13
    labels[4:6] = 5
    module = totalsegmentator_module(lambda ct: ct.with_array(labels), {5: "liver", 13: "lung_upper_lobe_left"},
                                     {"lung_upper_lobe_left": "left upper lobe of lung"})
    ct = real_slicer.add_volume(ct_volume, "CT")
    segmentation = real_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    module.TotalSegmentatorLogic().process(inputVolume=ct, outputSegmentation=segmentation, task="total")
    s = segmentation.GetSegmentation()
    found = {s.GetNthSegmentID(i): s.GetNthSegment(i).GetName() for i in range(s.GetNumberOfSegments())}
    assert found == {"liver": "liver", "lung_upper_lobe_left": "left upper lobe of lung"}
    lung = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "lung_upper_lobe_left", ct)
    np.testing.assert_array_equal(lung > 0, labels == 13)
    assert module.calls == ["total"] and not list(real_slicer.temporary.iterdir())
