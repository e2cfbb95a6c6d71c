"""Data for the residual dose CNN (Li 2020): normalisation, training cases from a manifest (cached), slice packs, batches.

**Normalisation** (Li 2020 "Implementation details": each SPECT activity map divided by its sum, then the normalised SPECT,
the VDK and the ground-truth dose-rate maps scaled by constants "so that they have similar range with the density
maps"). With A the activity per voxel, A_tot its total over the volume (MBq) and V the voxel volume:

    activity channel  = A / A_tot x (1 L / V)           (:attr:`Normalisation.activity_scale` = 1e6 mm3 / V)
    dose rate (VDK, target, output) = D / A_tot x 4.4e4  (:attr:`Normalisation.dose_scale`, MBq s / mGy)
    density channel   = density in g/cm3, unscaled (0.001 air ... ~1.9 bone)

Both constants mean "relative to the total activity spread evenly through one litre of soft tissue": the activity
channel is then 1 and the local (electron) dose rate of Lu-177 is 0.1479 MeV x 1.602e-13 J/MeV x 1e6 /s / 1.04 kg
= 2.28e-5 mGy/s per MBq, which the dose scale (1 / 2.28e-5 ~ 4.4e4) also maps to ~1. Organs with uptake are then
O(1), lesions O(10), like the density channel. The network never sees the absolute activity: doubling the activity
doubles the output exactly (the output is scaled back by A_tot). The constants are stored with the weights
(:mod:`.weights`); the activity scale belongs to the training voxel size.

**Training manifest** (CSV, paths relative to it): ``id, ct, spect, reference`` and per row one of ``activity_mbq``
(total activity in the SPECT's field of view) or ``bq_per_count``; optional ``group`` (else ``case``: the patient of a
row, as in the ``cohort.csv`` of ``dosecnn phantom``, one row per time point; a split by patient keeps a group on one
side). ``reference`` is the Monte Carlo dose rate (mGy/s) of the TRUE activity on the CT grid (Li 2020: so that the CNN
also corrects the SPECT's blur). Each case goes through :func:`DoseCNNLib.physics.vdk.vdk_from_counts` (the same calibration,
kernels and VDK as ``dosecnn run``) and is cached as one folder of ``.npy`` files (read memory-mapped), keyed by the input
files' path, size and modification time, the calibration, the nuclide and :data:`CACHE_VERSION`. The reference is set
to zero in air (HU < -950), where the CNN's output is zero by construction (a Monte Carlo dose per mass of air is
noise).

**Samples**: one per axial slice: the pack of 11 slices (activity, density) centred on it, edge-padded at the volume's
ends (the end slice repeated), the VDK and reference slices, the body mask (HU > -500, holes filled per slice so that
the lungs count as inside) and the air mask. Augmentation (training only): random in-plane crops placed over the body,
random flips along x, y and z (the pack reversed) and random 90-degree in-plane rotations when the pixels are square.
All of these are physically valid: radiation transport is isotropic, so a mirrored or rotated patient has the mirrored
or rotated dose; rotations that swap x and y need square pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ImagingBasics.errors import UserError

from ..physics.materials import AIR_HU

CACHE_VERSION = 2  # 2: VDK density scaling bounded at 0.05 g/cm3
#: Dose-rate scale (MBq s / mGy): 1 / (Lu-177 electron dose rate of 1 MBq spread through 1 L of soft tissue).
DOSE_SCALE = 4.4e4
#: One litre in mm3: the activity channel is the share of the total activity per litre.
LITRE_MM3 = 1e6
#: HU above which a voxel belongs to the body (before filling holes: the lungs are inside).
BODY_HU = -500.0
#: Relative tolerance on voxel sizes: cases of one training set, and a CT against the model's training voxel size.
SPACING_TOLERANCE = 0.05
ARRAYS = ("activity_mbq", "density", "vdk", "reference", "body", "air")


@dataclass(frozen=True)
class Normalisation:
    """The constants of the CNN's input and output scaling (see the module docstring)."""

    activity_scale: float
    dose_scale: float = DOSE_SCALE

    @classmethod
    def for_spacing(cls, spacing_mm: Sequence[float]) -> Normalisation:
        return cls(activity_scale=LITRE_MM3 / float(np.prod(spacing_mm)))

    def activity(self, activity_mbq, total_mbq: float):
        """Activity per voxel (MBq) -> the network's activity channel."""
        return activity_mbq * np.float32(self.activity_scale / total_mbq)

    def dose(self, dose_mgy_s, total_mbq: float):
        """Dose rate (mGy/s) -> normalised dose rate."""
        return dose_mgy_s * np.float32(self.dose_scale / total_mbq)

    def dose_back(self, normalised, total_mbq: float):
        """Normalised dose rate -> mGy/s."""
        return normalised * np.float32(total_mbq / self.dose_scale)

    def to_dict(self) -> Dict[str, float]:
        return {"activity_scale": float(self.activity_scale), "dose_scale": float(self.dose_scale)}

    @classmethod
    def from_dict(cls, d: Dict[str, float]) -> Normalisation:
        return cls(float(d["activity_scale"]), float(d["dose_scale"]))


