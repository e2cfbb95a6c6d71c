"""A TEST DOUBLE of the few MRML node methods the Slicer glue calls (not Slicer; Slicer cannot run here).

Built on real ``vtk`` objects (vtkImageData, vtkMatrix4x4, vtkTable, typed arrays), with the semantics of the MRML
methods as documented in Slicer's sources (vtkMRMLVolumeNode, vtkMRMLTransformNode, vtkMRMLTableNode): matrices are
copied in and out, image data is held by reference (``SetAndObserveImageData``), table columns are vtk arrays.
"""

from __future__ import annotations

from typing import Dict, Optional

import vtk


class VolumeNodeDouble:
    """vtkMRMLScalarVolumeNode: name, image data (held, not copied), IJK-to-RAS matrix, parent transform."""

    def __init__(self, name: str = "volume"):
        self.name = name
        self.image: Optional[vtk.vtkImageData] = None
        self.ijk_to_ras = vtk.vtkMatrix4x4()
        self.parent: Optional[object] = None

    def GetName(self) -> str:
        return self.name

    def GetImageData(self):
        return self.image

    def SetAndObserveImageData(self, image) -> None:
        self.image = image

    def GetIJKToRASMatrix(self, matrix) -> None:
        matrix.DeepCopy(self.ijk_to_ras)

    def SetIJKToRASMatrix(self, matrix) -> None:
        self.ijk_to_ras.DeepCopy(matrix)

    def GetParentTransformNode(self):
        return self.parent


class LinearTransformDouble:
    """vtkMRMLLinearTransformNode: a 4x4 matrix to world (RAS)."""

    def __init__(self, matrix_rows):
        self.matrix = vtk.vtkMatrix4x4()
        for r in range(4):
            for c in range(4):
                self.matrix.SetElement(r, c, float(matrix_rows[r][c]))

    def IsTransformToWorldLinear(self) -> bool:
        return True

    def GetMatrixTransformToWorld(self, matrix) -> None:
        matrix.DeepCopy(self.matrix)


class WarpTransformDouble:
    """A grid or B-spline transform node: not linear."""

    def IsTransformToWorldLinear(self) -> bool:
        return False


class TableNodeDouble:
    """vtkMRMLTableNode: a vtkTable plus per-column title, unit label and description (its schema)."""

    def __init__(self, name: str = "table"):
        self.name = name
        self.table = vtk.vtkTable()
        self.properties: Dict[str, Dict[str, str]] = {}
        self.title_as_header = False

    def GetTable(self):
        return self.table

    def RemoveAllColumns(self) -> None:
        while self.table.GetNumberOfColumns():
            self.table.RemoveColumn(0)
        self.properties = {}

    def AddColumn(self, column):
        self.table.AddColumn(column)
        return column

    def _set(self, column: str, key: str, value: str) -> None:
        if self.table.GetColumnByName(column) is None:
            raise KeyError(f"no column {column!r}")  # MRML logs an error; a test should notice
        self.properties.setdefault(column, {})[key] = value

    def SetColumnTitle(self, column: str, title: str) -> None:
        self._set(column, "title", title)

    def SetColumnUnitLabel(self, column: str, unit: str) -> None:
        self._set(column, "unitLabel", unit)

    def SetColumnDescription(self, column: str, description: str) -> None:
        self._set(column, "description", description)

    def GetColumnUnitLabel(self, column: str) -> str:
        return self.properties.get(column, {}).get("unitLabel", "")

    def GetColumnDescription(self, column: str) -> str:
        return self.properties.get(column, {}).get("description", "")

    def GetColumnTitle(self, column: str) -> str:
        return self.properties.get(column, {}).get("title", column)

    def SetUseColumnTitleAsColumnHeader(self, on: bool) -> None:
        self.title_as_header = bool(on)
