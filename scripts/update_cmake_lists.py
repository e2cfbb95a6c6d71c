"""Rewrite the file lists of the CMakeLists.txt files from the files on disk: MODULE_PYTHON_SCRIPTS and
MODULE_PYTHON_RESOURCES of each module, PACKAGE_PYTHON_SCRIPTS of each shared package (ImagingBasics,
SlicerModuleBase).

Run after adding or removing a file in CTPerfusionMappingLib/, DoseCNNLib/, a shared package or a module's
Resources/ folder (Testing/test_slicer_contract.py fails until the lists match).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"CTPerfusionMapping": "CTPerfusionMappingLib", "DoseCNN": "DoseCNNLib"}
#: the packages shared by both modules: top-level folders, each the package itself
SHARED_PACKAGES = ("ImagingBasics", "SlicerModuleBase")


def main() -> None:
    for module, lib in MODULES.items():
        cmake = ROOT / module / "CMakeLists.txt"
        files = sorted(p.relative_to(ROOT / module).as_posix() for p in (ROOT / module / lib).rglob("*.py"))
        body = "\n".join(["  ${MODULE_NAME}.py"] + [f"  {f}" for f in files])
        text = re.sub(r"set\(MODULE_PYTHON_SCRIPTS\n.*?\n  \)", f"set(MODULE_PYTHON_SCRIPTS\n{body}\n  )",
                      cmake.read_text(), flags=re.S)
        resources = resource_files(ROOT / module)
        body = "".join(f"  {f}\n" for f in resources)
        text = re.sub(r"set\(MODULE_PYTHON_RESOURCES\n.*?  \)", f"set(MODULE_PYTHON_RESOURCES\n{body}  )", text, flags=re.S)
        cmake.write_text(text)
        print(f"{cmake.relative_to(ROOT)}: {len(files)} library files, {len(resources)} resources")
    for package in SHARED_PACKAGES:
        cmake = ROOT / package / "CMakeLists.txt"
        files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py"))
        body = "".join(f"  {f}\n" for f in files)
        text = re.sub(r"set\(PACKAGE_PYTHON_SCRIPTS\n.*?  \)", f"set(PACKAGE_PYTHON_SCRIPTS\n{body}  )",
                      cmake.read_text(), flags=re.S)
        cmake.write_text(text)
        print(f"{cmake.relative_to(ROOT)}: {len(files)} package files")


def resource_files(module_dir: Path) -> list:
    """Every file under the module's Resources/ folder (relative, sorted), caches left out."""
    folder = module_dir / "Resources"
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(module_dir).as_posix() for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


if __name__ == "__main__":
    main()
