"""A TEST DOUBLE of the few MRML node methods the Slicer glue calls (not Slicer; Slicer cannot run here).

Built on real ``vtk`` objects (vtkImageData, vtkMatrix4x4, vtkTable, typed arrays), with the semantics of the MRML
methods as documented in Slicer's sources (vtkMRMLVolumeNode, vtkMRMLTransformNode, vtkMRMLTableNode,
vtkMRMLPlotSeriesNode, vtkMRMLPlotChartNode): matrices are copied in and out, image data is held by reference
(``SetAndObserveImageData``), table columns are vtk arrays, nodes added to the scene get unique IDs.
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

    def SetName(self, name: str) -> None:
        self.name = name

    def GetID(self):
        return getattr(self, "node_id", None)  # given by SceneDouble.AddNewNodeByClass

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

    def GetID(self):
        return getattr(self, "node_id", None)

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


# --- a double of the `slicer` Python package subset that CTPerfusionMapping.py and DoseCNN.py use ------------------------------

class DisplayNodeDouble:
    def __init__(self):
        self.color_node_id = None
        self.auto_window_level = True
        self.window_min_max = None

    def SetAndObserveColorNodeID(self, node_id):
        self.color_node_id = node_id

    def AutoWindowLevelOff(self):
        self.auto_window_level = False

    def SetWindowLevelMinMax(self, lo, hi):
        self.window_min_max = (lo, hi)


class ScalarVolumeNodeDouble(VolumeNodeDouble):
    """VolumeNodeDouble plus the display calls of the output volume."""

    def __init__(self, name="volume"):
        super().__init__(name)
        self.display = None

    def CreateDefaultDisplayNodes(self):
        self.display = self.display or DisplayNodeDouble()

    def GetDisplayNode(self):
        return self.display

    def IsA(self, class_name):
        return class_name in ("vtkMRMLScalarVolumeNode", "vtkMRMLVolumeNode")


class SegmentDouble:
    def __init__(self, name, color):
        self.name, self.color = name, tuple(color)

    def GetName(self):
        return self.name

    def GetColor(self):
        return self.color


class SegmentationDouble:
    """vtkSegmentation: ordered segments by ID (AddEmptySegment makes a unique ID)."""

    def __init__(self):
        self.segments = {}

    def AddEmptySegment(self, segment_id="", name="", color=(0.5, 0.5, 0.5)):
        sid, n = segment_id or "Segment", 1
        while sid in self.segments:
            n += 1
            sid = f"{segment_id}_{n}"
        self.segments[sid] = SegmentDouble(name or sid, color)
        return sid

    def RemoveAllSegments(self):
        self.segments = {}

    def GetNumberOfSegments(self):
        return len(self.segments)

    def GetNthSegmentID(self, index):
        return list(self.segments)[index]

    def GetNthSegment(self, index):
        return list(self.segments.values())[index]

    def GetSegment(self, segment_id):
        return self.segments.get(segment_id)


class SegmentationNodeDouble:
    def __init__(self, name="segmentation"):
        self.name = name
        self.segmentation = SegmentationDouble()
        self.masks = {}  # segment ID -> [k, j, i] array on the reference volume's grid
        self.reference = None

    def GetName(self):
        return self.name

    def GetSegmentation(self):
        return self.segmentation

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume):
        self.reference = volume

    def CreateDefaultDisplayNodes(self):
        pass


class PlotSeriesNodeDouble:
    """vtkMRMLPlotSeriesNode (vtkMRMLPlotSeriesNode.h): a table node ID, X/Y column names, plot type, marker, colour;
    node attributes (vtkMRMLNode::SetAttribute)."""

    PlotTypeLine, PlotTypeBar, PlotTypeScatter, PlotTypeScatterBar = 0, 1, 2, 3
    MarkerStyleNone, MarkerStyleCross = 0, 1

    def __init__(self, name="plot series"):
        self.name = name
        self.table_node_id = None
        self.x_column = self.y_column = ""
        self.plot_type, self.marker_style = self.PlotTypeLine, 4
        self.color = (0.0, 0.0, 0.0)
        self.attributes = {}

    def GetName(self):
        return self.name

    def GetID(self):
        return getattr(self, "node_id", None)

    def SetAttribute(self, key, value):
        self.attributes[key] = value

    def GetAttribute(self, key):
        return self.attributes.get(key)

    def SetAndObserveTableNodeID(self, node_id):
        self.table_node_id = node_id

    def GetTableNodeID(self):
        return self.table_node_id

    def SetXColumnName(self, name):
        self.x_column = name

    def SetYColumnName(self, name):
        self.y_column = name

    def SetPlotType(self, plot_type):
        self.plot_type = plot_type

    def SetMarkerStyle(self, style):
        self.marker_style = style

    def SetColor(self, r, g, b):
        self.color = (r, g, b)


class PlotChartNodeDouble:
    """vtkMRMLPlotChartNode (vtkMRMLPlotChartNode.h): an ordered list of plot series node IDs (resolved in its scene),
    title and axis titles."""

    def __init__(self, name="plot chart"):
        self.name = name
        self.series_ids = []
        self.scene = None  # set by SceneDouble
        self.title = self.x_title = self.y_title = None

    def GetName(self):
        return self.name

    def GetID(self):
        return getattr(self, "node_id", None)

    def AddAndObservePlotSeriesNodeID(self, node_id):
        assert node_id, "a plot series node must be in the scene (have an ID) to be added to a chart"
        self.series_ids.append(node_id)

    def RemovePlotSeriesNodeID(self, node_id):
        self.series_ids = [i for i in self.series_ids if i != node_id]

    def RemoveAllPlotSeriesNodeIDs(self):
        self.series_ids = []

    def GetNumberOfPlotSeriesNodes(self):
        return len(self.series_ids)

    def GetNthPlotSeriesNode(self, n):
        return self.scene.GetNodeByID(self.series_ids[n]) if self.scene is not None else None

    def SetTitle(self, title):
        self.title = title

    def SetXAxisTitle(self, title):
        self.x_title = title

    def SetYAxisTitle(self, title):
        self.y_title = title


class SceneDouble:
    CLASSES = {"vtkMRMLScalarVolumeNode": ScalarVolumeNodeDouble, "vtkMRMLSegmentationNode": SegmentationNodeDouble,
               "vtkMRMLTableNode": TableNodeDouble,
               "vtkMRMLLinearTransformNode": lambda name: LinearTransformDouble(np_identity_rows()),
               "vtkMRMLPlotSeriesNode": PlotSeriesNodeDouble, "vtkMRMLPlotChartNode": PlotChartNodeDouble}
    StartCloseEvent, EndCloseEvent = 1, 2

    def __init__(self):
        self.nodes = []
        self.created = 0

    def AddNewNodeByClass(self, class_name, name=""):
        node = self.CLASSES[class_name](name)
        self.created += 1
        node.node_id = f"{class_name}{self.created}"  # unique, like MRML's IDs
        if hasattr(node, "scene"):
            node.scene = self
        self.nodes.append(node)
        return node

    def GetNodeByID(self, node_id):
        return next((n for n in self.nodes if getattr(n, "node_id", None) == node_id), None)

    def RemoveNode(self, node):
        if node in self.nodes:
            self.nodes.remove(node)

    def GetFirstNodeByClass(self, class_name):
        return next((n for n in self.nodes if isinstance(n, self.CLASSES.get(class_name, ()))), None)

    def Clear(self, removeSingletons=False):
        self.nodes = []


def np_identity_rows():
    return [[1.0 if r == c else 0.0 for c in range(4)] for r in range(4)]


#: Parameter names of the CLI modules, from their XML descriptions (BRAINSTools: BRAINSFit.xml, BRAINSResample.xml).
CLI_PARAMETERS = {
    "brainsfit": {"fixedVolume", "movingVolume", "linearTransform", "outputVolume", "useRigid", "costMetric",
                  "initializeTransformMode", "samplingPercentage", "numberOfSamples", "interpolationMode"},
    "brainsresample": {"inputVolume", "referenceVolume", "outputVolume", "warpTransform", "interpolationMode",
                       "pixelType"},
    "generatepartiallunglabelmap": {"ctFileName", "outputLungMaskFileName"},
}


class CLINodeDouble:
    """vtkMRMLCommandLineModuleNode after runSync: status flags and error text (runSync does not raise)."""

    Completed, CompletedWithErrors, ErrorsMask = 0x20, 0x21, 0x01

    def __init__(self, failed: bool, error_text: str = ""):
        self.status = self.CompletedWithErrors if failed else self.Completed
        self.error_text = error_text

    def GetStatus(self):
        return self.status

    def GetErrorText(self):
        return self.error_text


class CLIModuleDouble:
    def __init__(self, name):
        self.name = name


def make_cli_double(calls: list, fail: set, cip_mask=None):
    """slicer.cli.runSync: records the call, refuses unknown parameter names, and does the module's work with
    SimpleITK (BRAINSFit: keeps the identity transform; BRAINSResample: resamples onto the reference grid)."""
    import SimpleITK as sitk

    from ImagingBasics import slicer_nodes
    from ImagingBasics.volume import from_sitk, to_sitk

    def run_sync(module, node, parameters):
        unknown = set(parameters) - CLI_PARAMETERS[module.name]
        assert not unknown, f"{module.name} has no parameter(s) {sorted(unknown)}"
        calls.append((module.name, dict(parameters)))
        if module.name in fail:
            return CLINodeDouble(True, f"{module.name}: simulated failure")
        if module.name == "generatepartiallunglabelmap":  # the caller's cip_mask(ct Volume) -> CIP label Volume
            from ImagingBasics.imageio import read_volume, write_volume

            write_volume(cip_mask(read_volume(parameters["ctFileName"])), parameters["outputLungMaskFileName"])
        if module.name == "brainsresample":
            moving = to_sitk(slicer_nodes.volume_from_node(parameters["inputVolume"]))
            reference = to_sitk(slicer_nodes.volume_from_node(parameters["referenceVolume"]))
            out = sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, 0.0)
            slicer_nodes.update_node_from_volume(parameters["outputVolume"], from_sitk(out))
        return CLINodeDouble(False)

    return run_sync


class WithinRangeDouble:
    """slicer.parameterNodeWrapper.WithinRange (validators.py): ``minimum``, ``maximum``, inclusive; ``validate``
    raises ValueError."""

    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value):
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class ChoiceDouble:
    """slicer.parameterNodeWrapper.Choice: ``choices``; ``validate`` raises ValueError."""

    def __init__(self, choices):
        self.choices = choices

    def validate(self, value):
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


SLICER_GLUE_PACKAGES = ("SlicerModuleBase",)


def load_module(monkeypatch, doubles: dict, path, name: str):
    """Import a module file (or batch script) with the double in place of Slicer. The shared Slicer glue
    (SlicerModuleBase) is imported afresh too, so that it sees this test's double, not an earlier test's."""
    import importlib.util
    import sys

    for key, module in doubles.items():
        monkeypatch.setitem(sys.modules, key, module)
    for key in [k for k in sys.modules if k.split(".")[0] in SLICER_GLUE_PACKAGES]:
        monkeypatch.delitem(sys.modules, key)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_slicer_double(temporary_path: str, with_brains: bool = False, fail_cli: set = frozenset(), cip_mask=None):
    """A stand-in ``slicer`` package: the scene, util, app and base classes that CTPerfusionMapping.py needs
    (``with_brains``: BRAINSFit and BRAINSResample are "installed"; ``slicer.cli_calls`` records their runs)."""
    import types

    import numpy as np

    from ImagingBasics import slicer_nodes

    slicer = types.ModuleType("slicer")
    slicer.mrmlScene = SceneDouble()
    slicer.app = types.SimpleNamespace(temporaryPath=temporary_path)
    slicer.modules = types.SimpleNamespace()  # no TotalSegmentator, no Chest Imaging Platform installed
    slicer.cli_calls = []
    if with_brains:
        slicer.modules.brainsfit = CLIModuleDouble("brainsfit")
        slicer.modules.brainsresample = CLIModuleDouble("brainsresample")
    if cip_mask is not None:
        slicer.modules.generatepartiallunglabelmap = CLIModuleDouble("generatepartiallunglabelmap")
    slicer.cli = types.SimpleNamespace(runSync=make_cli_double(slicer.cli_calls, set(fail_cli), cip_mask))
    slicer.viewer_layers = {}

    def array_from_volume(node):
        return slicer_nodes.array_from_image_data(node.GetImageData())

    def update_segment(array, segmentation_node, segment_id, reference):
        assert array.shape == array_from_volume(reference).shape
        segmentation_node.masks[segment_id] = np.array(array, copy=True)

    def array_from_segment(segmentation_node, segment_id, reference):
        return segmentation_node.masks[segment_id]

    def set_layers(background=None, foreground=None, foregroundOpacity=None):
        slicer.viewer_layers.update(background=background, foreground=foreground, opacity=foregroundOpacity)

    class VTKObservationMixin:
        pass

    def save_node(node, path):
        from ImagingBasics.imageio import write_volume

        slicer.saved[str(path)] = node
        if isinstance(node, VolumeNodeDouble):
            write_volume(slicer_nodes.volume_from_node(node), path)
        return True

    def load_volume(path, name=None):
        """slicer.util.loadVolume (and loadLabelVolume): a new volume node in the scene; raises on a bad file."""
        from ImagingBasics.imageio import read_volume

        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or str(path))
        slicer_nodes.update_node_from_volume(node, read_volume(path))
        return node

    def load_segmentation(path):
        return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", str(path))

    slicer.saved = {}  # path -> node, of every saveNode
    slicer.module_logics = {}  # module name -> the Logic slicer.util.getModuleLogic returns
    slicer.exit_codes = []
    slicer.util = types.SimpleNamespace(
        saveNode=save_node, arrayFromVolume=array_from_volume, updateSegmentBinaryLabelmapFromArray=update_segment,
        arrayFromSegmentBinaryLabelmap=array_from_segment, setSliceViewerLayers=set_layers,
        VTKObservationMixin=VTKObservationMixin, loadVolume=load_volume, loadLabelVolume=load_volume,
        loadSegmentation=load_segmentation, getModuleLogic=lambda name: slicer.module_logics[name],
        exit=slicer.exit_codes.append)

    class Base:
        def __init__(self, *args, **kwargs):
            pass

        def getParameterNode(self):
            return None

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
                 "ScriptedLoadableModuleWidget"):
        setattr(scripted, name, type(name, (Base,), {}))

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")

    def field_defaults(cls):
        """Each field's default: the class value, else [] for a list field (the real ListSerializer's default), else
        None (nodes)."""
        import typing

        return {name: getattr(cls, name, [] if typing.get_origin(annotation) is list else None)
                for name, annotation in cls.__annotations__.items()}

    def field_validators(cls):
        """Each field's validators: the objects of its Annotated[...] metadata that have ``validate``."""
        return {name: [m for m in getattr(annotation, "__metadata__", ()) if hasattr(m, "validate")]
                for name, annotation in cls.__annotations__.items()}

    def validated_setattr(validators):
        """Writing a field validates the value first (the real wrapper's serializer does, raising ValueError)."""
        def setattr_(self, name, value):
            for validator in validators.get(name, ()):
                validator.validate(value)
            object.__setattr__(self, name, value)

        return setattr_

    def parameter_node_wrapper(cls):
        """Fields become plain attributes with their defaults (None for nodes), like the real wrapper's values; the
        defaults and every write are validated."""
        defaults = field_defaults(cls)

        def init(self, _node=None):
            for name, value in defaults.items():
                setattr(self, name, list(value) if isinstance(value, list) else value)

        return type(cls.__name__, (), {"__init__": init, "__setattr__": validated_setattr(field_validators(cls)),
                                       "__annotations__": dict(cls.__annotations__)})

    def parameter_pack(cls):
        """A parameterPack: a class whose fields take keyword (or positional) arguments, else their defaults."""
        defaults = field_defaults(cls)

        def init(self, *args, **kwargs):
            for name, value in defaults.items():
                setattr(self, name, list(value) if isinstance(value, list) else value)
            for name, value in zip(defaults, args):
                setattr(self, name, value)
            for name, value in kwargs.items():
                if name not in defaults:
                    raise TypeError(f"__init__() got an unexpected keyword argument '{name}'")
                setattr(self, name, value)

        return type(cls.__name__, (), {"__init__": init, "__setattr__": validated_setattr(field_validators(cls)),
                                       "__annotations__": dict(cls.__annotations__)})

    wrapper.parameterNodeWrapper = parameter_node_wrapper
    wrapper.parameterPack = parameter_pack
    wrapper.WithinRange = WithinRangeDouble
    wrapper.Choice = ChoiceDouble
    for name in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLTableNode",
                 "vtkMRMLPlotChartNode"):
        setattr(slicer, name, type(name, (), {}))
    slicer.ScriptedLoadableModule = scripted
    slicer.parameterNodeWrapper = wrapper
    return {"slicer": slicer, "slicer.util": slicer.util, "slicer.ScriptedLoadableModule": scripted,
            "slicer.parameterNodeWrapper": wrapper}
