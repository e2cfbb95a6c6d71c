"""Plan evaluation in the CTPerfusionMapping module on a real MRML scene (slicer-core; Testing/slicer_real.py).

With a planned dose node the Logic evaluates the plan as ``ctpm plan`` does (the planning package's
``evaluate_plans``, called through CTPerfusionMappingLib/slicer_glue/plan.py) and fills a DVH table, a plot chart and a
metrics table. One test runs the real ``ctpm run`` child (a tiny network); the others give the Logic a stand-in child
that hands back a prepared ``ctpm run`` output folder (a small synthetic patient: lungs, lobes, a perfusion map with an
anterior-posterior gradient), so that the real process handling, export and import run in a fraction of a second.
Dose nodes lie in world coordinates as Slicer shows them: a dose under a translation, or under a rotation, gives the
metrics of the same dose without a transform (and of Slicer's own hardening of it), and a dose field that is linear in
world coordinates gives exactly its mean over the lung voxels' world positions.
"""

import csv
import inspect
import json
import sys

import numpy as np
import pytest
from slicer_real import mask_on_volume_grid, segment_world_points

from CTPerfusionMappingLib.planning.evaluation import evaluate_plans
from CTPerfusionMappingLib.planning.report import METRIC_COLUMNS
from CTPerfusionMappingLib.slicer_glue.plan import METRIC_TABLE_COLUMNS, PLAN_KEYWORDS
from ImagingBasics.errors import UserError
from ImagingBasics.imageio import write_volume
from ImagingBasics.volume import Volume, ijk_to_ras_matrix, volume_from_ijk_to_ras

#: the stand-in child: copies a prepared output folder to its output folder and reports it done (the real protocol)
FAKE_CHILD = ("import json, shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2]); "
              "print('@ctpm ' + json.dumps({'done': True, 'out': sys.argv[2]}), flush=True)")
