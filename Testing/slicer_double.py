"""Stand-ins, written by this project, for the parts of 3D Slicer that the ``slicer-core`` wheel does not ship.

``slicer-core`` (Kitware, on PyPI) gives the real ``slicer`` package: MRML (scene, nodes, storage nodes), the module
logics (Volumes, Segmentations, Tables, Colors, Plots, Data, ...) and the real ``slicer.util``. It has no Qt, no
``slicer.app``, no ``ScriptedLoadableModule``, no ``parameterNodeWrapper``, no CLI modules and no colour files.
Testing/slicer_real.py builds a real scene from it and puts these stand-ins where Slicer has the missing parts:

* :data:`scripted_module` as ``slicer.ScriptedLoadableModule``: the module, logic, widget and test base classes
  (Slicer's Base/Python/slicer/ScriptedLoadableModule.py: the logic's singleton parameter node named after the module,
  the self-test registered in ``slicer.selfTests``, ``delayDisplay`` through ``slicer.util.delayDisplay``);
* :data:`parameter_node_wrapper` as ``slicer.parameterNodeWrapper``: ``parameterNodeWrapper``, ``parameterPack``,
  ``WithinRange``, ``Choice`` with the validation and storage semantics of Slicer's Base/Python/slicer/
  parameterNodeWrapper (defaults written and validated when a wrapper is made, every write validated first: NotNone,
  then the type (TypeError), then the annotated validators (ValueError; ``WithinRange`` inclusive, NaN refused);
  values kept as strings in the real vtkMRMLScriptedModuleNode, nodes as its node references, so that a removed node
  reads back as None; lists as ``name.len`` and ``name.N``, packs as ``name.field``);
* :class:`ApplicationStandIn` as ``slicer.app``: the temporary folder, ``testingEnabled()`` (as ``Slicer --testing``:
  no dialogs), the core IO manager (:class:`IOManagerStandIn`: ``slicer.util.loadVolume``/``loadSegmentation``/
  ``saveNode`` go through the real Volumes and Segmentations logics and the real storage nodes, as Slicer's
  qSlicerVolumesReader, qSlicerSegmentationsReader and qSlicerNodeWriter do) and the module manager
  (:class:`ModuleManagerStandIn`: ``slicer.util.getModuleLogic`` finds a scripted module's Logic through it);
* :func:`make_run_sync` as ``slicer.cli.runSync``: BRAINSFit, BRAINSResample and the Chest Imaging Platform's lung
  labels done with SimpleITK, returning a real vtkMRMLCommandLineModuleNode with its real status flags;
* :func:`write_color_files`: the colour files the modules and the Volumes logic name (ColdToHotRainbow.txt,
  GenericColors.txt), loaded by the real Colors logic from the application's share folder, which gives them their
  real node IDs (Slicer ships them in Base/Logic/Resources/ColorFiles; these tables are this project's);
* :func:`totalsegmentator_module`: the TotalSegmentator extension's Logic, which reads a multi-label file into the
  segmentation through the real segmentation storage node and a colour table of TotalSegmentator's label names, as
  SlicerTotalSegmentator does (segment IDs are those names);
* :data:`qt_module` (``qt``), :class:`UiDouble`, :class:`UiFileDouble`, :class:`TimerDouble`, :class:`LayoutDouble`:
  the few Qt pieces the Widget base touches (``slicer.util.loadUI`` and ``childWidgetVariables`` give the last two).

Testing/test_slicer_standins.py checks each stand-in against the real library where the real behaviour can be
observed (status flags, node IDs, storage round trips, singleton nodes) and against the semantics read in Slicer's
sources where it cannot (the wrapper).
"""

from __future__ import annotations

import collections.abc
import importlib
import math
import os
import types
import typing
import unittest
from typing import Annotated, Any, Dict, List, Optional

# ------------------------------------------------------------------------------------------------------------------------
# Qt: what the Widget base and slicer.util touch (slicer.util.tryWithErrorDisplay and delayDisplay import qt)
# ------------------------------------------------------------------------------------------------------------------------