def body_mask(hu: np.ndarray) -> np.ndarray:
    """Body voxels: HU > -500 with the holes of each axial slice filled (lungs and airways inside the body)."""
    from scipy import ndimage

    inside = np.asarray(hu) > BODY_HU
    return np.stack([ndimage.binary_fill_holes(s) for s in inside]) if inside.size else inside


def window_indices(start: int, stop: int, half: int, nz: int) -> np.ndarray:
    """Slice indices for the packs of slices ``start..stop-1``: ``start - half .. stop - 1 + half``, clipped to the
    volume (edge padding: the end slices repeat)."""
    return np.clip(np.arange(start - half, stop + half), 0, nz - 1)


@dataclass
class DoseCase:
    """One training case on its CT grid (arrays ``[z, y, x]``, possibly memory-mapped; physical units)."""

    case_id: str
    spacing: Tuple[float, float, float]  # mm (x, y, z)
    total_mbq: float
    activity_mbq: np.ndarray  # MBq per voxel
    density: np.ndarray  # g/cm3 (Li 2020 calibration)
    vdk: np.ndarray  # mGy/s
    reference: np.ndarray  # mGy/s, zero in air
    body: np.ndarray  # bool
    air: np.ndarray  # bool, HU < -950
    group: str = ""

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(n) for n in self.density.shape)  # type: ignore[return-value]


# --- manifest and cache ---------------------------------------------------------------------------
def read_dose_manifest(path: Path) -> List[Dict[str, str]]:
    """Rows of a training manifest with absolute paths and exactly one calibration per row (clear errors)."""
    from ImagingBasics.manifest import read_manifest

    path = Path(path)
    rows = read_manifest(path, required=("id", "ct", "spect", "reference"), path_columns=("ct", "spect", "reference"))
    for row in rows:
        if not row.get("reference"):
            raise UserError(f"{path}: case {row['id']} has no reference dose rate")
        given = [k for k in ("activity_mbq", "bq_per_count") if row.get(k)]
        if len(given) != 1:
            raise UserError(f"{path}: case {row['id']} needs exactly one of the columns activity_mbq, bq_per_count")
        try:
            value = float(row[given[0]])
        except ValueError:
            raise UserError(f"{path}: case {row['id']}: {given[0]} is not a number ({row[given[0]]!r})") from None
        if not (np.isfinite(value) and value > 0):
            raise UserError(f"{path}: case {row['id']}: {given[0]} must be positive")
    return rows


def _fingerprint(path: str) -> List:
    if not os.path.exists(path):
        raise UserError(f"{path} not found")
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, int(st.st_mtime)]