#: the warning the stand-in child's metrics.json carries (joined by the plan's warnings in the warnings table)
CHILD_WARNING = {"code": "test_warning", "message": "a warning of the perfusion run"}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --- a small synthetic patient as ctpm run leaves it ------------------------------------------------------------------
class Patient:
    """CT grid 40 x 32 x 20 voxels of 4 x 4 x 5 mm (LPS, identity direction); right lung (label 1) at small i, left
    lung (2) at large i; CIP lobes; perfusion rising from anterior to posterior (j), the left lung at 0.8 of the right."""

    def __init__(self):
        shape = (20, 32, 40)
        self.ct = Volume(np.full(shape, 40.0, np.float32), (4.0, 4.0, 5.0), (-80.0, -64.0, -50.0))
        k, j, i = np.indices(shape)
        right = (i >= 6) & (i < 18) & (j >= 8) & (j < 26) & (k >= 3) & (k < 17)
        left = (i >= 22) & (i < 34) & (j >= 8) & (j < 26) & (k >= 3) & (k < 17)
        lungs = np.where(right, 1, np.where(left, 2, 0)).astype(np.uint8)
        lobes = np.zeros(shape, np.uint8)
        lobes[right & (k < 8)], lobes[right & (k >= 8) & (k < 11)], lobes[right & (k >= 11)] = 6, 5, 4  # RLL RML RUL
        lobes[left & (k < 10)], lobes[left & (k >= 10)] = 8, 7  # LLL LUL
        perfusion = np.where(lungs > 0, (0.2 + 0.8 * j / 31.0) * np.where(left, 0.8, 1.0), 0.0).astype(np.float32)
        perfusion /= perfusion.max()
        self.ct.array[lungs > 0] = -800.0
        self.lung_mask = lungs > 0
        self.lungs, self.lobes = self.ct.with_array(lungs), self.ct.with_array(lobes)
        self.perfusion = self.ct.with_array(perfusion)
        functional = np.where(lungs > 0, np.where(perfusion >= 0.66, 2, 1), 0).astype(np.uint8)
        self.functional = self.ct.with_array(functional)

    def write_results(self, folder):
        """The files of a ``ctpm run`` output folder that the Logic reads."""
        folder.mkdir(parents=True)
        for name, volume in (("perfusion", self.perfusion), ("functional", self.functional), ("lungs", self.lungs),
                             ("lobes", self.lobes)):
            write_volume(volume, folder / f"{name}.nrrd")
        ml = self.ct.voxel_volume_ml
        rows = [{"name": "right lung", "volume_ml": (self.lungs.array == 1).sum() * ml},
                {"name": "left lung", "volume_ml": (self.lungs.array == 2).sum() * ml},
                {"name": "both lungs", "volume_ml": self.lung_mask.sum() * ml}]
        with open(folder / "lobes.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["name", "volume_ml"])
            writer.writeheader()
            writer.writerows(rows)
        (folder / "metrics.json").write_text(json.dumps({"warnings": [CHILD_WARNING]}), encoding="utf-8")
        return folder

    def lung_world_lps(self):
        """LPS positions (mm) of the lung voxels, in the order of a boolean selection of ``[k, j, i]``."""
        k, j, i = np.nonzero(self.lung_mask)
        return self.ct.index_to_lps(np.stack([i, j, k], axis=-1))


@pytest.fixture(scope="module")
def patient():
    return Patient()


@pytest.fixture
def module(real_slicer):
    return real_slicer.module("CTPerfusionMapping")


@pytest.fixture
def results(patient, tmp_path):
    return patient.write_results(tmp_path / "prepared")


def _logic(module, results):
    """The Logic with the stand-in child (the export of the inputs, the process and the import are real)."""
    logic = module.CTPerfusionMappingLogic()
    logic.childCommand = lambda request, files, out: [sys.executable, "-c", FAKE_CHILD, str(results), out]
    return logic


def _arguments(real, patient, **changes):
    arguments = dict(inputCT=real.add_volume(patient.ct, "CT"), segmentationSource="Built-in", device="cpu")
    arguments.update(changes)
    return arguments


def _rows(table_node):
    """The rows of a table node as dicts (column key -> value), and the class name of each column."""
    table = table_node.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    rows = [{col.GetName(): col.GetValue(r) for col in columns} for r in range(table.GetNumberOfRows())]
    return rows, {col.GetName(): col.GetClassName() for col in columns}


def _table_text(table_node):
    """The rows of a table node as text (NaN compares equal to NaN)."""
    return repr(_rows(table_node)[0])


def _metrics(outputs):
    rows, _ = _rows(outputs["outputPlanMetrics"])
    return {row["structure"]: row for row in rows}


def _dose_node(real, array, ijk_to_ras, name="dose", transform=None):
    node = real.slicer.util.addVolumeFromArray(np.asarray(array, np.float32), ijk_to_ras, name)
    if transform is not None:
        node.SetAndObserveTransformNodeID(transform.GetID())
    return node


def _linear_dose_gy(lps):
    """A dose field linear in world (LPS, mm) position: 10 to 70 Gy over the test grids."""
    lps = np.asarray(lps, float)
    return 40.0 + 0.1 * lps[..., 0] + 0.15 * lps[..., 1] + 0.05 * lps[..., 2]


#: a dose grid that covers the CT with a margin of more than 15 mm on every side; 6 mm voxels: a coarse grid (warning)
DOSE_GRID = Volume(np.zeros((25, 32, 35), np.float32), (6.0, 6.0, 6.0), (-110.0, -96.0, -78.0))


def _sampled(ijk_to_ras_world):
    """The linear dose field sampled at the voxels of a grid placed in world by ``ijk_to_ras_world``, ``[k, j, i]``."""
    nz, ny, nx = DOSE_GRID.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    ras = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float) @ np.asarray(ijk_to_ras_world).T
    return _linear_dose_gy((ras @ LPS_TO_RAS.T)[..., :3])


