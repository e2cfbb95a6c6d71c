"""Quality warnings: what is usable but less reliable, said in a form both people and programs can read.

A :class:`QualityWarning` has a stable ``code`` (for programs, tables and tests), a one-line ``message`` (for people:
the command line prints it, the Slicer module shows it) and the ``values`` behind it (numbers with their units in the
key names, e.g. ``{"area_cm2": 55.1}``). Outputs store them as dicts (:meth:`QualityWarning.to_dict`) in
``metrics.json`` / ``run.json``. Where a result would be wrong rather than uncertain, the checks raise a
:class:`~ImagingBasics.errors.UserError` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List


@dataclass(frozen=True)
class QualityWarning:
    """One quality warning: ``code`` (snake_case, stable), ``message`` (one line) and the ``values`` behind it."""

    code: str
    message: str
    values: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.code or not self.code.replace("_", "").isalnum() or self.code != self.code.lower():
            raise ValueError(f"a warning code is snake_case, got {self.code!r}")
        if "\n" in self.message:
            raise ValueError("a warning message is one line")

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> Dict[str, Any]:
        """``{"code", "message", "values"}`` for JSON outputs."""
        return {"code": self.code, "message": self.message, "values": dict(self.values)}


def warning_dicts(warnings: Iterable[QualityWarning]) -> List[Dict[str, Any]]:
    """The warnings as dicts, each (code, message) once, in order."""
    seen, out = set(), []
    for w in warnings:
        if (w.code, w.message) not in seen:
            seen.add((w.code, w.message))
            out.append(w.to_dict())
    return out


def read_warnings(path) -> List[Dict[str, str]]:
    """The ``"warnings"`` of a results file (``metrics.json``, ``run.json``, ``integrate.json``) as ``{"code",
    "message"}`` dicts; [] when the file or the list is absent. Strings (files of earlier versions) get the code
    ``"warning"``."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return []
    warnings = json.loads(path.read_text(encoding="utf-8")).get("warnings") or []
    return [{"code": str(w.get("code", "warning")), "message": str(w["message"])} if isinstance(w, dict)
            else {"code": "warning", "message": str(w)} for w in warnings]


def read_warning_messages(path) -> List[str]:
    """The messages of :func:`read_warnings`."""
    return [w["message"] for w in read_warnings(path)]


def status_text(messages: List[str]) -> str:
    """What a status line appends for the warnings of a run: "" or "; 2 warnings: <the first> (all in the log)"."""
    if not messages:
        return ""
    more = " (all in the log)" if len(messages) > 1 else ""
    return f"; {len(messages)} warning{'s' if len(messages) > 1 else ''}: {messages[0]}{more}"