def cache_key(row: Dict[str, str], nuclide: str) -> str:
    """Hash of a case's input files (path, size, modification time), calibration, nuclide and the cache version."""
    payload = {"files": {k: _fingerprint(row[k]) for k in ("ct", "spect", "reference")},
               "calibration": {k: row.get(k, "") for k in ("activity_mbq", "bq_per_count")},
               "nuclide": nuclide, "density": "li2020", "version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def prepare_case(row: Dict[str, str], nuclide: str = "Lu-177", kernel_cache: Optional[Path] = None,
                 device: str = "cpu") -> Tuple[Dict[str, np.ndarray], Dict[str, object]]:
    """One manifest row -> (arrays on the CT grid, metadata): the inference pipeline's activity and VDK dose rate."""
    from ImagingBasics.imageio import read_volume
    from ImagingBasics.validation import require_finite

    from ..physics.vdk import vdk_from_counts

    ct, spect, reference = (read_volume(row[k]) for k in ("ct", "spect", "reference"))
    if not reference.same_geometry(ct):
        raise UserError("the reference dose rate must be on the CT grid (same size, spacing, origin and direction)")
    require_finite(reference, "reference dose rate")
    require_finite(ct, "CT")
    calibration = {"bq_per_count": float(row["bq_per_count"])} if row.get("bq_per_count") else \
        {"activity_mbq": float(row["activity_mbq"])}
    activity, vdk, info = vdk_from_counts(spect, ct, nuclide=nuclide, kernel_cache=kernel_cache, device=device,
                                          **calibration)
    arrays = case_arrays(ct, activity, vdk, reference)
    meta = {"id": row["id"], "spacing": list(ct.spacing), "shape": list(ct.shape),
            "total_mbq": float(info["total_activity_mbq"]), "nuclide": nuclide}
    return arrays, meta


def case_arrays(ct, activity_bq, vdk, reference) -> Dict[str, np.ndarray]:
    """The arrays of a :class:`DoseCase` from Volumes on one grid: CT (HU), activity (Bq), VDK and reference (mGy/s)."""
    from ..physics.materials import density_from_hu_li2020

    for name, v in (("activity", activity_bq), ("VDK", vdk), ("reference", reference)):
        if not v.same_geometry(ct):
            raise UserError(f"the {name} map must be on the CT grid")
    hu = ct.array
    air = hu < AIR_HU
    return {"activity_mbq": (activity_bq.array / 1e6).astype(np.float32), "density": density_from_hu_li2020(hu),
            "vdk": vdk.array.astype(np.float32), "reference": np.where(air, 0.0, reference.array).astype(np.float32),
            "body": body_mask(hu), "air": air}


def case_from_volumes(case_id: str, ct, activity_bq, vdk, reference, group: str = "") -> DoseCase:
    """A :class:`DoseCase` in memory (no cache), e.g. for phantoms made in the same program."""
    a = case_arrays(ct, activity_bq, vdk, reference)
    total = float(a["activity_mbq"].sum(dtype=np.float64))
    if not total > 0:
        raise UserError(f"case {case_id}: the activity map is empty")
    return DoseCase(case_id, tuple(ct.spacing), total, a["activity_mbq"], a["density"], a["vdk"], a["reference"],
                    a["body"], a["air"], group)


def _write_case_folder(arrays: Dict[str, np.ndarray], meta: Dict[str, object], folder: Path) -> None:
    """Write the arrays and meta.json into a temporary folder, then rename it into place (never half a case)."""
    tmp = folder.parent / f".{folder.name}.tmp-{secrets.token_hex(4)}"
    try:
        tmp.mkdir(parents=True)
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arrays[name]))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():  # another process finished the same case: keep its folder
                raise
    except OSError as exc:
        raise UserError(f"could not write the cache folder {folder}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_case_folder(folder: Path, row: Dict[str, str]) -> DoseCase:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    a = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    return DoseCase(row["id"], tuple(meta["spacing"]), float(meta["total_mbq"]), a["activity_mbq"], a["density"],
                    a["vdk"], a["reference"], a["body"], a["air"], row.get("group") or row.get("case", ""))


