"""The node adapter of the Slicer glue (ImagingBasics.slicer_nodes) on real MRML nodes of a real scene (slicer-core;
Testing/slicer_real.py): volume, transform and table nodes, checked against Slicer's own geometry (its IJK-to-RAS
matrices, its transform hardening)."""

import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from slicer_real import DicomDatabaseStandIn

from CTPerfusionMappingLib.slicer_glue import segments
from ImagingBasics import slicer_nodes
from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume, to_sitk


def _rotated_volume() -> Volume:
    a = np.radians(20.0)
    direction = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    direction = direction @ np.diag([1.0, -1.0, 1.0])  # a flipped axis too
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    return Volume(array, (0.8, 1.1, 2.5), (-120.0, 40.0, 300.0), direction)


def _volume_node(real_slicer, volume=None, name="CT"):
    node = real_slicer.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    if volume is not None:
        slicer_nodes.update_node_from_volume(node, volume)
    return node


def test_volume_round_trip_through_a_node_keeps_voxels_and_geometry(real_slicer):
    vol = _rotated_volume()
    node = _volume_node(real_slicer, vol)
    back = slicer_nodes.volume_from_node(node, "CT")
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == np.int16
    np.testing.assert_allclose(back.spacing, vol.spacing)
    np.testing.assert_allclose(back.origin, vol.origin)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-12)
    np.testing.assert_array_equal(real_slicer.slicer.util.arrayFromVolume(node), vol.array)  # Slicer's own view
    # Slicer's RAS position of voxel (i, j, k) is ITK's LPS point with x and y negated
    image = to_sitk(vol)
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    m = slicer_nodes.matrix_to_numpy(matrix)
    for ijk in [(0, 0, 0), (5, 4, 3), (2, 1, 0)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        ras = m @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)
    np.testing.assert_allclose(node.GetSpacing(), vol.spacing)


def test_reading_a_node_copies_and_never_modifies_it(real_slicer):
    node = _volume_node(real_slicer, _rotated_volume())
    vol = slicer_nodes.volume_from_node(node)
    vol.array[:] = 0
    again = slicer_nodes.volume_from_node(node)
    assert again.array.max() == 4 * 5 * 6 - 1
    source = np.ones((2, 3, 4), np.float32)
    slicer_nodes.update_node_from_volume(node, Volume(source))
    source[:] = 7  # the node holds its own copy
    assert slicer_nodes.volume_from_node(node).array.max() == 1.0


def test_linear_parent_transforms_place_the_volume_as_slicer_hardens_it(real_slicer):
    from slicer_real import rotation_ras

    node = _volume_node(real_slicer, _rotated_volume(), "SPECT")
    inner = real_slicer.add_linear_transform(rotation_ras(15.0, (10.0, -4.0, 3.0)), "inner")
    outer = real_slicer.add_linear_transform(rotation_ras(-5.0, (0.0, 7.0, 0.0), degrees_about_r=8.0), "outer")
    inner.SetAndObserveTransformNodeID(outer.GetID())  # transforms nested: the volume is under both
    node.SetAndObserveTransformNodeID(inner.GetID())
    moved = slicer_nodes.volume_from_node(node, "SPECT")
    real_slicer.logics["Transforms"].hardenTransform(node)  # Slicer's own answer: the node's geometry in world
    hardened = slicer_nodes.volume_from_node(node, "SPECT")
    assert node.GetParentTransformNode() is None and moved.same_geometry(hardened, tol_mm=1e-6)
    np.testing.assert_array_equal(moved.array, hardened.array)


def test_a_warping_transform_is_refused(real_slicer):
    node = _volume_node(real_slicer, _rotated_volume(), "SPECT")
    grid = real_slicer.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "deformation")
    node.SetAndObserveTransformNodeID(grid.GetID())
    assert not grid.IsTransformToWorldLinear()
    with pytest.raises(UserError, match="SPECT 'SPECT' is under a non-linear transform; harden it"):
        slicer_nodes.volume_from_node(node, "SPECT")


def test_the_patient_position_of_a_node_loaded_from_dicom(real_slicer, tmp_path):
    from dicom_images import write_ct_series

    truth = write_ct_series(tmp_path / "prone", np.zeros((2, 4, 4)), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0),
                            patient_position="FFP")
    database = DicomDatabaseStandIn(tmp_path / "prone")
    assert sorted(database.files) == sorted(truth["sop_uids"])
    node = _volume_node(real_slicer, _rotated_volume())
    assert slicer_nodes.dicom_patient_position(node, database) is None  # loaded from a file
    node.SetAttribute("DICOM.instanceUIDs", " ".join(truth["sop_uids"]))
    assert slicer_nodes.dicom_patient_position(node, database) == "FFP"
    assert slicer_nodes.dicom_patient_position(node, DicomDatabaseStandIn(tmp_path / "prone", is_open=False)) is None
    assert slicer_nodes.dicom_patient_position(node, None) is None
    assert slicer_nodes.dicom_patient_position(node, DicomDatabaseStandIn(None)) is None  # files no longer there


