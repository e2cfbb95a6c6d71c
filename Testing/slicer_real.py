"""A real MRML scene for the Slicer module tests (the ``real_slicer`` fixture of Testing/conftest.py).

Real (slicer-core, Kitware's wheel of Slicer's libraries): the ``slicer`` package and ``slicer.util``; a new
``vtkMRMLScene`` per test as ``slicer.mrmlScene``; the application logic (vtkSlicerApplicationLogic, with its selection
node) and the Red, Yellow and Green slice logics (their slice and slice-composite nodes, which
``slicer.util.setSliceViewerLayers`` sets); the module logics of Colors, Volumes, Segmentations, Tables, Plots, Data,
Transforms and Subject hierarchy, each registered with the application logic under its module name (as Slicer's
module manager does, so that one logic finds another: the Volumes logic its Colors logic) and reachable as
``slicer.modules.<name>.logic()``.

Stand-ins (Testing/slicer_double.py) where slicer-core has nothing: ``slicer.app``, ``slicer.cli``,
``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``, ``qt``, the colour files, CLI and extension
modules. The module files and batch scripts are imported as Slicer imports them, with this ``slicer`` in place.

VTK's error and warning output is collected per test (:meth:`RealSlicer.vtk_errors`), so that a test can check that
MRML reported no error.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import slicer
import vtk
from slicer_double import (
    ApplicationStandIn,
    CLIModuleStandIn,
    IOManagerStandIn,
    ModuleManagerStandIn,
    ScriptedModuleStandIn,
    WidgetRepresentationStandIn,
    make_run_sync,
    parameter_node_wrapper,
    qt_module,
    scripted_module,
    write_color_files,
)

ROOT = Path(__file__).resolve().parents[1]
#: (module name, slicer.modules attribute, logic class) in the order Slicer sets them up (Colors first: the others
#: look it up)
LOGICS = (("Colors", "colors", "vtkSlicerColorLogic"), ("Data", "data", "vtkSlicerDataModuleLogic"),
          ("SubjectHierarchy", "subjecthierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
          ("Volumes", "volumes", "vtkSlicerVolumesLogic"), ("Transforms", "transforms", "vtkSlicerTransformLogic"),
          ("Segmentations", "segmentations", "vtkSlicerSegmentationsModuleLogic"),
          ("Tables", "tables", "vtkSlicerTablesLogic"), ("Plots", "plots", "vtkSlicerPlotsLogic"))
#: the slice views of Slicer's default layouts
SLICE_VIEWS = ("Red", "Yellow", "Green")
#: packages imported afresh for each test, so that they bind this test's stand-ins
FRESH_PACKAGES = ("SlicerModuleBase",)


class LoadableModuleStandIn:
    """``slicer.modules.<name>`` of a loadable module: its logic (and ``path`` for a scripted one)."""

    def __init__(self, logic=None, path=None):
        self._logic, self.path = logic, path

    def logic(self):
        return self._logic


class DicomDatabaseStandIn:
    """Slicer's DICOM database (``slicer.dicomDatabase``) as the modules use it, over real DICOM files: ``isOpen`` and
    ``fileForInstance(uid)`` (the path, "" when unknown). slicer-core has no ctkDICOMDatabase. ``folder``: a folder
    of DICOM files, indexed by their SOPInstanceUID."""

    def __init__(self, folder, is_open: bool = True):
        import pydicom

        self.isOpen = is_open
        self.files = {str(pydicom.dcmread(str(path), stop_before_pixels=True).SOPInstanceUID): str(path)
                      for path in sorted(Path(folder).iterdir())} if folder is not None else {}

    def fileForInstance(self, uid):  # noqa: N802 - the CTK method's name
        return self.files.get(uid, "")


class RealSlicer:
    """One test's Slicer: ``slicer`` (the real package, with the stand-ins set), ``scene``, ``logics`` by module name,
    ``app`` (the stand-in application), ``temporary`` (``slicer.app.temporaryPath``)."""

    def __init__(self, monkeypatch, folder: Path):
        self.monkeypatch = monkeypatch
        self.folder = Path(folder)
        self.temporary = self.folder / "temporary"
        self.temporary.mkdir(parents=True, exist_ok=True)
        self.slicer = slicer
        self._output = vtk.vtkStringOutputWindow()
        self._previous_output = vtk.vtkOutputWindow.GetInstance()
        vtk.vtkOutputWindow.SetInstance(self._output)

        home = self.folder / "home"
        write_color_files(home / "share" / "ColorFiles")
        self.application_logic = slicer.vtkSlicerApplicationLogic()
        self.application_logic.SetHomeDirectory(str(home))
        self.application_logic.SetShareDirectory("share")
        self.scene = slicer.vtkMRMLScene()
        self.scene.RegisterNodeClass(slicer.vtkMRMLCommandLineModuleNode())  # as Slicer's CLI module factory does
        self.application_logic.SetMRMLScene(self.scene)
        self.logics: Dict[str, object] = {}
        modules = types.SimpleNamespace()
        for module_name, attribute, class_name in LOGICS:
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(self.application_logic)
            logic.SetMRMLScene(self.scene)
            self.application_logic.SetModuleLogic(module_name, logic)
            if module_name == "Colors":
                self.application_logic.SetColorLogic(logic)
            self.logics[module_name] = logic
            setattr(modules, attribute, LoadableModuleStandIn(logic))
        self.slice_logics = vtk.vtkCollection()
        for view in SLICE_VIEWS:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(self.application_logic)
            logic.SetMRMLScene(self.scene)
            logic.AddSliceNode(view)
            self.slice_logics.AddItem(logic)
        self.application_logic.SetSliceLogics(self.slice_logics)

        self.modules = modules
        self.module_manager = ModuleManagerStandIn()
        self.io = IOManagerStandIn(self.scene, self.logics, self.application_logic)
        self.app = ApplicationStandIn(self.temporary, self.application_logic, self.io, self.module_manager)
        self.cli_calls: List[tuple] = []
        for name, value in (("mrmlScene", self.scene), ("app", self.app), ("modules", modules),
                            ("cli", types.SimpleNamespace(runSync=make_run_sync(self.cli_calls))),
                            ("selfTests", {}), ("qSlicerScriptedLoadableModule", ScriptedModuleStandIn),
                            ("qSlicerScriptedLoadableModuleWidget", WidgetRepresentationStandIn)):
            monkeypatch.setattr(slicer, name, value, raising=False)
        for key, module in (("slicer.ScriptedLoadableModule", scripted_module),
                            ("slicer.parameterNodeWrapper", parameter_node_wrapper), ("qt", qt_module)):
            monkeypatch.setitem(sys.modules, key, module)
        monkeypatch.setattr(slicer, "ScriptedLoadableModule", scripted_module, raising=False)
        monkeypatch.setattr(slicer, "parameterNodeWrapper", parameter_node_wrapper, raising=False)
        for key in [k for k in sys.modules if k.split(".")[0] in FRESH_PACKAGES]:
            monkeypatch.delitem(sys.modules, key)

    def close(self) -> None:
        vtk.vtkOutputWindow.SetInstance(self._previous_output)
        self.scene.Clear(1)

    # --- module files, batch scripts, extensions --------------------------------------------------------------------
    def load_module(self, path, name: Optional[str] = None):
        """Import a module file (``CTPerfusionMapping/CTPerfusionMapping.py``) or batch script as Slicer does; a
        module file is registered as a loaded scripted module (its module class run, its self-test in
        ``slicer.selfTests``, found by ``slicer.util.getModuleLogic``)."""
        path = Path(path)
        name = name or f"{path.stem}_real_slicer"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        self.monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        if isinstance(getattr(module, path.stem, None), type) and hasattr(module, path.stem + "Logic"):
            loaded = ScriptedModuleStandIn(module, path.stem, path)
            self.module_manager.modules[path.stem] = loaded
            setattr(self.modules, path.stem.lower(), LoadableModuleStandIn(None, str(path)))
        return module

    def module(self, name: str):
        """A module file of this repository by module name (``"CTPerfusionMapping"``, ``"DoseCNN"``)."""
        return self.load_module(ROOT / name / f"{name}.py")

    def batch_script(self, name: str):
        return self.load_module(ROOT / name / "Resources" / "Scripts" / f"{name}Batch.py", f"{name}Batch_real_slicer")

    def install_cli_modules(self, *names, fail=frozenset(), cip_mask=None):
        """CLI modules ``slicer.modules.<name>`` (BRAINSFit, BRAINSResample, the CIP lung labels) done by the stand-in
        ``slicer.cli.runSync`` (``fail``: those that end with errors)."""
        for name in names:
            setattr(self.modules, name, CLIModuleStandIn(name))
        self.slicer.cli.runSync = make_run_sync(self.cli_calls, set(fail), cip_mask)

    def install_qt_ui(self):
        """``slicer.util.loadUI`` and ``childWidgetVariables`` without Qt: the .ui file's widget is a UiFileDouble, its
        child widgets a UiDouble (each name a WidgetDouble), which this returns."""
        from slicer_double import UiDouble, UiFileDouble

        ui = UiDouble()
        self.monkeypatch.setattr(slicer.util, "loadUI", UiFileDouble)
        self.monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: ui)
        return ui

    def install_extension(self, attribute: str, python_module) -> None:
        """An extension module (e.g. TotalSegmentator): ``slicer.modules.<attribute>`` and its importable Python module."""
        setattr(self.modules, attribute, LoadableModuleStandIn(None))
        self.monkeypatch.setitem(sys.modules, python_module.__name__, python_module)

    # --- nodes ----------------------------------------------------------------------------------------------------------
    def add_volume(self, volume, name: str, transform=None, label: bool = False):
        """A volume node holding an ImagingBasics Volume (``slicer.util.addVolumeFromArray``, as the self-tests), under
        the transform node ``transform`` when given."""
        from ImagingBasics.volume import ijk_to_ras_matrix

        node = slicer.util.addVolumeFromArray(volume.array, ijk_to_ras_matrix(volume), name,
                                              "vtkMRMLLabelMapVolumeNode" if label else None)
        if transform is not None:
            node.SetAndObserveTransformNodeID(transform.GetID())
        return node

    def add_linear_transform(self, matrix, name: str = "transform"):
        """A linear transform node (to parent: ``matrix``, a 4x4 array in RAS)."""
        node = self.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
        node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(np.asarray(matrix, float)))
        return node

    def nodes(self, class_name: str = "vtkMRMLNode") -> list:
        """The scene's nodes of a class (subclasses included), in scene order."""
        return [self.scene.GetNthNodeByClass(i, class_name) for i in range(self.scene.GetNumberOfNodesByClass(class_name))]

    def node_ids(self) -> List[str]:
        return [node.GetID() for node in self.nodes()]

    def node_counts(self) -> Dict[str, int]:
        """How many nodes of each class the scene holds."""
        counts: Dict[str, int] = {}
        for node in self.nodes():
            counts[node.GetClassName()] = counts.get(node.GetClassName(), 0) + 1
        return counts

    def orphan_display_nodes(self) -> list:
        """Display nodes that no displayable node of the scene refers to."""
        referenced = set()
        for node in self.nodes("vtkMRMLDisplayableNode"):
            referenced |= {node.GetNthDisplayNodeID(i) for i in range(node.GetNumberOfDisplayNodes())}
        return [node for node in self.nodes("vtkMRMLDisplayNode") if node.GetID() not in referenced
                and not node.IsA("vtkMRMLSliceDisplayNode")]

    def slice_layers(self) -> List[tuple]:
        """(background ID, foreground ID, foreground opacity) of each slice view."""
        return [(n.GetBackgroundVolumeID(), n.GetForegroundVolumeID(), n.GetForegroundOpacity())
                for n in self.nodes("vtkMRMLSliceCompositeNode")]

    def vtk_errors(self) -> List[str]:
        """The errors VTK and MRML reported during the test so far (their first lines)."""
        text = self._output.GetOutput() or ""
        return [block.strip().splitlines()[1] if len(block.strip().splitlines()) > 1 else block.strip()
                for block in text.split("ERROR: ")[1:]]