def load_cases(manifest: Path, cache_dir: Path, nuclide: str = "Lu-177", kernel_cache: Optional[Path] = None,
               device: str = "cpu", progress: Optional[Callable[[int, int, str], None]] = None) -> List[DoseCase]:
    """Every case of a training manifest, prepared once and cached in ``cache_dir`` (memory-mapped when read).

    All cases must share one voxel size (within 5 %): the network is trained for one.
    """
    rows = read_dose_manifest(manifest)
    cache_dir = Path(cache_dir)
    cases = []
    for i, row in enumerate(rows):
        folder = cache_dir / f"{row['id']}_{cache_key(row, nuclide)}"
        if not (folder / "meta.json").is_file():
            try:
                arrays, meta = prepare_case(row, nuclide, kernel_cache, device)
            except UserError as exc:
                raise UserError(f"case {row['id']}: {exc}") from None
            _write_case_folder(arrays, meta, folder)
        cases.append(_read_case_folder(folder, row))  # always the cached arrays: a first and a later run agree
        if progress is not None:
            progress(i + 1, len(rows), row["id"])
    check_common_spacing(cases)
    return cases


def check_common_spacing(cases: Sequence[DoseCase]) -> Tuple[float, float, float]:
    """The cases' common voxel size (mm, the first case's); UserError when one differs by more than 5 %."""
    first = np.asarray(cases[0].spacing, float)
    for c in cases[1:]:
        if np.any(np.abs(np.asarray(c.spacing) - first) > SPACING_TOLERANCE * first):
            raise UserError(f"case {c.case_id} has {tuple(c.spacing)} mm voxels, case {cases[0].case_id} "
                            f"{tuple(first)} mm: resample the cases to one voxel size for training")
    return tuple(float(s) for s in first)  # type: ignore[return-value]


# --- samples and batches --------------------------------------------------------------------------
SliceRef = Tuple[int, int]  # (case index, slice index)


def all_slices(cases: Sequence[DoseCase]) -> List[SliceRef]:
    return [(c, k) for c, case in enumerate(cases) for k in range(case.shape[0])]