def test_unusable_nodes_give_clear_errors(real_slicer):
    with pytest.raises(UserError, match="no CT selected"):
        slicer_nodes.volume_from_node(None, "CT")
    empty = _volume_node(real_slicer, None, "empty")
    with pytest.raises(UserError, match="'empty' cannot be used: no voxel data"):
        slicer_nodes.volume_from_node(empty, "CT")
    rgb = real_slicer.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    image = vtk.vtkImageData()
    image.SetDimensions(2, 2, 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    rgb.SetAndObserveImageData(image)
    with pytest.raises(UserError, match="'photo' cannot be used: 3 components per voxel"):
        slicer_nodes.volume_from_node(rgb, "CT")


def test_types_slicer_cannot_hold_are_converted(real_slicer):
    node = _volume_node(real_slicer)
    slicer_nodes.update_node_from_volume(node, Volume(np.array([[[1, 2]]], np.int64)))
    assert slicer_nodes.volume_from_node(node).array.dtype == np.int32
    assert real_slicer.slicer.util.arrayFromVolume(node).dtype == np.int32
    slicer_nodes.update_node_from_volume(node, Volume(np.array([[[True, False]]])))
    assert slicer_nodes.volume_from_node(node).array.dtype == np.uint8


def test_results_table_has_typed_columns_units_and_descriptions(real_slicer):
    rows = [{"name": "RUL", "volume_ml": 812.5, "mean_perfusion": 0.61, "perfusion_share_percent": 20.0,
             "mean_reference": 0.58, "reference_share_percent": 19.0, "spearman": 0.7, "ssim": 0.8,
             "dsc_high": 0.75, "dsc_low": None},
            {"name": "both lungs", "volume_ml": 4100.0, "mean_perfusion": 0.66, "perfusion_share_percent": 100.0}]
    node = real_slicer.scene.AddNewNodeByClass("vtkMRMLTableNode", "regions")
    slicer_nodes.fill_table_node(node, rows, with_spect=True)
    table = node.GetTable()
    assert table.GetNumberOfRows() == 2 and table.GetNumberOfColumns() == 10
    assert isinstance(table.GetColumnByName("name"), vtk.vtkStringArray)
    assert isinstance(table.GetColumnByName("volume_ml"), vtk.vtkDoubleArray)
    assert table.GetColumnByName("name").GetValue(1) == "both lungs"
    assert table.GetColumnByName("volume_ml").GetValue(0) == 812.5
    assert math.isnan(table.GetColumnByName("dsc_low").GetValue(0))
    assert math.isnan(table.GetColumnByName("spearman").GetValue(1))
    assert node.GetColumnUnitLabel("volume_ml") == "mL" and node.GetColumnUnitLabel("perfusion_share_percent") == "%"
    assert node.GetColumnTitle("spearman") == "Spearman R" and "Spearman" in node.GetColumnDescription("spearman")
    assert node.GetColumnType("volume_ml") == vtk.VTK_DOUBLE and node.GetColumnType("name") == vtk.VTK_STRING
    assert node.GetUseColumnTitleAsColumnHeader()
    slicer_nodes.fill_table_node(node, rows, with_spect=False)  # refilled, not appended
    assert node.GetTable().GetNumberOfColumns() == 4 and node.GetColumnProperty("spearman", "unitLabel") == ""
    assert not real_slicer.vtk_errors()


def test_table_from_a_real_run_output(real_slicer, tmp_path):
    """lobes.csv as ``ctpm run`` writes it (with a SPECT) fills the table: one row per region plus the lungs."""
    from CTPerfusionMappingLib.cli import main as ctpm
    from CTPerfusionMappingLib.synthetic.cohort import generate_case, write_case

    case = write_case(generate_case(4, "small"), tmp_path / "case")
    assert ctpm(["run", "--ct", str(case / "ct.nrrd"), "--spect", str(case / "spect.nrrd"), "--baseline",
                 "--lobes", str(case / "lobes.nrrd"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "lobes.csv", encoding="utf-8")))
    node = real_slicer.scene.AddNewNodeByClass("vtkMRMLTableNode")
    slicer_nodes.fill_table_node(node, rows, with_spect=True)
    table = node.GetTable()
    names = [table.GetColumnByName("name").GetValue(i) for i in range(table.GetNumberOfRows())]
    assert names == ["RUL", "RML", "RLL", "LUL", "LLL", "right lung", "left lung", "both lungs"]
    spearman = [table.GetColumnByName("spearman").GetValue(i) for i in range(table.GetNumberOfRows())]
    assert all(-1.0 <= v <= 1.0 for v in spearman)
    shares = [table.GetColumnByName("perfusion_share_percent").GetValue(i) for i in range(5)]
    assert sum(shares) == pytest.approx(100.0, abs=0.01)
    assert segments.region_segments([4, 5, 6, 7, 8])[4][0] == "RUL"
    assert sitk.ReadImage(str(tmp_path / "out" / "perfusion.nrrd")).GetSize() == \
        sitk.ReadImage(str(case / "ct.nrrd")).GetSize()


def test_segmentations_become_lobe_or_lung_labels():
    a = np.zeros((2, 2, 4), bool)
    rul, lll, airway = a.copy(), a.copy(), a.copy()
    rul[:, :, 0] = True
    lll[:, :, 3] = True
    airway[:, :, 1] = True
    kind, labels = segments.labels_from_segments([("lung_upper_lobe_right", "right upper lobe", rul),
                                                      ("Segment_2", "LLL", lll), ("trachea", "trachea", airway)])
    assert kind == "lobes" and labels[0, 0].tolist() == [4, 0, 0, 8]
    kind, labels = segments.labels_from_segments([("Segment_1", "Right lung", rul), ("Segment_2", "left-lung", lll)])
    assert kind == "lungs" and labels[0, 0].tolist() == [1, 0, 0, 2]
    with pytest.raises(UserError, match="no lung or lobe segments recognised.*trachea"):
        segments.labels_from_segments([("trachea", "trachea", airway)])
