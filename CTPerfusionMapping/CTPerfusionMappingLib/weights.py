"""Network weight files: the configuration, the tensors and free-form metadata in one torch file.

File layout (``torch.save`` of a dict holding plain Python types and tensors only, so that
``torch.load(weights_only=True)`` reads it without running any pickled code)::

    {"format": "ctpm-weights", "version": 1, "dtype": "float32" | "float16",
     "config": NetworkConfig.to_dict(), "state_dict": {name: tensor}, "metadata": {...}}

With ``half=True`` the floating-point tensors are stored as float16 (half the size); :func:`load_weights` casts them
back to float32. Integer tensors (BatchNorm's ``num_batches_tracked``) are stored as they are.
Files are written to a temporary name in the target folder and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import UserError
from .files import atomic_output
from .network import NetworkConfig, build_model

FORMAT = "ctpm-weights"
VERSION = 1

#: File name of the bundled demonstration model (CTPerfusionMapping/Resources/Models/, with MODEL_CARD.md).
BUNDLED_NAME = "ctpm_arnn.pt"
#: The package name under which a (non-editable) pip install places Resources/Models (see pyproject.toml).
MODELS_PACKAGE = "CTPerfusionMappingModels"


def bundled_weights() -> Optional[Path]:
    """The bundled demonstration weights, or None when this installation has none.

    Looked up in order: the environment variable ``CTPM_WEIGHTS`` (a weights file chosen by the user, returned even
    if missing so that loading it reports the path); ``Resources/Models`` beside ``CTPerfusionMappingLib`` (a source
    checkout, an editable install, or the module installed in Slicer); the ``CTPerfusionMappingModels`` package data
    of a pip install.
    """
    return find_bundled_file("CTPM_WEIGHTS", Path(__file__).resolve().parent.parent / "Resources" / "Models",
                             MODELS_PACKAGE, BUNDLED_NAME)


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
    import os

    env = os.environ.get(env_var)
    if env:
        return Path(env)
    candidates = [Path(folder) / name] + [p / name for p in package_data_folders(package)]
    return next((p for p in candidates if p.is_file()), None)


def _plain(value: Any, where: str = "metadata") -> Any:
    """Return ``value`` as plain Python types (numpy scalars and arrays converted); raise UserError otherwise."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise UserError(f"{where} keys must be strings")
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise UserError(f"{where} holds a {type(value).__name__}; only numbers, strings, lists and dicts can be stored")


def _state_for_saving(model, half: bool) -> Dict[str, Any]:
    """CPU copies of the model's tensors; floating-point ones as float16 when ``half``."""
    state = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").clone()
        state[name] = t.half() if half and t.is_floating_point() else t
    return state


def save_weights(model, config: NetworkConfig, path, metadata: Optional[dict] = None, half: bool = False) -> Path:
    """Write ``model``'s weights with ``config`` and ``metadata`` to ``path`` (atomically); return the path.

    ``metadata`` (e.g. training data, epochs, metrics) must hold only numbers, strings, lists and dicts.
    """
    import torch

    if not isinstance(config, NetworkConfig):
        raise TypeError(f"save_weights needs a NetworkConfig, got {type(config).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": "float16" if half else "float32",
        "config": config.to_dict(),
        "state_dict": _state_for_saving(model, half),
        "metadata": _plain(dict(metadata or {})),
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def _read_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on CPU with one-line UserErrors for missing, unsafe or unreadable files."""
    import pickle

    import torch

    if not path.exists():
        raise UserError(f"network weights not found: {path}; check the path or download the model weights")
    if not path.is_file():
        raise UserError(f"network weights path is not a file: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise UserError(f"{path.name} holds Python objects besides weights and is not loaded for safety; "
                            "re-save it with save_weights") from None
        raise UserError(f"{path.name} is not a readable torch weights file (corrupt or another file type)") from None
    except Exception:  # torch raises RuntimeError, EOFError, ValueError... for foreign or truncated files
        raise UserError(f"{path.name} is not a readable torch weights file (corrupt or another file type)") from None


def _check_payload(payload: Any, name: str) -> None:
    """Raise UserError unless ``payload`` is a version-1 ctpm-weights dict."""
    if not isinstance(payload, dict):
        raise UserError(f"{name} is not a CTPerfusionMapping weights file (it holds a {type(payload).__name__})")
    if "format" not in payload:
        if payload and all(hasattr(v, "shape") for v in payload.values()):
            raise UserError(f"{name} is a bare state dict without the network configuration; "
                            "re-save it with save_weights(model, config, path)")
        raise UserError(f"{name} is not a CTPerfusionMapping weights file (no 'format' entry)")
    if payload["format"] != FORMAT:
        raise UserError(f"{name} has format {payload['format']!r}, expected {FORMAT!r}")
    if payload.get("version") != VERSION:
        raise UserError(f"{name} is weights-file version {payload.get('version')!r}; this software reads version {VERSION}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise UserError(f"{name} is incomplete: its {key!r} entry is missing")
    if not all(hasattr(v, "is_floating_point") for v in payload["state_dict"].values()):
        raise UserError(f"{name} is damaged: its state_dict holds values that are not tensors")


def _mismatch(expected: Dict[str, Any], found: Dict[str, Any]) -> Optional[str]:
    """Describe up to two keys/shapes that differ between the model's and the file's state dicts, or None."""
    problems = [f"missing {k}" for k in expected if k not in found]
    problems += [f"unexpected {k}" for k in found if k not in expected]
    problems += [f"{k} is {tuple(found[k].shape)} in the file but {tuple(v.shape)} in the network"
                 for k, v in expected.items() if k in found and tuple(found[k].shape) != tuple(v.shape)]
    if not problems:
        return None
    more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
    return "; ".join(problems[:2]) + more


def load_weights(path, device: str = "cpu") -> Tuple[Any, NetworkConfig, dict]:
    """Read a file written by :func:`save_weights`: return ``(model in eval mode on device, config, metadata)``.

    ``device`` is as for :func:`~CTPerfusionMappingLib.inference.select_device` ("cpu", "cuda", "auto", ...).
    Every problem with the file raises a one-line UserError.
    """
    from .inference import select_device

    path = Path(path)
    payload = _read_file(path)
    _check_payload(payload, path.name)
    try:
        config = NetworkConfig.from_dict(dict(payload["config"]))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path.name} holds an invalid network configuration: {exc}") from None
    model = build_model(config)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    problem = _mismatch(model.state_dict(), state)
    if problem:
        raise UserError(f"{path.name}: the weights do not match the architecture in their own configuration: {problem}")
    model.load_state_dict(state, strict=True)
    metadata = payload.get("metadata") or {}
    return model.to(select_device(device)).eval(), config, dict(metadata)
