"""A run's output folder (``--out``): checked before any work, filled all at once, never touching an input.

:func:`output_folder` is the one way the pipeline commands write their results:

1. **Checked up front** (before a model is loaded or a voxel computed): ``--out`` must be a folder, not a file; it
   must not be one of the inputs (a DICOM series folder, say) nor lie inside an input folder (nothing is written
   into an input folder, not even for a moment: a DICOM reader would take the results for part of the series on
   the next run); none of the files the run writes may be one of its
   inputs (``ctpm run --out`` set to the folder holding the user's ``lobes.nrrd`` would otherwise replace it); and the
   folder must be writable, which is tried at once rather than found out after the pipeline ran (a folder created
   for that test is removed again: a run refused later, e.g. for a missing input, leaves no empty ``--out``).
2. **Filled in a staging folder**: the run writes into a hidden ``.staging-XXXXXXXX`` folder inside ``--out``.
3. **Swapped in at the end**, only when the run succeeded: the completion record of a previous run (e.g.
   ``metrics.json``) is removed first, then the previous run's outputs that this run did not write (a rerun without
   ``--spect`` leaves no ``spect_on_ct.nrrd`` behind), then the new files are moved in with the completion record
   last. A reader (``ctpm batch`` skipping finished cases) therefore sees either the old complete run, or the new
   complete run, or no completion record.
4. **Cleaned on every exit path**: the staging folder (and ``--out`` itself when the run created it and it stayed
   empty) is removed when the run fails or is interrupted (Ctrl-C, and
   SIGTERM through :func:`~ImagingBasics.cli_common.run_main`); staging folders left by a killed run are removed by
   the next run into the same folder.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

from .errors import UserError

STAGING_PREFIX = ".staging-"


def _resolved(path) -> Path:
    return Path(os.fspath(path)).expanduser().resolve()


def _is_output_name(name: str, names: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in names)


def check_output_folder(out, inputs: Sequence = (), names: Sequence[str] = ()) -> Path:
    """The checks of step 1 (module docstring); returns the resolved folder. ``inputs``: the paths the run reads
    (None entries are skipped); ``names``: the file names (or ``fnmatch`` patterns) it may write into ``out``."""
    folder = _resolved(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the results")
    for given in (p for p in inputs if p):
        path = _resolved(given)
        if path == folder:
            raise UserError(f"--out {out} is one of the inputs; give another folder for the results")
        if path.is_dir() and path in folder.parents:
            raise UserError(f"--out {out} lies inside the input folder {given}; give a folder outside it (inputs are "
                            "never changed)")
        if path.parent == folder and _is_output_name(path.name, names):
            raise UserError(f"--out {out} would overwrite the input {given} (the run writes a file of that name "
                            "there); give another folder for the results")
    _try_writing(folder, out)
    return folder


def _try_writing(folder: Path, shown) -> None:
    """Create ``folder`` and a file in it, both removed at once (a refused run leaves no empty ``--out`` behind): a
    one-line UserError when that fails."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    probe = folder / f"{STAGING_PREFIX}probe-{secrets.token_hex(4)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as exc:
        raise UserError(f"cannot write into --out {shown}: {exc.strerror or exc}") from None
    finally:
        if probe.exists():
            probe.unlink()
        _remove_empty(created)


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders of ``folders`` (deepest first) that are empty: those a failed or refused run created."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def _remove_stale_staging(folder: Path) -> None:
    for old in folder.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def _commit(staging: Path, folder: Path, names: Sequence[str], completion: Optional[str]) -> None:
    """Step 3 of the module docstring."""
    new = sorted(p.name for p in staging.iterdir())
    if completion and (folder / completion).exists():
        (folder / completion).unlink()
    for old in folder.iterdir():
        if old.is_file() and _is_output_name(old.name, names) and old.name not in new:
            old.unlink()
    for name in sorted(new, key=lambda n: n == completion):  # the completion record last
        target = folder / name
        if target.is_dir() and not (staging / name).is_dir():
            raise UserError(f"cannot replace the folder {target} by a file; move it away and run again")
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)


@contextmanager
def output_folder(out, inputs: Sequence = (), names: Sequence[str] = (),
                  completion: Optional[str] = None) -> Iterator[Path]:
    """Check ``out`` (:func:`check_output_folder`), yield a staging folder to write every result into, and swap the
    results in when the block succeeds (``completion``: the file name written last, whose presence marks a finished
    run); the staging folder is removed whatever happens."""
    folder = check_output_folder(out, inputs, names)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(folder)
    staging = folder / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        yield staging
        _commit(staging, folder, names, completion)
        created = []
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