# --- the tests ----------------------------------------------------------------------------------------------------------
def test_a_uniform_dose_after_a_real_run_gives_mld_equal_fmld_equal_dose(real_slicer, module, tmp_path):
    """The real ctpm run child (tiny random network, a lobe label map) and a uniform 12.5 Gy dose node."""
    from CTPerfusionMappingLib.network import NetworkConfig, build_model
    from CTPerfusionMappingLib.synthetic.cohort import generate_case
    from CTPerfusionMappingLib.weights import save_weights

    case = generate_case(6, "small", pathology_probabilities={"tumour": 1.0})
    weights = tmp_path / "tiny.pt"
    config = NetworkConfig(base_channels=2, max_channels=4)
    save_weights(build_model(config), config, weights, metadata={"note": "random weights for tests"})
    dose = real_slicer.add_volume(case.ct.with_array(np.full(case.ct.shape, 12.5, np.float32)), "uniform dose")
    logic = module.CTPerfusionMappingLogic()
    outputs = logic.process(inputCT=real_slicer.add_volume(case.ct, "CT"), weightsFile=str(weights), device="cpu",
                            inputLabelmap=real_slicer.add_volume(case.lobes, "lobes", label=True), inputDose=dose,
                            timeoutSeconds=300)
    assert set(outputs) == {"outputPerfusion", "outputFunctional", "outputTable", "outputDVHTable", "outputDVHChart",
                            "outputPlanMetrics"}
    metrics = _metrics(outputs)
    assert list(metrics) == ["right lung", "left lung", "both lungs", "RUL", "RML", "RLL", "LUL", "LLL"]
    for row in metrics.values():
        assert row["mld_gy"] == pytest.approx(12.5, abs=1e-6) and row["fmld_gy"] == pytest.approx(12.5, abs=1e-6)
        assert row["v5_percent"] == pytest.approx(100.0) and row["fv5_percent"] == pytest.approx(100.0)
        assert row["v20_percent"] == row["fv20_percent"] == 0.0
    dvh, kinds = _rows(outputs["outputDVHTable"])
    assert set(kinds.values()) == {"vtkDoubleArray"} and len(kinds) == 1 + 2 * 8
    below = [row for row in dvh if row["dose_gy"] < 12.5 - 1e-6]
    above = [row for row in dvh if row["dose_gy"] > 12.5 + 1e-6]
    assert below and above and all(row["both_lungs_function_percent"] == pytest.approx(100.0) for row in below)
    assert all(row["both_lungs_volume_percent"] == row["both_lungs_function_percent"] == 0.0 for row in above)
    assert "MLD 12.50 Gy, fMLD 12.50 Gy" in logic.summary
    assert not real_slicer.vtk_errors(), real_slicer.vtk_errors()


