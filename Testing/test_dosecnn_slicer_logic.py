"""The DoseCNN module's Logic end to end, with the test double of the `slicer` package (Testing/slicer_double.py).

The module file is imported with the double in place of Slicer; the Logic's ``process`` (the keywords a script, the
batch script and the Widget use) then exports real nodes' voxels, runs the real ``dosecnn run`` / ``dosecnn
integrate`` child process and imports its results into (double) nodes, as it would in Slicer. The patient is the
module's self-test torso (1.96 x 1.96 x 3 mm voxels: bundled kernels, nothing computed).
"""

import importlib.util
import inspect
import math
from pathlib import Path

import numpy as np
import pytest
from slicer_double import (
    PlotChartNodeDouble,
    PlotSeriesNodeDouble,
    ScalarVolumeNodeDouble,
    SegmentationNodeDouble,
    TableNodeDouble,
    load_module,
    make_slicer_double,
)

from DoseCNNLib.slicer_glue.selftest import small_case
from ImagingBasics import slicer_nodes
from ImagingBasics.errors import UserError

MODULE = Path(__file__).resolve().parents[1] / "DoseCNN" / "DoseCNN.py"
ORGANS = (2, 3, 4, 5, 10)  # liver, kidneys, spleen, a lesion


@pytest.fixture(scope="module")
def case():
    return small_case(seed=3, size_xyz=(112, 88, 20))


@pytest.fixture
def module(monkeypatch, tmp_path):
    doubles = make_slicer_double(str(tmp_path))
    mod = load_module(monkeypatch, doubles, MODULE, "DoseCNN_under_test")
    return mod, doubles["slicer"], tmp_path


def _node(volume, name):
    node = ScalarVolumeNodeDouble(name)
    slicer_nodes.update_node_from_volume(node, volume)
    return node


def _segmentation(case, values=ORGANS):
    seg = SegmentationNodeDouble("organs")
    for n, value in enumerate(values):
        segment_id = seg.GetSegmentation().AddEmptySegment(case.names[value].replace(" ", "_"), case.names[value],
                                                           (0.1 * n, 0.5, 1.0 - 0.1 * n))
        seg.masks[segment_id] = case.labels.array == value
    return seg


def _one_time_point(case, **changes):
    """The keywords of DoseCNNLogic.process for the dose rate at 24 h (the organs as a segmentation, on the CPU)."""
    arguments = dict(inputCT=_node(case.ct, "CT"), inputSPECT=_node(case.activity_bq(24.0), "SPECT"),
                     inputSegmentation=_segmentation(case), activityMBq=case.total_activity_mbq(24.0), device="cpu")
    arguments.update(changes)
    return arguments


def _column(table_node, key):
    table = table_node.GetTable()
    column = table.GetColumnByName(key)
    assert column is not None, f"no column {key}"
    return [column.GetValue(i) for i in range(table.GetNumberOfRows())]


