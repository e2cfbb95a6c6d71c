"""A table widget bound to a list of parameter packs (the parameterNodeWrapper has no GUI connector for such a list).

Each row is one pack; each column shows one field: a scalar-volume combo box for a node field, a spin box for a
number field (its range the field's, e.g. ``WithinRange(*option.bounds)``). The rows are synchronised by hand: a new
parameter node rebuilds the table, and every edit writes the whole list back into the parameter node.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import slicer


@dataclass(frozen=True)
class PackColumn:
    """One column: the pack's ``field``, its header ``title`` and ``toolTip``; ``bounds`` (minimum, maximum) and
    ``suffix`` (unit) for a number field, None for a node field (a scalar volume; None selectable)."""

    field: str
    title: str
    toolTip: str
    bounds: Optional[Tuple[float, float]] = None
    suffix: str = ""


class PackTable:
    """The rows of ``tableWidget`` (a QTableWidget) as the list parameter ``listName`` of a parameter node, each row one
    ``packClass`` with the fields of ``columns``."""

    def __init__(self, tableWidget, packClass, columns):
        import qt

        self.table = tableWidget
        self.packClass = packClass
        self.columns = list(columns)
        self.parameterNode = None
        self.listName = None
        self._updating = False
        tableWidget.setColumnCount(len(self.columns))
        tableWidget.setHorizontalHeaderLabels([column.title for column in self.columns])
        tableWidget.horizontalHeader().setSectionResizeMode(qt.QHeaderView.Stretch)

    def setParameterNode(self, parameterNode, listName):
        """Show the list ``listName`` of ``parameterNode`` (None: an empty table)."""
        self.parameterNode, self.listName = parameterNode, listName
        self._updating = True
        try:
            self.table.setRowCount(0)
            for pack in getattr(parameterNode, listName) if parameterNode else []:
                self._addRow(pack)
        finally:
            self._updating = False

    def addRow(self, pack):
        """Append a row showing ``pack`` and write the list back."""
        self._updating = True
        try:
            self._addRow(pack)
        finally:
            self._updating = False
        self._write()

    def removeRow(self):
        """Remove the current row (else the last one) and write the list back."""
        row = self.table.currentRow() if self.table.currentRow() >= 0 else self.table.rowCount - 1
        if row >= 0:
            self.table.removeRow(row)
            self._write()

    def _addRow(self, pack):
        row = self.table.rowCount
        self.table.insertRow(row)
        for index, column in enumerate(self.columns):
            value = getattr(pack, column.field)
            widget = self._nodeComboBox(column, value) if column.bounds is None else self._spinBox(column, value)
            self.table.setCellWidget(row, index, widget)

    def _nodeComboBox(self, column, node):
        combo = slicer.qMRMLNodeComboBox()
        combo.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        combo.showChildNodeTypes = False  # no label maps
        combo.noneEnabled = True
        combo.addEnabled = False
        combo.removeEnabled = False
        combo.renameEnabled = False
        combo.toolTip = column.toolTip
        combo.setMRMLScene(slicer.mrmlScene)
        combo.setCurrentNode(node)
        combo.connect("currentNodeChanged(vtkMRMLNode*)", self._write)
        return combo

    def _spinBox(self, column, value):
        import qt

        box = qt.QDoubleSpinBox()
        box.decimals = 1
        box.setRange(*column.bounds)
        box.suffix = column.suffix
        box.value = value
        box.toolTip = column.toolTip
        box.connect("valueChanged(double)", self._write)
        return box

    def _write(self, *args):
        if self._updating or not self.parameterNode:
            return
        packs = []
        for row in range(self.table.rowCount):
            values = {}
            for index, column in enumerate(self.columns):
                widget = self.table.cellWidget(row, index)
                values[column.field] = widget.currentNode() if column.bounds is None else float(widget.value)
            packs.append(self.packClass(**values))
        setattr(self.parameterNode, self.listName, packs)