class WidgetDouble:
    """A Qt widget as the Widget base touches it: text, value, enabled, toolTip, shown or hidden; and as a module's
    Widget touches a qMRMLSegmentSelectorWidget bound by hand: its scene, node and segment ID, and the slot connected
    to ``currentSegmentChanged(QString)``, called when the segment changes (as the real widget emits it)."""

    def __init__(self):
        self.text, self.value, self.enabled, self.toolTip, self.visible, self.currentPath = "", 0, True, "", True, ""
        self.scene, self.node, self.segmentId, self.slots = None, None, "", {}

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False

    def connect(self, signal, slot):
        self.slots[signal] = slot

    def setMRMLScene(self, scene):
        self.scene = scene

    def currentNode(self):
        return self.node

    def setCurrentNode(self, node):
        self.node = node

    def currentSegmentID(self):
        return self.segmentId

    def setCurrentSegmentID(self, segmentId):
        if segmentId != self.segmentId:
            self.segmentId = segmentId
            if "currentSegmentChanged(QString)" in self.slots:
                self.slots["currentSegmentChanged(QString)"](segmentId)


class UiDouble:
    """``self.ui``: every widget name gives a WidgetDouble."""

    def __getattr__(self, name):
        widget = WidgetDouble()
        setattr(self, name, widget)
        return widget


class UiFileDouble(WidgetDouble):
    """The widget ``slicer.util.loadUI`` makes of a .ui file (the file must exist); ``scene``: its MRML scene."""

    def __init__(self, path):
        super().__init__()
        if not os.path.isfile(path):
            raise RuntimeError(f"Could not load UI file: {path}")
        self.path, self.scene = str(path), None

    def setMRMLScene(self, scene):
        self.scene = scene


class LayoutDouble:
    """A Qt layout: the widgets added to it."""

    def __init__(self):
        self.widgets = []

    def addWidget(self, widget):
        self.widgets.append(widget)

    def addStretch(self, stretch=0):
        pass


class TimerDouble:
    """qt.QTimer: started and stopped by hand (the test polls)."""

    active = False

    def setInterval(self, milliseconds):
        self.interval = milliseconds

    def connect(self, signal, slot):
        self.slot = slot

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


qt_module = types.ModuleType("qt")
qt_module.__doc__ = "Stand-in of PythonQt's qt module: the names slicer.util and SlicerModuleBase use without a GUI."
qt_module.Qt = types.SimpleNamespace(WaitCursor=3, ArrowCursor=0)
qt_module.QTimer = TimerDouble


# ------------------------------------------------------------------------------------------------------------------------
# slicer.parameterNodeWrapper
# ------------------------------------------------------------------------------------------------------------------------


class Validator:
    """A validator: ``validate(value)`` raises (ValueError or TypeError) when the value is not allowed."""

    def validate(self, value) -> None:
        raise NotImplementedError


class NotNone(Validator):
    def validate(self, value) -> None:
        if value is None:
            raise ValueError("Value must not be None")


class IsInstance(Validator):
    def __init__(self, classtype):
        self.classtype = classtype

    def validate(self, value) -> None:
        if value is not None and not isinstance(value, self.classtype):
            raise TypeError(f"Value must be of type '{self.classtype}', is type '{type(value)}' value '{value}'")


class WithinRange(Validator):
    """Inclusive at both ends; NaN is refused (a comparison with NaN is false)."""

    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def __repr__(self):
        return f"WithinRange({self.minimum}, {self.maximum})"

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class Choice(Validator):
    def __init__(self, choices):
        self.choices = choices

    def __repr__(self):
        return f"Choice({self.choices})"

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


def _node_class():
    import slicer

    return slicer.vtkMRMLNode


def _split_annotated(annotation):
    """(type, validators) of a possibly ``Annotated[...]`` type."""
    if typing.get_origin(annotation) is Annotated:
        base, *metadata = typing.get_args(annotation)
        return base, [m for m in metadata if isinstance(m, Validator)]
    return annotation, []


