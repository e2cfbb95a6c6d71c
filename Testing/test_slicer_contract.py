"""Static contracts of the Slicer extension that can be checked without Slicer.

* each module's CMakeLists.txt lists every Python file of its Lib package and every file of its Resources folder
  (else Slicer does not install it), each shared package's CMakeLists.txt every file of the package, both modules
  add the shared packages, and every listed file exists (a missing one is a configure error);
* nothing in the Lib packages or the foundation imports Slicer, Qt, CTK or (at import time) torch;
* everything Slicer imports parses as Python 3.9 (Slicer 5.8);
* pyproject.toml packages every Lib sub-package and every shared package.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"CTPerfusionMapping": "CTPerfusionMappingLib", "DoseCNN": "DoseCNNLib"}
SHARED_PACKAGES = ("ImagingBasics",)
SLICER_ONLY = {"slicer", "qt", "ctk", "vtk.qt", "SimpleITK.sitkUtils", "sitkUtils"}


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
        yield from sorted((ROOT / package).rglob("*.py"))


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
            assert name.split(".")[0] != "torch", f"{path.name} imports torch at import time"
    for node in ast.walk(tree):  # no Slicer import anywhere, not even lazily
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] in {"slicer", "qt", "ctk"} for a in node.names)


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
