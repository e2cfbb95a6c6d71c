"""The DoseCNN module's pure glue: child command lines (valid ``dosecnn`` commands), the time-point manifest, the
per-segment tables and DVHs, the display window, and the shared pieces it uses from CTPerfusionMappingLib."""

import os
import sys

import numpy as np
import pytest

from DoseCNNLib.cli import build_parser
from DoseCNNLib.dosimetry.integrate import read_time_manifest
from DoseCNNLib.slicer_glue import commands as slicer_commands
from DoseCNNLib.slicer_glue import results as slicer_results
from ImagingBasics import process, slicer_nodes
from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume


def test_run_command_is_a_valid_dosecnn_run(tmp_path):
    cmd = slicer_commands.run_command("s.nrrd", "ct.nrrd", tmp_path, activity_mbq=5000.0, labels="l.nrrd",
                                      method="cnn", weights="w.pt", device="cpu", kernel_cache="k")
    assert cmd[:4] == [sys.executable, "-m", "DoseCNNLib.cli", "run"]
    args = build_parser().parse_args(cmd[3:])
    assert (args.spect, args.ct, args.labels, args.activity_mbq, args.bq_per_count) == ("s.nrrd", "ct.nrrd", "l.nrrd",
                                                                                       5000.0, None)
    assert (args.method, args.weights, args.device, str(args.kernel_cache)) == ("cnn", "w.pt", "cpu", "k")
    assert args.progress_lines and args.out == tmp_path
    cmd = slicer_commands.run_command("s", "c", "o", bq_per_count=2.5, method="vdk", weights="ignored.pt")
    args = build_parser().parse_args(cmd[3:])
    assert args.bq_per_count == 2.5 and args.activity_mbq is None and "--weights" not in cmd and args.device == "auto"
    with pytest.raises(UserError, match="exactly one calibration"):
        slicer_commands.run_command("s", "c", "o")
    with pytest.raises(UserError, match="--method: invalid choice 'mc'"):
        slicer_commands.run_command("s", "c", "o", activity_mbq=1.0, method="mc")


def test_integrate_command_is_a_valid_dosecnn_integrate(tmp_path):
    cmd = slicer_commands.integrate_command("tp.csv", tmp_path, reference_ct="ct.nrrd", labels="l.nrrd",
                                            names={2: "liver", 10: "lesion 10"}, method="vdk", fit="bi", start="zero",
                                            register=False, registration_metric="mattes", device="cpu")
    assert cmd[:4] == [sys.executable, "-m", "DoseCNNLib.cli", "integrate"]
    args = build_parser().parse_args(cmd[3:])
    assert str(args.manifest) == "tp.csv" and args.out == tmp_path and str(args.reference_ct) == "ct.nrrd"
    assert (args.fit, args.start, args.register, args.registration_metric) == ("bi", "zero", False, "mattes")
    assert args.names == ["2=liver", "10=lesion 10"] and args.dose_rate_maps and args.progress_lines
    with pytest.raises(UserError, match="--fit: invalid choice 'cubic'"):
        slicer_commands.integrate_command("m", "o", fit="cubic")


def test_the_manifest_the_logic_writes_is_what_integrate_reads(tmp_path):
    for name in ("s1.nrrd", "s2.nrrd", "ct.nrrd"):
        (tmp_path / name).write_bytes(b"x")
    points = [slicer_commands.TimePointFiles(96.0, tmp_path / "s2.nrrd", tmp_path / "ct.nrrd", 2500.0),
              slicer_commands.TimePointFiles(4.5, tmp_path / "s1.nrrd", tmp_path / "ct.nrrd", 5000.0)]
    specs = read_time_manifest(slicer_commands.write_time_manifest(points, tmp_path / "tp.csv"))
    assert [(s.time_h, s.spect.name, s.activity_mbq, s.bq_per_count) for s in specs] == [
        (4.5, "s1.nrrd", 5000.0, None), (96.0, "s2.nrrd", 2500.0, None)]
    points = [slicer_commands.TimePointFiles(t, tmp_path / "s1.nrrd", tmp_path / "ct.nrrd", bq_per_count=8.0)
              for t in (24.0, 48.0)]
    assert [s.bq_per_count for s in read_time_manifest(slicer_commands.write_time_manifest(points, tmp_path / "b.csv"))
            ] == [8.0, 8.0]