class _Field:
    """How one parameter is validated and kept in a vtkMRMLScriptedModuleNode (one serializer of the real wrapper)."""

    def __init__(self, annotation):
        base, extra = _split_annotated(annotation)
        if typing.get_origin(base) is typing.Union:  # Optional[node class]: None is a node field's value anyway
            members = [a for a in typing.get_args(base) if a is not type(None)]
            if len(members) != 1 or not (isinstance(members[0], type) and issubclass(members[0], _node_class())):
                raise TypeError(f"the stand-in wrapper supports Optional[<MRML node class>] only, not {base}")
            base = members[0]
        self.base = base
        if typing.get_origin(base) in (list, List):
            self.kind = "list"
            (element,) = typing.get_args(base) or (Any,)
            self.element = _Field(element)
            self.validators = extra
        elif getattr(base, "_is_parameterPack", False):
            self.kind = "pack"
            self.validators = [NotNone(), _PackInstance(base)] + extra
        elif isinstance(base, type) and issubclass(base, _node_class()):
            self.kind = "node"
            self.validators = [IsInstance(base)] + extra
        elif base in (bool, int, float, str):
            self.kind = "scalar"
            self.validators = [NotNone(), IsInstance((int, float) if base is float else base)] + extra
        else:
            raise TypeError(f"the stand-in wrapper does not support the type {base}")

    def default(self):
        """The default of a field without one (the real serializers' defaults)."""
        if self.kind == "list":
            return []
        if self.kind == "node":
            return None
        if self.kind == "pack":
            return self.base()
        return {bool: False, int: 0, float: 0, str: ""}[self.base]

    def validate(self, value) -> None:
        if self.kind == "list":
            for item in value:
                self.element.validate(item)
        for validator in self.validators:
            validator.validate(value)

    def is_in(self, node, name) -> bool:
        if self.kind == "list":
            return node.HasParameter(f"{name}.len")
        if self.kind == "pack":
            first, field = next(iter(self.base.allParameters.items()))
            return field.is_in(node, f"{name}.{first}")
        return node.HasParameter(name)

    def write(self, node, name, value) -> None:
        self.validate(value)
        was = node.StartModify()
        try:
            if self.kind == "scalar":
                node.SetParameter(name, ("True" if value else "False") if self.base is bool else str(value))
            elif self.kind == "node":
                node.SetParameter(name, "")  # marks the parameter as present: None is a value too
                node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            elif self.kind == "pack":
                for field_name, field in self.base.allParameters.items():
                    field.write(node, f"{name}.{field_name}", getattr(value, field_name))
            else:
                old = int(node.GetParameter(f"{name}.len")) if self.is_in(node, name) else 0
                for index, item in enumerate(value):
                    self.element.write(node, f"{name}.{index}", item)
                node.SetParameter(f"{name}.len", str(len(value)))
                for index in range(len(value), old):
                    self.element.remove(node, f"{name}.{index}")
        finally:
            node.EndModify(was)

    def read(self, node, name):
        if self.kind == "scalar":
            text = node.GetParameter(name)
            return text == "True" if self.base is bool else self.base(text)
        if self.kind == "node":
            return node.GetNodeReference(name)
        if self.kind == "pack":
            values = {field_name: field.read(node, f"{name}.{field_name}")
                      for field_name, field in self.base.allParameters.items()}
            pack = self.base(**values)
            object.__setattr__(pack, "_observed", (node, self, name))  # writes go back into the node
            return pack
        length = int(node.GetParameter(f"{name}.len")) if self.is_in(node, name) else 0
        return ObservedList(node, self, name, [self.element.read(node, f"{name}.{i}") for i in range(length)])

    def remove(self, node, name) -> None:
        if self.kind == "node":
            node.UnsetParameter(name)
            node.RemoveNodeReferenceIDs(name)
        elif self.kind == "pack":
            for field_name, field in self.base.allParameters.items():
                field.remove(node, f"{name}.{field_name}")
        elif self.kind == "list":
            for index in range(int(node.GetParameter(f"{name}.len")) if self.is_in(node, name) else 0):
                self.element.remove(node, f"{name}.{index}")
            node.UnsetParameter(f"{name}.len")
        else:
            node.UnsetParameter(name)


class _PackInstance(Validator):
    def __init__(self, pack_class):
        self.pack_class = pack_class

    def validate(self, value) -> None:
        if not isinstance(value, self.pack_class):
            raise ValueError(f"Value must be of type '{self.pack_class}', is type '{type(value)}'")


class ObservedList(collections.abc.MutableSequence):
    """A list parameter as read from the node: changing it writes the whole list back (the real ObservedList)."""

    def __init__(self, node, field, name, items):
        self._node, self._field, self._name, self._list = node, field, name, items

    def _save(self):
        try:
            self._field.write(self._node, self._name, self._list)
        finally:
            self._list = list(self._field.read(self._node, self._name)._list)

    def __len__(self):
        return len(self._list)

    def __getitem__(self, index):
        return self._list[index]

    def __setitem__(self, index, item):
        self._list[index] = item
        self._save()

    def __delitem__(self, index):
        del self._list[index]
        self._save()

    def insert(self, index, item):
        self._list.insert(index, item)
        self._save()

    def __eq__(self, other):
        return self._list == (other._list if isinstance(other, ObservedList) else other)

    def __repr__(self):
        return f"ObservedList({self._list!r})"