def split_slices(cases: Sequence[DoseCase], val_fraction: float, seed: int,
                 by: str = "slice") -> Tuple[List[SliceRef], List[SliceRef]]:
    """(training, validation) slices: a random ``val_fraction`` of all slices (``by="slice"``, as Li 2020), or of the
    patients (``by="patient"``: every slice of a validation patient; patients with the same ``group`` together)."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    refs = all_slices(cases)
    if by == "slice":
        n_val = min(max(1, int(round(val_fraction * len(refs)))), len(refs) - 1)
        chosen = set(rng.permutation(len(refs))[:n_val].tolist())
        return [r for i, r in enumerate(refs) if i not in chosen], [r for i, r in enumerate(refs) if i in chosen]
    if by != "patient":
        raise UserError(f"unknown validation split {by!r}; use 'slice' or 'patient'")
    groups = sorted({c.group or c.case_id for c in cases})
    if len(groups) < 2:
        raise UserError("a validation split by patient needs at least two patients")
    n_val = min(max(1, int(round(val_fraction * len(groups)))), len(groups) - 1)
    val_groups = {groups[i] for i in rng.permutation(len(groups))[:n_val]}
    val_cases = {i for i, c in enumerate(cases) if (c.group or c.case_id) in val_groups}
    return [r for r in refs if r[0] not in val_cases], [r for r in refs if r[0] in val_cases]


@dataclass
class Batch:
    """Network inputs and targets (numpy, float32 unless noted): packs (B, 2, slices, H, W), the rest (B, 1, H, W)."""

    pack: np.ndarray
    vdk: np.ndarray
    reference: np.ndarray
    body: np.ndarray  # bool
    air: np.ndarray  # bool
    valid: np.ndarray  # bool: False in padding added to bring slices of different sizes to one batch


def slice_sample(case: DoseCase, k: int, norm: Normalisation, half: int,
                 window: Tuple[slice, slice] = (slice(None), slice(None))) -> Dict[str, np.ndarray]:
    """The normalised pack and middle-slice maps of slice ``k`` within the in-plane ``window`` (default: all), read
    from the (memory-mapped) arrays of that window only."""
    idx = window_indices(k, k + 1, half, case.shape[0])
    ys, xs = window
    pack = np.stack([norm.activity(np.asarray(case.activity_mbq[idx, ys, xs]), case.total_mbq),
                     np.asarray(case.density[idx, ys, xs])])
    return {"pack": pack.astype(np.float32),
            "vdk": norm.dose(np.asarray(case.vdk[k:k + 1, ys, xs]), case.total_mbq).astype(np.float32),
            "reference": norm.dose(np.asarray(case.reference[k:k + 1, ys, xs]), case.total_mbq).astype(np.float32),
            "body": np.asarray(case.body[k:k + 1, ys, xs], bool), "air": np.asarray(case.air[k:k + 1, ys, xs], bool)}


def _crop_window(rng: np.random.Generator, body: np.ndarray, crop: int) -> Tuple[slice, slice]:
    """A random crop x crop window (clipped to the slice) that lies over the body where the slice has one."""
    h, w = body.shape
    where = np.nonzero(body)
    windows = []
    for axis, n in enumerate((h, w)):
        c = min(crop, n)
        if len(where[axis]):
            lo_b, hi_b = int(where[axis].min()), int(where[axis].max())
            lo, hi = sorted((lo_b, hi_b - c + 1))
            lo, hi = int(np.clip(lo, 0, n - c)), int(np.clip(hi, 0, n - c))
        else:
            lo, hi = 0, n - c
        start = int(rng.integers(lo, hi + 1))
        windows.append(slice(start, start + c))
    return windows[0], windows[1]


def _augment(sample: Dict[str, np.ndarray], rng: np.random.Generator, square_pixels: bool) -> Dict[str, np.ndarray]:
    """Random flips along x, y, z and (square pixels only) a random number of in-plane quarter turns."""
    flip_x, flip_y, flip_z = (bool(v) for v in rng.integers(0, 2, 3))
    turns = int(rng.integers(0, 4)) if square_pixels else 0
    out = {}
    for key, a in sample.items():
        if flip_x:
            a = a[..., ::-1]
        if flip_y:
            a = a[..., ::-1, :]
        if flip_z and key == "pack":
            a = a[:, ::-1]
        if turns:
            a = np.rot90(a, turns, axes=(-2, -1))
        out[key] = np.ascontiguousarray(a)
    return out


def make_batch(cases: Sequence[DoseCase], refs: Sequence[SliceRef], norm: Normalisation, half: int,
               rng: Optional[np.random.Generator] = None, crop: Optional[int] = None, augment: bool = False) -> Batch:
    """The batch of slices ``refs``; with ``rng``: random ``crop`` x ``crop`` windows over the body (if ``crop``) and
    random flips and quarter turns (if ``augment``).

    Slices of different sizes are zero-padded to the largest (``valid`` False there, ``air`` True)."""
    samples = []
    for c, k in refs:
        case = cases[c]
        window = _crop_window(rng, np.asarray(case.body[k]), crop) if rng is not None and crop else (slice(None),) * 2
        s = slice_sample(case, k, norm, half, window)
        if rng is not None and augment:
            s = _augment(s, rng, abs(case.spacing[0] - case.spacing[1]) <= 1e-3 * case.spacing[0])
        samples.append(s)
    h = max(s["vdk"].shape[-2] for s in samples)
    w = max(s["vdk"].shape[-1] for s in samples)

    def stack(key: str, fill) -> np.ndarray:
        out = []
        for s in samples:
            a = s[key]
            ph, pw = h - a.shape[-2], w - a.shape[-1]
            if ph or pw:
                a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)], constant_values=fill)
            out.append(a)
        return np.stack(out)

    for s in samples:
        s["valid"] = np.ones_like(s["body"])
    return Batch(stack("pack", 0.0), stack("vdk", 0.0), stack("reference", 0.0), stack("body", False),
                 stack("air", True), stack("valid", False))
