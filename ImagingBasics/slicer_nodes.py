"""The one adapter between Slicer's MRML nodes and the core: volume nodes <-> :class:`~.volume.Volume`, result tables.

The Slicer module passes its nodes in; nothing here imports ``slicer``: only the node methods named below are called
(MRML's C++ API as wrapped in Python), on ``vtk`` objects. The tests drive these functions with real MRML nodes of a
real scene (slicer-core; ``Testing/slicer_real.py``).

Node methods used:

* volume nodes: ``GetName``, ``GetImageData``, ``GetIJKToRASMatrix(vtkMatrix4x4)``, ``SetIJKToRASMatrix``,
  ``SetAndObserveImageData``, ``GetParentTransformNode``;
* transform nodes: ``IsTransformToWorldLinear``, ``GetMatrixTransformToWorld(vtkMatrix4x4)``;
* any node: ``GetAttribute("DICOM.instanceUIDs")`` (set by Slicer's DICOM loader), with the DICOM database's
  ``fileForInstance(uid)`` and ``isOpen`` (``slicer.dicomDatabase``, passed in);
* table nodes: ``RemoveAllColumns``, ``AddColumn(vtkAbstractArray)``, ``SetColumnUnitLabel``,
  ``SetColumnDescription``, ``SetColumnTitle``, ``SetUseColumnTitleAsColumnHeader``.

Geometry: Slicer places voxel (i, j, k) at ``IJKToRAS @ (i, j, k, 1)`` in RAS; a volume under a linear transform is
placed at ``TransformToWorld @ IJKToRAS`` (what Slicer shows), so that is the geometry handed to the core; a
non-linear (warping) transform is refused, since resampling through it is not this module's job. Arrays are
copied both ways: an input node is never modified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from .errors import UserError
from .volume import Volume, ijk_to_ras_matrix, volume_from_ijk_to_ras


def matrix_to_numpy(matrix) -> np.ndarray:
    """A vtkMatrix4x4 as a 4x4 numpy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def numpy_to_matrix(array: np.ndarray):
    """A 4x4 numpy array as a new vtkMatrix4x4."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


def ijk_to_world(node, what: str = "volume") -> np.ndarray:
    """The node's IJK-to-RAS matrix, composed with its parent transform to world when it has a linear one."""
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    ijk_to_ras = matrix_to_numpy(m)
    transform = node.GetParentTransformNode()
    if transform is None:
        return ijk_to_ras
    if not transform.IsTransformToWorldLinear():
        raise UserError(f"the {what} '{node.GetName()}' is under a non-linear transform; harden it "
                        "(Data module, right-click > Harden transform) or remove it first")
    to_world = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(to_world)
    return matrix_to_numpy(to_world) @ ijk_to_ras


def array_from_image_data(image) -> np.ndarray:
    """A copy of a single-component vtkImageData's voxels as a ``[k, j, i]`` numpy array."""
    from vtk.util import numpy_support

    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None:
        raise ValueError("no voxel data")
    if scalars.GetNumberOfComponents() != 1:
        raise ValueError(f"{scalars.GetNumberOfComponents()} components per voxel")
    nx, ny, nz = image.GetDimensions()
    return numpy_support.vtk_to_numpy(scalars).reshape(nz, ny, nx).copy()


def volume_from_node(node, what: str = "volume") -> Volume:
    """The core Volume (LPS) of a scalar volume node, its geometry as Slicer shows it (see the module docstring)."""
    if node is None:
        raise UserError(f"no {what} selected")
    try:
        array = array_from_image_data(node.GetImageData())
    except ValueError as exc:
        raise UserError(f"the {what} '{node.GetName()}' cannot be used: {exc}") from None
    if array.size == 0:
        raise UserError(f"the {what} '{node.GetName()}' is empty")
    return volume_from_ijk_to_ras(array, ijk_to_world(node, what))


