"""The DoseCNN module's Logic end to end on a real MRML scene (slicer-core; Testing/slicer_real.py).

The module file is imported as Slicer imports it; the Logic's ``process`` (the keywords a script, the batch script and
the Widget use) exports real nodes' voxels, runs the real ``dosecnn run`` / ``dosecnn integrate`` child process and
fills real output nodes (dose maps with their display, tables, the DVH plot chart and series). The patient is the
module's self-test torso (1.96 x 1.96 x 3 mm voxels: bundled kernels, nothing computed).
"""

import importlib.util
import inspect
import math
import time
from pathlib import Path

import numpy as np
import pytest
from slicer_real import dice, mask_on_volume_grid, reoriented, rotation_ras, segment_ids, segment_world_points, voxel_ras

from DoseCNNLib.slicer_glue.results import DOSE_COLOUR_NODE_ID
from DoseCNNLib.slicer_glue.selftest import small_case
from ImagingBasics import slicer_nodes
from ImagingBasics.errors import UserError

ORGANS = (2, 3, 4, 5, 10)  # liver, kidneys, spleen, a lesion
#: TotalSegmentator's label names and standard segment names of the organs
TOTALSEGMENTATOR = {2: ("liver", "liver"), 3: ("kidney_right", "right kidney"), 4: ("kidney_left", "left kidney"),
                    5: ("spleen", "spleen")}


@pytest.fixture(scope="module")
def case():
    return small_case(seed=3, size_xyz=(112, 88, 20))


@pytest.fixture
def module(real_slicer):
    return real_slicer.module("DoseCNN")


def _segmentation(real, case, ct, values=ORGANS, labels=None):
    """A segmentation of the organs (one segment per label value) made on ``ct`` (a node without a transform)."""
    labels = case.labels.array if labels is None else labels
    seg = real.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    for n, value in enumerate(values):
        segment_id = seg.GetSegmentation().AddEmptySegment(case.names[value].replace(" ", "_"), case.names[value],
                                                           (0.1 * n, 0.5, 1.0 - 0.1 * n))
        real.slicer.util.updateSegmentBinaryLabelmapFromArray((labels == value).astype(np.uint8), seg, segment_id, ct)
    return seg


def _one_time_point(real, case, **changes):
    """The keywords of DoseCNNLogic.process for the dose rate at 24 h (the organs as a segmentation, on the CPU)."""
    ct = real.add_volume(case.ct, "CT")
    arguments = dict(inputCT=ct, inputSPECT=real.add_volume(case.activity_bq(24.0), "SPECT"),
                     inputSegmentation=_segmentation(real, case, ct), activityMBq=case.total_activity_mbq(24.0),
                     device="cpu")
    arguments.update(changes)
    return arguments


def _column(table_node, key):
    table = table_node.GetTable()
    column = table.GetColumnByName(key)
    assert column is not None, f"no column {key}"
    return [column.GetValue(i) for i in range(table.GetNumberOfRows())]