def test_one_time_point_gives_the_dose_rate_table_and_dvh(module, case):
    mod, slicer, tmp = module
    logic = mod.DoseCNNLogic()
    arguments = _one_time_point(case)
    ct_before = slicer_nodes.array_from_image_data(arguments["inputCT"].GetImageData())
    assert logic.inputProblem(**arguments) is None
    progress = []
    outputs = logic.process(**arguments, timeoutSeconds=300, onProgress=lambda f, step: progress.append((f, step)))
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    dose = slicer_nodes.volume_from_node(outputs["outputDoseRate"])
    assert dose.same_geometry(case.ct) and np.isfinite(dose.array).all() and dose.array.min() >= 0
    display = outputs["outputDoseRate"].GetDisplayNode()
    assert display.color_node_id == "vtkMRMLPETProceduralColorNodePET-Heat" and not display.auto_window_level
    lo, hi = display.window_min_max
    assert lo == 0.0 and 0.5 * dose.array.max() < hi <= dose.array.max()
    assert slicer.viewer_layers == {"background": arguments["inputCT"], "foreground": outputs["outputDoseRate"],
                                    "opacity": 0.5}
    assert set(outputs) == {"outputDoseRate", "outputTable", "outputDVHTable", "outputDVHChart"}  # no absorbed dose

    names = _column(outputs["outputTable"], "name")
    assert names == [case.names[v] for v in ORGANS]
    mean = dict(zip(names, _column(outputs["outputTable"], "mean_dose_rate_mgy_s")))
    assert mean["lesion 10"] > mean["right kidney"] > mean["liver"] > 0  # 1.5 > 0.5 (cortex) > 0.18 MBq/mL
    volume = dict(zip(names, _column(outputs["outputTable"], "volume_ml")))
    assert volume["liver"] == pytest.approx((case.labels.array == 2).sum() * case.ct.voxel_volume_ml)
    activity = dict(zip(names, _column(outputs["outputTable"], "activity_mbq")))
    expected = case.activity_bq(24.0).array[case.labels.array == 2].sum(dtype=np.float64) / 1e6
    assert activity["liver"] == pytest.approx(expected, rel=1e-3)
    assert outputs["outputTable"].GetColumnUnitLabel("d98_mgy_s") == "mGy/s" and outputs["outputTable"].GetTable(
        ).GetColumnByName("mde_percent") is None

    dvh = outputs["outputDVHTable"]
    assert _column(dvh, "dose")[0] == 0.0 and dvh.GetColumnUnitLabel("dose") == "mGy/s"
    assert _column(dvh, "volume_percent_1")[0] == 100.0  # segment 1 (the liver) of the label map the Logic made
    chart = outputs["outputDVHChart"]
    assert isinstance(chart, PlotChartNodeDouble) and chart.GetNumberOfPlotSeriesNodes() == len(ORGANS)
    series = [chart.GetNthPlotSeriesNode(i) for i in range(len(ORGANS))]
    assert [s.GetName() for s in series] == names
    assert all(s.GetTableNodeID() == dvh.GetID() and s.x_column == "dose" for s in series)
    assert series[1].y_column == "volume_percent_2" and series[1].color == (0.1, 0.5, 0.9)
    assert series[0].plot_type == PlotSeriesNodeDouble.PlotTypeScatter and chart.x_title == "Dose rate (mGy/s)"
    np.testing.assert_array_equal(slicer_nodes.array_from_image_data(arguments["inputCT"].GetImageData()), ct_before)
    assert not list(tmp.glob("dosecnn-*")), "temporary files left behind"
    assert "maximum dose rate" in logic.summary and "5 segments" in logic.summary

    # a second run with a reference map (the first result x 1.25) fills the same nodes and adds MDE and NRMSE
    reference = _node(dose.with_array(dose.array * 1.25), "Monte Carlo")
    again = logic.process(**arguments, **outputs, inputReference=reference, timeoutSeconds=300)
    assert again == outputs and outputs["outputDVHChart"].GetNumberOfPlotSeriesNodes() == len(ORGANS)
    assert len([n for n in slicer.mrmlScene.nodes if isinstance(n, PlotSeriesNodeDouble)]) == len(ORGANS)
    assert len([n for n in slicer.mrmlScene.nodes if isinstance(n, ScalarVolumeNodeDouble)]) == 1
    np.testing.assert_allclose(_column(outputs["outputTable"], "mde_percent"), 20.0, rtol=1e-4)
    np.testing.assert_allclose(_column(outputs["outputTable"], "nrmse_percent"), 20.0, rtol=1e-4)
    assert outputs["outputTable"].GetColumnUnitLabel("mde_percent") == "%"


