"""Dose rate of a whole volume with the residual dose CNN (Li 2020): the VDK map plus the network's correction.

:func:`cnn_dose_rate` normalises the activity (share of the total per litre) and the VDK dose rate (per MBq of total
activity, :class:`.data.Normalisation`), computes the density from HU (Li 2020's calibration, as in training), runs
the network over the volume in slabs of ``batch_slices`` slices (the end slices repeated as in training; the 3D
layers computed once per slab, :meth:`.network.ResidualDoseNet.correction_slab`), scales the correction back to
mGy/s and adds it to the VDK map; the result is clamped at >= 0 and zero in air (HU < -950), as the VDK map.

Memory and time: the inputs and output as float32 volumes plus one slab's activations (about 1.5 GB for 8 slices of
512x512 with the default network); a 512x512x130 CT peaked at 2.4 GB of RAM and took 67 CPU-seconds (one core,
batch norm folded into the convolutions, channels-last tensors). ``device="auto"`` picks a GPU when there is one; a GPU
that runs out of memory is left for the CPU with a warning.

Voxel size: the network is trained for one voxel size (stored with the weights). When the CT's differs by more than
5 % along any axis, the activity (linearly, total kept) and the HU (linearly) are resampled to the training voxel
size, the correction is computed there and resampled back onto the CT grid (linearly), where it is added to the CT
grid's own VDK map (the VDK map is not an input of the correction, so it is never resampled);
``info["cnn_warnings"]`` says so. The correction is then only as good as that resampling: prefer a model trained at
the CT's voxel size.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.resample import resample, resample_amount
from ImagingBasics.volume import Volume

from ..physics.materials import AIR_HU
from .data import SPACING_TOLERANCE, window_indices


def spacing_differs(spacing_mm: Sequence[float], model_spacing_mm: Sequence[float]) -> bool:
    """True when some axis differs from the model's training voxel size by more than 5 %."""
    s, m = np.asarray(spacing_mm, float), np.asarray(model_spacing_mm, float)
    return bool(np.any(np.abs(s - m) > SPACING_TOLERANCE * m))


def model_grid(ct: Volume, spacing_mm: Sequence[float]) -> Volume:
    """An empty grid with the CT's extent, origin corner and direction at another voxel size (mm)."""
    old, new = np.asarray(ct.spacing, float), np.asarray(spacing_mm, float)
    size_xyz = np.maximum(1, np.round(np.asarray(ct.size) * old / new)).astype(int)
    origin = np.asarray(ct.origin) + ct.direction @ ((new - old) / 2.0)  # same corner of the first voxel
    return Volume(np.zeros(tuple(size_xyz[::-1]), np.float32), tuple(new), tuple(origin), ct.direction)



def _check_inputs(activity_bq: Volume, ct: Volume, vdk: Volume) -> float:
    """Same grid, finite values, some activity; returns the total activity (MBq)."""
    from ImagingBasics.validation import require_finite

    for name, v in (("activity map", activity_bq), ("VDK dose-rate map", vdk)):
        if not v.same_geometry(ct):
            raise UserError(f"the {name} must be on the CT grid ({v.shape} vs the CT's {ct.shape})")
    for name, v in (("CT", ct), ("activity map", activity_bq), ("VDK dose-rate map", vdk)):
        require_finite(v, name)
    total_mbq = float(activity_bq.array.sum(dtype=np.float64)) / 1e6
    if not total_mbq > 0:
        raise UserError("the activity map is empty (no activity): nothing to compute")
    return total_mbq


def predict_correction(model, activity: np.ndarray, density: np.ndarray, device: str, batch_slices: int,
                       progress: Optional[Callable[[int, int], None]] = None, amp: bool = False) -> np.ndarray:
    """The network's normalised correction ``[z, y, x]`` for normalised activity and density volumes, in slabs."""
    import torch

    from ImagingBasics.devices import autocast_context

    from .network import fuse_batch_norm

    model = fuse_batch_norm(model).to(device)
    nz = activity.shape[0]
    half = model.config.half_window
    out = np.empty(activity.shape, np.float32)
    with torch.inference_mode(), autocast_context(device, amp):
        for k0 in range(0, nz, batch_slices):
            k1 = min(nz, k0 + batch_slices)
            idx = window_indices(k0, k1, half, nz)
            slab = torch.from_numpy(np.stack([activity[idx], density[idx]])[None]).to(device)
            out[k0:k1] = model.correction_slab(slab)[:, 0].float().cpu().numpy()
            if progress is not None:
                progress(k1, nz)
    return out