def test_one_time_point_gives_the_dose_rate_table_and_dvh_twice(real_slicer, module, case):
    slicer, scene = real_slicer.slicer, real_slicer.scene
    logic = module.DoseCNNLogic()
    arguments = _one_time_point(real_slicer, case)
    ct = arguments["inputCT"]
    ct_before = slicer.util.arrayFromVolume(ct).copy()
    existing = scene.AddNewNodeByClass("vtkMRMLTableNode", "existing")  # a table the user chose as the output
    assert logic.inputProblem(**arguments) is None
    progress = []
    outputs = logic.process(**arguments, outputTable=existing, timeoutSeconds=300,
                            onProgress=lambda f, step: progress.append((f, step)))
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    dose_node = outputs["outputDoseRate"]
    dose = slicer_nodes.volume_from_node(dose_node)
    assert dose.same_geometry(case.ct) and np.isfinite(dose.array).all() and dose.array.min() >= 0
    display = dose_node.GetDisplayNode()
    assert display.GetColorNodeID() == DOSE_COLOUR_NODE_ID and display.GetColorNode() is not None
    assert not display.GetAutoWindowLevel() and display.GetWindowLevelMin() == 0.0
    assert 0.5 * dose.array.max() < display.GetWindowLevelMax() <= dose.array.max()
    assert real_slicer.slice_layers() == [(ct.GetID(), dose_node.GetID(), 0.5)] * 3
    assert set(outputs) == {"outputDoseRate", "outputTable", "outputDVHTable", "outputDVHChart"}  # no absorbed dose

    table = outputs["outputTable"]
    assert table is existing
    names = _column(table, "name")
    assert names == [case.names[v] for v in ORGANS]
    columns = table.GetTable()
    assert columns.GetColumnByName("name").GetClassName() == "vtkStringArray"
    assert columns.GetColumnByName("volume_ml").GetClassName() == "vtkDoubleArray"
    assert table.GetColumnTitle("mean_dose_rate_mgy_s") == "Mean dose rate" and table.GetUseColumnTitleAsColumnHeader()
    assert table.GetColumnUnitLabel("d98_mgy_s") == "mGy/s" and table.GetColumnUnitLabel("volume_ml") == "mL"
    mean = dict(zip(names, _column(table, "mean_dose_rate_mgy_s")))
    assert mean["lesion 10"] > mean["right kidney"] > mean["liver"] > 0  # 1.5 > 0.5 (cortex) > 0.18 MBq/mL
    volume = dict(zip(names, _column(table, "volume_ml")))
    assert volume["liver"] == pytest.approx((case.labels.array == 2).sum() * case.ct.voxel_volume_ml)
    activity = dict(zip(names, _column(table, "activity_mbq")))
    expected = case.activity_bq(24.0).array[case.labels.array == 2].sum(dtype=np.float64) / 1e6
    assert activity["liver"] == pytest.approx(expected, rel=1e-3)
    assert columns.GetColumnByName("mde_percent") is None

    dvh = outputs["outputDVHTable"]
    assert _column(dvh, "dose")[0] == 0.0 and dvh.GetColumnUnitLabel("dose") == "mGy/s"
    assert _column(dvh, "volume_percent_1")[0] == 100.0  # segment 1 (the liver) of the label map the Logic made
    chart = outputs["outputDVHChart"]
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == len(ORGANS)
    series = [chart.GetNthPlotSeriesNode(i) for i in range(len(ORGANS))]
    assert [s.GetName() for s in series] == names
    assert all(s.GetTableNodeID() == dvh.GetID() and s.GetXColumnName() == "dose" for s in series)
    assert series[1].GetYColumnName() == "volume_percent_2"
    assert series[1].GetColor() == pytest.approx((0.1, 0.5, 0.9))  # the segment's colour
    assert series[0].GetPlotType() == series[0].PlotTypeScatter and series[0].GetMarkerStyle() == series[0].MarkerStyleNone
    assert chart.GetXAxisTitle() == "Dose rate (mGy/s)" and chart.GetYAxisTitle() == "Volume (%)"
    assert chart.GetTitle() == "Cumulative DVH"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct), ct_before)
    assert not list(real_slicer.temporary.glob("dosecnn-*")), "temporary files left behind"
    assert "maximum dose rate" in logic.summary and "5 segments" in logic.summary

    # a second run with a reference map (the first result x 1.25) fills the same nodes and adds MDE and NRMSE
    reference = real_slicer.add_volume(dose.with_array(dose.array * 1.25), "Monte Carlo")
    counts = real_slicer.node_counts()
    again = logic.process(**arguments, **outputs, inputReference=reference, timeoutSeconds=300)
    assert again == outputs and real_slicer.node_counts() == counts  # the same nodes; the plot series replaced
    assert [chart.GetNthPlotSeriesNode(i).GetName() for i in range(chart.GetNumberOfPlotSeriesNodes())] == names
    np.testing.assert_allclose(_column(table, "mde_percent"), 20.0, rtol=1e-4)
    np.testing.assert_allclose(_column(table, "nrmse_percent"), 20.0, rtol=1e-4)
    assert table.GetColumnUnitLabel("mde_percent") == "%"
    assert not real_slicer.orphan_display_nodes()
    assert not real_slicer.vtk_errors(), real_slicer.vtk_errors()