def test_several_time_points_give_the_absorbed_dose(module, case):
    mod, slicer, tmp = module
    logic = mod.DoseCNNLogic()
    labels = _node(case.labels, "labels")  # a label map instead of a segmentation: rows named "label N"
    spects = {t: _node(case.activity_bq(t), f"SPECT {t:g} h") for t in (4.0, 24.0, 96.0)}
    points = [mod.DoseTimePoint(spect=spects[t], ct=None, hours=t, activityMBq=case.total_activity_mbq(t))
              for t in (96.0, 4.0)]  # the GUI's parameter packs, out of order: the Logic sorts them
    arguments = dict(inputCT=_node(case.ct, "CT"), inputLabelmap=labels, timePoints=points, device="cpu")
    assert logic.inputProblem(**arguments) is None
    steps = []
    outputs = logic.process(**arguments, timeoutSeconds=300, onProgress=lambda f, step: steps.append(step))
    assert "fitting the time curves" in steps and steps[-1] == "done"

    absorbed = slicer_nodes.volume_from_node(outputs["outputAbsorbedDose"])
    assert absorbed.same_geometry(case.ct) and np.isfinite(absorbed.array).all() and absorbed.array.max() > 0
    assert outputs["outputAbsorbedDose"].GetDisplayNode().color_node_id == "vtkMRMLPETProceduralColorNodePET-Heat"
    assert slicer.viewer_layers["foreground"] is outputs["outputAbsorbedDose"]
    rates = outputs["outputTimePointDoseRates"]
    assert [n.GetName() for n in rates] == ["CT dose rate 4 h", "CT dose rate 96 h"]
    early, late = (slicer_nodes.volume_from_node(n).array for n in rates)
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
    assert outputs["outputDVHChart"].x_title == "Absorbed dose (Gy)"
    assert outputs["outputDVHTable"].GetColumnUnitLabel("dose") == "Gy"
    assert not list(tmp.glob("dosecnn-*"))

    # again with three time points (a script's TimePoint objects): the per-time-point nodes are reused, one is added
    from DoseCNNLib.slicer_glue.request import TimePoint

    points = [TimePoint(spect=spects[t], hours=t, activityMBq=case.total_activity_mbq(t)) for t in (4.0, 24.0, 96.0)]
    again = logic.process(**dict(arguments, timePoints=points, fitModel="trapezoid"), **outputs, timeoutSeconds=300)
    assert again["outputTimePointDoseRates"][:2] == rates and len(again["outputTimePointDoseRates"]) == 3
    assert [n.GetName() for n in again["outputTimePointDoseRates"]] == ["CT dose rate 4 h", "CT dose rate 24 h",
                                                                        "CT dose rate 96 h"]
    assert len([n for n in slicer.mrmlScene.nodes if isinstance(n, ScalarVolumeNodeDouble)]) == 4


def test_the_widget_maps_its_parameter_node_onto_the_logic_keywords(module, case):
    mod, _, _ = module
    p = mod.DoseCNNParameterNode()
    ct, spect = _node(case.ct, "CT"), _node(case.activity_bq(24.0), "SPECT")
    p.inputCT, p.inputSPECT, p.activityMBq, p.bqPerCount = ct, spect, 5000.0, 12.5
    p.method, p.fitModel = "VDK + CNN", "Bi-exponential (uptake and washout)"  # the GUI's labels
    arguments = mod.DoseCNNWidget.logicArguments(p)
    inspect.signature(mod.DoseCNNLogic.process).bind(None, **arguments)  # every key is a keyword of process
    assert (arguments["method"], arguments["fitModel"], arguments["registrationMetric"]) == ("cnn", "bi", "meansquares")
    assert (arguments["activityMBq"], arguments["bqPerCount"], arguments["timePoints"]) == (5000.0, None, None)
    assert arguments["inputSPECT"] is spect and arguments["weightsFile"] is None  # the bundled CNN
    p.calibration, p.integrate = mod.CALIBRATIONS[1], True
    p.timePoints = [mod.DoseTimePoint(spect=spect, ct=None, hours=4.0), mod.DoseTimePoint(spect=spect, hours=24.0)]
    arguments = mod.DoseCNNWidget.logicArguments(p)
    assert (arguments["activityMBq"], arguments["bqPerCount"], arguments["inputSPECT"]) == (None, 12.5, None)
    assert [point.hours for point in arguments["timePoints"]] == [4.0, 24.0]
    assert "at least 3 time points" in mod.DoseCNNLogic().inputProblem(**arguments)
    with pytest.raises(ValueError):  # the parameter node refuses what the option definitions refuse
        p.activityMBq = 2e6