def test_an_ap_gradient_dose_gives_the_planning_functions_metrics(real_slicer, module, patient, results):
    """The tables hold what evaluate_plans (ctpm plan's function) gives on the same arrays; fMLD by hand agrees."""
    slicer = real_slicer.slicer
    k, j, i = np.indices(patient.ct.shape)
    dose_array = (2.0 + 1.5 * j).astype(np.float32)  # Gy, rising from anterior to posterior like the perfusion
    dose = real_slicer.add_volume(patient.ct.with_array(dose_array), "AP dose")
    logic = _logic(module, results)
    arguments = _arguments(real_slicer, patient, inputDose=dose)
    outputs = logic.process(**arguments, timeoutSeconds=60)

    expected = evaluate_plans(patient.perfusion, patient.lungs, {"AP dose": patient.ct.with_array(dose_array)},
                              patient.lobes).plans[0]
    metrics = _metrics(outputs)
    assert list(metrics) == [row["structure"] for row in expected.rows]
    for row in expected.rows:
        for key in METRIC_COLUMNS[1:]:
            got = metrics[row["structure"]][key]
            if isinstance(row[key], str):
                assert got == row[key]
            else:
                assert got == pytest.approx(row[key], rel=1e-9, abs=1e-9, nan_ok=True), (row["structure"], key)
    w = patient.perfusion.array[patient.lung_mask].astype(float)
    d = dose_array[patient.lung_mask].astype(float)
    assert metrics["both lungs"]["fmld_gy"] == pytest.approx((w * d).sum() / w.sum(), rel=0.005)
    assert metrics["both lungs"]["mld_gy"] == pytest.approx(d.mean(), rel=0.005)
    assert metrics["both lungs"]["fmld_gy"] > metrics["both lungs"]["mld_gy"] + 1.0  # function lies where the dose is

    table = outputs["outputPlanMetrics"]
    _, kinds = _rows(table)
    assert [c[0] for c in METRIC_TABLE_COLUMNS] == list(METRIC_COLUMNS[1:]) == list(kinds)
    assert kinds["structure"] == "vtkStringArray" and kinds["fmld_gy"] == kinds["voxels"] == "vtkDoubleArray"
    assert table.GetColumnTitle("fmld_gy") == "fMLD" and table.GetColumnUnitLabel("fmld_gy") == "Gy"
    assert table.GetColumnUnitLabel("fv20_percent") == "%" and table.GetColumnUnitLabel("volume_ml") == "mL"
    assert "sum of w D" in table.GetColumnDescription("fmld_gy") and table.GetUseColumnTitleAsColumnHeader()

    dvh_node = outputs["outputDVHTable"]
    dvh, kinds = _rows(dvh_node)
    assert list(kinds)[:3] == ["dose_gy", "right_lung_volume_percent", "right_lung_function_percent"]
    assert dvh_node.GetColumnUnitLabel("dose_gy") == "Gy" and dvh_node.GetColumnUnitLabel("rll_function_percent") == "%"
    assert dvh_node.GetColumnTitle("both_lungs_function_percent") == "both lungs fV"
    levels = np.array([row["dose_gy"] for row in dvh])
    assert levels[0] == 0.0 and np.allclose(np.diff(levels), 0.1) and levels[-1] > d.max()
    volume, function = expected.dvh["both lungs"]
    np.testing.assert_allclose([row["both_lungs_volume_percent"] for row in dvh], 100 * volume, atol=1e-9)
    np.testing.assert_allclose([row["both_lungs_function_percent"] for row in dvh], 100 * function, atol=1e-9)

    chart = outputs["outputDVHChart"]
    assert chart.GetXAxisTitle() == "Dose (Gy)" and "(%)" in chart.GetYAxisTitle()
    series = [chart.GetNthPlotSeriesNode(n) for n in range(chart.GetNumberOfPlotSeriesNodes())]
    assert len(series) == 16 and all(s.GetTableNodeID() == dvh_node.GetID() for s in series)
    styles = {s.GetYColumnName(): s.GetLineStyle() for s in series}
    assert styles["both_lungs_volume_percent"] == series[0].LineStyleDash
    assert styles["both_lungs_function_percent"] == series[0].LineStyleSolid
    by_name = {s.GetName(): s for s in series}
    assert by_name["RUL V (volume)"].GetColor() == by_name["RUL fV (function)"].GetColor()

    warnings, _ = _rows(logic.warningsTable())
    assert warnings[0] == CHILD_WARNING  # the run's own warnings first, then the plan's (none here)
    assert "fMLD" in logic.summary and slicer.util.arrayFromVolume(dose).dtype == np.float32  # input untouched

    counts = real_slicer.node_counts()  # a second run fills the same nodes, its series replace the first ones
    again = logic.process(**arguments, **outputs, timeoutSeconds=60)
    assert again == outputs and real_slicer.node_counts() == counts
    assert outputs["outputDVHChart"].GetNumberOfPlotSeriesNodes() == 16
    assert not real_slicer.orphan_display_nodes() and not real_slicer.vtk_errors(), real_slicer.vtk_errors()


@pytest.mark.parametrize("placement", ["translation", "rotation"])
def test_a_dose_under_a_transform_lands_where_slicer_shows_it(real_slicer, module, patient, results, placement):
    """The dose node under a linear transform gives the metrics of the equivalent untransformed dose (translation) and
    of Slicer's own hardening of the transform (rotation); both equal the linear dose field averaged over the lung
    voxels' world positions (linear interpolation reproduces a linear field exactly)."""
    grid = ijk_to_ras_matrix(DOSE_GRID)
    if placement == "translation":
        moved = np.eye(4)
        moved[:3, 3] = (15.0, -10.0, 8.0)
        world = grid  # the node's own matrix is moved back by the transform's inverse: the world geometry is the grid's
        local = np.linalg.inv(moved) @ grid
        reference = _dose_node(real_slicer, _sampled(world), world, "dose without transform")
    else:
        from slicer_real import rotation_ras

        moved = rotation_ras(12.0, (6.0, -4.0, 3.0), degrees_about_r=5.0)
        local, world = grid, moved @ grid
        reference = _dose_node(real_slicer, _sampled(world), local, "hardened dose",
                               real_slicer.add_linear_transform(moved, "to harden"))
        reference.HardenTransform()
        assert reference.GetParentTransformNode() is None
    transform = real_slicer.add_linear_transform(moved, "plan position")
    transformed = _dose_node(real_slicer, _sampled(world), local, "dose under transform", transform)

    logic = _logic(module, results)
    metrics = {}
    for node in (reference, transformed):
        metrics[node.GetName()] = _metrics(logic.process(**_arguments(real_slicer, patient, inputDose=node),
                                                         timeoutSeconds=60))
    first, second = metrics.values()
    for structure, row in first.items():
        for key in ("mld_gy", "fmld_gy", "v30_percent", "fv30_percent", "mean_dose_high_function_gy"):
            assert second[structure][key] == pytest.approx(row[key], rel=1e-9, abs=1e-9), (structure, key)
    expected_mld = _linear_dose_gy(patient.lung_world_lps()).mean()
    assert second["both lungs"]["mld_gy"] == pytest.approx(expected_mld, rel=1e-6)
    codes = [row["code"] for row in _rows(logic.warningsTable())[0]]
    assert codes == [CHILD_WARNING["code"], "dose_grid_coarse"]  # the run's warning, then the plan's
    assert "2 warnings" in logic.summary


