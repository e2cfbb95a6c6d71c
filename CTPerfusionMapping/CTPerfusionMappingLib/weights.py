"""Network weight files: the configuration, the tensors and free-form metadata in one torch file.

File layout (``torch.save`` of a dict holding plain Python types and tensors only, so that
``torch.load(weights_only=True)`` reads it without running any pickled code)::

    {"format": "ctpm-weights", "version": 1, "dtype": "float32" | "float16",
     "config": NetworkConfig.to_dict(), "state_dict": {name: tensor}, "metadata": {...}}

With ``half=True`` the floating-point tensors are stored as float16 (half the size); :func:`load_weights` casts them
back to float32. Integer tensors (BatchNorm's ``num_batches_tracked``) are stored as they are.
Files are written to a temporary name in the target folder and renamed into place, so a reader never sees half a file.
Reading, checking and writing are the foundation's (:mod:`ImagingBasics.checkpoints`), shared with the dose CNN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

from ImagingBasics.checkpoints import (
    check_checkpoint,
    find_bundled_file,
    load_state,
    plain,
    read_checkpoint,
    state_for_saving,
    write_checkpoint,
)
from ImagingBasics.devices import select_device
from ImagingBasics.errors import UserError

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


def save_weights(model, config: NetworkConfig, path, metadata: Optional[dict] = None, half: bool = False) -> Path:
    """Write ``model``'s weights with ``config`` and ``metadata`` to ``path`` (atomically); return the path.

    ``metadata`` (e.g. training data, epochs, metrics) must hold only numbers, strings, lists and dicts.
    """
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"save_weights needs a NetworkConfig, got {type(config).__name__}")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": "float16" if half else "float32",
        "config": config.to_dict(),
        "state_dict": state_for_saving(model, half),
        "metadata": plain(dict(metadata or {})),
    }
    return write_checkpoint(payload, path)


def load_weights(path, device: str = "cpu") -> Tuple[Any, NetworkConfig, dict]:
    """Read a file written by :func:`save_weights`: return ``(model in eval mode on device, config, metadata)``.

    ``device`` is as for :func:`~ImagingBasics.devices.select_device` ("cpu", "cuda", "auto", ...).
    Every problem with the file raises a one-line UserError.
    """
    path = Path(path)
    payload = read_checkpoint(path, "re-save it with save_weights")
    check_checkpoint(payload, path.name, FORMAT, VERSION, "CTPerfusionMapping weights",
                     other_kinds={"dosecnn-weights": "holds dose CNN (dosecnn) weights, not a perfusion network"})
    try:
        config = NetworkConfig.from_dict(dict(payload["config"]))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path.name} holds an invalid network configuration: {exc}") from None
    model = load_state(build_model(config), payload["state_dict"], path.name)
    metadata = payload.get("metadata") or {}
    return model.to(select_device(device)).eval(), config, dict(metadata)