# --- geometry: sampling nodes in world (RAS) coordinates ----------------------------------------------------------------
def node_to_world(node) -> np.ndarray:
    """The 4x4 matrix from a transformable node's coordinates to world (RAS): its parent transforms (identity when
    none)."""
    matrix = vtk.vtkMatrix4x4()
    transform = node.GetParentTransformNode()
    if transform is not None:
        assert transform.IsTransformToWorldLinear()
        transform.GetMatrixTransformToWorld(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def volume_ijk_to_world(node) -> np.ndarray:
    """Voxel (i, j, k) of a volume node -> world RAS, parent transforms included."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return node_to_world(node) @ slicer.util.arrayFromVTKMatrix(matrix)


def voxel_ras(node) -> np.ndarray:
    """World RAS of every voxel of a volume node, ``[k, j, i, 3]``."""
    dims = node.GetImageData().GetDimensions()
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(dims)), indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return (ijk1 @ volume_ijk_to_world(node).T)[..., :3]


def segment_world_points(segmentation_node, segment_id) -> np.ndarray:
    """World RAS of the voxels inside a segment: its binary labelmap as the segmentation holds it (a
    vtkOrientedImageData with its own image-to-world matrix), under the segmentation node's parent transforms."""
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    if labelmap.GetPointData().GetScalars() is None:
        return np.zeros((0, 3))
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    to_world = node_to_world(segmentation_node) @ slicer.util.arrayFromVTKMatrix(matrix)
    extent = labelmap.GetExtent()
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    from vtk.util import numpy_support

    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    k, j, i = np.nonzero(values)
    ijk1 = np.stack([i + extent[0], j + extent[2], k + extent[4], np.ones_like(i)], axis=-1).astype(float)
    return (ijk1 @ to_world.T)[:, :3]


def mask_on_volume_grid(points_ras: np.ndarray, node) -> np.ndarray:
    """A ``[k, j, i]`` bool mask on a volume node's grid of the voxels that world points fall into (nearest voxel)."""
    dims = node.GetImageData().GetDimensions()
    mask = np.zeros(tuple(reversed(dims)), bool)
    if len(points_ras) == 0:
        return mask
    to_ijk = np.linalg.inv(volume_ijk_to_world(node))
    ijk = np.rint(np.c_[points_ras, np.ones(len(points_ras))] @ to_ijk.T)[:, :3].astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(dims)), axis=1)
    i, j, k = ijk[inside].T
    mask[k, j, i] = True
    return mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def segment_ids(segmentation_node) -> Dict[str, str]:
    """{segment name: segment ID} of a segmentation node."""
    segmentation = segmentation_node.GetSegmentation()
    return {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegmentID(i)
            for i in range(segmentation.GetNumberOfSegments())}