def test_the_child_finds_both_libraries_and_the_device_probe_is_shared():
    env = slicer_commands.child_environment({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(process.LIB_PARENT), str(slicer_commands.DOSE_LIB_PARENT),
                                                   "/elsewhere"]
    assert (slicer_commands.DOSE_LIB_PARENT / "DoseCNNLib" / "cli.py").is_file()
    assert (process.LIB_PARENT / "ImagingBasics" / "devices.py").is_file()
    assert process.device_probe_command("py") == ["py", "-m", "ImagingBasics.devices", "--json"]
    line = '{"torch": "2.1", "cuda_build": null, "gpus": [], "mps_available": false, "auto": "cpu"}'
    assert process.device_text(["hello", line]) == "auto uses cpu (torch 2.1; no CUDA GPU visible)"
    assert process.device_text(["[1, 2]"], "boom") == "Device detection failed: boom"


def _grid(shape=(4, 5, 6)):
    return Volume(np.zeros(shape, np.float32), (2.0, 2.0, 2.5))


def test_dose_rate_rows_statistics_and_the_reference_metrics():
    grid = _grid()
    labels = grid.with_array(np.zeros(grid.shape, np.uint16))
    labels.array[:2] = 1
    labels.array[2:, :2] = 3
    dose = grid.with_array(np.arange(grid.array.size, dtype=np.float32).reshape(grid.shape) / 100.0)
    run_rows = {1: {"label": "1", "activity_mbq": "12.5"}}
    rows = slicer_results.dose_rate_rows(dose, labels, {1: "liver", 3: "lesion"}, run_rows)
    assert [r["name"] for r in rows] == ["liver", "lesion"]
    liver = rows[0]
    inside = dose.array[labels.array == 1]
    assert liver["volume_ml"] == pytest.approx(inside.size * grid.voxel_volume_ml)
    assert liver["mean_dose_rate_mgy_s"] == pytest.approx(inside.mean()) and liver["max_dose_rate_mgy_s"] == inside.max()
    assert liver["d98_mgy_s"] <= liver["d50_mgy_s"] <= liver["d2_mgy_s"] <= liver["max_dose_rate_mgy_s"]
    assert liver["activity_mbq"] == 12.5 and np.isnan(rows[1]["activity_mbq"])
    assert "mde_percent" not in liver
    reference = dose.with_array(dose.array * 1.25)
    rows = slicer_results.dose_rate_rows(dose, labels, {}, None, reference)
    assert rows[0]["name"] == "label 1"
    assert rows[0]["mde_percent"] == pytest.approx(20.0) and rows[0]["nrmse_percent"] == pytest.approx(20.0)
    assert rows[0]["reference_mean_mgy_s"] == pytest.approx(1.25 * inside.mean())
    keys = [c[0] for c in slicer_results.dose_rate_columns(True)]
    assert set(keys) == set(rows[0]) - {"label"}


def test_absorbed_dose_rows_per_time_point_and_organ_fit():
    grid = _grid()
    labels = grid.with_array(np.zeros(grid.shape, np.uint8))
    labels.array[1:3] = 2
    absorbed = grid.with_array(np.full(grid.shape, 3.0, np.float32))
    rates = [grid.with_array(np.full(grid.shape, v, np.float32)) for v in (0.02, 0.01)]
    organs = {2: {"label": "2", "tia_mbq_h": "1500", "effective_half_life_h": "70.5", "mean_dose_gy_organ_fit": "2.9"}}
    rows = slicer_results.absorbed_dose_rows(absorbed, rates, labels, {2: "liver"}, organs, absorbed)
    (row,) = rows
    assert row["mean_dose_rate_0"] == pytest.approx(0.02) and row["mean_dose_rate_1"] == pytest.approx(0.01)
    assert row["max_dose_rate_mgy_s"] == pytest.approx(0.02)
    assert (row["tia_mbq_h"], row["effective_half_life_h"], row["mean_dose_gy_organ_fit"]) == (1500.0, 70.5, 2.9)
    assert row["mean_dose_gy"] == pytest.approx(3.0) and row["d50_gy"] == pytest.approx(3.0)
    assert row["mde_percent"] == 0.0 and row["nrmse_percent"] == 0.0
    columns = slicer_results.absorbed_dose_columns([24.0, 96.0], True)
    assert set(c[0] for c in columns) == set(row) - {"label"}
    titles = {c[0]: c[1] for c in columns}
    assert titles["mean_dose_rate_0"] == "Mean dose rate at 24 h" and titles["mean_dose_rate_1"] == "Mean dose rate at 96 h"


def test_dvh_table_is_wide_with_one_column_per_segment(real_slicer):
    grid = _grid((2, 10, 10))
    labels = grid.with_array(np.zeros(grid.shape, np.uint8))
    labels.array[0] = 1
    labels.array[1, :5] = 4
    dose = grid.with_array(np.where(labels.array == 1, 2.0, 1.0).astype(np.float32))
    columns, rows, series = slicer_results.dvh_table(dose, labels, {1: "kidney", 4: "liver"}, "Gy", n_points=11)
    assert [c[0] for c in columns] == ["dose", "volume_percent_1", "volume_percent_4"]
    assert columns[0][3] == "Gy" and columns[1][1] == "kidney"
    assert series == [("volume_percent_1", "kidney", 1), ("volume_percent_4", "liver", 4)]
    assert len(rows) == 11 and rows[0] == {"dose": 0.0, "volume_percent_1": 100.0, "volume_percent_4": 100.0}
    assert rows[-1]["dose"] == 2.0 and rows[-1]["volume_percent_1"] == 100.0 and rows[-1]["volume_percent_4"] == 0.0
    table = real_slicer.scene.AddNewNodeByClass("vtkMRMLTableNode")  # a real table node
    slicer_nodes.fill_typed_table(table, rows, columns)
    assert table.GetTable().GetNumberOfColumns() == 3 and table.GetColumnUnitLabel("volume_percent_4") == "%"
    assert table.GetColumnTitle("volume_percent_4") == "liver"
    with pytest.raises(UserError, match="unit"):
        slicer_results.dvh_table(dose, labels, {}, "rad")


def test_display_window_ignores_a_few_hot_voxels():
    a = np.zeros((20, 10, 10), np.float32)
    a[:10] = 1.0  # 1000 voxels at 1, one at 1000: the 99.9th percentile of the positive voxels is 1
    a[19, 9, 9] = 1000.0
    lo, hi = slicer_results.display_window(a)
    assert lo == 0.0 and 1.0 <= hi < 10.0
    assert slicer_results.display_window(np.zeros(3)) == (0.0, 1.0)
    assert slicer_results.DOSE_COLOUR_NODE_ID == "vtkMRMLPETProceduralColorNodePET-Heat"


def test_segments_become_a_label_map_later_segments_winning():
    liver = np.zeros((2, 3, 3), bool)
    liver[:, :2] = True
    lesion = np.zeros((2, 3, 3), bool)
    lesion[0, 1, 1] = True
    array, names = slicer_nodes.label_map_from_segments([("Segment_1", "liver", liver), ("Segment_2", "", lesion)])
    assert array.dtype == np.uint16 and names == {1: "liver", 2: "Segment_2"}
    assert array[0, 1, 1] == 2 and array[1, 1, 1] == 1 and array[0, 2, 2] == 0
    with pytest.raises(UserError, match="no segments"):
        slicer_nodes.label_map_from_segments([])


def test_a_label_map_on_another_grid_is_resampled_by_nearest_neighbour():
    grid = Volume(np.zeros((4, 4, 4), np.float32), (2.0, 2.0, 2.0))
    fine = Volume(np.zeros((8, 8, 8), np.uint8), (1.0, 1.0, 1.0), (-0.5, -0.5, -0.5))
    fine.array[:4] = 7
    on_grid = slicer_results.labels_on_grid(fine, grid)
    assert on_grid.same_geometry(grid) and on_grid.array.dtype == np.uint16
    assert set(np.unique(on_grid.array)) == {0, 7} and (on_grid.array[:2] == 7).all() and (on_grid.array[2:] == 0).all()
    same = slicer_results.labels_on_grid(grid.with_array(np.ones((4, 4, 4), np.uint8)), grid)
    assert (same.array == 1).all()
    dose = slicer_results.on_grid(fine.with_array(fine.array.astype(np.float32)), grid, "dose")
    assert dose.same_geometry(grid) and dose.array[0, 0, 0] == pytest.approx(7.0)