def test_several_time_points_give_the_absorbed_dose(real_slicer, module, case):
    slicer = real_slicer.slicer
    logic = module.DoseCNNLogic()
    ct = real_slicer.add_volume(case.ct, "CT")
    labels = real_slicer.add_volume(case.labels, "labels", label=True)  # a label map: rows named "label N"
    spects = {t: real_slicer.add_volume(case.activity_bq(t), f"SPECT {t:g} h") for t in (4.0, 24.0, 96.0)}
    points = [module.DoseTimePoint(spect=spects[t], ct=None, hours=t, activityMBq=case.total_activity_mbq(t))
              for t in (96.0, 4.0)]  # the GUI's parameter packs, out of order: the Logic sorts them
    arguments = dict(inputCT=ct, inputLabelmap=labels, timePoints=points, device="cpu")
    assert logic.inputProblem(**arguments) is None
    steps = []
    outputs = logic.process(**arguments, timeoutSeconds=300, onProgress=lambda f, step: steps.append(step))
    assert "fitting the time curves" in steps and steps[-1] == "done"

    absorbed = slicer_nodes.volume_from_node(outputs["outputAbsorbedDose"])
    assert absorbed.same_geometry(case.ct) and np.isfinite(absorbed.array).all() and absorbed.array.max() > 0
    assert outputs["outputAbsorbedDose"].GetDisplayNode().GetColorNodeID() == DOSE_COLOUR_NODE_ID
    assert real_slicer.slice_layers()[0][1] == outputs["outputAbsorbedDose"].GetID()
    rates = outputs["outputTimePointDoseRates"]
    assert [n.GetName() for n in rates] == ["CT dose rate 4 h", "CT dose rate 96 h"]
    assert all(n.GetDisplayNode().GetColorNodeID() == DOSE_COLOUR_NODE_ID for n in rates)
    early, late = (slicer.util.arrayFromVolume(n) for n in rates)
    liver = case.labels.array == 2
    assert early[liver].mean() > late[liver].mean() > 0

    table = outputs["outputTable"]
    names = _column(table, "name")
    assert names[:2] == ["label 1", "label 2"]
    row = {key: dict(zip(names, _column(table, key)))["label 2"] for key in (
        "effective_half_life_h", "mean_dose_gy", "mean_dose_gy_organ_fit", "tia_mbq_h", "mean_dose_rate_0",
        "mean_dose_rate_1", "d98_gy", "d2_gy")}
    assert row["effective_half_life_h"] == pytest.approx(70.0, rel=0.01)  # the liver's made-up kinetics
    tia = case.activity_bq(0.0).array[liver].sum(dtype=np.float64) / 1e6 * 70.0 / math.log(2)  # A0 T / ln 2
    assert row["tia_mbq_h"] == pytest.approx(tia, rel=0.02)
    assert row["mean_dose_gy_organ_fit"] == pytest.approx(row["mean_dose_gy"], rel=0.05)
    assert row["mean_dose_rate_0"] == pytest.approx(early[liver].mean(), rel=1e-4)
    assert row["d98_gy"] <= row["mean_dose_gy"] <= row["d2_gy"]
    assert table.GetColumnTitle("mean_dose_rate_1") == "Mean dose rate at 96 h"
    assert table.GetColumnUnitLabel("mean_dose_gy") == "Gy"
    assert outputs["outputDVHChart"].GetXAxisTitle() == "Absorbed dose (Gy)"
    assert outputs["outputDVHTable"].GetColumnUnitLabel("dose") == "Gy"
    assert not list(real_slicer.temporary.glob("dosecnn-*"))

    # again with three time points (a script's TimePoint objects): the per-time-point nodes are reused, one is added
    from DoseCNNLib.slicer_glue.request import TimePoint

    points = [TimePoint(spect=spects[t], hours=t, activityMBq=case.total_activity_mbq(t)) for t in (4.0, 24.0, 96.0)]
    volumes = len(real_slicer.nodes("vtkMRMLScalarVolumeNode"))
    again = logic.process(**dict(arguments, timePoints=points, fitModel="trapezoid"), **outputs, timeoutSeconds=300)
    assert again["outputTimePointDoseRates"][:2] == rates and len(again["outputTimePointDoseRates"]) == 3
    assert [n.GetName() for n in again["outputTimePointDoseRates"]] == ["CT dose rate 4 h", "CT dose rate 24 h",
                                                                        "CT dose rate 96 h"]
    assert len(real_slicer.nodes("vtkMRMLScalarVolumeNode")) == volumes + 1
    again = logic.process(**dict(arguments, timePoints=points[:2]), **again, timeoutSeconds=300)  # one fewer: removed
    assert len(again["outputTimePointDoseRates"]) == 2 and len(real_slicer.nodes("vtkMRMLScalarVolumeNode")) == volumes
    assert not real_slicer.orphan_display_nodes() and not real_slicer.vtk_errors()