def test_a_ct_and_a_dose_under_one_registration_transform(real_slicer, module, patient, tmp_path):
    """CT and dose under one rigid transform: the child works on the CT in world coordinates (as the real child gets
    it, so the prepared results lie there too), and the dose lands on it where Slicer shows both."""
    from slicer_real import rotation_ras

    moved = rotation_ras(-9.0, (12.0, 5.0, -7.0), degrees_about_r=3.0)
    world = Patient()
    for name in ("ct", "perfusion", "functional", "lungs", "lobes"):
        volume = getattr(patient, name)
        setattr(world, name, volume_from_ijk_to_ras(volume.array, moved @ ijk_to_ras_matrix(volume)))
    results = world.write_results(tmp_path / "prepared in world")
    transform = real_slicer.add_linear_transform(moved, "registration")
    dose = _dose_node(real_slicer, _sampled(moved @ ijk_to_ras_matrix(DOSE_GRID)), ijk_to_ras_matrix(DOSE_GRID),
                      "dose", transform)
    arguments = dict(inputCT=real_slicer.add_volume(patient.ct, "CT", transform), inputDose=dose,
                     segmentationSource="Built-in", device="cpu")
    metrics = _metrics(_logic(module, results).process(**arguments, timeoutSeconds=60))
    expected = _linear_dose_gy(world.lung_world_lps())
    assert metrics["both lungs"]["mld_gy"] == pytest.approx(expected.mean(), rel=1e-6)
    w = patient.perfusion.array[patient.lung_mask].astype(float)
    assert metrics["both lungs"]["fmld_gy"] == pytest.approx((w * expected).sum() / w.sum(), rel=1e-6)


def test_a_non_linear_transform_on_the_dose_is_refused(real_slicer, module, patient, results):
    import vtk

    transform = real_slicer.scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for p in ((0, 0, 0), (50, 0, 0), (0, 50, 0), (0, 0, 50)):
        source.InsertNextPoint(*p)
        target.InsertNextPoint(p[0] + 2.0, p[1], p[2])
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    transform.SetAndObserveTransformToParent(warp)
    dose = _dose_node(real_slicer, _sampled(ijk_to_ras_matrix(DOSE_GRID)), ijk_to_ras_matrix(DOSE_GRID), "warped",
                      transform)
    arguments = _arguments(real_slicer, patient, inputDose=dose)
    nodes = real_slicer.node_ids()
    with pytest.raises(UserError, match="the dose 'warped' is under a non-linear transform; harden it"):
        _logic(module, results).process(**arguments)
    assert real_slicer.node_ids() == nodes and not list(real_slicer.temporary.glob("ctpm-*"))


