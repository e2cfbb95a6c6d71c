"""Rewrite MODULE_PYTHON_SCRIPTS in each module's CMakeLists.txt from the Python files on disk.

Run after adding or removing a file in CTPerfusionMappingLib/ or DoseCNNLib/ (Testing/test_slicer_contract.py
fails until the list matches).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"CTPerfusionMapping": "CTPerfusionMappingLib", "DoseCNN": "DoseCNNLib"}


def main() -> None:
    for module, lib in MODULES.items():
        cmake = ROOT / module / "CMakeLists.txt"
        files = sorted(p.relative_to(ROOT / module).as_posix() for p in (ROOT / module / lib).rglob("*.py"))
        body = "\n".join(["  ${MODULE_NAME}.py"] + [f"  {f}" for f in files])
        text = re.sub(r"set\(MODULE_PYTHON_SCRIPTS\n.*?\n  \)", f"set(MODULE_PYTHON_SCRIPTS\n{body}\n  )",
                      cmake.read_text(), flags=re.S)
        cmake.write_text(text)
        print(f"{cmake.relative_to(ROOT)}: {len(files)} library files")


if __name__ == "__main__":
    main()