def _fields_of(cls) -> Dict[str, _Field]:
    return {name: _Field(annotation)
            for name, annotation in typing.get_type_hints(cls, include_extras=True).items()}


def parameterPack(cls):  # noqa: N802 (Slicer's name)
    """A class of typed fields (Slicer's ``@parameterPack``): keyword or positional construction, every field validated
    on construction and on assignment; the class defaults are validated when the class is made. A pack read from a
    parameter node writes itself back when a field is assigned."""
    fields = _fields_of(cls)
    defaults = {}
    for name, field in fields.items():
        default = cls.__dict__[name] if name in cls.__dict__ else field.default()
        try:
            field.validate(default)
        except Exception as exc:
            raise ValueError(f"The default parameter of '{default}' fails the validation checks:\n  {exc}") from None
        defaults[name] = default

    def make_property(name):
        def get(self):
            return self.__dict__["_values"][name]

        def set_(self, value):
            fields[name].validate(value)
            self.__dict__["_values"][name] = value
            observed = self.__dict__.get("_observed")
            if observed is not None:
                node, field, parameter = observed
                field.write(node, parameter, self)

        return property(get, set_)

    def init(self, *args, **kwargs):
        object.__setattr__(self, "_values", {})
        given = {}
        for name, value in zip(fields, args):
            given[name] = value
        for name, value in kwargs.items():
            if name not in fields:
                raise TypeError(f"__init__() got an unexpected keyword argument '{name}'")
            if name in given:
                raise TypeError(f"__init__() got multiple values for argument '{name}'")
            given[name] = value
        for name in fields:
            value = given.get(name, defaults[name])
            fields[name].validate(value)
            self.__dict__["_values"][name] = value

    def eq(self, other):
        return type(self) is type(other) and all(getattr(self, n) == getattr(other, n) for n in fields)

    def text(self):
        return f"{cls.__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in fields)})"

    for name in fields:
        setattr(cls, name, make_property(name))
    cls.__init__, cls.__eq__, cls.__repr__, cls.__str__, cls.__hash__ = init, eq, text, text, None
    cls.allParameters = fields
    cls._is_parameterPack = True
    cls.getValue = lambda self, name: getattr(self, name)
    cls.setValue = lambda self, name, value: setattr(self, name, value)
    return cls


def parameterNodeWrapper(cls):  # noqa: N802 (Slicer's name)
    """Typed properties over a vtkMRMLScriptedModuleNode (Slicer's ``@parameterNodeWrapper``): ``cls(parameterNode)``
    writes each missing parameter's default (validated); reading a missing one writes its default first; writing
    validates first, so a refused value leaves the node as it was. ``connectGui`` only records the GUI (no Qt)."""
    fields = _fields_of(cls)
    defaults = {name: (cls.__dict__[name] if name in cls.__dict__ else field.default()) for name, field in fields.items()}

    def make_property(name):
        field = fields[name]

        def get(self):
            node = self.parameterNode
            if not field.is_in(node, name):
                field.write(node, name, defaults[name])
            return field.read(node, name)

        def set_(self, value):
            field.write(self.parameterNode, name, value)

        return property(get, set_)

    def init(self, parameterNode, prefix=None):
        if parameterNode is None:
            raise TypeError("a parameter node wrapper needs a parameter node (vtkMRMLScriptedModuleNode)")
        self.parameterNode = parameterNode
        self._guis = {}
        for name, field in fields.items():
            if not field.is_in(parameterNode, name):
                field.write(parameterNode, name, defaults[name])

    def connect_gui(self, gui):
        tag = len(self._guis) + 1
        self._guis[tag] = gui
        return tag

    def disconnect_gui(self, tag):
        self._guis.pop(tag, None)

    for name in fields:
        setattr(cls, name, make_property(name))
    cls.__init__ = init
    cls.allParameters = fields
    cls._is_parameter_node_wrapper = True
    cls.default = lambda self, name: defaults[name]
    cls.getValue = lambda self, name: getattr(self, name)
    cls.setValue = lambda self, name, value: setattr(self, name, value)
    cls.connectGui, cls.disconnectGui = connect_gui, disconnect_gui
    cls.StartModify = lambda self: self.parameterNode.StartModify()
    cls.EndModify = lambda self, wasModified: self.parameterNode.EndModify(wasModified)
    cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority)
    cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
    cls.Modified = lambda self: self.parameterNode.Modified()
    return cls