@pytest.mark.parametrize("transformed", [False, True], ids=["segmentation", "segmentation under a transform"])
def test_the_exclusion_segment_is_removed_from_every_structure(real_slicer, module, patient, results, transformed):
    slicer = real_slicer.slicer
    k, j, i = np.indices(patient.ct.shape)
    gtv = (((i - 12) / 3.0) ** 2 + ((j - 16) / 3.0) ** 2 + ((k - 9) / 2.0) ** 2) <= 1.0  # in the right lung
    heart = (i >= 18) & (i < 22) & (j < 12)  # another segment, not to be excluded
    helper = real_slicer.add_volume(patient.ct, "segment geometry")
    seg = real_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "RTSTRUCT")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(helper)
    ids = {}
    for name, mask in (("heart", heart), ("GTV", gtv)):
        ids[name] = seg.GetSegmentation().AddEmptySegment("", name)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), seg, ids[name], helper)
    if transformed:  # whole voxels of the CT grid (4, 4, 5 mm): the moved GTV is a shifted voxel mask
        moved = np.eye(4)
        moved[:3, 3] = (-8.0, 12.0, 10.0)
        seg.SetAndObserveTransformNodeID(real_slicer.add_linear_transform(moved, "registration").GetID())
    dose = real_slicer.add_volume(patient.ct.with_array((2.0 + 1.5 * j).astype(np.float32)), "dose")
    arguments = _arguments(real_slicer, patient, inputDose=dose, inputExclusionSegmentation=seg,
                           exclusionSegmentID=ids["GTV"])
    excluded = mask_on_volume_grid(segment_world_points(seg, ids["GTV"]), arguments["inputCT"])  # where Slicer shows it
    assert excluded.sum() == gtv.sum() and (excluded & patient.lung_mask).sum() > 20
    assert np.array_equal(excluded, gtv) != transformed

    logic = _logic(module, results)
    metrics = _metrics(logic.process(**arguments, timeoutSeconds=60))
    expected = evaluate_plans(patient.perfusion, patient.lungs, {"dose": dose_volume(dose)}, patient.lobes,
                              {"GTV": patient.ct.with_array(excluded.astype(np.uint8))}).plans[0]
    for row in expected.rows:
        assert metrics[row["structure"]]["voxels"] == row["voxels"]
        assert metrics[row["structure"]]["fmld_gy"] == pytest.approx(row["fmld_gy"], rel=1e-9)
    right = ((patient.lungs.array == 1) & ~excluded).sum()
    assert metrics["right lung"]["voxels"] == right < (patient.lungs.array == 1).sum()
    assert metrics["left lung"]["voxels"] == (patient.lungs.array == 2).sum()

    labelmap = real_slicer.add_volume(patient.ct.with_array(excluded.astype(np.uint8)), "GTV label map", label=True)
    by_labelmap = _metrics(logic.process(**_arguments(real_slicer, patient, inputDose=dose,
                                                      inputExclusionLabelmap=labelmap), timeoutSeconds=60))
    assert {s: r["voxels"] for s, r in by_labelmap.items()} == {s: r["voxels"] for s, r in metrics.items()}


def dose_volume(node):
    from ImagingBasics.slicer_nodes import volume_from_node

    return volume_from_node(node)


def test_no_dose_gives_no_plan_nodes(real_slicer, module, patient, results):
    logic = _logic(module, results)
    outputs = logic.process(**_arguments(real_slicer, patient), timeoutSeconds=60)
    assert set(outputs) == {"outputPerfusion", "outputFunctional", "outputTable"}
    assert not real_slicer.nodes("vtkMRMLPlotChartNode") and not real_slicer.nodes("vtkMRMLPlotSeriesNode")
    tables = [node.GetName() for node in real_slicer.nodes("vtkMRMLTableNode")]
    assert tables == ["CT lung regions", "CTPerfusionMapping quality warnings"]
    assert "fMLD" not in logic.summary


