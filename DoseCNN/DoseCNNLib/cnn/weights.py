"""Weight files of the residual dose CNN (Li 2020): the network, its configuration, the normalisation and the voxel size.

File layout (``torch.save`` of plain Python types and tensors only, read with ``torch.load(weights_only=True)``; the
same layout as the perfusion network's; reading, checking and writing are the foundation's
:mod:`ImagingBasics.checkpoints`)::

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

from .data import Normalisation

FORMAT = "dosecnn-weights"
VERSION = 1
BUNDLED_NAME = "dosecnn_residual.pt"
MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"
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
    return find_bundled_file("DOSECNN_WEIGHTS", MODELS_DIR, MODELS_PACKAGE, BUNDLED_NAME)


def save_dose_weights(model, config, normalisation: Normalisation, spacing_mm, path, metadata: Optional[dict] = None,
                      half: bool = False) -> Path:
    """Write a dose CNN with its configuration, normalisation and training voxel size (mm) to ``path`` atomically."""
    payload = {"format": FORMAT, "version": VERSION, "dtype": "float16" if half else "float32",
               "config": config.to_dict(), "normalisation": normalisation.to_dict(),
               "spacing_mm": [float(s) for s in spacing_mm], "state_dict": state_for_saving(model, half),
               "metadata": plain(dict(metadata or {}))}
    return write_checkpoint(payload, path)


def _check_payload(payload: Any, name: str) -> None:
    """UserError unless ``payload`` is a version-1 dose CNN weights dict with its normalisation and voxel size."""
    check_checkpoint(payload, name, FORMAT, VERSION, "DoseCNN weights", required=("normalisation",),
                     other_kinds={"ctpm-weights": "holds CT-to-perfusion (ctpm) weights, not a dose CNN; use weights "
                                                  "from dosecnn train"})
    spacing = payload.get("spacing_mm")
    if not (isinstance(spacing, (list, tuple)) and len(spacing) == 3 and all(float(s) > 0 for s in spacing)):
        raise UserError(f"{name} is incomplete: its training voxel size is missing")


def load_dose_weights(path, device: str = "cpu") -> DoseModel:
    """Read a file written by :func:`save_dose_weights` (model in eval mode on ``device``, "auto" allowed)."""
    from .network import DoseNetConfig, build_dose_network

    path = Path(path)
    payload = read_checkpoint(path, "re-save it with save_dose_weights")
    _check_payload(payload, path.name)
    try:
        config = DoseNetConfig.from_dict(dict(payload["config"]))
        normalisation = Normalisation.from_dict(payload["normalisation"])
    except (TypeError, ValueError, KeyError) as exc:
        raise UserError(f"{path.name} holds an invalid network configuration: {exc}") from None
    model = load_state(build_dose_network(config), payload["state_dict"], path.name)
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