def rotation_ras(degrees_about_s: float, translation=(0.0, 0.0, 0.0), degrees_about_r: float = 0.0) -> np.ndarray:
    """A rigid 4x4 RAS matrix: a rotation about S, then about R, then a translation (mm)."""
    a, b = np.radians(degrees_about_s), np.radians(degrees_about_r)
    about_s = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    about_r = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    matrix = np.eye(4)
    matrix[:3, :3] = about_r @ about_s
    matrix[:3, 3] = translation
    return matrix


def reoriented(volume, matrix_ras: np.ndarray, flip_i: bool = False):
    """The same anatomy moved by ``matrix_ras`` in world, stored with its voxels in another order: with ``flip_i`` the
    first index axis runs the other way (an axis-flipped direction matrix), so the array and the direction change
    while every voxel's value stays at its (moved) place."""
    from ImagingBasics.volume import ijk_to_ras_matrix, volume_from_ijk_to_ras

    array, ijk_to_ras = volume.array, ijk_to_ras_matrix(volume)
    if flip_i:
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1.0, array.shape[2] - 1
        array, ijk_to_ras = np.ascontiguousarray(array[:, :, ::-1]), ijk_to_ras @ flip
    return volume_from_ijk_to_ras(array, np.asarray(matrix_ras, float) @ ijk_to_ras)