def cnn_dose_rate(activity_bq: Volume, ct: Volume, vdk: Volume, weights=None, device: str = "cpu",
                  batch_slices: int = 8, progress: Optional[Callable[[int, int], None]] = None,
                  amp: bool = False) -> Tuple[Volume, Dict[str, object]]:
    """Dose rate (mGy/s) on the CT grid: VDK + the CNN's correction (see the module docstring).

    ``activity_bq``: Bq per voxel on the CT grid; ``vdk``: the VDK dose rate (mGy/s,
    :func:`DoseCNNLib.physics.vdk.vdk_dose_rate`);
    ``weights``: a weights file, a loaded :class:`.weights.DoseModel`, or None for the bundled model;
    ``device``: "cpu", "cuda", "auto", ...; ``progress(done_slices, total_slices)``. Returns (dose rate, info).
    """
    from ImagingBasics.devices import describe_device, run_with_oom_fallback, select_device

    from ..physics.materials import density_from_hu_li2020
    from .weights import resolve_weights

    if batch_slices < 1:
        raise UserError("batch_slices must be at least 1")
    total_mbq = _check_inputs(activity_bq, ct, vdk)
    dm = resolve_weights(weights)
    t0 = time.perf_counter()
    warnings_: List[str] = []
    resampled = spacing_differs(ct.spacing, dm.spacing_mm)
    act, hu = activity_bq, ct
    if resampled:
        grid = model_grid(ct, dm.spacing_mm)
        act, hu = resample_amount(activity_bq, grid, keep_total=True), resample(ct, grid, default=-1000.0)
        warnings_.append(f"the CT's voxel size {tuple(round(s, 3) for s in ct.spacing)} mm differs from the model's "
                         f"training voxel size {tuple(round(s, 3) for s in dm.spacing_mm)} mm by more than 5 %: the CNN "
                         "correction was computed on a resampled grid and resampled back")
    norm = dm.normalisation
    a = norm.activity(act.array.astype(np.float32) / np.float32(1e6), total_mbq).astype(np.float32)
    density = density_from_hu_li2020(hu.array)
    used: Dict[str, str] = {}

    def run(dev: str) -> np.ndarray:
        used["device"] = dev
        return predict_correction(dm.model, a, density, dev, batch_slices, progress, amp)

    correction = run_with_oom_fallback(run, select_device(device))
    correction = norm.dose_back(correction, total_mbq)  # mGy/s
    if resampled:
        correction = resample(act.with_array(correction), ct).array
    dose = np.maximum(vdk.array.astype(np.float32) + correction, 0.0)
    dose[ct.array < AIR_HU] = 0.0
    info: Dict[str, object] = {
        "cnn_weights": dm.source, "cnn_training_spacing_mm": list(dm.spacing_mm), "cnn_resampled": resampled,
        "cnn_device": describe_device(used["device"]), "cnn_seconds": time.perf_counter() - t0,
        "cnn_config": dm.config.to_dict(), "cnn_warnings": warnings_,
        "cnn_correction_mgy_s": {"min": float(correction.min()), "max": float(correction.max()),
                                 "sum_relative_to_vdk": float(correction.sum(dtype=np.float64)
                                                              / max(float(vdk.array.sum(dtype=np.float64)), 1e-30))}}
    if dm.metadata.get("note"):
        info["cnn_note"] = dm.metadata["note"]
    trained = {k: dm.metadata[k] for k in ("epoch", "val_nrmse", "val_nrmse_vdk", "cases") if k in dm.metadata}
    if trained:
        info["cnn_training"] = trained
    return ct.with_array(dose.astype(np.float32)), info