@pytest.mark.parametrize("placement", ["parent transform", "oblique flipped CT"])
def test_dose_and_table_follow_the_ct_in_world_coordinates(real_slicer, module, case, placement):
    """The dose map lies on the CT's voxels in RAS, and each segment's row is the dose map over the segment's voxels
    found in RAS; the segments are TotalSegmentator's (IDs its label names, names its standard names)."""
    from slicer_double import totalsegmentator_module

    slicer = real_slicer.slicer
    moved = rotation_ras(12.0, (15.0, -8.0, 6.0), degrees_about_r=3.0)
    spect_volume = case.activity_bq(24.0)
    if placement == "parent transform":
        transform = real_slicer.add_linear_transform(moved, "patient position")
        ct, spect = real_slicer.add_volume(case.ct, "CT", transform), real_slicer.add_volume(spect_volume, "SPECT", transform)
        labels = case.labels
    else:
        ct = real_slicer.add_volume(reoriented(case.ct, moved, flip_i=True), "CT")
        spect = real_slicer.add_volume(reoriented(spect_volume, moved, flip_i=True), "SPECT")
        labels = reoriented(case.labels, moved, flip_i=True)
    totalsegmentator = totalsegmentator_module(
        lambda grid: grid.with_array(np.where(np.isin(labels.array, list(TOTALSEGMENTATOR)), labels.array, 0)),
        {v: ids for v, (ids, _) in TOTALSEGMENTATOR.items()}, {ids: name for ids, name in TOTALSEGMENTATOR.values()})
    seg = real_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "TotalSegmentator")
    totalsegmentator.TotalSegmentatorLogic().process(ct, seg, task="total")
    assert set(segment_ids(seg).values()) == {"liver", "kidney_right", "kidney_left", "spleen"}

    logic = module.DoseCNNLogic()
    outputs = logic.process(inputCT=ct, inputSPECT=spect, inputSegmentation=seg,
                            activityMBq=case.total_activity_mbq(24.0), device="cpu", timeoutSeconds=300)
    dose_node = outputs["outputDoseRate"]
    np.testing.assert_allclose(voxel_ras(dose_node), voxel_ras(ct), atol=1e-3)  # voxel by voxel in RAS
    dose = slicer.util.arrayFromVolume(dose_node)
    table = outputs["outputTable"]
    rows = dict(zip(_column(table, "name"), _column(table, "mean_dose_rate_mgy_s")))
    assert set(rows) == {"liver", "right kidney", "left kidney", "spleen"}
    for name, segment_id in segment_ids(seg).items():
        in_ras = mask_on_volume_grid(segment_world_points(seg, segment_id), dose_node)
        on_ct = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, ct) > 0
        assert dice(in_ras, on_ct) >= 0.99, (name, dice(in_ras, on_ct))
        assert rows[name] == pytest.approx(dose[in_ras].mean(), rel=0.01), name
    liver = dict(zip(_column(table, "name"), _column(table, "volume_ml")))["liver"]
    assert liver == pytest.approx((case.labels.array == 2).sum() * case.ct.voxel_volume_ml, rel=0.01)
    assert rows["right kidney"] > rows["liver"] > 0
    assert not real_slicer.vtk_errors(), real_slicer.vtk_errors()