def test_a_dose_not_covering_the_lungs_fails_and_leaves_every_node_as_it_was(real_slicer, module, patient, results):
    slicer = real_slicer.slicer
    logic = _logic(module, results)
    k, j, i = np.indices(patient.ct.shape)
    good = real_slicer.add_volume(patient.ct.with_array((2.0 + 1.5 * j).astype(np.float32)), "plan A")
    arguments = _arguments(real_slicer, patient, inputDose=good)
    outputs = logic.process(**arguments, timeoutSeconds=60)
    before = {key: _table_text(node) for key, node in outputs.items() if node.IsA("vtkMRMLTableNode")}
    perfusion = slicer.util.arrayFromVolume(outputs["outputPerfusion"]).copy()
    series = outputs["outputDVHChart"].GetNumberOfPlotSeriesNodes()

    upper = patient.ct.array.shape[0] // 2  # a dose grid holding only the upper half of the slices
    half = Volume(np.full((patient.ct.shape[0] - upper,) + patient.ct.shape[1:], 20.0, np.float32),
                  patient.ct.spacing, patient.ct.index_to_lps(np.array([0.0, 0.0, upper])))
    bad = real_slicer.add_volume(half, "plan B")
    nodes = real_slicer.node_ids()
    with pytest.raises(UserError, match=r"% of the lungs lie outside the grid of the dose of plan 'plan B'"):
        logic.process(**dict(arguments, inputDose=bad, **outputs), timeoutSeconds=60)
    assert real_slicer.node_ids() == nodes
    assert {key: _table_text(outputs[key]) for key in before} == before  # nothing half-filled
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(outputs["outputPerfusion"]), perfusion)
    assert outputs["outputDVHChart"].GetNumberOfPlotSeriesNodes() == series
    assert not list(real_slicer.temporary.glob("ctpm-*")), "temporary files left behind"

    negative = real_slicer.add_volume(patient.ct.with_array(np.full(patient.ct.shape, -1.0, np.float32)), "plan C")
    with pytest.raises(UserError, match="negative"):  # refused before the child starts
        logic.process(**dict(arguments, inputDose=negative))
    assert not list(real_slicer.temporary.glob("ctpm-*"))


def _study_with_dose_unit(real, node, unit):
    """The dose node in a study of the subject hierarchy whose DoseUnitName is ``unit``, as SlicerRT's RTDOSE import
    leaves it."""
    hierarchy = real.scene.GetSubjectHierarchyNode()
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient"), "study")
    item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(study, node)
    hierarchy.SetItemParent(item, study)
    hierarchy.SetItemAttribute(study, "DicomRtImport.DoseUnitName", unit)
    node.SetAttribute("DicomRtImport.DoseVolume", "1")


@pytest.mark.parametrize("unit, problem", [("GY", None), ("Gy", None), ("RELATIVE", "relative dose"),
                                           ("CGY", r"in CGY, not Gy: give the planned dose in Gy \(divide")])
def test_the_dose_unit_slicerrt_records_is_checked(real_slicer, module, patient, unit, problem):
    k, j, i = np.indices(patient.ct.shape)
    dose = real_slicer.add_volume(patient.ct.with_array((2.0 + j).astype(np.float32)), "RTDOSE")
    _study_with_dose_unit(real_slicer, dose, unit)
    logic = module.CTPerfusionMappingLogic()
    arguments = _arguments(real_slicer, patient, inputDose=dose)
    if problem is None:
        assert logic.inputProblem(**arguments) is None
        return
    assert pytest.raises(UserError, logic.process, **arguments).match(problem)
    assert logic.inputProblem(**arguments).startswith("The dose 'RTDOSE' ")
    dose.SetAttribute("DicomRtImport.DoseUnitName", "Gy")  # the node's own attribute comes first
    assert logic.inputProblem(**arguments) is None


def test_the_plan_inputs_and_options_are_checked_before_anything_runs(real_slicer, module, patient):
    logic = module.CTPerfusionMappingLogic()
    dose = real_slicer.add_volume(patient.ct.with_array(np.full(patient.ct.shape, 2.0, np.float32)), "dose")
    seg = real_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "RTSTRUCT")
    seg.CreateDefaultDisplayNodes()  # as a loaded RTSTRUCT has (else Slicer's segment export adds one)
    gtv = seg.GetSegmentation().AddEmptySegment("gtv", "GTV")
    arguments = _arguments(real_slicer, patient)
    problem = lambda **changes: logic.inputProblem(**dict(arguments, **changes))  # noqa: E731
    assert problem(inputExclusionSegmentation=seg).startswith("Select a dose volume")
    assert problem(inputDose=arguments["inputCT"]) == "The dose must be a volume of its own, not the CT or the SPECT"
    assert problem(inputDose=dose, inputExclusionSegmentation=seg) == "Select the segment of 'RTSTRUCT' to exclude (GTV/PTV)"
    assert "has no segment 'ptv'" in problem(inputDose=dose, inputExclusionSegmentation=seg, exclusionSegmentID="ptv")
    assert problem(inputDose=dose, inputExclusionSegmentation=seg, exclusionSegmentID=gtv) is None
    assert problem(inputDose=dose, dvhBinWidthGy=0.0) == "dvhBinWidthGy must be positive and at most 5 Gy, got 0"
    assert problem(inputDose=dose, highFunctionThreshold=0.99) == \
        "highFunctionThreshold must be from 0.05 to 0.95, got 0.99"
    nodes = real_slicer.node_ids()
    with pytest.raises(UserError, match="is empty on the CT's grid"):  # an empty GTV: before the child starts
        logic.process(**dict(arguments, inputDose=dose, inputExclusionSegmentation=seg, exclusionSegmentID=gtv))
    assert real_slicer.node_ids() == nodes and not list(real_slicer.temporary.glob("ctpm-*"))


