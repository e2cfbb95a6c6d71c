"""Writing output files safely: never a half-written output.

Every output of the project is written through :func:`atomic_output`: the content goes to a hidden temporary
file beside the destination, which is renamed into place only when writing succeeded (:func:`os.replace` is
atomic on one file system), and removed when it failed.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Union

import numpy as np

from .errors import UserError

PathLike = Union[str, "os.PathLike[str]"]

#: a failed write into a folder with less free space than this is reported as a full disk (writers such as ITK's or
#: torch's do not pass the operating system's "no space left on device" on)
DISK_FULL_BYTES = 16 * 1024 * 1024


def file_extension(path: PathLike) -> str:
    """The lower-case extension, with ``.nii.gz`` treated as one extension."""
    name = Path(os.fspath(path)).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


@contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension last, e.g. ``.ct.tmp-1a2b3c4d.nii.gz``, so writers
    that choose the format by extension still work); rename it to ``path`` on success, remove it on failure.

    Missing parent folders are created. Operating-system errors (no permission, disk full) become a one-line
    :class:`UserError` naming ``path``.
    """
    p = Path(os.fspath(path)).expanduser()
    ext = file_extension(p)
    stem = p.name[: len(p.name) - len(ext)] if ext else p.name
    tmp = p.parent / f".{stem}.tmp-{secrets.token_hex(4)}{ext}"
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, p)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise write_failure(p, "no space left on the device") from None
        raise UserError(f"could not write {p}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path`` (``.<name>.partial-XXXXXXXX``, permissions as the umask gives a
    new folder); on success ``path`` is replaced whole by it (an existing folder of that name is removed first), on
    failure it is removed: a stopped writer never leaves half a folder at ``path``."""
    import tempfile

    p = Path(os.fspath(path)).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.partial-", dir=p.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        if p.exists():
            shutil.rmtree(p)
        os.replace(tmp, p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_failure(path: PathLike, detail: str) -> UserError:
    """The one-line error for a failed write of ``path``: "no space left on the device" when its folder is (almost)
    full, else ``detail`` (call it while the partial file still exists, so that the measurement sees the full disk)."""
    folder = Path(os.fspath(path)).expanduser().parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < DISK_FULL_BYTES:
        return UserError(f"could not write {path}: no space left on the device ({free / 1e6:.1f} MB free in {folder}); "
                         "free some space or choose another output folder")
    return UserError(f"could not write {path}: {detail}")


def write_csv(rows: Sequence[Dict[str, Any]], path: PathLike) -> None:
    """Rows of dicts as CSV (columns in order of first appearance; None as an empty cell), written atomically."""
    keys: List[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})


def save_figure(fig, path: PathLike, **savefig_kwargs) -> None:
    """Save a matplotlib figure atomically (PNG by the extension) and close it, also when saving fails."""
    import matplotlib.pyplot as plt

    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, **savefig_kwargs)
    finally:
        plt.close(fig)


def write_json(data: Dict[str, Any], path: Path) -> None:
    """JSON (NaN written as null) to a temporary name, then renamed."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(plain_json(data), f, indent=2, allow_nan=False)


def plain_json(x: Any) -> Any:
    """``x`` with numpy numbers as Python numbers, tuples as lists, keys as strings and NaN/inf as None."""
    if isinstance(x, dict):
        return {str(k): plain_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain_json(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