def test_the_widget_maps_its_parameter_node_onto_the_logic_keywords(real_slicer, module, case):
    p = module.DoseCNNParameterNode(module.DoseCNNLogic().getParameterNode())
    ct, spect = real_slicer.add_volume(case.ct, "CT"), real_slicer.add_volume(case.activity_bq(24.0), "SPECT")
    p.inputCT, p.inputSPECT, p.activityMBq, p.bqPerCount = ct, spect, 5000.0, 12.5
    p.method, p.fitModel = "VDK + CNN", "Bi-exponential (uptake and washout)"  # the GUI's labels
    arguments = module.DoseCNNWidget.logicArguments(p)
    inspect.signature(module.DoseCNNLogic.process).bind(None, **arguments)  # every key is a keyword of process
    assert (arguments["method"], arguments["fitModel"], arguments["registrationMetric"]) == ("cnn", "bi", "meansquares")
    assert (arguments["activityMBq"], arguments["bqPerCount"], arguments["timePoints"]) == (5000.0, None, None)
    assert arguments["inputSPECT"] is spect and arguments["weightsFile"] is None  # the bundled CNN
    p.calibration, p.integrate = module.CALIBRATIONS[1], True
    p.timePoints = [module.DoseTimePoint(spect=spect, ct=None, hours=4.0), module.DoseTimePoint(spect=spect, hours=24.0)]
    arguments = module.DoseCNNWidget.logicArguments(p)
    assert (arguments["activityMBq"], arguments["bqPerCount"], arguments["inputSPECT"]) == (None, 12.5, None)
    assert [point.hours for point in arguments["timePoints"]] == [4.0, 24.0]
    assert arguments["timePoints"][0].spect is spect and arguments["outputTimePointDoseRates"] == []
    assert "at least 3 time points" in module.DoseCNNLogic().inputProblem(**arguments)
    with pytest.raises(ValueError):  # the parameter node refuses what the option definitions refuse
        p.activityMBq = 2e6
    assert p.activityMBq == 5000.0


def test_time_point_files_and_manifest(real_slicer, module, case, tmp_path):
    from DoseCNNLib.dosimetry.integrate import read_time_manifest

    logic = module.DoseCNNLogic()
    ct, other_ct = real_slicer.add_volume(case.ct, "CT"), real_slicer.add_volume(case.ct, "CT 2")
    spect = real_slicer.add_volume(case.activity_bq(24.0), "SPECT")
    request = module.DoseRequest(inputCT=ct, bqPerCount=1.0, timePoints=[
        module.DoseTimePoint(spect=spect, ct=other_ct, hours=48.0), module.DoseTimePoint(spect=spect, ct=ct, hours=24.0)])
    files = logic.exportInputs(request, str(tmp_path))
    assert files["times"] == [24.0, 48.0] and "labels" not in files
    specs = read_time_manifest(Path(files["manifest"]))
    assert [s.ct.name for s in specs] == ["ct.nrrd", "ct_2.nrrd"]  # the reference CT is written once, as ct.nrrd
    assert specs[0].spect == specs[1].spect and [s.bq_per_count for s in specs] == [1.0, 1.0]
    command = logic.childCommand(request, files, str(tmp_path / "out"))
    assert command[3] == "integrate" and "--calibration" not in command
    assert command[command.index("--reference-ct") + 1] == files["ct"]


