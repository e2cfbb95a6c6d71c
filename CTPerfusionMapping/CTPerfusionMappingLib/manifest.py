"""Case manifests: CSV files with one case per row (``id``, ``ct`` and optional ``spect, lungs, lobes, group, site``).

Paths are relative to the manifest's folder (absolute paths are kept). Used by ``ctpm batch`` and ``ctpm train``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Sequence

from .errors import UserError

PATH_COLUMNS = ("ct", "spect", "lungs", "lobes")


def read_manifest(path: Path, required: Sequence[str] = ("id", "ct")) -> List[Dict[str, str]]:
    """Rows of a manifest with their paths made absolute; every id unique and non-empty."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in fields]
        if missing:
            raise UserError(f"{path} lacks the column(s) {', '.join(missing)} (needed: {', '.join(required)})")
        rows = []
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            for key in PATH_COLUMNS:
                if row.get(key) and not os.path.isabs(row[key]):
                    row[key] = str((path.parent / row[key]).resolve())
            rows.append(row)
    ids = [r.get("id", "") for r in rows]
    if not rows:
        raise UserError(f"{path} has no cases")
    if len(set(ids)) != len(ids) or any(not i for i in ids):
        raise UserError(f"{path}: every case needs a unique, non-empty id")
    return rows
