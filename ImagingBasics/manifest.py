"""Case manifests: CSV files with one case per row (``id``, ``ct`` and optional ``spect, lungs, lobes, group, site``).

Paths are relative to the manifest's folder (absolute paths are kept). Used by ``ctpm batch`` and ``ctpm train``.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .errors import UserError

PATH_COLUMNS = ("ct", "spect", "lungs", "lobes")


def read_rows(path: Path, required: Sequence[str], path_columns: Sequence[str] = PATH_COLUMNS,
              needed: Optional[str] = None) -> List[Dict[str, str]]:
    """Rows of a CSV file (keys and values stripped), the ``required`` columns checked (``needed`` describes them in
    the error; default: their names) and the ``path_columns`` made absolute relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start} cannot be read): save the CSV as UTF-8") from None
    if "\0" in text:
        raise UserError(f"{path} is not a CSV text file (it holds binary data)")
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in fields]
        if missing:
            raise UserError(f"{path} lacks the column(s) {', '.join(missing)} (needed: {needed or ', '.join(required)})")
        rows = []
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            for key in path_columns:
                if row.get(key) and not os.path.isabs(row[key]):
                    row[key] = str((path.parent / row[key]).resolve())
            rows.append(row)
    return rows


def read_manifest(path: Path, required: Sequence[str] = ("id", "ct"),
                  path_columns: Sequence[str] = PATH_COLUMNS) -> List[Dict[str, str]]:
    """Rows of a manifest with their paths made absolute; every id unique and non-empty."""
    rows = read_rows(path, required, path_columns)
    ids = [r.get("id", "") for r in rows]
    if not rows:
        raise UserError(f"{path} has no cases")
    if len(set(ids)) != len(ids) or any(not i for i in ids):
        raise UserError(f"{path}: every case needs a unique, non-empty id")
    for case_id in ids:
        check_case_id(case_id, path)
    return rows


#: a case id is a plain folder name: letters, digits, '.', '_' and '-', not starting with '.'
CASE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def check_case_id(case_id: str, where) -> str:
    """``case_id`` unchanged when it is a plain folder name (:data:`CASE_ID`); else a UserError: ids become folder
    names under --out, and ``../other/case000`` would write outside it."""
    if not CASE_ID.fullmatch(case_id):
        raise UserError(f"{where}: case id {case_id!r} is not a plain name (letters, digits, '.', '_', '-', not starting "
                        "with '.'); ids become folder names under --out")
    return case_id