def test_time_point_files_and_manifest(module, case, tmp_path):
    mod, _, _ = module
    logic = mod.DoseCNNLogic()
    ct = _node(case.ct, "CT")
    other_ct = _node(case.ct, "CT 2")
    spect = _node(case.activity_bq(24.0), "SPECT")
    request = mod.DoseRequest(inputCT=ct, bqPerCount=1.0, timePoints=[
        mod.DoseTimePoint(spect=spect, ct=other_ct, hours=48.0), mod.DoseTimePoint(spect=spect, ct=ct, hours=24.0)])
    files = logic.exportInputs(request, str(tmp_path))
    assert files["times"] == [24.0, 48.0] and "labels" not in files
    from DoseCNNLib.dosimetry.integrate import read_time_manifest

    specs = read_time_manifest(Path(files["manifest"]))
    assert [s.ct.name for s in specs] == ["ct.nrrd", "ct_2.nrrd"]  # the reference CT is written once, as ct.nrrd
    assert specs[0].spect == specs[1].spect and [s.bq_per_count for s in specs] == [1.0, 1.0]
    command = logic.childCommand(request, files, str(tmp_path / "out"))
    assert command[3] == "integrate" and "--calibration" not in command and command[command.index("--reference-ct") + 1] \
        == files["ct"]


def test_input_problems_are_one_line_and_block_apply(module, case, tmp_path):
    mod, _, _ = module
    logic = mod.DoseCNNLogic()
    assert logic.inputProblem(**_one_time_point(case)) is None
    for changes, message in (
            ({"inputCT": None}, "Select a CT volume"),
            ({"inputSPECT": None}, "Select a SPECT volume"),
            ({"activityMBq": 0.0}, "Enter the activity in the SPECT's field of view"),
            ({"activityMBq": None, "bqPerCount": 0.0}, "Enter the calibration factor (Bq per count)"),
            ({"inputLabelmap": _node(case.labels, "labels")}, "not both"),
            ({"method": "cnn", "weightsFile": ""}, "Choose a CNN weights file"),
            ({"method": "cnn", "weightsFile": str(tmp_path / "none.pt")}, "CNN weights file not found"),
            ({"activityMBq": 2e6}, "activityMBq must be positive and at most 100000 MBq, got 2e+06"),
            ({"timePoints": []}, "Add at least 2 time points")):
        arguments = _one_time_point(case, **changes)
        assert message in logic.inputProblem(**arguments), (changes, logic.inputProblem(**arguments))
    arguments = _one_time_point(case)
    arguments["inputSPECT"] = arguments["inputCT"]
    assert logic.inputProblem(**arguments) == "The SPECT and the CT must be different volumes"
    arguments = _one_time_point(case, inputSPECT=None, activityMBq=None)
    spect = arguments["inputCT"]
    s1, s2 = _node(case.activity_bq(4.0), "s1"), _node(case.activity_bq(24.0), "s2")
    for points, message in (
            ([(s1, 4.0, 10.0), (None, 24.0, 10.0)], "Choose the SPECT of time point 2"),
            ([(s1, 4.0, 10.0), (s2, 24.0, 0.0)], "Enter the activity in the field of view of time point 2"),
            ([(s1, 24.0, 10.0), (s2, 24.0, 10.0)], "Two time points have the same time"),
            ([(spect, 4.0, 10.0), (s2, 24.0, 10.0)], "Time point 1: the SPECT and the CT must be different")):
        arguments["timePoints"] = [mod.DoseTimePoint(spect=s, ct=None, hours=h, activityMBq=a) for s, h, a in points]
        assert logic.inputProblem(**arguments).startswith(message)
    arguments["timePoints"] = [mod.DoseTimePoint(spect=s, ct=None, hours=h, activityMBq=10.0)
                               for s, h in ((s1, 4.0), (s2, 24.0))]
    assert logic.inputProblem(**arguments) is None
    arguments["fitModel"] = "bi"
    assert "at least 3 time points" in logic.inputProblem(**arguments)
    with pytest.raises(UserError, match="at least 3 time points"):
        logic.process(**arguments)


