"""The layer rules of the code, checked on every test run (DESIGN: foundation below both cores, Slicer glue above).

* the import-linter contracts in pyproject.toml (``[tool.importlinter]``): the foundation ``ImagingBasics`` below
  both cores and the shared Slicer glue ``SlicerModuleBase`` (which imports neither core), the cores independent of
  each other, no import cycles between sibling modules or packages at any depth, nothing in the foundation or the
  cores imports Slicer, Qt or CTK -- and a deliberate violation in a copy of the code is caught, so the check cannot
  pass vacuously;
* no private name (``_x``) is imported from another package (import-linter sees modules, not names).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"ImagingBasics": ROOT / "ImagingBasics", "SlicerModuleBase": ROOT / "SlicerModuleBase",
            "CTPerfusionMappingLib": ROOT / "CTPerfusionMapping" / "CTPerfusionMappingLib",
            "DoseCNNLib": ROOT / "DoseCNN" / "DoseCNNLib"}


def _lint_imports(cwd: Path, pythonpath: str) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    return subprocess.run([str(lint), "--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    paths = ":".join(str(p.parent) for p in PACKAGES.values())
    result = _lint_imports(ROOT, paths)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_foundation_module_importing_a_core_breaks_the_contracts(tmp_path):
    for name, folder in PACKAGES.items():
        shutil.copytree(folder, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "ImagingBasics" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _late():\n    from CTPerfusionMappingLib import labels  # noqa\n")
    result = _lint_imports(tmp_path, str(tmp_path))
    assert result.returncode != 0
    assert "ImagingBasics.errors -> CTPerfusionMappingLib.labels" in result.stdout


def _private_imports_across_packages():
    for top, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            module = ".".join((top,) + tuple(p for p in parts if p != "__init__"))
            package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ImportFrom):
                    continue
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and package not in (target, target.rsplit(".", 1)[0]):
                        yield f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} from {target}"


def test_no_private_name_is_imported_from_another_package():
    assert list(_private_imports_across_packages()) == []