def test_the_plan_options_of_the_parameter_node_and_the_logic_are_ctpm_plans(real_slicer, module, patient):
    """The validators of the parameter node and the checks of the Logic are those of the definitions ctpm plan's
    arguments come from (the check of Testing/test_options.py, for the plan keywords)."""
    from test_options import at_exclusive_bound, expected, probes

    node_class, logic = module.CTPerfusionMappingParameterNode, module.CTPerfusionMappingLogic()
    keywords = inspect.signature(logic.process).parameters
    dose = real_slicer.add_volume(patient.ct.with_array(np.full(patient.ct.shape, 2.0, np.float32)), "dose")
    base = _arguments(real_slicer, patient, inputDose=dose)
    for keyword, option in PLAN_KEYWORDS.items():
        validators = [m for m in node_class.__annotations__[keyword].__metadata__ if hasattr(m, "validate")]
        assert [(v.minimum, v.maximum) for v in validators] == [option.bounds], keyword
        assert keywords[keyword].default == option.default, keyword
        for value in probes(option):
            logic_ok = logic.inputProblem(**dict(base, **{keyword: value})) is None
            node = node_class(logic.getParameterNode())
            try:
                setattr(node, keyword, value)
                node_ok = True
            except ValueError:
                node_ok = False
            assert logic_ok == expected(option, value), (keyword, value)
            assert node_ok == (logic_ok or at_exclusive_bound(option, value)), (keyword, value)


def test_the_widget_maps_the_plan_parameters_and_binds_the_exclusion_segment(real_slicer, module, patient):
    ui = real_slicer.install_qt_ui()
    real_slicer.add_volume(patient.ct, "CT")  # the first volume: the Widget's CT
    seg = real_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "RTSTRUCT")
    gtv = seg.GetSegmentation().AddEmptySegment("gtv", "GTV")
    dose = real_slicer.add_volume(patient.ct.with_array(np.full(patient.ct.shape, 2.0, np.float32)), "dose")
    widget = module.CTPerfusionMappingWidget()
    widget.setup()
    try:
        p = widget._parameterNode
        assert ui.exclusionSegmentSelector.scene is real_slicer.scene and not ui.exclusionSegmentSelector.enabled
        p.inputDose, p.inputExclusionSegmentation = dose, seg
        assert ui.exclusionSegmentSelector.currentNode() is seg and ui.exclusionSegmentSelector.enabled
        assert ui.statusLabel.text == "Select the segment of 'RTSTRUCT' to exclude (GTV/PTV)"
        ui.exclusionSegmentSelector.setCurrentSegmentID(gtv)  # the user picks the segment: its signal
        assert p.exclusionSegmentID == gtv and ui.statusLabel.text == "Ready"
        arguments = module.CTPerfusionMappingWidget.logicArguments(p)
        inspect.signature(module.CTPerfusionMappingLogic.process).bind(None, **arguments)
        assert arguments["inputDose"] is dose and arguments["exclusionSegmentID"] == gtv
        assert arguments["highFunctionThreshold"] is None and arguments["dvhBinWidthGy"] == 0.1
        assert not ui.highFunctionThresholdSliderWidget.enabled
        p.weightHighFunctionOnly, p.highFunctionThreshold = True, 0.5
        assert module.CTPerfusionMappingWidget.logicArguments(p)["highFunctionThreshold"] == 0.5
        assert ui.highFunctionThresholdSliderWidget.enabled
    finally:
        widget.cleanup()
