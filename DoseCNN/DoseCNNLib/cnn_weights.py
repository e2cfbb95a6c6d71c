"""Weight files of the residual dose CNN (004): the network, its configuration, the normalisation and the voxel size.

File layout (``torch.save`` of plain Python types and tensors only, read with ``torch.load(weights_only=True)``; the
same pattern as :mod:`CTPerfusionMappingLib.weights`, whose helpers are reused)::

    {"format": "dosecnn-weights", "version": 1, "dtype": "float32" | "float16",
     "config": DoseNetConfig.to_dict(), "normalisation": {"activity_scale", "dose_scale"},
     "spacing_mm": [x, y, z] (the training voxel size), "state_dict": {...}, "metadata": {...}}

``half=True`` stores the floating-point tensors as float16 (for bundling); loading casts them back to float32.
Files are written atomically. Every problem with a file (missing, corrupt, another kind of weights, a configuration
that does not match the tensors) raises a one-line :class:`UserError`.

The bundled model: ``DoseCNN/Resources/Models/dosecnn_residual.pt`` (or the file named by the environment variable
``DOSECNN_WEIGHTS``, or the package data ``DoseCNNModels`` of a pip install), used when no weights are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from CTPerfusionMappingLib.errors import UserError

from .cnn_data import Normalisation

FORMAT = "dosecnn-weights"
VERSION = 1
BUNDLED_NAME = "dosecnn_residual.pt"
MODELS_DIR = Path(__file__).resolve().parent.parent / "Resources" / "Models"
MODELS_PACKAGE = "DoseCNNModels"
NO_WEIGHTS = "no CNN weights: train one with dosecnn train, or use --method vdk"


@dataclass
class DoseModel:
    """A loaded dose CNN with everything inference needs."""

    model: Any  # ResidualDoseNet in eval mode
    config: Any  # DoseNetConfig
    normalisation: Normalisation
    spacing_mm: Tuple[float, float, float]  # the training voxel size (x, y, z)
    metadata: Dict[str, Any] = field(default_factory=dict)
    source: str = "in memory"


def bundled_weights() -> Optional[Path]:
    """``DOSECNN_WEIGHTS`` (returned even if missing, so that loading names it), else the bundled file, else None."""
    from CTPerfusionMappingLib.weights import find_bundled_file

    return find_bundled_file("DOSECNN_WEIGHTS", MODELS_DIR, MODELS_PACKAGE, BUNDLED_NAME)


def save_dose_weights(model, config, normalisation: Normalisation, spacing_mm, path, metadata: Optional[dict] = None,
                      half: bool = False) -> Path:
    """Write a dose CNN with its configuration, normalisation and training voxel size (mm) to ``path`` atomically."""
    import torch

    from CTPerfusionMappingLib.files import atomic_output
    from CTPerfusionMappingLib.weights import _plain, _state_for_saving

    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, "dtype": "float16" if half else "float32",
               "config": config.to_dict(), "normalisation": normalisation.to_dict(),
               "spacing_mm": [float(s) for s in spacing_mm], "state_dict": _state_for_saving(model, half),
               "metadata": _plain(dict(metadata or {}))}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def _check_payload(payload: Any, name: str) -> None:
    """UserError unless ``payload`` is a version-1 dose CNN weights dict."""
    if not isinstance(payload, dict):
        raise UserError(f"{name} is not a DoseCNN weights file (it holds a {type(payload).__name__})")
    fmt = payload.get("format")
    if fmt == "ctpm-weights":
        raise UserError(f"{name} holds CT-to-perfusion (ctpm) weights, not a dose CNN; use weights from dosecnn train")
    if fmt != FORMAT:
        raise UserError(f"{name} is not a DoseCNN weights file (format {fmt!r}, expected {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise UserError(f"{name} is DoseCNN weights-file version {payload.get('version')!r}; this software reads {VERSION}")
    for key in ("config", "state_dict", "normalisation"):
        if not isinstance(payload.get(key), dict):
            raise UserError(f"{name} is incomplete: its {key!r} entry is missing")
    spacing = payload.get("spacing_mm")
    if not (isinstance(spacing, (list, tuple)) and len(spacing) == 3 and all(float(s) > 0 for s in spacing)):
        raise UserError(f"{name} is incomplete: its training voxel size is missing")
    if not all(hasattr(v, "is_floating_point") for v in payload["state_dict"].values()):
        raise UserError(f"{name} is damaged: its state_dict holds values that are not tensors")


def _read_payload(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, with one-line UserErrors for missing, foreign or unsafe files."""
    import pickle
    import zipfile

    import torch

    if not path.is_file():
        raise UserError(f"network weights not found: {path}" if not path.exists() else
                        f"network weights path is not a file: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives (since torch 1.6)
        raise UserError(f"{path.name} is not a readable torch weights file (corrupt or another file type)")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path.name} holds Python objects besides weights and is not loaded for safety; "
                        "re-save it with save_dose_weights") from None
    except Exception:  # truncated archives and the like
        raise UserError(f"{path.name} is not a readable torch weights file (corrupt or another file type)") from None


def load_dose_weights(path, device: str = "cpu") -> DoseModel:
    """Read a file written by :func:`save_dose_weights` (model in eval mode on ``device``, "auto" allowed)."""
    from CTPerfusionMappingLib.inference import select_device
    from CTPerfusionMappingLib.weights import _mismatch

    from .cnn_network import DoseNetConfig, build_dose_network

    path = Path(path)
    payload = _read_payload(path)
    _check_payload(payload, path.name)
    try:
        config = DoseNetConfig.from_dict(dict(payload["config"]))
        normalisation = Normalisation.from_dict(payload["normalisation"])
    except (TypeError, ValueError, KeyError) as exc:
        raise UserError(f"{path.name} holds an invalid network configuration: {exc}") from None
    model = build_dose_network(config)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    problem = _mismatch(model.state_dict(), state)
    if problem:
        raise UserError(f"{path.name}: the weights do not match the architecture in their own configuration: {problem}")
    model.load_state_dict(state, strict=True)
    return DoseModel(model.to(select_device(device)).eval(), config, normalisation,
                     tuple(float(s) for s in payload["spacing_mm"]), dict(payload.get("metadata") or {}), str(path))


def resolve_weights(weights, device: str = "cpu") -> DoseModel:
    """A :class:`DoseModel` from a path, an already loaded model, or None (the bundled model, if installed)."""
    if isinstance(weights, DoseModel):
        return weights
    if weights is None:
        weights = bundled_weights()
        if weights is None:
            raise UserError(NO_WEIGHTS)
    return load_dose_weights(weights, device)