def test_input_problems_are_one_line_and_block_apply(real_slicer, module, case, tmp_path):
    logic = module.DoseCNNLogic()
    base = _one_time_point(real_slicer, case)
    assert logic.inputProblem(**base) is None
    labels = real_slicer.add_volume(case.labels, "labels", label=True)
    for changes, message in (
            ({"inputCT": None}, "Select a CT volume"),
            ({"inputSPECT": None}, "Select a SPECT volume"),
            ({"activityMBq": 0.0}, "Enter the activity in the SPECT's field of view"),
            ({"activityMBq": None, "bqPerCount": 0.0}, "Enter the calibration factor (Bq per count)"),
            ({"inputLabelmap": labels}, "not both"),
            ({"method": "cnn", "weightsFile": ""}, "Choose a CNN weights file"),
            ({"method": "cnn", "weightsFile": str(tmp_path / "none.pt")}, "CNN weights file not found"),
            ({"activityMBq": 2e6}, "activityMBq must be positive and at most 100000 MBq, got 2e+06"),
            ({"timePoints": []}, "Add at least 2 time points")):
        arguments = dict(base, **changes)
        assert message in logic.inputProblem(**arguments), (changes, logic.inputProblem(**arguments))
    assert logic.inputProblem(**dict(base, inputSPECT=base["inputCT"])) == "The SPECT and the CT must be different volumes"
    arguments = dict(base, inputSPECT=None, activityMBq=None)
    s1, s2 = real_slicer.add_volume(case.activity_bq(4.0), "s1"), real_slicer.add_volume(case.activity_bq(24.0), "s2")
    ct = base["inputCT"]
    for points, message in (
            ([(s1, 4.0, 10.0), (None, 24.0, 10.0)], "Choose the SPECT of time point 2"),
            ([(s1, 4.0, 10.0), (s2, 24.0, 0.0)], "Enter the activity in the field of view of time point 2"),
            ([(s1, 24.0, 10.0), (s2, 24.0, 10.0)], "Two time points have the same time"),
            ([(ct, 4.0, 10.0), (s2, 24.0, 10.0)], "Time point 1: the SPECT and the CT must be different")):
        arguments["timePoints"] = [module.DoseTimePoint(spect=s, ct=None, hours=h, activityMBq=a) for s, h, a in points]
        assert logic.inputProblem(**arguments).startswith(message)
    arguments["timePoints"] = [module.DoseTimePoint(spect=s, ct=None, hours=h, activityMBq=10.0)
                               for s, h in ((s1, 4.0), (s2, 24.0))]
    assert logic.inputProblem(**arguments) is None
    from DoseCNNLib.slicer_glue.request import TimePoint  # a script's time points: the GUI's range is checked here

    for hours in (2e5, -1.0, math.nan):
        late = dict(arguments, timePoints=[TimePoint(s1, hours=4.0, activityMBq=10.0),
                                           TimePoint(s2, hours=hours, activityMBq=10.0)])
        assert logic.inputProblem(**late).startswith("Time point 2: the time must be from 0 to 100000 h after")
    with pytest.raises(ValueError):  # where the GUI's time-point table refuses it
        module.DoseTimePoint(spect=s2, hours=2e5)
    arguments["fitModel"] = "bi"
    assert "at least 3 time points" in logic.inputProblem(**arguments)
    with pytest.raises(UserError, match="at least 3 time points"):
        logic.process(**arguments)


def test_a_failing_child_and_cancel_mid_run_leave_the_scene_unchanged(real_slicer, module, case):
    logic = module.DoseCNNLogic()
    arguments = _one_time_point(real_slicer, case)
    empty = real_slicer.add_volume(case.ct.with_array(np.zeros(case.ct.shape, np.float32)), "empty SPECT")
    nodes = real_slicer.node_ids()
    with pytest.raises(UserError, match="the SPECT has no counts"):
        logic.process(**dict(arguments, inputSPECT=empty), timeoutSeconds=300)
    assert real_slicer.node_ids() == nodes and not list(real_slicer.temporary.glob("dosecnn-*"))
    steps = []
    job = logic.process(**arguments, waitForCompletion=False, onProgress=lambda f, step: steps.append(step))
    start = time.monotonic()
    while job.poll() and not steps and time.monotonic() - start < 120:  # until the child reports its first step
        time.sleep(0.05)
    assert steps and job.poll(), "the child ended before it could be cancelled"
    job.cancel()
    assert job.process.returncode is not None and not Path(job.workdir).exists()
    with pytest.raises(UserError, match="cancelled"):
        logic.finish(job)
    assert real_slicer.node_ids() == nodes and not list(real_slicer.temporary.glob("dosecnn-*"))