def test_child_errors_reach_the_user_and_cancel_cleans_up(module, case):
    mod, slicer, tmp = module
    logic = mod.DoseCNNLogic()
    empty = _node(case.ct.with_array(np.zeros(case.ct.shape, np.float32)), "empty SPECT")
    with pytest.raises(UserError, match="the SPECT has no counts"):
        logic.process(**_one_time_point(case, inputSPECT=empty), timeoutSeconds=300)
    assert not slicer.mrmlScene.nodes  # no output node
    assert not list(tmp.glob("dosecnn-*"))
    job = logic.process(**_one_time_point(case), waitForCompletion=False)
    job.cancel()
    assert job.process.returncode is not None and not Path(job.workdir).exists()
    with pytest.raises(UserError, match="cancelled"):
        logic.finish(job)
    assert not slicer.mrmlScene.nodes


def test_missing_packages_are_named_and_torch_for_the_cnn(module, case, monkeypatch):
    mod, _, _ = module
    logic = mod.DoseCNNLogic()
    arguments = _one_time_point(case, method="cnn")
    assert logic.missingPackages(mod.DoseRequest(**arguments)) == {}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "icrp107_database")
                        else real(name, *a))
    with pytest.raises(UserError, match=r"missing Python packages: torch \(the CNN method \(and the VDK convolution\) "
                                        r"run in PyTorch"):
        logic.process(**arguments)
    assert set(logic.missingPackages(mod.DoseRequest(**dict(arguments, timePoints=[])))) == {"torch",
                                                                                             "icrp107_database"}
    assert "PyTorch is not installed" in logic.describeDevices()


def test_the_device_line_comes_from_the_shared_probe(module):
    from DoseCNNLib.slicer_glue.commands import child_environment
    from ImagingBasics.process import PipelineProcess

    mod, _, _ = module
    logic = mod.DoseCNNLogic()
    lines = []
    probe = PipelineProcess(logic.deviceProbeCommand(), env=child_environment(), on_text=lines.append).start()
    assert probe.wait(timeout_s=120) == 0
    assert logic.deviceText(lines).startswith("auto uses ")
    assert logic.deviceText([], "boom") == "Device detection failed: boom"


def test_tables_are_typed(module, case):
    mod, _, _ = module
    logic = mod.DoseCNNLogic()
    table = TableNodeDouble("existing")
    outputs = logic.process(**_one_time_point(case), outputTable=table, timeoutSeconds=300)
    assert outputs["outputTable"] is table
    columns = table.GetTable()
    assert columns.GetColumnByName("name").GetClassName() == "vtkStringArray"
    assert columns.GetColumnByName("volume_ml").GetClassName() == "vtkDoubleArray"
    assert table.GetColumnTitle("mean_dose_rate_mgy_s") == "Mean dose rate" and table.title_as_header


def test_the_cnn_method_runs_with_a_weights_file(module, case, tmp_path):
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
    mod, _, _ = module
    logic = mod.DoseCNNLogic()
    outputs = logic.process(**_one_time_point(case, inputSegmentation=None), timeoutSeconds=300)
    vdk = slicer_nodes.volume_from_node(outputs["outputDoseRate"]).array
    arguments = _one_time_point(case, inputSegmentation=None, method="cnn", weightsFile=str(weights))
    assert logic.inputProblem(**arguments) is None
    command = logic.childCommand(mod.DoseRequest(**arguments), {"spect": "s", "ct": "c"}, "o")
    assert command[command.index("--method") + 1] == "cnn" and command[command.index("--weights") + 1] == str(weights)
    outputs = logic.process(**arguments, timeoutSeconds=300)
    cnn = slicer_nodes.volume_from_node(outputs["outputDoseRate"]).array
    assert cnn.shape == vdk.shape and np.isfinite(cnn).all() and cnn.min() >= 0.0
    assert not np.allclose(cnn, vdk) and "outputTable" not in outputs  # no segments, no table