parameter_node_wrapper = types.ModuleType("slicer.parameterNodeWrapper")
parameter_node_wrapper.__doc__ = "Stand-in of Slicer's slicer.parameterNodeWrapper (Testing/slicer_double.py)."
for _name, _value in (("parameterNodeWrapper", parameterNodeWrapper), ("parameterPack", parameterPack),
                      ("Validator", Validator), ("WithinRange", WithinRange), ("Choice", Choice), ("NotNone", NotNone),
                      ("IsInstance", IsInstance)):
    setattr(parameter_node_wrapper, _name, _value)


# ------------------------------------------------------------------------------------------------------------------------
# slicer.ScriptedLoadableModule
# ------------------------------------------------------------------------------------------------------------------------


class ScriptedLoadableModule:
    """The module class: fills its ``parent`` (title, help, ...) and registers its self-test in ``slicer.selfTests``."""

    def __init__(self, parent):
        import slicer

        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title, parent.categories, parent.dependencies, parent.contributors = "", [], [], []
        parent.helpText = parent.acknowledgementText = ""
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def runTest(self, msec=100, **kwargs):
        module = importlib.import_module(self.__module__)
        testCase = getattr(module, self.moduleName + "Test")()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


class ScriptedLoadableModuleLogic:
    """The Logic base: one parameter node per module and scene, a singleton tagged with the module name (it survives
    ``mrmlScene.Clear()``, which only resets it)."""

    def __init__(self, parent=None):
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        import slicer

        if self.isSingletonParameterNode:
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:  # reset by a scene close
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
        else:
            for node in self.getAllParameterNodes():
                return node
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def getAllParameterNodes(self):
        import slicer

        scene = slicer.mrmlScene
        nodes = [scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
                 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode"))]
        return [node for node in nodes if node.GetAttribute("ModuleName") == self.moduleName]

    def createParameterNode(self):
        import slicer

        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleWidget:
    """The Widget base without Qt: Slicer constructs a module's widget with a parent and calls ``setup()`` later (which
    loads the .ui); the stand-in never calls it."""

    def __init__(self, parent=None):
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[:-6]
        self.parent = parent if parent is not None else types.SimpleNamespace(isEntered=False)
        self.layout = LayoutDouble()

    def resourcePath(self, filename):
        import slicer

        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def setup(self):
        pass

    def cleanup(self):
        pass


class ScriptedLoadableModuleTest(unittest.TestCase):
    """The self-test base: a unittest.TestCase whose ``delayDisplay`` goes through ``slicer.util.delayDisplay`` (below
    400 ms it logs the message and processes events, as Slicer does)."""

    def __init__(self, *args, **kwargs):
        self.moduleTestNames = []
        super().__init__(*args, **kwargs)
        self.moduleTestNames = [m for m in dir(self) if "test" in m and callable(getattr(self, m))]

    def delayDisplay(self, message, requestedDelay=None, msec=None):
        import slicer

        if hasattr(self, "messageDelay"):
            msec = self.messageDelay
        if msec is None:
            msec = requestedDelay if requestedDelay is not None else 100
        slicer.util.delayDisplay(message, msec)


scripted_module = types.ModuleType("slicer.ScriptedLoadableModule")
scripted_module.__doc__ = "Stand-in of Slicer's slicer.ScriptedLoadableModule (Testing/slicer_double.py)."
for _cls in (ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget, ScriptedLoadableModuleTest):
    setattr(scripted_module, _cls.__name__, _cls)


# ------------------------------------------------------------------------------------------------------------------------
# slicer.app: the application, its core IO manager and module manager
# ------------------------------------------------------------------------------------------------------------------------


def _base_name(path) -> str:
    """QFileInfo(path).baseName(): the file name up to its first dot."""
    return os.path.basename(str(path)).split(".")[0]


class IOManagerStandIn:
    """qSlicerCoreIOManager as ``slicer.util`` uses it, with the readers and the writer done as Slicer's
    qSlicerVolumesReader (the Volumes logic's AddArchetypeVolume with the option bits of the properties),
    qSlicerSegmentationsReader (the Segmentations logic's LoadSegmentationFromFile), qSlicerTablesReader (the Tables
    logic's AddTable) and qSlicerNodeWriter (the node's default storage node, its WriteData) do them."""

    def __init__(self, scene, logics, application_logic):
        self.scene, self.logics, self.application_logic = scene, logics, application_logic

    def fileType(self, fileName):
        name = str(fileName).lower()
        if name.endswith(".seg.nrrd") or name.endswith(".seg.nii.gz"):
            return "SegmentationFile"
        if name.endswith((".csv", ".tsv")):
            return "TableFile"
        return "VolumeFile"

    def fileWriterFileType(self, node):
        for node_class, file_type in (("vtkMRMLVolumeNode", "VolumeFile"), ("vtkMRMLSegmentationNode", "SegmentationFile"),
                                      ("vtkMRMLTableNode", "TableFile")):
            if node is not None and node.IsA(node_class):
                return file_type
        return "NoFile"

    def loadNodes(self, fileType, properties, loadedNodes=None, userMessages=None):
        properties = dict(properties)
        fileName = str(properties["fileName"])
        if fileType == "VolumeFile":
            node = self._load_volume(fileName, properties)
        elif fileType == "SegmentationFile":
            colour = self.scene.GetNodeByID(properties["colorNodeID"]) if "colorNodeID" in properties else None
            node = self.logics["Segmentations"].LoadSegmentationFromFile(
                fileName, bool(properties.get("autoOpacities", True)), properties.get("name", ""), colour)
        elif fileType == "TableFile":
            node = self.logics["Tables"].AddTable(fileName, properties.get("name", _base_name(fileName)))
        else:
            node = None
        if node is None:
            if userMessages is not None:
                import vtk

                userMessages.AddMessage(vtk.vtkCommand.ErrorEvent, f"Cannot read {fileName} as {fileType}")
            return False
        if loadedNodes is not None:
            loadedNodes.AddItem(node)
        return True

    def _load_volume(self, fileName, properties):
        options = 0
        for bit, key in ((0x1, "labelmap"), (0x2, "center"), (0x4, "singleFile"), (0x8, "autoWindowLevel"),
                         (0x10, "discardOrientation")):
            if properties.get(key):
                options |= bit
        node = self.logics["Volumes"].AddArchetypeVolume(fileName, properties.get("name", _base_name(fileName)), options)
        if node is None:
            return None
        if properties.get("colorNodeID") and node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetAndObserveColorNodeID(properties["colorNodeID"])
        if properties.get("show", True):
            selection = self.application_logic.GetSelectionNode()
            if node.IsA("vtkMRMLLabelMapVolumeNode"):
                selection.SetActiveLabelVolumeID(node.GetID())
            else:
                selection.SetActiveVolumeID(node.GetID())
            self.application_logic.PropagateVolumeSelection(0)
        return node

    def saveNodes(self, fileType, properties, userMessages=None):
        node = self.scene.GetNodeByID(properties["nodeID"])
        if node is None or not node.IsA("vtkMRMLStorableNode") or not node.AddDefaultStorageNode():
            return False
        storage = node.GetStorageNode()
        storage.SetFileName(str(properties["fileName"]))
        if properties.get("fileFormat"):
            storage.SetWriteFileFormat(properties["fileFormat"])
        storage.SetURI(None)
        if "useCompression" in properties:
            storage.SetUseCompression(int(properties["useCompression"]))
        written = bool(storage.WriteData(node))
        if userMessages is not None:
            userMessages.AddMessages(storage.GetUserMessages())
        return written


class ScriptedModuleStandIn:
    """``slicer.qSlicerScriptedLoadableModule``: a loaded module file (``path``) whose module class has filled this
    object as its ``parent``; ``widgetRepresentation()`` makes the module's Widget as Slicer does (with a parent), and
    creates its Logic as the Widget's ``setup()`` does, without the Qt part of ``setup()``."""

    def __init__(self, python_module, name, path):
        self.name, self.path, self.python_module = name, str(path), python_module
        self.title = ""
        self.isEntered = False
        self.module = getattr(python_module, name)(self)  # fills title, help, ...; registers the self-test
        self._widget = None

    def widgetRepresentation(self):
        if self._widget is None:
            widget = getattr(self.python_module, self.name + "Widget")(self)
            widget.logic = widget.createLogic()
            self._widget = WidgetRepresentationStandIn(widget)
        return self._widget

    def logic(self):
        return None


class WidgetRepresentationStandIn:
    """``slicer.qSlicerScriptedLoadableModuleWidget``: ``self()`` is the Python widget object."""

    def __init__(self, widget):
        self._self = widget

    def self(self):
        return self._self


class ModuleManagerStandIn:
    """qSlicerModuleManager: the loaded scripted modules by name."""

    def __init__(self):
        self.modules: Dict[str, ScriptedModuleStandIn] = {}

    def module(self, name):
        return self.modules.get(name)

    def factoryManager(self):
        return types.SimpleNamespace(loadedModuleNames=lambda: list(self.modules))

    def connect(self, signal, slot):
        pass


class ApplicationStandIn:
    """``slicer.app`` without Qt: as ``Slicer --testing``, so ``slicer.util.tryWithErrorDisplay`` shows no dialog (it
    still re-raises) and ``delayDisplay`` does not wait."""

    def __init__(self, temporaryPath, application_logic, io_manager, module_manager):
        self.temporaryPath = str(temporaryPath)
        self._application_logic, self._io, self._modules = application_logic, io_manager, module_manager
        self.exitCodes: List[int] = []
        self.overrideCursors: List[int] = []
        self._commandOptions = types.SimpleNamespace(runPythonAndExit=False, noMainWindow=True)

    def applicationLogic(self):
        return self._application_logic

    def coreIOManager(self):
        return self._io

    def ioManager(self):
        return self._io

    def moduleManager(self):
        return self._modules

    def commandOptions(self):
        return self._commandOptions

    def testingEnabled(self):
        return True

    def processEvents(self, *args):
        pass

    def setOverrideCursor(self, cursor):
        self.overrideCursors.append(cursor)

    def restoreOverrideCursor(self):
        if self.overrideCursors:
            self.overrideCursors.pop()

    def layoutManager(self):
        return None

    def exit(self, status=0):
        self.exitCodes.append(status)


# ------------------------------------------------------------------------------------------------------------------------
# slicer.cli: CLI modules (BRAINSTools, Chest Imaging Platform) that slicer-core does not have
# ------------------------------------------------------------------------------------------------------------------------

#: Parameter names of the CLI modules, from their XML descriptions (BRAINSTools: BRAINSFit.xml, BRAINSResample.xml;
#: the Chest Imaging Platform's GeneratePartialLungLabelMap.xml).
CLI_PARAMETERS = {
    "brainsfit": {"fixedVolume", "movingVolume", "linearTransform", "outputVolume", "useRigid", "costMetric",
                  "initializeTransformMode", "samplingPercentage", "numberOfSamples", "interpolationMode"},
    "brainsresample": {"inputVolume", "referenceVolume", "outputVolume", "warpTransform", "interpolationMode",
                       "pixelType"},
    "generatepartiallunglabelmap": {"ctFileName", "outputLungMaskFileName"},
}


class CLIModuleStandIn:
    """``slicer.modules.<cli>``: a CLI module by name."""

    def __init__(self, name):
        self.name = name


def make_run_sync(calls: list, fail=frozenset(), cip_mask=None):
    """``slicer.cli.runSync(module, node, parameters)``: records the call, refuses unknown parameter names, does the
    module's work with SimpleITK (BRAINSFit keeps the identity transform; BRAINSResample resamples onto the reference
    grid; the CIP lung labels are ``cip_mask(ct Volume)``) and returns a real vtkMRMLCommandLineModuleNode in the
    scene with the status Slicer gives it: Completed, or CompletedWithErrors and the error text (runSync does not
    raise)."""

    def run_sync(module, node=None, parameters=None, wait_for_completion=True, delete_temporary_files=True,
                 update_display=True):
        import SimpleITK as sitk
        import slicer

        from ImagingBasics import slicer_nodes
        from ImagingBasics.volume import from_sitk, to_sitk

        parameters = dict(parameters or {})
        unknown = set(parameters) - CLI_PARAMETERS[module.name]
        assert not unknown, f"{module.name} has no parameter(s) {sorted(unknown)}"
        calls.append((module.name, parameters))
        cli = node or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLCommandLineModuleNode", module.name)
        if module.name in fail:
            cli.SetErrorText(f"{module.name}: simulated failure")
            cli.SetStatus(cli.CompletedWithErrors)
            return cli
        if module.name == "generatepartiallunglabelmap":
            from ImagingBasics.imageio import read_volume, write_volume

            write_volume(cip_mask(read_volume(parameters["ctFileName"])), parameters["outputLungMaskFileName"])
        if module.name == "brainsresample":
            moving = to_sitk(slicer_nodes.volume_from_node(parameters["inputVolume"]))
            reference = to_sitk(slicer_nodes.volume_from_node(parameters["referenceVolume"]))
            out = sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, 0.0)
            slicer_nodes.update_node_from_volume(parameters["outputVolume"], from_sitk(out))
        cli.SetStatus(cli.Completed)
        return cli

    return run_sync