def image_data_from_array(array: np.ndarray):
    """A new vtkImageData holding a deep copy of a ``[k, j, i]`` array (origin 0, spacing 1: the node places it)."""
    import vtk
    from vtk.util import numpy_support

    a = np.ascontiguousarray(array)
    if a.dtype == np.int64 or a.dtype == np.uint64 or a.dtype == bool:
        a = a.astype(np.int32 if a.dtype != bool else np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(a.shape[2], a.shape[1], a.shape[0])
    scalars = numpy_support.numpy_to_vtk(a.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def update_node_from_volume(node, volume: Volume) -> None:
    """Put a core Volume into a (new, output) volume node: voxels (copied) and geometry."""
    node.SetIJKToRASMatrix(numpy_to_matrix(ijk_to_ras_matrix(volume)))
    node.SetAndObserveImageData(image_data_from_array(volume.array))


#: Columns of the results table: (key in the row dicts, title, "string" or "double", unit, description).
TABLE_COLUMNS = (
    ("name", "Region", "string", "", "lung region: a lobe, or a lung third when no lobe labels were given; the lungs"),
    ("volume_ml", "Volume", "double", "mL", "region volume"),
    ("mean_perfusion", "Mean synthetic perfusion", "double", "", "mean of the synthetic perfusion map (0..1)"),
    ("perfusion_share_percent", "Perfusion share", "double", "%", "share of the total synthetic perfusion of the lungs"),
)
#: Extra columns when a SPECT was given.
SPECT_COLUMNS = (
    ("mean_reference", "Mean SPECT perfusion", "double", "", "mean of the normalised SPECT"),
    ("reference_share_percent", "SPECT share", "double", "%", "share of the total SPECT counts of the lungs"),
    ("spearman", "Spearman R", "double", "", "voxel Spearman rank correlation, synthetic vs SPECT"),
    ("ssim", "SSIM", "double", "", "structural similarity, synthetic vs SPECT"),
    ("dsc_high", "DSC high", "double", "", "Dice of the high-functional volumes (above the threshold)"),
    ("dsc_low", "DSC low", "double", "", "Dice of the low-functional volumes"),
)


def dicom_patient_position(node, database) -> Optional[str]:
    """The DICOM PatientPosition (``HFS``, ``FFP``, ...) of the file a volume node was loaded from by Slicer's DICOM
    module: the node's first ``DICOM.instanceUIDs`` looked up in ``database`` (``slicer.dicomDatabase``). None when it
    cannot be known: a node loaded from an image file, no or a closed database, a file no longer there, no such
    attribute in the file."""
    from .dicom_series import header_patient_position

    uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids or database is None or not getattr(database, "isOpen", False):
        return None
    path = database.fileForInstance(uids[0])
    if not path or not Path(path).is_file():
        return None
    return header_patient_position(Path(path))


def table_columns(with_spect: bool) -> Sequence[tuple]:
    return TABLE_COLUMNS + (SPECT_COLUMNS if with_spect else ())


def fill_table_node(table_node, rows: Sequence[Dict[str, Any]], with_spect: bool) -> None:
    """Replace the table node's columns with typed columns of ``rows`` (missing values: empty string / NaN)."""
    fill_typed_table(table_node, rows, table_columns(with_spect))


def fill_typed_table(table_node, rows: Sequence[Dict[str, Any]], columns: Sequence[tuple]) -> None:
    """Replace the table node's columns with ``columns`` ((key, title, "string" or "double", unit, description), as
    :data:`TABLE_COLUMNS`) filled from ``rows`` (missing values: empty string / NaN). Used by both modules."""
    import vtk

    table_node.RemoveAllColumns()
    for key, title, kind, unit, description in columns:
        column = vtk.vtkStringArray() if kind == "string" else vtk.vtkDoubleArray()
        column.SetName(key)
        for row in rows:
            value = row.get(key)
            if kind == "string":
                column.InsertNextValue("" if value is None else str(value))
            else:
                column.InsertNextValue(float("nan") if value is None else float(value))
        table_node.AddColumn(column)
        table_node.SetColumnTitle(key, title)
        if unit:
            table_node.SetColumnUnitLabel(key, unit)
        table_node.SetColumnDescription(key, description)
    table_node.SetUseColumnTitleAsColumnHeader(True)


def label_map_from_segments(segments: Sequence[tuple]) -> tuple:
    """A label map from a segmentation's binary segments ``(segment_id, name, [k, j, i] mask)``: the n-th segment gets
    the value n (1, 2, ...) in segment order; where segments overlap the later one wins (put lesions after organs).

    Returns ``(uint16 array, {value: name})``; segments that are empty on the grid keep their value and are named
    too (a table then simply has no row for them). Raises UserError when there is no segment.
    """
    if not segments:
        raise UserError("the segmentation has no segments")
    out = np.zeros(np.asarray(segments[0][2]).shape, np.uint16)
    names = {}
    for value, (segment_id, name, mask) in enumerate(segments, start=1):
        out[np.asarray(mask) > 0] = value
        names[value] = str(name or segment_id)
    return out, names
