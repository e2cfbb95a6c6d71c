"""Training data: a manifest of SPECT/CT cases -> hemi-lung samples, made by the same functions as inference.

A manifest is a CSV with the columns ``id, ct, spect`` and optionally ``lungs, lobes, group, site`` (paths relative to
the manifest). Each case goes through :func:`~.pipeline.resolve_labels`, :func:`~.pipeline.align_spect` and
:func:`~.preprocess.preprocess_case` (no second implementation of the preprocessing) and gives one sample per lung:
the enhanced CT (network input), the discretised SPECT (training target, equation 2), the normalised SPECT (evaluation
ground truth) and the parenchyma mask (the loss and the metrics use these voxels only).

Samples are cached on disk, one ``.npz`` per case, keyed by a hash of the input files (path, size, modification time),
the preprocessing parameters, the registration switch and :data:`CACHE_VERSION`: change any of them and the case is
preprocessed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.files import atomic_output
from ImagingBasics.manifest import read_manifest

from ..preprocess import SIDES, PreprocessParams

CACHE_VERSION = 2


@dataclass
class TrainSample:
    """One hemi-lung for training or validation (arrays [z, y, x], 128 x 64 x 64)."""

    case_id: str
    side: int  # 1 right, 2 left
    ct_input: np.ndarray  # float32 0..1
    target: np.ndarray  # float32, 11 levels 0..1 (equation 2)
    reference: np.ndarray  # float32 0..1, normalised SPECT (evaluation ground truth)
    mask: np.ndarray  # bool, lung parenchyma
    ct_linear: Optional[np.ndarray] = None  # float32 0..1: HU window scaled linearly, no equation (1) (ablation input)
    group: str = ""
    site: str = ""

    @property
    def key(self) -> str:
        return f"{self.case_id}:{SIDES[self.side]}"


def _file_fingerprint(path: Optional[str]) -> Optional[List]:
    if not path:
        return None
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, int(st.st_mtime)]


def cache_key(row: Dict[str, str], params: PreprocessParams, register: bool) -> str:
    """Hash of a case's input files, the preprocessing parameters and the registration switch."""
    payload = {
        "files": {k: _file_fingerprint(row.get(k)) for k in ("ct", "spect", "lungs", "lobes")},
        "params": params.to_dict(),
        "register": register,
        "version": CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def preprocess_row(row: Dict[str, str], params: PreprocessParams, register: bool,
                   labels_source: str = "auto") -> List[TrainSample]:
    """One manifest row -> its hemi-lung samples (the inference pipeline's own steps)."""
    from ImagingBasics.imageio import read_volume
    from ImagingBasics.validation import check_ct

    from ..pipeline import align_spect, resolve_labels
    from ..preprocess import preprocess_case

    if not row.get("spect"):
        raise UserError(f"case {row['id']}: training needs a SPECT (column spect)")
    ct = read_volume(row["ct"])
    check_ct(ct, f"CT of case {row['id']}")  # the checks of every command (quality warnings do not stop training)
    labels, _ = resolve_labels(ct, read_volume(row["lungs"]) if row.get("lungs") else None,
                               read_volume(row["lobes"]) if row.get("lobes") else None, labels_source)
    spect_on_ct, _ = align_spect(ct, read_volume(row["spect"]), labels.lungs, register)
    out = []
    for s in preprocess_case(ct, labels.lungs, spect_on_ct, params):
        out.append(TrainSample(row["id"], s.side, s.ct_input.astype(np.float32), s.spect_target.astype(np.float32),
                               s.spect_eval.astype(np.float32), s.parenchyma.copy(), linear_ct_input(s.ct_hu, s.parenchyma,
                                                                                                      params.hu_window),
                               row.get("group", ""), row.get("site", "")))
    return out


def linear_ct_input(ct_hu: np.ndarray, parenchyma: np.ndarray, hu_window=(-1000.0, -300.0)) -> np.ndarray:
    """The HU window scaled linearly to 0..1 inside the parenchyma: the input "without CT enhancement" (Ren 2021 Front Oncol)."""
    lo, hi = hu_window
    return np.where(parenchyma, np.clip((ct_hu - lo) / (hi - lo), 0.0, 1.0), 0.0).astype(np.float32)


def _save(samples: List[TrainSample], path: Path) -> None:
    arrays = {}
    for s in samples:
        name = SIDES[s.side]
        arrays[f"{name}_ct"] = s.ct_input.astype(np.float16)  # 0..1: float16 keeps 3 decimals, halves the cache
        arrays[f"{name}_target"] = s.target.astype(np.float16)
        arrays[f"{name}_reference"] = s.reference.astype(np.float16)
        arrays[f"{name}_mask"] = s.mask
        arrays[f"{name}_linear"] = s.ct_linear.astype(np.float16)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def _load(path: Path, row: Dict[str, str]) -> List[TrainSample]:
    with np.load(path) as data:
        out = []
        for side, name in SIDES.items():
            if f"{name}_ct" in data:
                out.append(TrainSample(row["id"], side, data[f"{name}_ct"].astype(np.float32),
                                       data[f"{name}_target"].astype(np.float32),
                                       data[f"{name}_reference"].astype(np.float32), data[f"{name}_mask"].astype(bool),
                                       data[f"{name}_linear"].astype(np.float32), row.get("group", ""),
                                       row.get("site", "")))
    return out


def _cache_case(job) -> Path:
    """Preprocess one manifest row into its cache file unless the file exists; return the file's path."""
    row, path, params, register, labels_source = job
    if not path.is_file():
        try:
            _save(preprocess_row(row, params, register, labels_source), path)
        except UserError as exc:
            raise UserError(f"case {row['id']}: {exc}") from None
    return path


def load_samples(manifest: Path, cache_dir: Path, params: Optional[PreprocessParams] = None, register: bool = True,
                 labels_source: str = "auto", progress: Optional[Callable[[int, int, str], None]] = None,
                 workers: int = 1) -> List[TrainSample]:
    """All hemi-lung samples of a manifest, preprocessed once and cached in ``cache_dir``.

    ``workers`` > 1 preprocesses the cases that are not cached yet in that many single-threaded processes (the
    samples equal the in-process ones up to float rounding: ITK's multi-threaded filters round differently with
    another thread count, by 1e-4 at most in the normalised SPECT).
    """
    from ImagingBasics.parallel import map_in_processes

    params = params or PreprocessParams()
    rows = read_manifest(manifest, required=("id", "ct", "spect"))
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(row, cache_dir / f"{row['id']}_{cache_key(row, params, register)}.npz", params, register, labels_source)
            for row in rows]
    report = (lambda done, total, path: progress(done, total, rows[done - 1]["id"])) if progress is not None else None
    paths = map_in_processes(_cache_case, jobs, workers, report)
    samples: List[TrainSample] = []
    for row, path in zip(rows, paths):
        samples.extend(_load(path, row))  # always the cached values, so a first and a later run train on the same data
    return samples


def split_by_patient(samples: Sequence[TrainSample], val_fraction: float, seed: int):
    """(train, validation) with both lungs of a patient on the same side of the split."""
    ids = sorted({s.case_id for s in samples})
    if len(ids) < 2:
        raise UserError("at least two patients are needed to split training and validation data")
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    n_val = min(max(1, int(round(val_fraction * len(ids)))), len(ids) - 1)
    val_ids = set(order[:n_val])
    return [s for s in samples if s.case_id not in val_ids], [s for s in samples if s.case_id in val_ids]
