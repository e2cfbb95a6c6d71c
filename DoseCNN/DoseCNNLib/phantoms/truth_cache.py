"""A cache of phantom Monte Carlo truths (:class:`.mc_truth.McTruth`), so that ``dosecnn demo`` computes the truth of
a seed once.

Where: ``$DOSECNN_CACHE/mc_truth`` when the environment variable ``DOSECNN_CACHE`` is set, else the platform's user
cache folder (``$XDG_CACHE_HOME/dosecnn`` or ``~/.cache/dosecnn`` on Linux, ``~/Library/Caches/dosecnn`` on macOS,
``%LOCALAPPDATA%\\dosecnn\\Cache`` on Windows) + ``/mc_truth``.

What identifies a truth (:func:`truth_key`): the seed, the decays (total and per compartment), batches and runs, the
device, the time points, a SHA-256 of the inputs (CT, labels and compartment masks with their geometry, and the
kinetics) and one of the code that computes it (the Monte Carlo engine's and this package's truth sources, the numpy
and torch versions). One file per key, ``mc_truth_seed<seed>_<hash>.npz``, written atomically (a temporary file
renamed into place); the key is stored inside and checked on reading, with every array's shape and values. A file
that cannot be read or does not match is reported with a warning and computed again (then overwritten); nothing
from the cache is used without these checks. The newest :data:`MAX_ENTRIES` files are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume

from .mc_truth import McTruth

#: the environment variable that moves the cache
CACHE_ENV = "DOSECNN_CACHE"
#: the layout of a cache file; bump it when McTruth's fields change
FORMAT = 1
#: the newest files kept in the cache folder (a demo truth is 9 float32 maps of its grid: 64 MB)
MAX_ENTRIES = 4
PREFIX = "mc_truth_"


def default_cache_root() -> Path:
    """``$DOSECNN_CACHE``, else the platform's user cache folder for dosecnn (module docstring)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return (Path(local) if local else Path.home() / "AppData" / "Local") / "dosecnn" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "dosecnn"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "dosecnn"


def default_truth_cache() -> Path:
    """The folder of cached Monte Carlo truths: ``<cache root>/mc_truth``."""
    return default_cache_root() / "mc_truth"


def check_cache_folder(folder: Path) -> None:
    """A :class:`UserError` now (before any work) when ``folder`` or a parent exists but is not a folder."""
    for p in (Path(folder), *Path(folder).parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"the cache folder {folder} cannot be made: {p} is a file (set {CACHE_ENV} to a "
                                "folder, or use --no-cache)")
            return


# --- the key ------------------------------------------------------------------------------------------------------------
def _hash_volume(h, volume: Volume) -> None:
    h.update(repr((volume.array.dtype.str, volume.shape, tuple(volume.spacing), tuple(volume.origin),
                   np.asarray(volume.direction).tolist())).encode())
    h.update(np.ascontiguousarray(volume.array).tobytes())


def inputs_digest(ct: Volume, labels: Volume, compartments: Mapping[str, np.ndarray], kinetics) -> str:
    """SHA-256 of what the truth is computed from: CT and labels (values and geometry), compartment masks, kinetics."""
    h = hashlib.sha256()
    _hash_volume(h, ct)
    _hash_volume(h, labels)
    for name, mask in compartments.items():
        h.update(name.encode() + repr(mask.shape).encode())
        h.update(np.packbits(np.asarray(mask, bool)).tobytes())
        k = kinetics[name]
        h.update(json.dumps([list(map(float, k.amplitudes_mbq_ml)), list(map(float, k.half_lives_h))]).encode())
    return h.hexdigest()


