"""Static contracts of the Slicer extension that can be checked without Slicer.

* each module's CMakeLists.txt lists every Python file of its Lib package and every file of its Resources folder
  (else Slicer does not install it), each shared package's CMakeLists.txt every file of the package, both modules
  add the shared packages, and every listed file exists (a missing one is a configure error);
* nothing in the Lib packages or the foundation imports Slicer, Qt or CTK (the shared Slicer glue SlicerModuleBase
  does, and nothing else: it parses as Python 3.9 and imports torch nowhere);
* torch: what the Slicer modules and their batch scripts import at load time, and the two command lines (``--help``,
  ``info``), work where torch cannot be imported; only the modules of :data:`TORCH_AT_IMPORT` import it at module level;
* everything Slicer imports parses as Python 3.9 (Slicer 5.8);
* pyproject.toml packages every Lib sub-package and every shared package.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"CTPerfusionMapping": "CTPerfusionMappingLib", "DoseCNN": "DoseCNNLib"}
#: the packages both modules share (top-level folders, installed by whichever module comes first)
SHARED_PACKAGES = ("ImagingBasics", "SlicerModuleBase")
#: the shared packages that are Slicer glue (they import slicer, qt, vtk; the rules of the Lib packages do not apply)
SLICER_GLUE = ("SlicerModuleBase",)
SLICER_ONLY = {"slicer", "qt", "ctk", "vtk.qt", "SimpleITK.sitkUtils", "sitkUtils"}

#: The only modules that import torch at module level: the two network definitions (their nn.Module classes are
#: module-level classes). Every other module imports torch inside the functions that compute with it.
TORCH_AT_IMPORT = {"CTPerfusionMapping/CTPerfusionMappingLib/network.py", "DoseCNN/DoseCNNLib/cnn/network.py"}

#: What CTPerfusionMapping.py, DoseCNN.py and the batch scripts (*/Resources/Scripts) import when Slicer loads them,
#: and the command lines (a fast ``--help``; ``ctpm info`` anywhere): all of it must load without torch. The test adds
#: what the module files and the batch scripts import today (:func:`_slicer_side_modules`).
TORCH_FREE = (
    "CTPerfusionMappingLib.slicer_glue.batch", "CTPerfusionMappingLib.slicer_glue.commands",
    "CTPerfusionMappingLib.slicer_glue.segments", "DoseCNNLib.slicer_glue.commands", "DoseCNNLib.slicer_glue.batch",
    "DoseCNNLib.slicer_glue.results", "ImagingBasics.slicer_nodes", "ImagingBasics.process", "ImagingBasics.devices",
    "CTPerfusionMappingLib.cli", "DoseCNNLib.cli", "CTPerfusionMappingLib.options", "DoseCNNLib.options",
    "CTPerfusionMappingLib.slicer_glue.request", "DoseCNNLib.slicer_glue.request", "ImagingBasics.options",
    "SlicerModuleBase.batch", "SlicerModuleBase.jobs",
)

#: Prefix of a Python program that cannot import torch. (A finder that refuses it, not ``sys.modules["torch"] = None``:
#: scipy looks torch up in sys.modules and fails on a None there.)
NO_TORCH = '''
import importlib.abc, sys

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r} (torch is blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
'''


def _cmake_list(text: str, name: str) -> list:
    m = re.search(rf"set\({name}\s+(.*?)\)", text, re.S)
    assert m, f"{name} not found"
    return [w for w in m.group(1).split() if not w.startswith("#")]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_cmake_lists_every_script(module):
    folder = ROOT / module
    text = (folder / "CMakeLists.txt").read_text()
    scripts = [s.replace("${MODULE_NAME}", module) for s in _cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    on_disk = sorted(p.relative_to(folder).as_posix() for p in (folder / MODULES[module]).rglob("*.py"))
    listed_lib = sorted(s for s in scripts if s.startswith(MODULES[module] + "/"))
    assert listed_lib == on_disk
    resource_dir = folder / "Resources"
    on_disk_resources = sorted(p.relative_to(folder).as_posix() for p in resource_dir.rglob("*")
                               if p.is_file() and "__pycache__" not in p.parts) if resource_dir.is_dir() else []
    assert sorted(resources) == on_disk_resources, "run scripts/update_cmake_lists.py"
    assert f"{module}.py" in scripts
    for rel in scripts + resources:
        assert (folder / rel).is_file(), f"{module}/CMakeLists.txt lists a missing file: {rel}"
    shared = re.search(r"foreach\(shared_package\s+([^)]*)\)", text)
    assert shared and sorted(shared.group(1).split()) == sorted(SHARED_PACKAGES), "the module must add every shared package"
    assert "add_subdirectory(${CMAKE_CURRENT_SOURCE_DIR}/../${shared_package}" in text


@pytest.mark.parametrize("package", SHARED_PACKAGES)
def test_shared_package_cmake_lists_every_file(package):
    text = (ROOT / package / "CMakeLists.txt").read_text()
    listed = _cmake_list(text, "PACKAGE_PYTHON_SCRIPTS")
    on_disk = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py"))
    assert sorted(listed) == on_disk, "run scripts/update_cmake_lists.py"
    assert f"TARGET_NAME {package}" in text and "NO_INSTALL_SUBDIR" in text


def test_top_level_cmake_adds_both_modules():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert "find_package(Slicer REQUIRED)" in text and "Slicer_EXTENSION_CPACK" in text
    assert re.findall(r"^add_subdirectory\((\w+)\)", text, re.M) == ["CTPerfusionMapping", "DoseCNN"]
    icon = re.search(r'EXTENSION_ICONURL "[^"]*/(Resources/[^"]+)"', text).group(1)
    assert (ROOT / icon).is_file()


def _lib_files():
    for module, lib in MODULES.items():
        yield from sorted((ROOT / module / lib).rglob("*.py"))
    for package in SHARED_PACKAGES:
        if package not in SLICER_GLUE:
            yield from sorted((ROOT / package).rglob("*.py"))


def _glue_files():
    for package in SLICER_GLUE:
        yield from sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", list(_glue_files()), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_slicer_glue_is_py39_without_torch(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert "torch" not in imported, f"{path.name} imports torch: the Slicer process never does"


@pytest.mark.parametrize("path", list(_lib_files()), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_lib_is_pure_python_and_py39(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path), feature_version=(3, 9))
    for node in tree.body:  # module-level imports only: torch may be imported inside functions
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in {"slicer", "qt", "ctk", "sitkUtils"}, f"{path.name} imports {name}"
            assert name not in SLICER_ONLY
    for node in ast.walk(tree):  # no Slicer import anywhere, not even lazily
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] in {"slicer", "qt", "ctk"} for a in node.names)


def _import_statements_at_import_time(tree: ast.Module):
    """The import statements a module runs when it is imported: all but those in function bodies and in
    ``if TYPE_CHECKING:`` blocks (class bodies and module-level if/try blocks run at import)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        pending.extend(ast.iter_child_nodes(node))


