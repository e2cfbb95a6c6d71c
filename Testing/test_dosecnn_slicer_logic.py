"""The DoseCNN module's Logic end to end, with the test double of the `slicer` package (Testing/slicer_double.py).

The module file is imported with the double in place of Slicer; the Logic then exports real nodes' voxels, runs the
real ``dosecnn run`` / ``dosecnn integrate`` child process and imports its results into (double) nodes, as it would in
Slicer. The patient is the module's self-test torso (1.96 x 1.96 x 3 mm voxels: bundled kernels, nothing computed).
"""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from slicer_double import (
    PlotChartNodeDouble,
    PlotSeriesNodeDouble,
    ScalarVolumeNodeDouble,
    SegmentationNodeDouble,
    TableNodeDouble,
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
    for name, mod in doubles.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("DoseCNN_under_test", MODULE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
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


def _one_time_point(mod, case, **changes):
    logic = mod.DoseCNNLogic()
    p = logic.getParameterNode()
    p.inputCT = _node(case.ct, "CT")
    p.inputSPECT = _node(case.activity_bq(24.0), "SPECT")
    p.inputSegmentation = _segmentation(case)
    p.activityMBq = case.total_activity_mbq(24.0)
    p.device = "cpu"
    for k, v in changes.items():
        setattr(p, k, v)
    return logic, p


def _column(table_node, key):
    table = table_node.GetTable()
    column = table.GetColumnByName(key)
    assert column is not None, f"no column {key}"
    return [column.GetValue(i) for i in range(table.GetNumberOfRows())]


def test_one_time_point_gives_the_dose_rate_table_and_dvh(module, case):
    mod, slicer, tmp = module
    logic, p = _one_time_point(mod, case)
    ct_before = slicer_nodes.array_from_image_data(p.inputCT.GetImageData())
    assert logic.inputProblem(p) is None
    progress = []
    logic.process(p, timeoutSeconds=300, onProgress=lambda f, step: progress.append((f, step)))
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    dose = slicer_nodes.volume_from_node(p.outputDoseRate)
    assert dose.same_geometry(case.ct) and np.isfinite(dose.array).all() and dose.array.min() >= 0
    display = p.outputDoseRate.GetDisplayNode()
    assert display.color_node_id == "vtkMRMLPETProceduralColorNodePET-Heat" and not display.auto_window_level
    lo, hi = display.window_min_max
    assert lo == 0.0 and 0.5 * dose.array.max() < hi <= dose.array.max()
    assert slicer.viewer_layers == {"background": p.inputCT, "foreground": p.outputDoseRate, "opacity": 0.5}
    assert p.outputAbsorbedDose is None and not p.outputTimePointDoseRates

    names = _column(p.outputTable, "name")
    assert names == [case.names[v] for v in ORGANS]
    mean = dict(zip(names, _column(p.outputTable, "mean_dose_rate_mgy_s")))
    assert mean["lesion 10"] > mean["right kidney"] > mean["liver"] > 0  # 1.5 > 0.5 (cortex) > 0.18 MBq/mL
    volume = dict(zip(names, _column(p.outputTable, "volume_ml")))
    assert volume["liver"] == pytest.approx((case.labels.array == 2).sum() * case.ct.voxel_volume_ml)
    activity = dict(zip(names, _column(p.outputTable, "activity_mbq")))
    expected = case.activity_bq(24.0).array[case.labels.array == 2].sum(dtype=np.float64) / 1e6
    assert activity["liver"] == pytest.approx(expected, rel=1e-3)
    assert p.outputTable.GetColumnUnitLabel("d98_mgy_s") == "mGy/s" and p.outputTable.GetTable().GetColumnByName(
        "mde_percent") is None

    dvh = p.outputDVHTable
    assert _column(dvh, "dose")[0] == 0.0 and dvh.GetColumnUnitLabel("dose") == "mGy/s"
    assert _column(dvh, "volume_percent_1")[0] == 100.0  # segment 1 (the liver) of the label map the Logic made
    chart = p.outputDVHChart
    assert isinstance(chart, PlotChartNodeDouble) and chart.GetNumberOfPlotSeriesNodes() == len(ORGANS)
    series = [chart.GetNthPlotSeriesNode(i) for i in range(len(ORGANS))]
    assert [s.GetName() for s in series] == names
    assert all(s.GetTableNodeID() == dvh.GetID() and s.x_column == "dose" for s in series)
    assert series[1].y_column == "volume_percent_2" and series[1].color == (0.1, 0.5, 0.9)
    assert series[0].plot_type == PlotSeriesNodeDouble.PlotTypeScatter and chart.x_title == "Dose rate (mGy/s)"
    np.testing.assert_array_equal(slicer_nodes.array_from_image_data(p.inputCT.GetImageData()), ct_before)
    assert not list(tmp.glob("dosecnn-*")), "temporary files left behind"
    assert "maximum dose rate" in logic.summary and "5 segments" in logic.summary

    # a second run with a reference map (the first result x 1.25) fills the same nodes and adds MDE and NRMSE
    first = {key: p.outputDoseRate if key == "rate" else getattr(p, key) for key in ("rate", "outputTable",
                                                                                     "outputDVHTable", "outputDVHChart")}
    p.inputReference = _node(dose.with_array(dose.array * 1.25), "Monte Carlo")
    logic.process(p, timeoutSeconds=300)
    assert p.outputDoseRate is first["rate"] and p.outputTable is first["outputTable"]
    assert p.outputDVHChart is first["outputDVHChart"] and p.outputDVHChart.GetNumberOfPlotSeriesNodes() == len(ORGANS)
    assert len([n for n in slicer.mrmlScene.nodes if isinstance(n, PlotSeriesNodeDouble)]) == len(ORGANS)
    assert len([n for n in slicer.mrmlScene.nodes if isinstance(n, ScalarVolumeNodeDouble)]) == 1
    np.testing.assert_allclose(_column(p.outputTable, "mde_percent"), 20.0, rtol=1e-4)
    np.testing.assert_allclose(_column(p.outputTable, "nrmse_percent"), 20.0, rtol=1e-4)
    assert p.outputTable.GetColumnUnitLabel("mde_percent") == "%"


def test_several_time_points_give_the_absorbed_dose(module, case):
    mod, slicer, tmp = module
    logic = mod.DoseCNNLogic()
    p = logic.getParameterNode()
    p.inputCT = _node(case.ct, "CT")
    labels = _node(case.labels, "labels")  # a label map instead of a segmentation: rows named "label N"
    p.inputLabelmap = labels
    p.integrate = True
    p.device = "cpu"
    spects = {t: _node(case.activity_bq(t), f"SPECT {t:g} h") for t in (4.0, 24.0, 96.0)}
    p.timePoints = [mod.DoseTimePoint(spect=spects[t], ct=None, hours=t, activityMBq=case.total_activity_mbq(t))
                    for t in (96.0, 4.0)]  # out of order: the Logic sorts them
    assert logic.inputProblem(p) is None
    steps = []
    logic.process(p, timeoutSeconds=300, onProgress=lambda f, step: steps.append(step))
    assert "fitting the time curves" in steps and steps[-1] == "done"

    absorbed = slicer_nodes.volume_from_node(p.outputAbsorbedDose)
    assert absorbed.same_geometry(case.ct) and np.isfinite(absorbed.array).all() and absorbed.array.max() > 0
    assert p.outputAbsorbedDose.GetDisplayNode().color_node_id == "vtkMRMLPETProceduralColorNodePET-Heat"
    assert slicer.viewer_layers["foreground"] is p.outputAbsorbedDose
    rates = p.outputTimePointDoseRates
    assert [n.GetName() for n in rates] == ["CT dose rate 4 h", "CT dose rate 96 h"]
    early, late = (slicer_nodes.volume_from_node(n).array for n in rates)
    liver = case.labels.array == 2
    assert early[liver].mean() > late[liver].mean() > 0

    names = _column(p.outputTable, "name")
    assert names[:2] == ["label 1", "label 2"]
    row = {key: dict(zip(names, _column(p.outputTable, key)))["label 2"] for key in (
        "effective_half_life_h", "mean_dose_gy", "mean_dose_gy_organ_fit", "tia_mbq_h", "mean_dose_rate_0",
        "mean_dose_rate_1", "d98_gy", "d2_gy")}
    assert row["effective_half_life_h"] == pytest.approx(70.0, rel=0.01)  # the liver's made-up kinetics
    tia = case.activity_bq(0.0).array[liver].sum(dtype=np.float64) / 1e6 * 70.0 / math.log(2)  # A0 T / ln 2
    assert row["tia_mbq_h"] == pytest.approx(tia, rel=0.02)
    assert row["mean_dose_gy_organ_fit"] == pytest.approx(row["mean_dose_gy"], rel=0.05)
    assert row["mean_dose_rate_0"] == pytest.approx(early[liver].mean(), rel=1e-4)
    assert row["d98_gy"] <= row["mean_dose_gy"] <= row["d2_gy"]
    assert p.outputTable.GetColumnTitle("mean_dose_rate_1") == "Mean dose rate at 96 h"
    assert p.outputDVHChart.x_title == "Absorbed dose (Gy)" and p.outputDVHTable.GetColumnUnitLabel("dose") == "Gy"
    assert not list(tmp.glob("dosecnn-*"))

    # again with three time points: the per-time-point nodes are reused and one is added
    p.timePoints = [mod.DoseTimePoint(spect=spects[t], ct=None, hours=t, activityMBq=case.total_activity_mbq(t))
                    for t in (4.0, 24.0, 96.0)]
    p.fitModel = "Trapezoid with exponential tail"
    old = list(rates)
    logic.process(p, timeoutSeconds=300)
    assert p.outputTimePointDoseRates[:2] == old and len(p.outputTimePointDoseRates) == 3
    assert [n.GetName() for n in p.outputTimePointDoseRates] == ["CT dose rate 4 h", "CT dose rate 24 h",
                                                                  "CT dose rate 96 h"]
    assert len([n for n in slicer.mrmlScene.nodes if isinstance(n, ScalarVolumeNodeDouble)]) == 4


def test_time_point_files_and_manifest(module, case, tmp_path):
    mod, _, _ = module
    logic = mod.DoseCNNLogic()
    p = logic.getParameterNode()
    p.inputCT = _node(case.ct, "CT")
    other_ct = _node(case.ct, "CT 2")
    spect = _node(case.activity_bq(24.0), "SPECT")
    p.integrate = True
    p.calibration = mod.CALIBRATIONS[1]
    p.bqPerCount = 1.0
    p.timePoints = [mod.DoseTimePoint(spect=spect, ct=other_ct, hours=48.0),
                    mod.DoseTimePoint(spect=spect, ct=p.inputCT, hours=24.0)]
    files = logic.exportInputs(p, str(tmp_path))
    assert files["times"] == [24.0, 48.0] and "labels" not in files
    from DoseCNNLib.dosimetry.integrate import read_time_manifest

    specs = read_time_manifest(Path(files["manifest"]))
    assert [s.ct.name for s in specs] == ["ct.nrrd", "ct_2.nrrd"]  # the reference CT is written once, as ct.nrrd
    assert specs[0].spect == specs[1].spect and [s.bq_per_count for s in specs] == [1.0, 1.0]
    command = logic.childCommand(p, files, str(tmp_path / "out"))
    assert command[3] == "integrate" and "--calibration" not in command and command[command.index("--reference-ct") + 1] \
        == files["ct"]


def test_input_problems_are_one_line_and_block_apply(module, case, tmp_path):
    mod, _, _ = module
    logic, p = _one_time_point(mod, case)
    assert logic.inputProblem(p) is None
    for changes, message in (
            ({"inputCT": None}, "Select a CT volume"),
            ({"inputSPECT": None}, "Select a SPECT volume"),
            ({"activityMBq": 0.0}, "Enter the activity in the SPECT's field of view"),
            ({"calibration": mod.CALIBRATIONS[1]}, "Enter the calibration factor (Bq per count)"),
            ({"inputLabelmap": _node(case.labels, "labels")}, "not both"),
            ({"method": "VDK + CNN", "useBundledModel": False}, "Choose a CNN weights file"),
            ({"method": "VDK + CNN", "useBundledModel": False, "weightsFile": str(tmp_path / "none.pt")},
             "CNN weights file not found"),
            ({"integrate": True}, "Add at least 2 time points")):
        _, q = _one_time_point(mod, case, **changes)
        assert message in logic.inputProblem(q), (changes, logic.inputProblem(q))
    _, q = _one_time_point(mod, case)
    q.inputSPECT = q.inputCT
    assert logic.inputProblem(q) == "The SPECT and the CT must be different volumes"
    _, q = _one_time_point(mod, case, integrate=True)
    spect = q.inputCT
    s1, s2 = _node(case.activity_bq(4.0), "s1"), _node(case.activity_bq(24.0), "s2")
    for points, message in (
            ([(s1, 4.0, 10.0), (None, 24.0, 10.0)], "Choose the SPECT of time point 2"),
            ([(s1, 4.0, 10.0), (s2, 24.0, 0.0)], "Enter the activity in the field of view of time point 2"),
            ([(s1, 24.0, 10.0), (s2, 24.0, 10.0)], "Two time points have the same time"),
            ([(spect, 4.0, 10.0), (s2, 24.0, 10.0)], "Time point 1: the SPECT and the CT must be different")):
        q.timePoints = [mod.DoseTimePoint(spect=s, ct=None, hours=h, activityMBq=a) for s, h, a in points]
        assert logic.inputProblem(q).startswith(message)
    q.timePoints = [mod.DoseTimePoint(spect=s, ct=None, hours=h, activityMBq=10.0) for s, h in ((s1, 4.0), (s2, 24.0))]
    assert logic.inputProblem(q) is None
    q.fitModel = "Bi-exponential (uptake and washout)"
    assert "at least 3 time points" in logic.inputProblem(q)
    with pytest.raises(UserError, match="at least 3 time points"):
        logic.start(q)


def test_child_errors_reach_the_user_and_cancel_cleans_up(module, case):
    mod, _, tmp = module
    logic, p = _one_time_point(mod, case)
    p.inputSPECT = _node(case.ct.with_array(np.zeros(case.ct.shape, np.float32)), "empty SPECT")
    with pytest.raises(UserError, match="the SPECT has no counts"):
        logic.process(p, timeoutSeconds=300)
    assert p.outputDoseRate is None and p.outputTable is None
    assert not list(tmp.glob("dosecnn-*"))
    logic, p = _one_time_point(mod, case)
    job = logic.start(p)
    job.cancel()
    assert job.process.returncode is not None and not Path(job.workdir).exists()
    with pytest.raises(UserError, match="cancelled"):
        logic.finish(job, p)
    assert p.outputDoseRate is None


def test_missing_packages_are_named_and_torch_for_the_cnn(module, case, monkeypatch):
    mod, _, _ = module
    logic, p = _one_time_point(mod, case, method="VDK + CNN")
    assert logic.missingPackages(p) == {}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "icrp107_database")
                        else real(name, *a))
    with pytest.raises(UserError, match=r"missing Python packages: torch \(the CNN method \(and the VDK convolution\) "
                                        r"run in PyTorch"):
        logic.start(p)
    p.integrate = True
    assert set(logic.missingPackages(p)) == {"torch", "icrp107_database"}
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
    logic, p = _one_time_point(mod, case)
    table = TableNodeDouble("existing")
    p.outputTable = table
    logic.process(p, timeoutSeconds=300)
    assert p.outputTable is table
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
    logic, p = _one_time_point(mod, case, inputSegmentation=None)
    logic.process(p, timeoutSeconds=300)
    vdk = slicer_nodes.volume_from_node(p.outputDoseRate).array
    logic, q = _one_time_point(mod, case, inputSegmentation=None, method="VDK + CNN", useBundledModel=False,
                               weightsFile=str(weights))
    assert logic.inputProblem(q) is None
    command = logic.childCommand(q, {"spect": "s", "ct": "c"}, "o")
    assert command[command.index("--method") + 1] == "cnn" and command[command.index("--weights") + 1] == str(weights)
    logic.process(q, timeoutSeconds=300)
    cnn = slicer_nodes.volume_from_node(q.outputDoseRate).array
    assert cnn.shape == vdk.shape and np.isfinite(cnn).all() and cnn.min() >= 0.0
    assert not np.allclose(cnn, vdk) and q.outputTable is None  # no segments, no table