def code_digest() -> str:
    """SHA-256 of the code behind a truth: the Monte Carlo engine (``DoseCNNLib/physics/*.py``), the truth and cache
    modules, and the numpy, torch and decay-data versions."""
    from importlib import import_module, metadata

    from .. import physics

    h = hashlib.sha256()
    sources = sorted(Path(physics.__file__).parent.glob("*.py")) + [Path(__file__).with_name("mc_truth.py")]
    for path in sources:
        if path.parent.name == "physics" and path.stem != "__init__":  # loaded now: the code run is the code hashed
            import_module(f"{physics.__name__}.{path.stem}")
        h.update(path.name.encode() + path.read_bytes())
    for dist in ("numpy", "torch", "icrp107-database"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=none".encode())
    return h.hexdigest()


def truth_key(seed: int, decays: int, shares: Mapping[str, int], batches: int, runs: int, device: str,
              times_h: Sequence[float], inputs_sha256: str) -> Dict[str, object]:
    """Everything that determines a truth (module docstring), as a JSON-able dict."""
    return {"format": FORMAT, "seed": int(seed), "decays": int(decays), "shares": {k: int(v) for k, v in shares.items()},
            "batches": int(batches), "runs": int(runs), "device": str(device), "times_h": [float(t) for t in times_h],
            "inputs_sha256": inputs_sha256, "code_sha256": code_digest()}


def cache_file(folder: Path, key: Mapping[str, object]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(folder) / f"{PREFIX}seed{key['seed']}_{digest}.npz"


# --- reading and writing ------------------------------------------------------------------------------------------------
def _arrays(truth: McTruth) -> Dict[str, np.ndarray]:
    return {"dose_rate_mgy_s": np.stack(truth.dose_rate_mgy_s), "dose_rate_sd_mgy_s": np.stack(truth.dose_rate_sd_mgy_s),
            "absorbed_dose_gy": truth.absorbed_dose_gy, "label_values": truth.label_values,
            "label_rate_se_mgy_s": truth.label_rate_se_mgy_s, "label_dose_se_gy": truth.label_dose_se_gy}


class _Mismatch(ValueError):
    """A cache file that was read but does not hold the truth asked for."""


def _checked(data: Mapping[str, np.ndarray], key: Mapping[str, object], shape: Tuple[int, ...]) -> McTruth:
    """The truth in a loaded file, or :class:`_Mismatch` naming what does not match."""
    if json.loads(str(data["key"])) != key:
        raise _Mismatch("it was computed for other inputs")
    n_t = len(key["times_h"])
    rate, sd, dose = data["dose_rate_mgy_s"], data["dose_rate_sd_mgy_s"], data["absorbed_dose_gy"]
    values, rate_se, dose_se = data["label_values"], data["label_rate_se_mgy_s"], data["label_dose_se_gy"]
    if rate.shape != (n_t, *shape) or sd.shape != rate.shape or dose.shape != tuple(shape):
        raise _Mismatch("its maps have the wrong shape")
    if rate_se.shape != (len(values), n_t) or dose_se.shape != (len(values),):
        raise _Mismatch("its per-label errors have the wrong shape")
    for name, a in (("dose rate", rate), ("standard error", sd), ("absorbed dose", dose)):
        if a.dtype != np.float32 or not np.isfinite(a).all() or (a < 0).any():
            raise _Mismatch(f"its {name} map is not finite and non-negative float32")
    return McTruth(list(rate), list(sd), dose, values.astype(np.int64), rate_se.astype(np.float64),
                   dose_se.astype(np.float64))


def load_truth(path: Path, key: Mapping[str, object], shape: Tuple[int, ...]) -> Optional[McTruth]:
    """The cached truth in ``path`` when it exists and passes every check; None (with a warning when the file exists
    but cannot be used) otherwise."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            truth = _checked({name: data[name] for name in data.files}, key, shape)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file raises (zip, npy, JSON errors), it is not used
        reason = str(exc) if isinstance(exc, _Mismatch) else f"unreadable: {type(exc).__name__}: {exc}"
        warnings.warn(f"the cached Monte Carlo truth {path} cannot be used ({reason}); computing it again",
                      UserWarning, stacklevel=3)
        return None
    try:
        os.utime(path)  # most recently used: kept longest
    except OSError:
        pass
    return truth


def save_truth(path: Path, key: Mapping[str, object], truth: McTruth) -> bool:
    """Write ``truth`` to ``path`` atomically and keep the newest :data:`MAX_ENTRIES` files; a failure (disk full, no
    permission) is a warning, not an error: the run goes on without the cache. True when written."""
    from ImagingBasics.files import atomic_output

    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, key=np.array(json.dumps(key, sort_keys=True)), **_arrays(truth))
    except (UserError, OSError) as exc:
        warnings.warn(f"the Monte Carlo truth was not cached: {exc}", UserWarning, stacklevel=3)
        return False
    _prune(path.parent)
    return True


def _prune(folder: Path) -> None:
    """Remove all but the newest :data:`MAX_ENTRIES` cache files."""
    try:
        files = sorted(folder.glob(f"{PREFIX}*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[MAX_ENTRIES:]:
            old.unlink()
    except OSError:
        pass


def cached_truth(folder: Optional[Path], key: Optional[Mapping[str, object]], shape: Tuple[int, ...],
                 compute: Callable[[], McTruth], say: Callable[[str], None] = lambda msg: None
                 ) -> Tuple[McTruth, Dict[str, object]]:
    """The truth from the cache in ``folder`` when a valid entry exists, else ``compute()`` (then cached). ``folder``
    None: always computed, the cache neither read nor written. Returns (truth, ``{"cache": "off" | "hit" | "miss",
    "cache_file": path}``)."""
    if folder is None:
        return compute(), {"cache": "off"}
    path = cache_file(folder, key)
    truth = load_truth(path, key, shape)
    if truth is not None:
        say(f"Monte Carlo truth read from the cache: {path}")
        return truth, {"cache": "hit", "cache_file": str(path)}
    truth = compute()
    written = save_truth(path, key, truth)
    if written:
        say(f"Monte Carlo truth cached in {path}")
    return truth, {"cache": "miss", "cache_file": str(path) if written else None}
