"""Static checks of each Slicer module file (CTPerfusionMapping, DoseCNN) against its .ui and its parameter node (Qt
cannot run here; the Logic, nodes, batch scripts and self-tests run on a real MRML scene in the slicer_real tests).

* every ``self.ui.<name>`` the module touches is a widget of the .ui;
* every ``SlicerParameterName`` in the .ui is a field of the parameter node, on a widget that can show its type
  (bool: QCheckBox; float: ctkSliderWidget or QDoubleSpinBox; Choice: QComboBox; node: qMRMLNodeComboBox of that node
  class); the fields bound by hand (lists, paths) are named below with the reason;
* every node combo box follows the scene (mrmlSceneChanged -> setMRMLScene);
* the module defines the four classes Slicer expects (its Widget and Logic on the shared bases of SlicerModuleBase),
  imports neither torch nor more of the core than its option definitions and request at load time, and stays under
  450 lines.
"""

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "CTPerfusionMapping" / "CTPerfusionMapping.py"
#: the Widget base: the .ui widgets it touches must be in every module's .ui
WIDGET_BASE = ROOT / "SlicerModuleBase" / "widget.py"
MAX_MODULE_LINES = 450
#: parameters each Widget binds by hand (and why)
UNBOUND = {
    "CTPerfusionMapping": {"weightsFile": "ctkPathLineEdit <-> str is connected in setup (currentPathChanged)",
                           "exclusionSegmentID": "qMRMLSegmentSelectorWidget <-> str (the parameter node wrapper has "
                                                 "no connector for it), synchronised in the Widget by hand"},
    "DoseCNN": {"weightsFile": "ctkPathLineEdit <-> str is connected in setup (currentPathChanged)",
                "timePoints": "list of parameter packs <-> the rows of timePointsTableWidget, synchronised by hand",
                "outputTimePointDoseRates": "the per-time-point dose-rate nodes the Logic creates (no widget)"},
}


@pytest.fixture(scope="module", params=sorted(UNBOUND))
def module_name(request):
    return request.param


def _module_file(name):
    return ROOT / name / f"{name}.py"


@pytest.fixture(scope="module")
def ui(module_name):
    tree = ET.parse(ROOT / module_name / "Resources" / "UI" / f"{module_name}.ui")
    widgets = {w.get("name"): w for w in tree.iter("widget")}
    bound = {}
    for w in widgets.values():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = w
    return tree, widgets, bound


@pytest.fixture(scope="module")
def module_ast(module_name):
    return ast.parse(_module_file(module_name).read_text(encoding="utf-8"), feature_version=(3, 9))


def _parameter_fields(tree, module_name):
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module_name}ParameterNode")
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in cls.decorator_list)
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def _ui_widgets_used(tree):
    """The names of ``self.ui.<name>`` in a module, and the keys of its ``pathParameters`` (widgets bound by hand)."""
    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute) and n.value.attr == "ui"
            and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pathParameters" for t in node.targets):
            used |= {k.value for k in node.value.keys}
    return used


def test_every_widget_the_code_touches_is_in_the_ui(ui, module_ast, module_name):
    _, widgets, _ = ui
    used = _ui_widgets_used(module_ast)
    assert used, "the widget uses no .ui widgets?"
    missing = sorted(used - set(widgets))
    assert not missing, f"widgets used in {module_name}.py but absent from the .ui: {missing}"
    base = _ui_widgets_used(ast.parse(WIDGET_BASE.read_text(encoding="utf-8"), feature_version=(3, 9)))
    assert {"applyButton", "cancelButton", "progressBar", "statusLabel", "deviceLabel"} <= base
    assert not sorted(base - set(widgets)), f"widgets the Widget base uses but absent from {module_name}.ui"


def test_parameter_names_match_fields_and_widget_types(ui, module_ast, module_name):
    _, _, bound = ui
    fields = _parameter_fields(module_ast, module_name)
    assert sorted(set(bound) - set(fields)) == [], "SlicerParameterName without a parameter node field"
    assert sorted(set(fields) - set(bound) - set(UNBOUND[module_name])) == [], "parameter node fields without a widget"
    assert not set(bound) & set(UNBOUND[module_name]), "a field bound by hand has a SlicerParameterName too"
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


def test_node_combo_boxes_follow_the_scene(ui, module_name):
    tree, widgets, _ = ui
    combos = {n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.find("receiver").text for c in tree.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    assert combos and combos == connected
    assert widgets[module_name].get("class") == "qMRMLWidget"


def test_module_classes_and_lazy_imports(module_ast, module_name):
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in module_ast.body if isinstance(n, ast.ClassDef)}
    assert classes[module_name] == ["ScriptedLoadableModule"]
    assert classes[f"{module_name}Widget"] == ["PipelineWidget"]  # SlicerModuleBase.widget
    assert classes[f"{module_name}Logic"] == ["PipelineLogic"]  # SlicerModuleBase.logic
    assert classes[f"{module_name}Test"] == ["ScriptedLoadableModuleTest"]
    top = [n for n in module_ast.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in top if isinstance(n, ast.ImportFrom)]
    assert not any(m.split(".")[0] in ("torch", "qt") for m in names), names
    lib_name = f"{module_name}Lib"
    lib = [m for m in names if m.startswith(lib_name) or m.startswith("CTPerfusionMappingLib")]
    assert sorted(lib) == [f"{lib_name}.options", f"{lib_name}.slicer_glue.request"], \
        "import only the torch-free option definitions and request from the core at load time"
    assert not any(isinstance(n, ast.Import) and any(a.name == "torch" for a in n.names) for n in ast.walk(module_ast))


def test_module_files_are_short(module_name):
    lines = len(_module_file(module_name).read_text(encoding="utf-8").splitlines())
    assert lines < MAX_MODULE_LINES, f"{module_name}.py has {lines} lines; move shared glue to SlicerModuleBase"


def test_choices_are_what_the_core_accepts():
    from CTPerfusionMappingLib.cli import build_parser
    from CTPerfusionMappingLib.options import SEGMENTATION_SOURCES
    from ImagingBasics.devices import DEVICE

    module_ast = ast.parse(MODULE.read_text(encoding="utf-8"), feature_version=(3, 9))
    namespace = {"SEGMENTATION_SOURCES": SEGMENTATION_SOURCES, "DEVICES": DEVICE.choices}
    assert "Choice(SEGMENTATION_SOURCE.choice_labels)" in MODULE.read_text(encoding="utf-8")
    for device in namespace["DEVICES"]:
        assert build_parser().parse_args(["run", "--ct", "x", "--out", "y", "--device", device]).device == device
    logic = next(n for n in module_ast.body if isinstance(n, ast.ClassDef) and n.name == "CTPerfusionMappingLogic")
    handled = {n.comparators[0].value for n in ast.walk(logic) if isinstance(n, ast.Compare)
               and isinstance(n.comparators[0], ast.Constant)}
    handled |= {e.value for n in ast.walk(logic) if isinstance(n, ast.Compare) and isinstance(n.comparators[0], ast.Tuple)
                for e in n.comparators[0].elts if isinstance(e, ast.Constant)}
    for choice in namespace["SEGMENTATION_SOURCES"]:
        assert choice in handled, f"segmentation source {choice!r} is offered but never handled by the Logic"