def test_missing_packages_are_named_and_torch_for_the_cnn(real_slicer, module, case, monkeypatch):
    logic = module.DoseCNNLogic()
    arguments = _one_time_point(real_slicer, case, method="cnn")
    assert logic.missingPackages(module.DoseRequest(**arguments)) == {}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "icrp107_database")
                        else real(name, *a))
    with pytest.raises(UserError, match=r"missing Python packages: torch \(the CNN method \(and the VDK convolution\) "
                                        r"run in PyTorch"):
        logic.process(**arguments)
    assert set(logic.missingPackages(module.DoseRequest(**dict(arguments, timePoints=[])))) == {"torch",
                                                                                                "icrp107_database"}
    assert "PyTorch is not installed" in logic.describeDevices()


def test_the_device_line_comes_from_the_shared_probe(module):
    from DoseCNNLib.slicer_glue.commands import child_environment
    from ImagingBasics.process import PipelineProcess

    logic = module.DoseCNNLogic()
    lines = []
    probe = PipelineProcess(logic.deviceProbeCommand(), env=child_environment(), on_text=lines.append).start()
    assert probe.wait(timeout_s=120) == 0
    assert logic.deviceText(lines).startswith("auto uses ")
    assert logic.deviceText([], "boom") == "Device detection failed: boom"


def test_the_cnn_method_runs_with_a_weights_file(real_slicer, module, case, tmp_path):
    torch = pytest.importorskip("torch")
    from DoseCNNLib.cnn.data import Normalisation
    from DoseCNNLib.cnn.network import DoseNetConfig, ResidualDoseNet
    from DoseCNNLib.cnn.weights import save_dose_weights

    tiny = DoseNetConfig(depth_channels=(2, 3, 2), base_filters=4, levels=2)
    torch.manual_seed(0)
    net = ResidualDoseNet(tiny)
    with torch.no_grad():  # a random correction, so that the CNN map differs from the VDK map
        net.unet.out.weight.normal_(0, 0.5)
        net.unet.out.bias.fill_(0.02)
    weights = save_dose_weights(net.eval(), tiny, Normalisation.for_spacing(case.ct.spacing), case.ct.spacing,
                                tmp_path / "tiny.pt", metadata={"note": "random weights for a test"})
    logic = module.DoseCNNLogic()
    outputs = logic.process(**_one_time_point(real_slicer, case, inputSegmentation=None), timeoutSeconds=300)
    vdk = real_slicer.slicer.util.arrayFromVolume(outputs["outputDoseRate"]).copy()
    arguments = _one_time_point(real_slicer, case, inputSegmentation=None, method="cnn", weightsFile=str(weights))
    assert logic.inputProblem(**arguments) is None
    command = logic.childCommand(module.DoseRequest(**arguments), {"spect": "s", "ct": "c"}, "o")
    assert command[command.index("--method") + 1] == "cnn" and command[command.index("--weights") + 1] == str(weights)
    outputs = logic.process(**arguments, outputDoseRate=outputs["outputDoseRate"], timeoutSeconds=300)
    cnn = real_slicer.slicer.util.arrayFromVolume(outputs["outputDoseRate"])
    assert cnn.shape == vdk.shape and np.isfinite(cnn).all() and cnn.min() >= 0.0
    assert not np.allclose(cnn, vdk) and "outputTable" not in outputs  # no segments, no table


def test_the_self_test_passes_on_the_real_scene(real_slicer, module, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        real_slicer.slicer.selfTests["DoseCNN"]()  # both time-point cases, as Slicer's self-test runner calls it
    assert caplog.text.count("Test passed") == 2
    assert len(real_slicer.nodes("vtkMRMLPlotChartNode")) == 1 and not list(real_slicer.temporary.iterdir())
