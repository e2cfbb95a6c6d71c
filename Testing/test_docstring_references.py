"""Cross-references in docstrings (``:mod:`.x```, ``:func:`~pkg.mod.f```, ...) name things that exist.

Code moves between modules and packages; a reference to the old place misleads the reader. A relative reference
(``.name``) is looked up from the module's package and each of its parents; a bare name is also looked up among the
module's classes (methods, attributes, dataclass fields) and the builtins.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"ImagingBasics": ROOT / "ImagingBasics",
            "CTPerfusionMappingLib": ROOT / "CTPerfusionMapping" / "CTPerfusionMappingLib",
            "DoseCNNLib": ROOT / "DoseCNN" / "DoseCNNLib"}
REFERENCE = re.compile(r":(mod|func|class|data|meth|attr|obj):`~?([\w.]+)`")


def _exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def _class_member(module: str, ref: str) -> bool:
    if "." not in ref and hasattr(builtins, ref):
        return True
    mod = importlib.import_module(module)
    parts = ref.split(".")
    if len(parts) == 2:
        classes = [getattr(mod, parts[0])] if isinstance(getattr(mod, parts[0], None), type) else []
    else:
        classes = [v for v in vars(mod).values() if isinstance(v, type)]
    return any(hasattr(c, parts[-1]) or (dataclasses.is_dataclass(c) and parts[-1] in {f.name for f in dataclasses.fields(c)})
               for c in classes) if len(parts) <= 2 else False


def _candidates(module: str, package: str, ref: str):
    if ref.startswith("."):
        parts = package.split(".")
        yield from (".".join(parts[:i]) + ref for i in range(len(parts), 0, -1))
        yield module + ref
    else:
        yield ref
        yield f"{module}.{ref}"
        yield f"{package}.{ref}"


def _unresolved():
    for top, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            module = ".".join((top,) + tuple(p for p in parts if p != "__init__"))
            package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
            text = path.read_text(encoding="utf-8")
            for match in REFERENCE.finditer(text):
                ref = match.group(2)
                if any(_exists(c) for c in _candidates(module, package, ref)) or _class_member(module, ref.lstrip(".")):
                    continue
                line = text[: match.start()].count("\n") + 1
                yield f"{path.relative_to(ROOT)}:{line}: {match.group(0)}"


def test_every_docstring_reference_resolves():
    assert list(_unresolved()) == []
