"""Static checks of the Slicer module file against its .ui and its parameter node (Slicer cannot run here).

* every ``self.ui.<name>`` the module touches is a widget of the .ui;
* every ``SlicerParameterName`` in the .ui is a field of the parameter node, on a widget that can show its type
  (bool: QCheckBox; float: ctkSliderWidget; Choice: QComboBox; node: qMRMLNodeComboBox of that node class);
* every node combo box follows the scene (mrmlSceneChanged -> setMRMLScene);
* the module defines the four classes Slicer expects and imports neither torch nor the core at load time.
"""

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "CTPerfusionMapping" / "CTPerfusionMapping.py"
UI = ROOT / "CTPerfusionMapping" / "Resources" / "UI" / "CTPerfusionMapping.ui"
#: parameters the Widget binds by hand (and why)
UNBOUND = {"weightsFile": "ctkPathLineEdit <-> str is connected in setup (currentPathChanged)"}


@pytest.fixture(scope="module")
def ui():
    tree = ET.parse(UI)
    widgets = {w.get("name"): w for w in tree.iter("widget")}
    bound = {}
    for w in widgets.values():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = w
    return tree, widgets, bound


@pytest.fixture(scope="module")
def module_ast():
    return ast.parse(MODULE.read_text(encoding="utf-8"), feature_version=(3, 9))


def _parameter_fields(tree):
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CTPerfusionMappingParameterNode")
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in cls.decorator_list)
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_every_widget_the_code_touches_is_in_the_ui(ui, module_ast):
    _, widgets, _ = ui
    used = {n.attr for n in ast.walk(module_ast)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute) and n.value.attr == "ui"
            and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"}
    assert used, "the widget uses no .ui widgets?"
    missing = sorted(used - set(widgets))
    assert not missing, f"widgets used in CTPerfusionMapping.py but absent from the .ui: {missing}"


def test_parameter_names_match_fields_and_widget_types(ui, module_ast):
    _, _, bound = ui
    fields = _parameter_fields(module_ast)
    assert sorted(set(bound) - set(fields)) == [], "SlicerParameterName without a parameter node field"
    assert sorted(set(fields) - set(bound) - set(UNBOUND)) == [], "parameter node fields without a widget"
    for name, widget in bound.items():
        annotation, cls = fields[name], widget.get("class")
        if annotation == "bool":
            assert cls == "QCheckBox", name
        elif "Choice(" in annotation:
            assert cls == "QComboBox", name
        elif annotation.startswith("Annotated[float"):
            assert cls in ("ctkSliderWidget", "QDoubleSpinBox") and "WithinRange" in annotation, name
        else:
            node_class = re.search(r"vtkMRML\w+", annotation).group(0)
            assert cls == "qMRMLNodeComboBox", name
            types = [s.text for s in widget.find("property[@name='nodeTypes']").iter("string")]
            assert types == [node_class], f"{name}: combo box shows {types}, the parameter holds {node_class}"
            optional = annotation.startswith("Optional[")
            none_enabled = widget.find("property[@name='noneEnabled']/bool").text == "true"
            assert none_enabled == optional, f"{name}: 'None' selectable must match Optional"


def test_node_combo_boxes_follow_the_scene(ui):
    tree, widgets, _ = ui
    combos = {n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.find("receiver").text for c in tree.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    assert combos and combos == connected
    assert widgets["CTPerfusionMapping"].get("class") == "qMRMLWidget"


def test_module_classes_and_lazy_imports(module_ast):
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in module_ast.body if isinstance(n, ast.ClassDef)}
    assert classes["CTPerfusionMapping"] == ["ScriptedLoadableModule"]
    assert classes["CTPerfusionMappingWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert classes["CTPerfusionMappingLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["CTPerfusionMappingTest"] == ["ScriptedLoadableModuleTest"]
    top = [n for n in module_ast.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in top if isinstance(n, ast.ImportFrom)]
    assert not any(m.split(".")[0] in ("torch", "qt") for m in names), names
    lib = [m for m in names if m.startswith("CTPerfusionMappingLib")]
    assert lib == ["CTPerfusionMappingLib"], "import only torch-free constants from the core at load time"
    assert not any(isinstance(n, ast.Import) and any(a.name == "torch" for a in n.names) for n in ast.walk(module_ast))


def test_choices_are_what_the_core_accepts(module_ast):
    from CTPerfusionMappingLib import slicer_batch
    from CTPerfusionMappingLib.cli import build_parser

    namespace = {"SEGMENTATION_SOURCES": slicer_batch.SEGMENTATION_SOURCES, "DEVICES": slicer_batch.DEVICES}
    assert "SEGMENTATION_SOURCES = list(slicer_batch.SEGMENTATION_SOURCES)" in MODULE.read_text(encoding="utf-8")
    for device in namespace["DEVICES"]:
        assert build_parser().parse_args(["run", "--ct", "x", "--out", "y", "--device", device]).device == device
    logic = next(n for n in module_ast.body if isinstance(n, ast.ClassDef) and n.name == "CTPerfusionMappingLogic")
    handled = {n.comparators[0].value for n in ast.walk(logic) if isinstance(n, ast.Compare)
               and isinstance(n.comparators[0], ast.Constant)}
    handled |= {e.value for n in ast.walk(logic) if isinstance(n, ast.Compare) and isinstance(n.comparators[0], ast.Tuple)
                for e in n.comparators[0].elts if isinstance(e, ast.Constant)}
    for choice in namespace["SEGMENTATION_SOURCES"]:
        assert choice in handled, f"segmentation source {choice!r} is offered but never handled by the Logic"