# ------------------------------------------------------------------------------------------------------------------------
# colour files (Slicer ships them in Base/Logic/Resources/ColorFiles; these are this project's tables)
# ------------------------------------------------------------------------------------------------------------------------


def _cold_to_hot(fraction: float):
    """A cold-to-hot ramp: dark blue, blue, cyan, yellow, red, dark red (0..255)."""
    anchors = [(0.0, (0, 0, 140)), (0.2, (0, 60, 255)), (0.4, (0, 230, 255)), (0.6, (255, 240, 0)),
               (0.8, (255, 40, 0)), (1.0, (120, 0, 0))]
    for (f0, c0), (f1, c1) in zip(anchors, anchors[1:]):
        if fraction <= f1:
            t = (fraction - f0) / (f1 - f0)
            return tuple(int(round(a + t * (b - a))) for a, b in zip(c0, c1))
    return anchors[-1][1]


def write_color_files(folder) -> Dict[str, str]:
    """Write the colour files into ``folder`` (Slicer's format: ``index name R G B A`` per line); {file: path}."""
    os.makedirs(folder, exist_ok=True)
    rows = {"ColdToHotRainbow.txt": [(i, f"cold_to_hot_{i}", *_cold_to_hot(i / 255.0), 255) for i in range(256)],
            "GenericColors.txt": [(0, "background", 0, 0, 0, 0)] + [
                (i, f"label_{i}", *(int(round(255 * (0.5 + 0.5 * math.sin(1.7 * i + p)))) for p in (0.0, 2.1, 4.2)),
                 255) for i in range(1, 256)]}
    paths = {}
    for name, entries in rows.items():
        paths[name] = os.path.join(folder, name)
        with open(paths[name], "w", encoding="utf-8") as f:
            f.write(f"# {name}: a stand-in colour table of this project's tests\n")
            f.writelines(" ".join(str(v) for v in entry) + "\n" for entry in entries)
    return paths


