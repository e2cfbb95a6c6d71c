"""Network weight files (checkpoints) and bundled data files: reading, checking and writing them safely.

Both networks store a ``torch.save`` of a dict of plain Python types and tensors only, so that
``torch.load(weights_only=True)`` reads it without running any pickled code::

    {"format": <kind>, "version": <int>, "dtype": "float32" | "float16", "config": {...}, "state_dict": {...},
     "metadata": {...}, ...}

This module holds what does not depend on the kind of network: the safe reader (:func:`read_checkpoint`), the
checks of the dict (:func:`check_checkpoint`), loading tensors into a network with a one-line message when they do
not fit (:func:`load_state`), writing (:func:`state_for_saving`, :func:`plain`, :func:`write_checkpoint`), and the
lookup of bundled files (:func:`find_bundled_file`). Every problem a user can cause raises a one-line
:class:`~ImagingBasics.errors.UserError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .errors import UserError
from .files import atomic_output, write_failure


# --- bundled files ------------------------------------------------------------------------------------------------
def package_data_folders(package: str) -> List[Path]:
    """The folders of a data-only package (e.g. ``CTPerfusionMappingModels`` of a pip install); empty when absent."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def find_bundled_file(env_var: str, folder: Path, package: str, name: str) -> Optional[Path]:
    """A bundled file: the path in ``env_var`` (returned even if missing, so that loading names it), else ``name`` in
    ``folder`` (checkout, Slicer), else in the ``package`` data (pip install), else None."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    candidates = [Path(folder) / name] + [p / name for p in package_data_folders(package)]
    return next((p for p in candidates if p.is_file()), None)


# --- writing ------------------------------------------------------------------------------------------------------
def plain(value: Any, where: str = "metadata") -> Any:
    """Return ``value`` as plain Python types (numpy scalars and arrays converted); raise UserError otherwise."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v, where) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise UserError(f"{where} keys must be strings")
        return {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise UserError(f"{where} holds a {type(value).__name__}; only numbers, strings, lists and dicts can be stored")


def state_for_saving(model, half: bool) -> Dict[str, Any]:
    """CPU copies of the model's tensors; floating-point ones as float16 when ``half``."""
    state = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").clone()
        state[name] = t.half() if half and t.is_floating_point() else t
    return state


def write_checkpoint(payload: Dict[str, Any], path) -> Path:
    """``torch.save(payload)`` to a temporary name beside ``path``, renamed into place (a reader never sees half a
    file); missing folders are created. Returns the path."""
    import torch

    path = Path(path)
    with atomic_output(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch's stream writer does not pass the OS error on
            raise write_failure(path, str(exc).splitlines()[0][:200]) from None
    return path


# --- reading ------------------------------------------------------------------------------------------------------
def read_checkpoint(path, resave_hint: str = "re-save it with this software") -> Any:
    """``torch.load(weights_only=True)`` on the CPU, with one-line UserErrors for a missing path, a folder, a file that
    is not a torch archive (``torch.save`` writes zip archives since torch 1.6), a truncated archive, and an archive
    that holds Python objects besides tensors (not loaded, for safety; ``resave_hint`` says what to do)."""
    import pickle

    import torch

    path = check_weights_file(path)
    unreadable = f"{path.name} is not a readable torch weights file (corrupt or another file type)"
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path.name} holds Python objects besides weights and is not loaded for safety; "
                        f"{resave_hint}") from None
    except Exception:  # torch raises RuntimeError, EOFError, ValueError... for truncated or damaged archives
        raise UserError(unreadable) from None


def check_weights_file(path) -> Path:
    """``path`` when it names a torch weights archive (a zip archive with a ``data.pkl`` record, as ``torch.save``
    writes since torch 1.6), else a one-line UserError: missing, a folder, a truncated or foreign file. Without torch
    (the Slicer batch scripts check ``--weights`` with it before Slicer loads anything); the content is checked by
    :func:`read_checkpoint`."""
    import zipfile

    path = Path(path)
    if not path.exists():
        raise UserError(f"network weights not found: {path}; check the path or download the model weights")
    if not path.is_file():
        raise UserError(f"network weights path is not a file: {path}")
    unreadable = f"{path.name} is not a readable torch weights file (corrupt or another file type)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UserError(unreadable) from None
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        raise UserError(unreadable)
    return path


def check_checkpoint(payload: Any, name: str, fmt: str, version: int, kind: str, required: Sequence[str] = (),
                     other_kinds: Optional[Mapping[str, str]] = None) -> None:
    """Raise a one-line UserError unless ``payload`` is a ``fmt`` weights dict of ``version`` whose ``required``
    entries are dicts and whose state dict holds tensors.

    ``kind`` names the file type in messages (e.g. "CTPerfusionMapping weights"); ``other_kinds`` maps the format of
    another network's weights to the message for it (a dose CNN given perfusion weights, say).
    """
    if not isinstance(payload, dict):
        raise UserError(f"{name} is not a {kind} file (it holds a {type(payload).__name__})")
    found = payload.get("format")
    if found is None:
        if payload and all(hasattr(v, "shape") for v in payload.values()):
            raise UserError(f"{name} is not a {kind} file: it is a bare state dict without the network "
                            "configuration; re-save it with its configuration")
        raise UserError(f"{name} is not a {kind} file (no 'format' entry)")
    if other_kinds and found in other_kinds:
        raise UserError(f"{name} {other_kinds[found]}")
    if found != fmt:
        raise UserError(f"{name} is not a {kind} file (format {found!r}, expected {fmt!r})")
    if payload.get("version") != version:
        raise UserError(f"{name} is {kind}-file version {payload.get('version')!r}; this software reads version "
                        f"{version}")
    for key in ("config", "state_dict", *required):
        if not isinstance(payload.get(key), dict):
            raise UserError(f"{name} is incomplete: its {key!r} entry is missing")
    if not all(hasattr(v, "is_floating_point") for v in payload["state_dict"].values()):
        raise UserError(f"{name} is damaged: its state_dict holds values that are not tensors")


def state_dict_mismatch(expected: Dict[str, Any], found: Dict[str, Any]) -> Optional[str]:
    """Describe up to two keys/shapes that differ between the model's and the file's state dicts, or None."""
    problems = [f"missing {k}" for k in expected if k not in found]
    problems += [f"unexpected {k}" for k in found if k not in expected]
    problems += [f"{k} is {tuple(found[k].shape)} in the file but {tuple(v.shape)} in the network"
                 for k, v in expected.items() if k in found and tuple(found[k].shape) != tuple(v.shape)]
    if not problems:
        return None
    more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
    return "; ".join(problems[:2]) + more


def load_state(model, state_dict: Dict[str, Any], name: str):
    """Load ``state_dict`` (float16 tensors cast back to float32) into ``model``; a one-line UserError when the
    tensors do not fit the architecture. Returns the model."""
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}
    problem = state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise UserError(f"{name}: the weights do not match the architecture in their own configuration: {problem}")
    model.load_state_dict(state, strict=True)
    return model