def _imports_at_import_time(tree: ast.Module):
    """Top-level names of the (absolute) modules a module imports when it is imported."""
    for node in _import_statements_at_import_time(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif node.module and node.level == 0:
            yield node.module.split(".")[0]


PACKAGE_DIRS = {**{lib: ROOT / module / lib for module, lib in MODULES.items()},
                **{p: ROOT / p for p in SHARED_PACKAGES if p not in SLICER_GLUE}}  # the glue needs Slicer to import


def _project_modules(node: ast.AST) -> list:
    """Dotted names of the Lib and foundation modules an import statement loads (``from P import m``: P and P.m)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
        return []
    found = []
    for name in names:
        root, *rest = name.split(".")
        path = PACKAGE_DIRS[root].joinpath(*rest) if root in PACKAGE_DIRS else None
        if path is not None and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
            found.append(name)
    return found


def _slicer_side_modules() -> list:
    """The Lib and foundation modules that Slicer imports when it loads CTPerfusionMapping.py and DoseCNN.py (their
    import-time imports) and when it runs a batch script (all of the script's imports)."""
    found = set()
    for module in MODULES:
        tree = ast.parse((ROOT / module / f"{module}.py").read_text(encoding="utf-8"))
        for node in _import_statements_at_import_time(tree):
            found.update(_project_modules(node))
    for script in sorted(ROOT.glob("*/Resources/Scripts/*.py")):
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            found.update(_project_modules(node))
    return sorted(found)


@pytest.mark.parametrize("path", list(_lib_files()), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_only_the_network_modules_import_torch_at_import_time(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    imports_torch = "torch" in set(_imports_at_import_time(tree))
    allowed = path.relative_to(ROOT).as_posix() in TORCH_AT_IMPORT
    assert imports_torch == allowed, (f"{path.name} imports torch at module level; import it inside the functions that "
                                      "need it, or add the module to TORCH_AT_IMPORT with the reason" if imports_torch
                                      else f"{path.name} no longer imports torch at module level: drop it from TORCH_AT_IMPORT")


def _run_without_torch(program: str) -> dict:
    """Run ``program`` (which prints one JSON line last) in a fresh Python that cannot import torch."""
    done = subprocess.run([sys.executable, "-c", NO_TORCH + program], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_slicer_side_and_command_line_modules_import_without_torch():
    names = sorted(set(TORCH_FREE) | set(_slicer_side_modules()))
    report = _run_without_torch(f"""
import importlib, json, traceback
failed = {{}}
for name in {names!r}:
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-4)
print(json.dumps({{"failed": failed, "torch": "torch" in sys.modules}}))
""")
    assert report["failed"] == {}, "\n".join(report["failed"].values())
    assert not report["torch"]


def test_command_line_help_and_info_without_torch(tmp_path):
    import numpy as np

    from ImagingBasics.imageio import write_volume
    from ImagingBasics.volume import Volume

    image = tmp_path / "ct.nrrd"
    write_volume(Volume(np.zeros((2, 3, 4), np.int16), (1.0, 1.0, 2.0)), image)
    report = _run_without_torch(f"""
import contextlib, io, json
import CTPerfusionMappingLib.cli, DoseCNNLib.cli
codes = {{}}
for cli in (CTPerfusionMappingLib.cli, DoseCNNLib.cli):
    for argv in (["--help"], ["info", {str(image)!r}]):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code
        codes[cli.__name__ + " " + argv[0]] = code
print(json.dumps({{"codes": codes, "torch": "torch" in sys.modules}}))
""")
    assert set(report["codes"].values()) == {0}, report["codes"]
    assert not report["torch"]


def test_pyproject_packages_every_lib_subpackage():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(cfg["tool"]["setuptools"]["packages"])
    for module, lib in MODULES.items():
        for init in (ROOT / module / lib).rglob("__init__.py"):
            dotted = ".".join(init.parent.relative_to(ROOT / module).parts)
            assert dotted in packages, f"{dotted} missing from pyproject packages"
    for package in SHARED_PACKAGES:
        for init in (ROOT / package).rglob("__init__.py"):
            dotted = ".".join(init.parent.relative_to(ROOT).parts)
            assert dotted in packages, f"{dotted} missing from pyproject packages"
    assert cfg["project"]["requires-python"] == ">=3.9"
    assert "torch>=2.1" in cfg["project"]["dependencies"]
    assert cfg["project"]["scripts"] == {"ctpm": "CTPerfusionMappingLib.cli:main", "dosecnn": "DoseCNNLib.cli:main"}
