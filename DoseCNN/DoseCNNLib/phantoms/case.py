"""``dosecnn phantom``: synthetic Lu-177 DOTATATE patients with SPECTs at several time points and Monte Carlo truth.

One case (:func:`generate_case`):

1. a torso CT with organ/lesion labels and uptake compartments (:mod:`.torso`);
2. known kinetics per compartment (:mod:`.kinetics`) -> the TRUE activity (Bq per voxel) at each time point
   (default 4, 24, 96 and 168 h: Li 2020's four scans within 7 days) and the true time-integrated activity (TIA);
3. a SPECT (counts, own grid) of each time point's true activity (:mod:`.spect_sim`);
4. ground truth (Li 2020: "MC dose rate of the TRUE activity"): the Monte Carlo engine
   (:mod:`DoseCNNLib.physics.monte_carlo`) run once per compartment with unit activity (:mod:`.mc_truth`: dose rate
   and absorbed dose by linearity, decays shared in proportion to the time-integrated activity, optionally as
   independent runs that measure each label's standard error); optionally read from or written to a cache of truths
   (:mod:`.truth_cache`).

:func:`write_case` writes a folder per case; :func:`generate_cohort` writes ``cohort.csv`` (the training manifest
of ``dosecnn train``: one row per case and time point) and each case's ``timepoints.csv`` (the manifest of
``dosecnn integrate``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume

from . import kinetics as K
from . import torso as T
from .spect_sim import SpectModel, simulate_spect

DEFAULT_TIMES_H = (4.0, 24.0, 96.0, 168.0)


@dataclass
class PhantomCase:
    ct: Volume  # HU, int16
    labels: Volume  # uint8, T.LABELS and lesions
    times_h: List[float]
    activity_bq: List[Volume]  # true activity per time point (Bq per voxel, CT grid)
    spect: List[Volume]  # counts per time point (SPECT grid)
    tia_mbq_h: Volume  # true time-integrated activity per voxel (MBq h)
    dose_rate_mgy_s: List[Volume] = field(default_factory=list)  # MC truth per time point (empty without MC)
    dose_rate_sd_mgy_s: List[Volume] = field(default_factory=list)  # its standard error
    absorbed_dose_gy: Optional[Volume] = None  # MC truth of the absorbed dose
    meta: Dict = field(default_factory=dict)
    #: per label: standard errors of the truth's label means (only with independent Monte Carlo runs)
    truth_label_errors: Dict[int, Dict[str, object]] = field(default_factory=dict)


def time_tag(t_h: float) -> str:
    """File tag of a time point: 4 h -> ``t004h``, 24.5 h -> ``t024.5h``."""
    return f"t{t_h:03.0f}h" if float(t_h).is_integer() else f"t{t_h:05.1f}h"


def compartment_activity(mask: np.ndarray, voxel_ml: float, concentration_mbq_ml: float) -> np.ndarray:
    """Bq per voxel of a uniform concentration (MBq/mL) in ``mask``."""
    return mask.astype(np.float32) * np.float32(concentration_mbq_ml * voxel_ml * 1e6)


def generate_case(seed: int, size: str = "small", times_h: Sequence[float] = DEFAULT_TIMES_H, mc_decays: int = 2_000_000,
                  mc_batches: int = 5, device: str = "cpu", spect_model: Optional[SpectModel] = None,
                  grid_override: Optional[tuple] = None, progress: Optional[Callable[[str], None]] = None,
                  mc_runs: int = 1, truth_cache: Optional[Path] = None, mc_workers: int = 1,
                  mc_device: Optional[str] = None) -> PhantomCase:
    """One synthetic patient (see the module docstring). ``mc_decays=0`` skips the Monte Carlo truth.

    ``grid_override``: ((nx, ny, nz), (sx, sy, sz)) instead of a preset ``size`` (tests use coarse grids);
    ``mc_runs``, ``truth_cache``, ``mc_workers``, ``mc_device``: see :func:`simulate_case`.
    """
    say = progress or (lambda msg: None)
    if grid_override is None and size not in T.GRIDS:
        raise UserError(f"unknown phantom size {size!r}; choose one of {', '.join(T.GRIDS)}")
    size_xyz, spacing = grid_override or T.GRIDS[size]
    rng = np.random.default_rng(seed)
    params = T.draw_torso(rng)
    grid = T.centred_grid(size_xyz, spacing)
    say("anatomy")
    hu, labels, compartments = T.torso_on_grid(params, grid, rng)
    ct = grid.with_array(np.round(hu).astype(np.int16))
    names = label_names(len(params.lesions), params)
    extra = {"generator": "DoseCNNLib.phantoms.case", "size": size if grid_override is None else "custom",
             "torso": params.to_dict()}
    return simulate_case(ct, grid.with_array(labels), compartments, names, rng, seed, times_h, mc_decays, mc_batches,
                         device, spect_model, extra, say, mc_runs=mc_runs, truth_cache=truth_cache,
                         mc_workers=mc_workers, mc_device=mc_device)


def simulate_case(ct: Volume, labels: Volume, compartments: Dict[str, np.ndarray], names: Dict[int, str],
                  rng: np.random.Generator, seed: int, times_h: Sequence[float] = DEFAULT_TIMES_H,
                  mc_decays: int = 2_000_000, mc_batches: int = 5, device: str = "cpu",
                  spect_model: Optional[SpectModel] = None, extra_meta: Optional[Dict] = None,
                  say: Callable[[str], None] = lambda msg: None, mc_runs: int = 1,
                  truth_cache: Optional[Path] = None, mc_workers: int = 1,
                  mc_device: Optional[str] = None) -> PhantomCase:
    """Kinetics, true activity, SPECTs and Monte Carlo truth of an anatomy (CT, labels, uptake compartments named as
    in :mod:`.kinetics`): steps 2-4 of the module docstring.

    ``mc_runs``: 1, one Monte Carlo run of ``mc_batches`` batches per compartment; >= 2, that many independent runs,
    which also give each label's standard error (:mod:`.mc_truth`). ``truth_cache``: a folder of cached truths
    (:mod:`.truth_cache`; None: none). ``mc_workers``: processes that simulate the compartments side by side (CPU;
    the same truth bit for bit). ``device``: the SPECT simulation's torch device, and the Monte Carlo's unless
    ``mc_device`` names another (a GPU machine's many CPU cores can run the Monte Carlo of several phantoms side by
    side while its GPU reconstructs their OSEM SPECTs)."""
    times = sorted(float(t) for t in times_h)
    if not times or times[0] <= 0 or len(set(times)) != len(times):
        raise UserError("time points must be distinct positive hours after administration")
    compartments = {name: m for name, m in compartments.items() if m.any()}
    kinetics = K.draw_kinetics(rng, list(compartments))
    voxel_ml = ct.voxel_volume_ml
    activity = [ct.with_array(_activity_at(compartments, kinetics, voxel_ml, t)) for t in times]
    tia = np.zeros(ct.shape, np.float32)
    for name, mask in compartments.items():
        tia += mask.astype(np.float32) * np.float32(kinetics[name].integral() * voxel_ml)  # MBq h
    model = spect_model or SpectModel()
    spects, spect_info = [], []
    for t, a in zip(times, activity):
        say(f"SPECT at {t:g} h")
        s, info = simulate_spect(a, model, rng, ct=ct, device=device)
        spects.append(s)
        spect_info.append({"time_h": t, **info})
    case = PhantomCase(ct, labels, times, activity, spects, ct.with_array(tia))
    mc_info: Dict = {}
    if mc_decays > 0:
        mc_info = _monte_carlo_truth(case, compartments, kinetics, voxel_ml, mc_decays, mc_batches, mc_runs,
                                     mc_device or device, seed, truth_cache, say, mc_workers)
    case.meta = {**(extra_meta or {}), **_meta(seed, names, kinetics, compartments, voxel_ml, spect_info, model, case,
                                               mc_decays, mc_batches, mc_info)}
    return case


def _activity_at(compartments, kinetics, voxel_ml: float, t_h: float) -> np.ndarray:
    out = None
    for name, mask in compartments.items():
        a = compartment_activity(mask, voxel_ml, float(kinetics[name].concentration(t_h)))
        out = a if out is None else out + a
    return out


def _monte_carlo_truth(case: PhantomCase, compartments, kinetics, voxel_ml: float, mc_decays: int, batches: int,
                       runs: int, device: str, seed: int, cache: Optional[Path], say, workers: int = 1) -> Dict:
    """Fill the case's truth (:func:`.mc_truth.monte_carlo_truth`, or the cache's copy); returns what goes into
    ``meta["monte_carlo"]`` besides decays and batches (runs, cache use)."""
    from .mc_truth import decay_shares, monte_carlo_truth
    from .truth_cache import cached_truth, inputs_digest, truth_key

    shares = decay_shares(compartments, kinetics, voxel_ml, mc_decays)

    def compute():
        return monte_carlo_truth(case.ct, case.labels, compartments, kinetics, voxel_ml, case.times_h, shares, batches,
                                 runs, device, seed, say, workers)

    key = None
    if cache is not None:
        key = truth_key(seed, mc_decays, shares, batches, runs, device, case.times_h,
                        inputs_digest(case.ct, case.labels, compartments, kinetics))
    truth, info = cached_truth(cache, key, case.ct.shape, compute, say)
    case.dose_rate_mgy_s = [case.ct.with_array(a) for a in truth.dose_rate_mgy_s]
    case.dose_rate_sd_mgy_s = [case.ct.with_array(a) for a in truth.dose_rate_sd_mgy_s]
    case.absorbed_dose_gy = case.ct.with_array(truth.absorbed_dose_gy)
    case.truth_label_errors = truth.label_errors()
    extra = {"runs": runs} if runs > 1 else {}
    return {**extra, **info} if cache is not None else extra


def label_names(n_lesions: int, params: Optional[T.TorsoParams] = None) -> Dict[int, str]:
    """Label value -> name, lesions named by site (``lesion 10 (liver, necrotic)``)."""
    names = dict(T.LABELS)
    for i in range(n_lesions):
        site = ""
        if params is not None:
            lesion = params.lesions[i]
            site = f" ({lesion.site}{', necrotic' if lesion.necrotic_radius_mm > 0 else ''})"
        names[T.LESION_LABEL_START + i] = f"lesion {T.LESION_LABEL_START + i}{site}"
    return names


def _meta(seed, names, kinetics, compartments, voxel_ml, spect_info, model, case, mc_decays, mc_batches,
          mc_info: Optional[Dict] = None) -> Dict:
    labels = case.labels.array
    per_label = []
    for value, name in names.items():
        inside = labels == value
        if not inside.any():
            continue
        row = {"label": value, "name": name, "volume_ml": float(inside.sum() * voxel_ml),
               "tia_mbq_h": float(case.tia_mbq_h.array[inside].sum(dtype=np.float64))}
        if case.absorbed_dose_gy is not None:
            row["mean_absorbed_dose_gy"] = float(case.absorbed_dose_gy.array[inside].mean(dtype=np.float64))
            row["mean_dose_rate_mgy_s"] = [float(d.array[inside].mean(dtype=np.float64)) for d in case.dose_rate_mgy_s]
            row.update(case.truth_label_errors.get(value, {}))
        per_label.append(row)
    return {
        "seed": seed, "times_h": case.times_h, "spacing_mm": list(case.ct.spacing), "shape_zyx": list(case.ct.shape),
        "labels": {str(k): v for k, v in names.items()},
        "kinetics": {name: {"amplitudes_mbq_ml": k.amplitudes_mbq_ml, "half_lives_h": k.half_lives_h,
                            "volume_ml": float(compartments[name].sum() * voxel_ml),
                            "tia_mbq_h": k.integral() * float(compartments[name].sum() * voxel_ml)}
                     for name, k in kinetics.items()},
        "spect": spect_info, "spect_model": model.to_dict(),
        "monte_carlo": {"decays": mc_decays, "batches": mc_batches, **(mc_info or {})} if mc_decays > 0 else None,
        "per_label": per_label,
        "units": {"activity": "Bq per voxel", "spect": "counts", "tia": "MBq h per voxel", "dose_rate": "mGy/s",
                  "absorbed_dose": "Gy"},
        "note": "synthetic phantom for research and testing; not patient data",
    }


def write_case(case: PhantomCase, folder: Path, preview: bool = False) -> Path:
    """Write one case folder (files listed in the README; replaced whole) and return it. The files go to a temporary
    sibling folder renamed into place when complete (:func:`ImagingBasics.files.atomic_folder`), so a stopped run
    never leaves half a case."""
    from ImagingBasics.files import atomic_folder

    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        _write_case_files(case, tmp, preview)
    return folder


def _write_case_files(case: PhantomCase, folder: Path, preview: bool) -> None:
    from ImagingBasics.files import write_csv, write_json
    from ImagingBasics.imageio import write_volume

    write_volume(case.ct, folder / "ct.nrrd")
    write_volume(case.labels, folder / "labels.nrrd")
    write_volume(case.tia_mbq_h, folder / "tia_truth.nrrd")
    rows = []
    bq_per_count = case.meta["spect_model"]["bq_per_count"]
    for k, t in enumerate(case.times_h):
        tag = time_tag(t)
        write_volume(case.activity_bq[k], folder / f"activity_{tag}.nrrd")
        write_volume(case.spect[k], folder / f"spect_{tag}.nrrd")
        if case.dose_rate_mgy_s:
            write_volume(case.dose_rate_mgy_s[k], folder / f"dose_rate_mc_{tag}.nrrd")
            write_volume(case.dose_rate_sd_mgy_s[k], folder / f"dose_rate_mc_sd_{tag}.nrrd")
        rows.append({"time_h": t, "spect": f"spect_{tag}.nrrd", "ct": "ct.nrrd", "bq_per_count": bq_per_count})
    if case.absorbed_dose_gy is not None:
        write_volume(case.absorbed_dose_gy, folder / "absorbed_dose_mc.nrrd")
    write_csv(rows, folder / "timepoints.csv")
    write_csv([{"label": int(k), "name": v} for k, v in case.meta["labels"].items()], folder / "labels.csv")
    write_json(case.meta, folder / "meta.json")
    if preview:
        write_preview(case, folder / "preview.png")


def case_files(meta: Dict, preview: bool = False) -> List[str]:
    """The files of a case folder that :func:`write_case` writes for this ``meta.json``."""
    names = ["ct.nrrd", "labels.nrrd", "tia_truth.nrrd", "timepoints.csv", "labels.csv", "meta.json"]
    for t in meta["times_h"]:
        names += [f"activity_{time_tag(t)}.nrrd", f"spect_{time_tag(t)}.nrrd"]
        if meta.get("monte_carlo"):
            names += [f"dose_rate_mc_{time_tag(t)}.nrrd", f"dose_rate_mc_sd_{time_tag(t)}.nrrd"]
    if meta.get("monte_carlo"):
        names.append("absorbed_dose_mc.nrrd")
    return names + (["preview.png"] if preview else [])


def is_complete_case(folder: Path, seed: int, size: str, times_h: Sequence[float], mc_decays: int,
                     spect_model: Optional[SpectModel] = None, preview: bool = False) -> bool:
    """True when ``folder`` holds a whole case that :func:`generate_case` would make again from these arguments: a
    ``meta.json`` recording the same seed, size, time points, SPECT model and Monte Carlo decays, and every file of
    :func:`case_files` (a truth made on another device is kept: it is as valid, from another random stream)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        model = json.loads(json.dumps((spect_model or SpectModel()).to_dict()))  # as meta.json holds it
        same = (meta["seed"] == int(seed) and meta.get("size") == size
                and meta["times_h"] == sorted(float(t) for t in times_h) and meta["spect_model"] == model
                and int((meta.get("monte_carlo") or {}).get("decays", 0)) == int(mc_decays))
        return same and all((folder / name).is_file() for name in case_files(meta, preview))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_preview(case: PhantomCase, path: Path) -> Path:
    """Coronal views through the kidneys: CT with labels, true activity, SPECT and Monte Carlo dose rate (first time
    point), and the per-label truth table."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ImagingBasics.display import label_orientation, radiological_view
    from ImagingBasics.files import save_figure
    from ImagingBasics.resample import resample_amount

    labels = radiological_view(case.labels)
    j = int(np.argmax(np.isin(labels.array, (3, 4)).sum(axis=(0, 2))))  # the coronal slice with most kidney
    ct = radiological_view(case.ct)
    extent = ct.extent("coronal")
    spect_ct = resample_amount(case.spect[0], case.ct, keep_total=True)
    panels = [("CT and labels", ct.coronal(j), "gray"),
              ("true activity", radiological_view(case.activity_bq[0]).coronal(j), "inferno"),
              ("SPECT (on the CT grid)", radiological_view(spect_ct).coronal(j), "inferno")]
    if case.dose_rate_mgy_s:
        panels.append(("Monte Carlo dose rate (mGy/s)", radiological_view(case.dose_rate_mgy_s[0]).coronal(j), "inferno"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, image, cmap) in zip(axes, panels):
        kw = {"vmin": -250, "vmax": 350} if cmap == "gray" else {}
        ax.imshow(image, cmap=cmap, extent=extent, **kw)
        if cmap == "gray":
            lab = labels.coronal(j)
            ax.contour(lab, levels=np.arange(1.5, max(int(lab.max()), 1) + 1), linewidths=0.4, colors="c",
                       extent=extent, origin="upper")
        ax.set_title(f"{title}, {case.times_h[0]:g} h", fontsize=9)
        ax.axis("off")
        label_orientation(ax, "coronal")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return Path(path)


def training_rows(folder: Path, case_id: str, meta: Dict) -> List[Dict]:
    """Rows of ``cohort.csv`` for one written case (one per time point with a Monte Carlo reference)."""
    rows = []
    for t in meta["times_h"]:
        tag = time_tag(t)
        ref = folder / f"dose_rate_mc_{tag}.nrrd"
        rows.append({"id": f"{case_id}_{tag}", "case": case_id, "time_h": t, "ct": f"{folder.name}/ct.nrrd",
                     "spect": f"{folder.name}/spect_{tag}.nrrd",
                     "reference": f"{folder.name}/{ref.name}" if ref.is_file() else "",
                     "reference_sd": f"{folder.name}/dose_rate_mc_sd_{tag}.nrrd" if ref.is_file() else "",
                     "labels": f"{folder.name}/labels.nrrd", "bq_per_count": meta["spect_model"]["bq_per_count"]})
    return rows


def generate_cohort(out: Path, n: int, seed: int, size: str = "small", times_h: Sequence[float] = DEFAULT_TIMES_H,
                    mc_decays: int = 2_000_000, device: str = "cpu", prefix: str = "case", preview: bool = False,
                    progress: Optional[Callable[[str], None]] = None,
                    spect_model: Optional[SpectModel] = None, keep_complete: bool = False) -> List[Path]:
    """``n`` cases in ``out/<prefix>NNN`` and ``out/cohort.csv`` (case i has seed ``seed * 1000 + i``).

    ``keep_complete``: a case folder that already holds this very case (:func:`is_complete_case`) is kept, not made
    again, so that a stopped cohort (minutes per case with OSEM SPECTs and a Monte Carlo truth) continues where it was;
    the temporary folders a killed run left behind are removed."""
    from ImagingBasics.files import write_csv

    if n < 1:
        raise UserError("--n must be at least 1")
    out = Path(out)
    if keep_complete:
        for stale in out.glob(f".{prefix}[0-9][0-9][0-9].partial-*"):  # a killed run's unfinished cases
            shutil.rmtree(stale, ignore_errors=True)
    folders, rows = [], []
    for i in range(n):
        case_id = f"{prefix}{i:03d}"
        folder = out / case_id
        if keep_complete and is_complete_case(folder, seed * 1000 + i, size, times_h, mc_decays, spect_model, preview):
            if progress:
                progress(f"{case_id}: already made, kept")
            folders.append(folder)
            rows += training_rows(folder, case_id, load_meta(folder))
            continue
        say = (lambda msg, cid=case_id: progress(f"{cid}: {msg}")) if progress else None
        case = generate_case(seed * 1000 + i, size, times_h, mc_decays, device=device, spect_model=spect_model,
                             progress=say)
        folder = write_case(case, folder, preview)
        folders.append(folder)
        rows += training_rows(folder, case_id, case.meta)
    write_csv(rows, out / "cohort.csv")
    return folders


def load_meta(folder: Path) -> Dict:
    path = Path(folder) / "meta.json"
    if not path.is_file():
        raise UserError(f"{folder} is not a phantom case folder (no meta.json)")
    return json.loads(path.read_text())