# ------------------------------------------------------------------------------------------------------------------------
# the TotalSegmentator extension
# ------------------------------------------------------------------------------------------------------------------------


def totalsegmentator_module(labels_of_ct, label_names: Dict[int, str], standard_names: Optional[Dict[str, str]] = None):
    """A ``TotalSegmentator`` Python module whose ``TotalSegmentatorLogic().process(inputVolume, outputSegmentation,
    ..., task=...)`` writes ``labels_of_ct(ct Volume)`` (a multi-label Volume) to a file and reads it into the
    segmentation as SlicerTotalSegmentator's readSegmentation does: a colour table of the label names set as the
    segmentation's labelmap conversion table, the real segmentation storage node's ReadData (segment IDs: the label
    names), then the names replaced by ``standard_names`` (its "standard segment names"). ``module.calls``: the tasks."""
    module = types.ModuleType("TotalSegmentator")
    module.calls = []

    class TotalSegmentatorLogic:
        def process(self, inputVolume, outputSegmentation, cpu=False, task=None, interactive=False,
                    sequenceBrowserNode=None, subset=None):
            import tempfile

            import slicer

            from ImagingBasics.imageio import write_volume
            from ImagingBasics.slicer_nodes import volume_from_node

            module.calls.append(task)
            folder = tempfile.mkdtemp(dir=slicer.app.temporaryPath)
            path = os.path.join(folder, "segmentation.nii.gz")
            write_volume(labels_of_ct(volume_from_node(inputVolume)), path)
            table = slicer.vtkMRMLColorTableNode()
            table.SetTypeToUser()
            table.SetNumberOfColors(max(label_names) + 1)
            table.SetName(task or "total")
            for value, name in label_names.items():
                table.SetColor(value, 0.2 + 0.6 * (value % 5) / 4, 0.5, 0.8 - 0.6 * (value % 3) / 2, 1.0)
                table.SetColorName(value, name)
            slicer.mrmlScene.AddNode(table)
            outputSegmentation.SetLabelmapConversionColorTableNodeID(table.GetID())
            outputSegmentation.AddDefaultStorageNode()
            storage = outputSegmentation.GetStorageNode()
            storage.SetFileName(path)
            storage.ReadData(outputSegmentation)
            slicer.mrmlScene.RemoveNode(table)
            for segmentId, name in (standard_names or {}).items():
                segment = outputSegmentation.GetSegmentation().GetSegment(segmentId)
                if segment is not None:
                    segment.SetName(name)
            import shutil

            shutil.rmtree(folder, ignore_errors=True)

    module.TotalSegmentatorLogic = TotalSegmentatorLogic
    return module
