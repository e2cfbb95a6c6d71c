"""Train the residual dose CNN on projected + OSEM-reconstructed SPECTs and write its model card (issue 19).

    python scripts/train_dose_model.py --out /work/state/dose_osem --init bundled --mix 0.25 --epochs 12 [--install]
    python scripts/train_dose_model.py --install-from DIR     # install a finished run's model (e.g. a GPU run's files)

Steps (each skipped when its result is already in --out, so a stopped run continues where it was: run the same
command again; ``--train-hours`` pauses the training after the epoch that crosses the budget):

1. Cohorts (``dosecnn phantom``'s generator, :func:`DoseCNNLib.phantoms.case.generate_case`; the ``small`` grid,
   256 x 256 x 64 at 1.96 x 1.96 x 3 mm, 4 time points 4/24/96/168 h):

   - ``cohorts/train``: ``--n-train`` phantoms (seed ``--train-seed``: case i has seed seed x 1000 + i, as
     ``dosecnn phantom --seed``) with projected + OSEM SPECTs (``--spect osem``: 128 views, attenuation, depth-dependent
     collimator response, Poisson noise, OSEM 16 x 4) and the Monte Carlo truth of the true activity
     (``--train-decays``, 4e6 as the bundled model's training cohort). ``--mix F``: the first round(F x n) of them also
     get image-domain SPECTs of the same true activities (the fast model the bundled network was trained on; fresh
     noise), which enter training as extra rows (same Monte Carlo target, same patient: never split between training
     and validation). One phantom carries both SPECT models; the truth is computed once.
   - ``cohorts/heldout``: ``--n-heldout`` phantoms never seen in training (seed ``--heldout-seed``; with the default 12
     the first 6 are the anatomies of the bundled model's held-out cohort), their truths with ``--heldout-decays``
     (8e6, as before), the image-domain SPECTs in their files and projected + OSEM SPECTs of the same true activities
     (``bench/evaluate_dose_cnn.py``'s :func:`osem_spect`, seed 1000 + row, cached in ``cohorts/heldout/spects_osem``):
     both held-out sets are the same anatomies and truths, so the comparison between SPECT models is paired.

   Phantoms and OSEM SPECTs are made by ``--workers`` processes (torch threads split between them) on ``--device``
   (OSEM SPECTs and Monte Carlo truths; each phantom's ``meta.json`` records its device: a truth made on a GPU is
   another random stream than the CPU's, and phantoms already made are kept whatever device made them); a phantom is
   written to a temporary ``.<case>.partial-*`` folder and renamed when complete, so a stopped run never leaves half
   a case (and the workers of a stopped run start and write nothing more: :func:`require_parent`; a worker whose
   parent is gone exits: :func:`ImagingBasics.parallel.exit_with_parent`).
2. Training (:func:`DoseCNNLib.cnn.training.train_from_manifest`, what ``dosecnn train`` runs) in ``train/`` on
   ``--device``, after its preparation (activity, density, VDK of every row, cached in ``cache/``) by ``--workers``
   processes on ``--device`` (:func:`prepare_training_cases`): crops of
   ``--crop`` pixels, validation by patient (``--val-fraction``, 20 %), Li 2020's Adam/ReduceLROnPlateau/MSE
   settings; resumed from ``train/checkpoint.pt`` when there is one; ``--init bundled`` (or a weights file) starts
   from the bundled weights.
3. Held-out evaluation of the new model AND the bundled one on both held-out sets (one VDK per case x time point, both
   CNNs on it, on ``--device``; :func:`evaluate`), Li 2020's MDE and noise-corrected NRMSE per region; rows cached in
   ``eval/<set>`` and recomputed only when the weights change.
4. Acceptance (issue 19): on the held-out OSEM set (>= 8 phantoms x 4 time points), CNN vs density-scaled VDK, mean
   dose error lower by >= 50 % for lesions and kidneys and noise-corrected NRMSE lower by >= 15 % for both; and the
   same gains on the image-domain set (no regression below them).
5. ``dosecnn_residual.pt`` (float16, the best validation epoch), ``model_card.json`` (with the weights' SHA-256),
   ``MODEL_CARD.md``; ``--install`` copies the three into ``--models-dir`` (DoseCNN/Resources/Models/) only when the
   acceptance holds (exit status 1 otherwise). ``--install-from DIR`` does the same (:func:`install_model`) from
   another run's files and runs nothing else: exit status 1 with a one-line message when DIR's model_card.json
   records that the acceptance does not hold, 2 (``error: ...``) when DIR or a file is missing or corrupt.

Log: ``run.log`` in --out (also printed); measured times in ``timings.json`` (each phantom, OSEM SPECT, preparation
part, epoch and evaluation as it ends, with its device). At the end of a run the top level of --out holds
everything to send back from another machine, five files (:data:`RESULT_FILES`): ``dosecnn_residual.pt``,
``model_card.json``, ``MODEL_CARD.md``, ``run.log``, ``timings.json`` (a run stopped early: the last two).

Budget (measured 2026-12-04 on the 2-core development VM, the small grid, one torch thread per process; the VM was
shared with other jobs at a load of 6-9, so CPU seconds are the robust numbers and wall times run 2-4x longer than
on free cores):

- one training phantom (``--spect osem``, 4e6 decays, 4 time points): 247 CPU s = 4.1 CPU min (anatomy 2 s, each
  OSEM SPECT 50-60 CPU s, Monte Carlo 4e6 decays 24 CPU s, writing 1 s);
- one held-out phantom (image-domain SPECTs, 8e6 decays): 38 CPU s, and its 4 OSEM SPECTs 3.7 CPU min;
- training: 8.5-9.3 slices/s on 2 cores with 128-pixel crops (bench/RESULTS.md, the bundled model's run, 6.5 min per
  epoch over 64 pairs); under today's load 2.5 slices per CPU second (one thread), about half that. 38 phantoms
  (30 train, 8 validate) x 4 x 64 slices: 7680 training slices per epoch = 14 min at 9 slices/s, plus the
  validation of 2048 whole slices (1.5-8 min): ~16 min per epoch on free cores, up to ~35 min under load;
  ``--mix 0.25`` adds a quarter;
- evaluation: VDK + two CNNs per case x time point, 8 x 4 x 2 sets: 25-60 min.

Measured in the OSEM run itself (2026-12-04, 2 cores, little else running): 4.1-4.2 training slices/s (the time in
the network's backward pass), 2959-3086 s per epoch with its validation: 12 epochs are ~10 h, not 3.2-7 h; an epoch
stopped by the end of a session is lost (the checkpoint is written after each epoch).

Full run (38 training + 8 held-out phantoms): cohorts 38 x 4.1 + 8 x 4.3 = 190 CPU min = ~1.6 h on 2 workers
(~3-4 h under load); training 12 epochs from the bundled weights (``--init bundled``; its best epoch was 3) = 3.2-7 h
(24 epochs from scratch: 6.4-14 h); evaluation 0.5-1 h: ~5-12 h in all, resumable across days (``--train-hours 6``
pauses the training after the epoch that crosses 6 h; run the same command again to continue).

GPU budget: an ESTIMATE, not a measurement of this script, from the H200 figures (bench/results/gpu_checks_h200.md,
bench/RESULTS.md: Monte Carlo 148,600 decays/s at 2e5 decays and 627,700 at 2e6, i.e. ~1.1 s of start-up per run +
~0.98e6 decays/s; training 226-231 slices/s with 128-pixel crops, bfloat16; VDK 0.21 s and CNN 1.3 s for
512 x 512 x 130, 8x the small grid's voxels) and the VM's CPU figures above; one H200 + 16 cores,
``--device cuda --workers 16`` (one torch thread per worker), the default cohort (38 + 8 phantoms, 4 time points):

- cohorts, GPU-bound (16 processes share the GPU): Monte Carlo 38 x 4e6 + 8 x 8e6 = 216e6 decays = 3.7 min of GPU
  at 0.98e6/s, in ~550 runs (~12 compartments per phantom) whose ~1.1 s start-ups add 0.7 min if they overlap across
  the workers, up to 10 min if they are GPU time; 184 OSEM SPECTs (38 x 4 + 8 x 4; 50-60 CPU s each on the VM,
  grid_sample-bound; no GPU figure: 0.7-1.5 s each assumed) = 2-5 min of GPU; anatomy, noise, resampling and
  writing (~15 CPU s per phantom) overlap on the 16 cores. Cohorts: ~6.5-9.5 min, up to ~19 min;
- training's preparation (192 rows with --mix 0.25; 1.9 CPU s per row on the VM's CPU): < 0.5 min;
- training: ~9,700 crops per epoch (30 phantoms x 4 x 64 slices + the --mix rows) = 42 s at 230 slices/s, plus the
  validation's ~2,500 whole slices (~15 s): ~1 min per epoch, the first one ~0.25 min more (cuDNN autotuning);
- evaluation: 64 case x time points, VDK + two CNNs each (~1 s): ~1 min; start-up, fp16 weights, card: ~0.5 min.

In all: ~8.5-12 min + ~1 min per epoch with everything on the GPU: no ``--epochs`` fits ~8 minutes with the
default cohort and decays. Hence ``--mc-device cpu``: the truths on the 16 host cores (24 CPU s per 4e6 decays on one
VM core: 216e6 decays in ~1.4-4 min side by side, one torch thread per worker) while the GPU makes the OSEM SPECTs:
cohorts ~2.5-5 min, and ``--epochs 2`` in ~6-9 min. Recommended GPU command (bench/gpu_train.sh dose runs it; a run
stopped by a time limit still leaves ``run.log`` and ``timings.json``, the measured figures of every step it finished,
and continues when run again):

    python scripts/train_dose_model.py --out /tmp/dose_gpu --device cuda --mc-device cpu --workers 15 \
        --init bundled --mix 0.25 --epochs 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "DoseCNN", ROOT / "bench"):  # a checkout without pip install -e; the bench module
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

MODELS_DIR = ROOT / "DoseCNN" / "Resources" / "Models"
WEIGHTS_NAME = "dosecnn_residual.pt"
#: what --install and --install-from copy into the models folder
MODEL_FILES = (WEIGHTS_NAME, "model_card.json", "MODEL_CARD.md")
#: what the top level of --out holds at the end of a run: all a wrapper sends back from another machine
RESULT_FILES = MODEL_FILES + ("run.log", "timings.json")
#: issue 19's acceptance: (region kind, summary key, lowest gain), on both held-out sets
ACCEPTANCE = (("lesions", "mde_improvement", 0.50), ("kidneys", "mde_improvement", 0.50),
              ("lesions", "nrmse_improvement", 0.15), ("kidneys", "nrmse_improvement", 0.15))
SETS = {"osem": "projected + OSEM-reconstructed SPECTs", "image": "image-domain SPECT model (Gaussian 11 mm, noise)"}
_LOG: Optional[Path] = None


def log(message: str) -> None:
    line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
    print(line, flush=True)
    if _LOG is not None:
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def write_json(data, path: Path) -> None:
    from ImagingBasics.files import write_json as _write

    _write(data, path)


def read_json(path: Path, default=None):
    return json.loads(Path(path).read_text()) if Path(path).is_file() else default


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_time(out: Path, section: str, key: str, value) -> None:
    """timings.json[section][key] = value (main process only)."""
    path = out / "timings.json"
    t = read_json(path, {})
    t.setdefault(section, {})[key] = value
    write_json(t, path)


# --- 1. cohorts -------------------------------------------------------------------------------------------------------
def spect_models(args) -> Dict[str, dict]:
    """The SpectModel fields of the OSEM and the image-domain model (one camera; --spect-matrix etc. for tests)."""
    from DoseCNNLib.phantoms.spect_sim import SpectModel

    camera = {"matrix": args.spect_matrix, "voxel_mm": args.spect_voxel_mm}
    views, iterations, subsets = args.osem
    osem = SpectModel(reconstruction="osem", views=views, iterations=iterations, subsets=subsets, **camera)
    image = dataclasses.replace(osem, reconstruction="gaussian")
    return {"osem": dataclasses.asdict(osem), "image": dataclasses.asdict(image)}


def _worker_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class Orphaned(RuntimeError):
    """A worker whose run was stopped (its parent process is gone): it must not start or write a case."""


def require_parent(job: dict) -> None:
    """Raise :class:`Orphaned` when the process that submitted ``job`` (``job['parent']``, a pid) is no longer this
    worker's parent: a stopped run's pool workers finish the call they are in and take the calls already queued for
    them, and would otherwise make (and write) cases beside the next run's workers."""
    if job.get("parent") is not None and job["parent"] not in (os.getpid(), os.getppid()):  # in-process, or a worker
        raise Orphaned(f"the run that asked for {job.get('folder', 'this job')} has stopped")


def job_device(job: dict) -> str:
    """The torch device of a worker's job (a resolved one: "cpu", "cuda", "cuda:N", "mps"); "cpu" for the jobs of a
    run started before the jobs carried one."""
    return str(job.get("device") or "cpu")


def make_case(job: dict) -> dict:
    """One phantom into ``job['folder']`` (through a temporary folder: ``write_case``); runs in a worker process. The OSEM
    SPECTs are computed on ``job['device']``, the Monte Carlo truth on ``job['mc_device']`` (default the same; both
    recorded in the case's ``meta.json``: a truth made on a GPU is another random stream than one made on the CPU).
    Nothing is written when the run has stopped meanwhile (:func:`require_parent`), and a case another process
    completed meanwhile is kept as it is."""
    import torch

    from DoseCNNLib.phantoms.case import generate_case, write_case
    from DoseCNNLib.phantoms.spect_sim import SpectModel

    require_parent(job)
    torch.set_num_threads(job["threads"])
    device = job_device(job)
    t0, c0 = time.perf_counter(), time.process_time()
    folder = Path(job["folder"])
    mc_device = str(job.get("mc_device") or device)
    case = generate_case(job["seed"], job["size"], job["times"], job["mc_decays"], device=device,
                         spect_model=SpectModel(**job["spect"]), grid_override=job["grid"], mc_device=mc_device)
    case.meta["device"] = device
    case.meta["mc_device"] = mc_device
    require_parent(job)
    if not (folder / "meta.json").is_file():  # another process may have completed it meanwhile: kept as it is
        write_case(case, folder)  # through a temporary folder renamed when whole
    return {"folder": str(folder), "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "device": device, "mc_device": mc_device}


def make_osem_spect(job: dict) -> dict:
    """One held-out OSEM SPECT (bench/evaluate_dose_cnn.py's osem_spect, cached) on ``job['device']``; runs in a
    worker process."""
    import torch
    from evaluate_dose_cnn import osem_spect

    torch.set_num_threads(job["threads"])
    device = job_device(job)
    t0, c0 = time.perf_counter(), time.process_time()
    osem_spect(Path(job["cohort"]), job["row"], None, job["seed"], Path(job["cache"]), device=device)
    return {"id": job["row"]["id"], "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "device": device}


def run_jobs(fn, jobs: List[dict], workers: int, done) -> None:
    """``fn(job)`` for every job, in ``workers`` processes (in this one when 1); ``done(job, result)`` as each ends."""
    if not jobs:
        return
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            done(job, fn(job))
        return
    import multiprocessing as mp

    from ImagingBasics.parallel import exit_with_parent

    with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                initializer=exit_with_parent) as pool:
        futures = {pool.submit(fn, job): job for job in jobs}
        for future in cf.as_completed(futures):
            done(futures[future], future.result())


def phantom_jobs(folder: Path, n: int, seed: int, mc_decays: int, spect: dict, args) -> List[dict]:
    """The :func:`make_case` jobs of ``n`` phantoms in ``folder`` (case i: seed x 1000 + i), on ``args.device``."""
    threads = _worker_threads(args.workers)
    return [{"folder": str(folder / f"case{i:03d}"), "seed": seed * 1000 + i, "size": args.size,
             "times": list(args.times), "mc_decays": int(mc_decays), "spect": spect, "grid": args.grid_override,
             "threads": threads, "device": args.device, "mc_device": getattr(args, "mc_device", None) or args.device,
             "parent": os.getpid()} for i in range(n)]


def make_cohort(out: Path, name: str, n: int, seed: int, mc_decays: int, spect: dict, args) -> Path:
    """``n`` phantoms in ``cohorts/<name>/case000..`` (each skipped when it holds this very phantom, whatever device
    made it: :func:`DoseCNNLib.phantoms.case.is_complete_case`) and their ``cohort.csv``."""
    from DoseCNNLib.phantoms.case import is_complete_case, load_meta, training_rows
    from DoseCNNLib.phantoms.spect_sim import SpectModel
    from ImagingBasics.files import write_csv

    folder = out / "cohorts" / name
    folder.mkdir(parents=True, exist_ok=True)
    jobs = phantom_jobs(folder, n, seed, mc_decays, spect, args)
    for pattern in (".case*.partial-*", "case*.partial*"):  # a stopped run's unfinished cases (now and before)
        for stale in folder.glob(pattern):  # (its workers write no more)
            shutil.rmtree(stale, ignore_errors=True)
    todo = [j for j in jobs if not is_complete_case(Path(j["folder"]), j["seed"], "custom" if j["grid"] else j["size"],
                                                    j["times"], j["mc_decays"], SpectModel(**j["spect"]))]
    if len(todo) < len(jobs):
        log(f"cohort {name}: {len(jobs) - len(todo)} of {n} phantoms already made")

    def done(job, result):
        log(f"cohort {name}: {Path(job['folder']).name} made in {result['seconds']:.0f} s "
            f"({result['cpu_seconds']:.0f} CPU s) on {result['device']}")
        record_time(out, f"phantoms_{name}", Path(job["folder"]).name, result)

    run_jobs(make_case, todo, args.workers, done)
    rows = []
    for job in jobs:
        case_dir = Path(job["folder"])
        rows += training_rows(case_dir, case_dir.name, load_meta(case_dir))
    write_csv(rows, folder / "cohort.csv")
    return folder


def add_image_spects(cohort: Path, n_cases: int, spect: dict) -> List[dict]:
    """Image-domain SPECTs (``spect_image_<t>.nrrd``) of the true activities of the first ``n_cases`` training phantoms
    and their manifest rows (id ``<case>_<t>_image``; same case, reference and calibration)."""
    import numpy as np

    from DoseCNNLib.phantoms.case import load_meta, time_tag
    from DoseCNNLib.phantoms.spect_sim import SpectModel, simulate_spect
    from ImagingBasics.imageio import read_volume, write_volume

    model = SpectModel(**spect)
    rows = []
    for i in range(n_cases):
        case = f"case{i:03d}"
        meta = load_meta(cohort / case)
        for k, t in enumerate(meta["times_h"]):
            tag = time_tag(t)
            path = cohort / case / f"spect_image_{tag}.nrrd"
            if not path.is_file():
                ct = read_volume(cohort / case / "ct.nrrd")
                activity = read_volume(cohort / case / f"activity_{tag}.nrrd")
                rng = np.random.default_rng([int(meta["seed"]), 2, k])  # not the OSEM SPECT's noise
                write_volume(simulate_spect(activity, model, rng, ct=ct)[0], path)
            rows.append({"id": f"{case}_{tag}_image", "case": case, "time_h": t, "ct": f"{case}/ct.nrrd",
                         "spect": f"{case}/{path.name}", "reference": f"{case}/dose_rate_mc_{tag}.nrrd",
                         "reference_sd": f"{case}/dose_rate_mc_sd_{tag}.nrrd", "labels": f"{case}/labels.nrrd",
                         "bq_per_count": model.bq_per_count})
    return rows


def training_manifest(out: Path, train_cohort: Path, args, image_spect: dict) -> Path:
    """``cohorts/train/train.csv``: the OSEM rows and, with --mix, the image-domain rows."""
    import csv

    from ImagingBasics.files import write_csv

    with open(train_cohort / "cohort.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n_mix = int(round(args.mix * args.n_train))
    if n_mix:
        rows += add_image_spects(train_cohort, n_mix, image_spect)
        log(f"training manifest: {n_mix} of {args.n_train} phantoms also with image-domain SPECTs (--mix {args.mix:g})")
    path = train_cohort / "train.csv"
    write_csv(rows, path)
    return path


def osem_jobs(heldout: Path, args) -> List[dict]:
    """The :func:`make_osem_spect` jobs of the held-out cohort's rows (seed 1000 + row), on ``args.device``."""
    from evaluate_dose_cnn import OSEM_SEED_BASE, read_cohort

    threads = _worker_threads(args.workers)
    return [{"cohort": str(heldout), "row": row, "seed": OSEM_SEED_BASE + i, "cache": str(heldout / "spects_osem"),
             "threads": threads, "device": args.device} for i, row in enumerate(read_cohort(heldout))
            if row.get("reference")]


def heldout_osem_spects(out: Path, heldout: Path, args) -> None:
    """The held-out OSEM SPECTs (bench/evaluate_dose_cnn.py, seed 1000 + row), made now in parallel and cached (a
    cached one is kept whatever device made it: the OSEM's Poisson noise comes from numpy, the devices differ only
    by rounding)."""
    from evaluate_dose_cnn import osem_spect_path

    cache = heldout / "spects_osem"
    jobs = osem_jobs(heldout, args)
    todo = [j for j in jobs if not osem_spect_path(cache, j["row"], j["seed"]).is_file()]
    if len(todo) < len(jobs):
        log(f"held-out OSEM SPECTs: {len(jobs) - len(todo)} of {len(jobs)} already made")

    def done(job, result):
        log(f"held-out OSEM SPECT {result['id']} in {result['seconds']:.0f} s ({result['cpu_seconds']:.0f} CPU s) "
            f"on {result['device']}")
        record_time(out, "heldout_osem_spects", result["id"], result)

    run_jobs(make_osem_spect, todo, args.workers, done)


# --- 2. training ------------------------------------------------------------------------------------------------------
def network_config(args):
    from DoseCNNLib.cnn.network import DoseNetConfig

    return DoseNetConfig(base_filters=args.base_filters, levels=args.levels, depth_channels=tuple(args.depth_channels))


def train_config(args):
    from DoseCNNLib.cnn.training import DoseTrainConfig

    return DoseTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, val_by="patient",
                           val_fraction=args.val_fraction, crop=args.crop, seed=args.seed, device=args.device,
                           patience=args.patience)


def prepare_jobs(out: Path, manifest: Path, args) -> List[dict]:
    """The :func:`prepare_cases` jobs of the training manifest's rows on ``args.device``: one per worker, each with
    a part of the rows (``cache/parts/partNN.csv``, absolute paths; the whole manifest with one worker)."""
    from DoseCNNLib.cnn.data import read_dose_manifest
    from ImagingBasics.files import write_csv

    rows = read_dose_manifest(manifest)
    n_parts = max(1, min(args.workers, len(rows)))
    parts = [Path(manifest)] if n_parts == 1 else [out / "cache" / "parts" / f"part{i:02d}.csv" for i in range(n_parts)]
    if n_parts > 1:
        for i, path in enumerate(parts):
            write_csv(rows[i::n_parts], path)  # round robin: every part gets early and late cases alike
    kernel_cache = str(args.kernel_cache) if args.kernel_cache else None
    return [{"manifest": str(path), "cache": str(out / "cache"), "kernel_cache": kernel_cache,
             "threads": _worker_threads(args.workers), "device": args.device, "parent": os.getpid()}
            for path in parts]


def prepare_cases(job: dict) -> dict:
    """Activity, density and VDK dose rate of the cases of ``job['manifest']`` on ``job['device']``, into the cache
    the training reads (:func:`DoseCNNLib.cnn.data.load_cases`; cases already there are only read); runs in a worker
    process."""
    import torch

    from DoseCNNLib.cnn.data import load_cases

    require_parent(job)
    torch.set_num_threads(job["threads"])
    device = job_device(job)
    t0, c0 = time.perf_counter(), time.process_time()
    kernel_cache = Path(job["kernel_cache"]) if job.get("kernel_cache") else None
    cases = load_cases(Path(job["manifest"]), Path(job["cache"]), kernel_cache=kernel_cache, device=device)
    return {"part": Path(job["manifest"]).stem, "cases": len(cases), "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0, "device": device}


def prepare_training_cases(out: Path, manifest: Path, args) -> None:
    """The training's preparation of every manifest row (what :func:`DoseCNNLib.cnn.training.train_from_manifest`
    does on the CPU in this process, one case after the other) done first by ``--workers`` processes on
    ``--device``, into the same cache (``cache/``); skipped when ``cache/prepared.json`` names this manifest."""
    marker = out / "cache" / "prepared.json"
    manifest_sha256 = sha256(manifest)
    if (read_json(marker) or {}).get("manifest_sha256") == manifest_sha256:
        return
    t0 = time.perf_counter()

    def done(job, result):
        record_time(out, "training_preparation", result["part"], result)

    jobs = prepare_jobs(out, manifest, args)
    run_jobs(prepare_cases, jobs, args.workers, done)
    write_json({"manifest_sha256": manifest_sha256, "device": args.device}, marker)
    log(f"training cases prepared (activity, density, VDK) by {len(jobs)} process(es) on {args.device} in "
        f"{time.perf_counter() - t0:.0f} s")


def init_weights(args) -> Optional[Path]:
    """The --init weights file, checked now against the network options (not after hours of phantoms)."""
    from DoseCNNLib.cnn.weights import bundled_weights, load_dose_weights
    from ImagingBasics.errors import UserError

    if not args.init:
        return None
    path = bundled_weights() if args.init == "bundled" else Path(args.init)
    if path is None:
        raise UserError("--init bundled: no bundled model is installed")
    dm = load_dose_weights(path)
    if dm.config.to_dict() != network_config(args).to_dict():
        raise UserError(f"--init {path} holds another network ({dm.config.to_dict()}) than --base-filters, --levels "
                        "and --depth-channels ask for")
    return Path(path)


def train_stage(out: Path, manifest: Path, args) -> Optional[dict]:
    """Train (or resume, or reuse) the model in ``train/``; None when paused by --train-hours."""
    from DoseCNNLib.cnn.training import train_from_manifest

    folder = out / "train"
    stage = read_json(folder / "stage.json")
    rows = len(manifest.read_text().strip().splitlines()) - 1
    if stage and stage.get("cases") != rows:
        log(f"warning: the model in {folder} was trained on {stage.get('cases')} cases, the manifest has {rows}: "
            "use a new --out for another cohort")
    if stage and (stage["epochs"] >= args.epochs or stage.get("early_stopped")):
        log(f"training: already done ({stage['epochs']} epochs, best epoch {stage['best_epoch']})")
        return stage
    resume = (folder / "checkpoint.pt").is_file()
    init = None if resume else init_weights(args)
    t0 = time.perf_counter()
    prepare_training_cases(out, manifest, args)
    last = [time.perf_counter()]

    def prep(done: int, total: int, case_id: str) -> None:
        if done == total:
            log(f"training: {total} cases loaded (activity, density, VDK) in {time.perf_counter() - last[0]:.0f} s")
            record_time(out, "training", "preparation_s_last_session", time.perf_counter() - t0)
            last[0] = time.perf_counter()

    def progress(epoch: int, total: int, row) -> None:
        wall = time.perf_counter() - last[0]
        last[0] = time.perf_counter()
        if epoch == 0:  # the initial weights, validated before any training (DoseCNNLib.cnn.training)
            log(f"initial weights: validation {row['val_loss']:.4f} (VDK alone {row['val_loss_vdk']:.4f}), body NRMSE "
                f"{row['val_nrmse']:.3f} (VDK {row['val_nrmse_vdk']:.3f}), body dose bias "
                f"{100 * row['val_body_bias']:+.1f} % (VDK {100 * row['val_body_bias_vdk']:+.1f} %); {wall:.0f} s")
            return
        record_time(out, "epochs", str(epoch), {"wall_s": wall, "train_s": row["seconds"],
                                                  "slices_per_second": row["slices_per_second"]})
        log(f"epoch {epoch}/{total}: loss {row['train_loss']:.4f}, validation {row['val_loss']:.4f} (VDK alone "
            f"{row['val_loss_vdk']:.4f}), body NRMSE {row['val_nrmse']:.3f} (VDK {row['val_nrmse_vdk']:.3f}), "
            f"body dose bias {100 * row['val_body_bias']:+.1f} % (VDK {100 * row['val_body_bias_vdk']:+.1f} %); "
            f"lr {row['lr']:.2g}; {wall:.0f} s ({row['slices_per_second']:.1f} slices/s)")

    def steps(step: int, total: int) -> None:
        """A line at each quarter of an epoch's steps: an epoch takes ~45 min on 2 cores, a session sees it move."""
        if step in {total * q // 4 for q in (1, 2, 3)}:
            log(f"training: {step} of {total} steps of the epoch, {time.perf_counter() - last[0]:.0f} s")

    budget_s = args.train_hours * 3600 if args.train_hours else None

    def stop(epoch: int) -> bool:
        return budget_s is not None and time.perf_counter() - t0 >= budget_s

    log(f"training: {'resuming from the checkpoint' if resume else 'from ' + (str(init) if init else 'scratch')}")
    summary = train_from_manifest(manifest, folder, network_config(args), train_config(args), out / "cache",
                                  args.kernel_cache, resume=resume, prep_progress=prep, progress=progress, init=init,
                                  stop=stop, step_progress=steps)
    if not summary["finished"]:
        log(f"training paused after epoch {summary['epochs']} of {args.epochs} (--train-hours {args.train_hours:g}); "
            "run the same command again to continue")
        return None
    write_json(summary, folder / "stage.json")
    return summary


def fp16_weights(out: Path) -> Path:
    """``model/weights_fp16.pt``: best.pt in float16, what would be bundled (evaluated as such)."""
    from DoseCNNLib.cnn.weights import load_dose_weights, save_dose_weights

    best = out / "train" / "best.pt"
    path = out / "model" / "weights_fp16.pt"
    meta = read_json(out / "model" / "weights_fp16.json", {})
    if not path.is_file() or meta.get("best_sha256") != sha256(best):
        dm = load_dose_weights(best)
        save_dose_weights(dm.model, dm.config, dm.normalisation, dm.spacing_mm, path, dm.metadata, half=True)
        write_json({"best_sha256": sha256(best)}, out / "model" / "weights_fp16.json")
    return path


# --- 3. evaluation ----------------------------------------------------------------------------------------------------
#: the bundled model as it was when the run started, kept in OUT (the model the new one is compared with)
PREVIOUS_MODEL = "previous_bundled_model.pt"


def previous_model(out: Path, args) -> Optional[Path]:
    """The bundled model the run compares the new one with: copied into ``out`` the first time, so that a rerun after
    ``--install`` still compares with the model it replaced, not with itself. None with --no-bundled or when no
    model is bundled."""
    from DoseCNNLib.cnn.weights import bundled_weights

    kept = out / PREVIOUS_MODEL
    if args.no_bundled:
        return None
    if kept.is_file():
        return kept
    bundled = bundled_weights()
    if bundled is None or not Path(bundled).is_file():
        return None
    shutil.copy2(bundled, kept)
    return kept


def evaluate_stage(out: Path, heldout: Path, new_weights: Path, args) -> Dict[str, dict]:
    """Per held-out set: the rows (cached while the weights stay the same) and the summaries of both CNNs."""
    from evaluate_dose_cnn import evaluate, read_rows, summarise, write_outputs

    bundled = previous_model(out, args)
    weights = {"CNN": new_weights, **({"bundled": bundled} if bundled else {})}
    key = {name: sha256(Path(w)) for name, w in weights.items()}
    key["heldout_cohort"] = sha256(heldout / "cohort.csv")  # the held-out phantoms and their time points
    results = {}
    for name, spect_model in (("osem", "osem"), ("image", "file")):
        folder = out / "eval" / name
        if (folder / "rows.csv").is_file() and read_json(folder / "weights.json") == key:
            log(f"evaluation on the held-out {name} set: already done")
            rows = read_rows(folder / "rows.csv")
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            rows = evaluate(heldout, weights, args.device, spect_model, heldout / "spects_osem",
                            say=lambda msg, n=name: log(f"held-out {n}: {msg}"))
            folder.mkdir(parents=True, exist_ok=True)
            write_outputs(rows, summarise(rows, "CNN"), folder, figure=True, quiet=True)
            write_json(key, folder / "weights.json")
            seconds = time.perf_counter() - t0
            record_time(out, "evaluation", name, {"seconds": seconds, "cpu_seconds": time.process_time() - c0,
                                                   "case_time_points": len({(r["case"], r["time_h"]) for r in rows})})
            log(f"evaluation on the held-out {name} set: {seconds:.0f} s")
        results[name] = {"new": summarise(rows, "CNN"),
                         "bundled": summarise(rows, "bundled") if "bundled" in weights else None,
                         "cases": len({r["case"] for r in rows}),
                         "time_points": len({float(r["time_h"]) for r in rows}),
                         "case_time_points": len({(r["case"], float(r["time_h"])) for r in rows})}
    results["weights_sha256"] = key
    results["bundled_weights"] = str(bundled) if bundled else None
    return results


# --- 4. acceptance ----------------------------------------------------------------------------------------------------
def acceptance(results: Dict[str, dict], min_cases: int = 8, min_time_points: int = 4) -> dict:
    """Issue 19's acceptance on both held-out sets (module docstring); every check with its value."""
    checks = []
    for name in SETS:
        by = {s["region"]: s for s in results[name]["new"]}
        for region, key, need in ACCEPTANCE:
            value = by.get(region, {}).get(key)
            checks.append({"set": name, "region": region, "metric": key, "value": value, "required": need,
                           "met": value is not None and value >= need})
    size = {"cases": results["osem"]["cases"], "time_points": results["osem"]["time_points"],
            "required_cases": min_cases, "required_time_points": min_time_points}
    size["met"] = size["cases"] >= min_cases and size["time_points"] >= min_time_points
    met = size["met"] and all(c["met"] for c in checks)
    by_key = {(c["set"], c["region"], c["metric"]): c["met"] for c in checks}
    return {"met": met, "held_out_size": size, "checks": checks,
            # the bundled card's keys (Testing/test_cnn_inference.py), for the OSEM set
            "lesions_mde_gain_ge_50pct": by_key[("osem", "lesions", "mde_improvement")],
            "kidneys_mde_gain_ge_50pct": by_key[("osem", "kidneys", "mde_improvement")],
            "nrmse_gain_ge_15pct": by_key[("osem", "lesions", "nrmse_improvement")]
            and by_key[("osem", "kidneys", "nrmse_improvement")],
            "image_domain_no_regression": all(c["met"] for c in checks if c["set"] == "image"),
            "note": "issue 19: on >= 8 held-out OSEM phantoms x 4 time points, CNN vs density-scaled VDK: MDE >= 50 % "
                    "lower for lesions and kidneys, noise-corrected NRMSE >= 15 % lower for both; the same gains on "
                    "the image-domain SPECT model"}


# --- 5. card ----------------------------------------------------------------------------------------------------------
def budget(out: Path, train_summary: dict) -> dict:
    """Measured times (timings.json, log.csv) as the card reports them."""
    import csv
    import statistics

    t = read_json(out / "timings.json", {})

    def stats(section):
        v = list(t.get(section, {}).values())
        if not v:
            return None
        return {"n": len(v), "mean_s": statistics.mean(x["seconds"] for x in v),
                "mean_cpu_s": statistics.mean(x["cpu_seconds"] for x in v),
                "total_cpu_h": sum(x["cpu_seconds"] for x in v) / 3600}

    epochs = list(t.get("epochs", {}).values())
    with open(out / "train" / "log.csv", newline="") as f:
        history = [h for h in csv.DictReader(f) if int(h["epoch"]) > 0]  # epoch 0: the initial weights, not trained
    return {"phantoms_train": stats("phantoms_train"), "phantoms_heldout": stats("phantoms_heldout"),
            "heldout_osem_spects": stats("heldout_osem_spects"),
            "epoch_wall_s_mean": statistics.mean(e["wall_s"] for e in epochs) if epochs else None,
            "epoch_train_s_mean": statistics.mean(float(h["seconds"]) for h in history),
            "slices_per_second_mean": statistics.mean(float(h["slices_per_second"]) for h in history),
            "training_h": sum(float(h["seconds"]) for h in history) / 3600,
            "evaluation": t.get("evaluation")}


def _trimmed(summary):
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in s.items()} for s in summary] if summary else None


def build_card(out: Path, args, train_summary: dict, results: dict, accept: dict, machine: str, spects: dict,
               command: str) -> dict:
    from DoseCNNLib.cnn.network import build_dose_network

    network = network_config(args)
    params = sum(p.numel() for p in build_dose_network(network).parameters())
    history = train_summary.get("last", {})
    best = next((r for r in _history(out) if int(r["epoch"]) == train_summary["best_epoch"]), {})
    return {
        "model": WEIGHTS_NAME,
        "architecture": "Li 2020 residual CNN (3D convs 7x7x5/7x7x3/7x7x3 -> 2D U-Net "
                        f"{network.base_filters}-{network.max_filters})",
        "parameters": int(params),
        "network": network.to_dict(),
        "voxel_mm": train_summary["training_spacing_mm"],
        "not_for_clinical_use": True,
        "machine": machine,
        "recipe": {"command": "python scripts/train_dose_model.py " + command,
                   "size": args.size if not args.grid_override else {"grid": args.grid_override},
                   "times_h": list(args.times), "spect_models": spects, "mix": args.mix,
                   "init": train_summary.get("init"), "device": args.device, "workers": args.workers},
        "training": {"phantoms": args.n_train, "time_points": len(args.times), "seed": args.train_seed,
                     "mc_decays": args.train_decays, "spect_model": "osem",
                     "image_domain_phantoms": int(round(args.mix * args.n_train)),
                     "epochs_run": train_summary["epochs"], "epochs_requested": args.epochs,
                     "best_epoch": train_summary["best_epoch"], "device": train_summary["device"],
                     "crop": args.crop, "val_by": "patient", "batch_size": args.batch_size, "lr": args.lr,
                     "lr_changes": train_summary.get("lr_changes") or [],
                     "lr_first": _first_lr(out),
                     "training_slices": train_summary.get("training_slices"),
                     "validation_slices": train_summary.get("validation_slices"),
                     "validation_cases": train_summary.get("validation_cases"),
                     "vdk": "density scaling bounded at 0.05 g/cm3 (cache version 2)",
                     "val_loss": train_summary["best_val_loss"], "val_loss_vdk": _float(best.get("val_loss_vdk")),
                     "val_nrmse": _float(best.get("val_nrmse")), "val_nrmse_vdk": _float(best.get("val_nrmse_vdk")),
                     "init_val_loss": next((_float(r.get("val_loss")) for r in _history(out) if int(r["epoch"]) == 0),
                                           None),
                     "last_epoch": history},
        "budget": budget(out, train_summary),
        # "held_out" is the OSEM set (issue 19's target); the bundled card's layout, so that its tests still read it
        "held_out": {"phantoms": results["osem"]["cases"], "seed": args.heldout_seed, "mc_decays": args.heldout_decays,
                     "spect_model": "osem", "case_time_points": results["osem"]["case_time_points"],
                     "summary": _trimmed(results["osem"]["new"]),
                     "previous_model_summary": _trimmed(results["osem"]["bundled"])},
        "held_out_image_spect": {"phantoms": results["image"]["cases"], "spect_model": "image-domain (gaussian)",
                                 "note": "the same held-out phantoms and truths with image-domain SPECTs",
                                 "summary": _trimmed(results["image"]["new"]),
                                 "previous_model_summary": _trimmed(results["image"]["bundled"])},
        "previous_model": {"weights": results.get("bundled_weights"),
                           "sha256": results["weights_sha256"].get("bundled")},
        "acceptance_met": accept,
    }


def _lr_text(training: dict) -> str:
    """The learning rate of the card: the first one and those a resumed run was given (``--lr`` on resume)."""
    changes = training.get("lr_changes") or []
    if not changes:
        return f"{training['lr']:g}"
    first = training.get("lr_first", None)
    parts = [f"{c['lr']:g} from epoch {c['after_epoch'] + 1}" for c in changes]
    return (f"{first:g}, then " if first is not None else "") + ", then ".join(parts)


def _float(v):
    return float(v) if v not in (None, "") else None


def _first_lr(out: Path) -> Optional[float]:
    """The learning rate of the first trained epoch (log.csv), before any change on resume."""
    rows = [r for r in _history(out) if int(r["epoch"]) > 0]
    return _float(rows[0].get("lr")) if rows else None


def _history(out: Path) -> List[dict]:
    import csv

    with open(out / "train" / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f} %"


def _gains_line(name: str, summary) -> str:
    by = {s["region"]: s for s in summary or []}
    parts = [f"{r} MDE {_pct(by.get(r, {}).get('mde_improvement'))}, NRMSE {_pct(by.get(r, {}).get('nrmse_improvement'))}"
             for r in ("lesions", "kidneys")]
    return f"- {name}: " + "; ".join(parts) + "."


def render_card(card: dict) -> str:
    """MODEL_CARD.md from the numbers of this run."""
    from evaluate_dose_cnn import summary_table

    tr, ho, hi, acc, b = card["training"], card["held_out"], card["held_out_image_spect"], card["acceptance_met"], \
        card["budget"]
    net = card["network"]
    spect = card["recipe"]["spect_models"]["osem"]
    verdict = "**Met**" if acc["met"] else "**Not met**"
    failed = [f"{c['region']} {c['metric'].split('_')[0].upper()} on the {c['set']} set ({_pct(c['value'])} < "
              f"{_pct(c['required'])})" for c in acc["checks"] if not c["met"]]
    size = acc["held_out_size"]
    params = f"{card['parameters']:,}".replace(",", " ")
    if not size["met"]:
        failed.append(f"held-out size {size['cases']} phantoms x {size['time_points']} time points (at least "
                      f"{size['required_cases']} x {size['required_time_points']} asked)")

    def phantom_time(s):
        return "n/a" if not s else f"{s['mean_cpu_s'] / 60:.1f} CPU min ({s['mean_s'] / 60:.1f} min wall) each, {s['n']}"

    lines = [
        "# DoseCNN residual CNN: demonstration model card",
        "",
        "**Research software. Trained on synthetic phantoms only. Not for clinical use.**",
        "",
        f"File: `{card['model']}` (float16 weights), used by `dosecnn run --method cnn`, `dosecnn integrate --method cnn`, "
        "`dosecnn demo` and the DoseCNN Slicer module when no other weights are given (`DOSECNN_WEIGHTS` names another "
        "default). Written by `scripts/train_dose_model.py` from the measured results below.",
        "",
        "## What it is",
        "",
        "The residual CNN of Li, Fessler, Mikell, Wilderman and Dewaraja (Li 2020): packs of 11 adjacent axial slices of "
        "the normalised SPECT activity and the CT density go through three 3D convolutions (7x7x5, 7x7x3, 7x7x3; "
        f"{'-'.join(str(c) for c in net['depth_channels'])} channels, our choice) folded into a 2D U-Net "
        f"({net['levels']} levels, {net['base_filters']} filters at full resolution, at most {net['max_filters']}; "
        "LeakyReLU(0.1) encoder, ReLU decoder); the output is a correction added to the VDK dose rate with density "
        "scaling (the network learns Monte Carlo minus VDK), clamped at >= 0 and zero in air (HU < -950). "
        f"{params} parameters.",
        "",
        f"- Voxel size: {' x '.join(f'{s:g}' for s in card['voxel_mm'])} mm (the `small` phantom grid). CTs of another "
        "voxel size are resampled to it for the network and the correction is resampled back (a warning says so).",
        "- Normalisation: activity channel = share of the total activity per litre; dose rates divided by the total "
        "activity (MBq) x 4.4e4 (constants stored in the file); the output is exactly linear in the activity.",
        "",
        "## Training data",
        "",
        f"{tr['phantoms']} synthetic Lu-177 DOTATATE patients (`dosecnn phantom --spect osem --seed {tr['seed']} "
        f"--mc-decays {tr['mc_decays']:g}` phantoms), {tr['time_points']} time points each "
        f"({', '.join(f'{t:g}' for t in card['recipe']['times_h'])} h). Input: SPECTs made the way real ones are: "
        f"projections ({spect['views']} views, attenuation, depth-dependent collimator response, Poisson noise) "
        f"reconstructed by OSEM ({spect['iterations']} iterations x {spect['subsets']} subsets, attenuation and "
        "resolution modelling), calibrated with the camera's known Bq per count"
        + (f"; {tr['image_domain_phantoms']} of the patients also with the image-domain SPECT model (11 mm FWHM "
           "Gaussian resolution, amplified Poisson noise) of the same true activity, as extra training pairs"
           if tr["image_domain_phantoms"] else "") +
        ". Target: the Monte Carlo dose rate of the TRUE activity (Li 2020).",
        "",
        "## Training",
        "",
        f"`{card['recipe']['command']}`: Li 2020's settings otherwise (Adam {_lr_text(tr)}, ReduceLROnPlateau, MSE "
        f"weighted 0.7 inside / 0.3 outside the body, batch {tr['batch_size']}), {tr['crop']}-pixel crops, 20 % of the "
        "patients for validation"
        + (f", initialised from the previous bundled model ({Path(card['recipe']['init']['init_weights']).name})"
           if card["recipe"].get("init") else ", from random weights") + ".",
        f"Machine: {card['machine']}. {_n(tr['epochs_run'], 'epoch')} run ({tr['epochs_requested']} asked), "
        f"{b['epoch_train_s_mean'] / 60:.1f} min of training per epoch ({b['slices_per_second_mean']:.1f} slices/s"
        + (f"; {b['epoch_wall_s_mean'] / 60:.1f} min with validation" if b.get("epoch_wall_s_mean") else "") +
        f"), {b['training_h']:.1f} h in all; `best.pt` = "
        + (f"epoch {tr['best_epoch']}" if tr["best_epoch"] else "the initial weights (no epoch beat them)")
        + f" (validation loss {tr['val_loss']:.4g}"
        + (f" against {tr['val_loss_vdk']:.4g} for VDK alone" if tr.get("val_loss_vdk") else "")
        + (f" and {tr['init_val_loss']:.4g} for the initial weights" if tr.get("init_val_loss") is not None else "")
        + (f"; body NRMSE {tr['val_nrmse']:.2f} vs {tr['val_nrmse_vdk']:.2f}" if tr.get("val_nrmse") else "") + ").",
        f"Phantoms: training {phantom_time(b['phantoms_train'])}; held-out {phantom_time(b['phantoms_heldout'])}; "
        f"held-out OSEM SPECTs {phantom_time(b['heldout_osem_spects'])}. Li 2020 trained 200 epochs on two V100s: "
        "**this is far below the paper's budget.**",
        "",
        "## Held-out results",
        "",
        f"{_n(ho['phantoms'], 'held-out phantom')} (seed {ho['seed']}, Monte Carlo truth with {ho['mc_decays']:g} decays) x "
        f"{size['time_points']} time points, never seen in training; per region, dose rate vs the Monte Carlo truth "
        "(`bench/evaluate_dose_cnn.py`'s functions, the float16 file); MDE and NRMSE as Li 2020 (equation 2), NRMSE "
        "corrected for the truth's Monte Carlo noise; mean +- sd over case x time point; \"gain\" = 1 - CNN / VDK.",
        "",
        f"**Projected + OSEM-reconstructed SPECTs** (how real SPECTs are made; {spect['views']} views, OSEM "
        f"{spect['iterations']} x {spect['subsets']}):",
        "",
        *summary_table(ho["summary"]),
        "",
        "**Image-domain SPECT model** (the same phantoms and truths):",
        "",
        *summary_table(hi["summary"]),
        "",
        f"{verdict} (issue 19's acceptance: on >= 8 held-out OSEM phantoms x 4 time points, the mean dose error lower "
        "by >= 50 % for lesions and kidneys and the noise-corrected NRMSE by >= 15 % for both; no regression below "
        "those gains on the image-domain model)" + (": " + "; ".join(failed) + " fall short." if failed else "."),
    ]
    if ho.get("previous_model_summary"):
        lines += ["", "The previous bundled model (trained on the image-domain model only) on the same sets, gains "
                      "over VDK:", "",
                  _gains_line("OSEM SPECTs", ho["previous_model_summary"]),
                  _gains_line("image-domain SPECTs", hi["previous_model_summary"])]
    lines += [
        "",
        "## Intended use and limits",
        "",
        "- Demonstration of the pipeline and a starting point for training on your own phantoms or Monte Carlo data "
        "(`dosecnn train --init` / `--resume`); not validated on patients.",
        "- The anatomy is analytic and the SPECTs simulated (our projector and OSEM, not a vendor's reconstruction); "
        "the truth is our Monte Carlo engine (validated against published voxel and sphere S values, "
        "`bench/RESULTS.md`), not DPM or GATE. Train on SPECTs reconstructed the way yours are before relying on "
        "voxel-level results.",
        f"- Trained at a reduced budget ({_n(tr['epochs_run'], 'epoch')}, {_n(tr['phantoms'], 'phantom')}, on "
        f"{card['recipe'].get('device') or 'cpu'}); Li 2020 trained 200 epochs on two GPUs.",
    ]
    return "\n".join(lines) + "\n"


def write_model(out: Path, card: dict) -> Path:
    """``dosecnn_residual.pt``: the float16 weights evaluated above, with the card's key numbers as metadata."""
    from DoseCNNLib.cnn.weights import load_dose_weights, save_dose_weights

    dm = load_dose_weights(out / "model" / "weights_fp16.pt")
    meta = {**dm.metadata, "bundled": "demonstration model; synthetic training data; not for clinical use",
            "see": "MODEL_CARD.md", "spect_model": "osem" + (" + image-domain" if card["training"]["image_domain_phantoms"]
                                                          else ""),
            "held_out_gains": {s["region"]: {"mde": s["mde_improvement"], "nrmse": s["nrmse_improvement"]}
                               for s in card["held_out"]["summary"] if s["region"] in ("lesions", "kidneys")},
            "acceptance_met": card["acceptance_met"]["met"]}
    return save_dose_weights(dm.model, dm.config, dm.normalisation, dm.spacing_mm, out / WEIGHTS_NAME, meta, half=True)


# --- 6. install -------------------------------------------------------------------------------------------------------
def read_finished_run(folder: Path) -> dict:
    """The model card of a finished run's folder (its --out, or the files it sent back), after checking the three
    model files: a UserError when one is missing, empty or unreadable, when the card does not say whether the
    acceptance holds, or when the weights are not the card's (its ``weights_sha256``; the acceptance the weights
    record)."""
    from DoseCNNLib.cnn.weights import load_dose_weights
    from ImagingBasics.errors import UserError

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder (give a finished run's --out or the files it sent back)")
    missing = [name for name in MODEL_FILES if not (folder / name).is_file() or (folder / name).stat().st_size == 0]
    if missing:
        raise UserError(f"{folder} lacks {', '.join(missing)} (missing or empty): not a finished run")
    try:
        card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
        (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{folder}: model_card.json or MODEL_CARD.md is corrupt ({exc})") from None
    accept = card.get("acceptance_met") if isinstance(card, dict) else None
    if not isinstance(accept, dict) or not isinstance(accept.get("met"), bool) or card.get("model") != WEIGHTS_NAME:
        raise UserError(f"{folder / 'model_card.json'} is not a card of this script (no acceptance_met.met, or not "
                        f"for {WEIGHTS_NAME})")
    weights = folder / WEIGHTS_NAME
    if card.get("weights_sha256") not in (None, sha256(weights)):
        raise UserError(f"{weights} is not the file model_card.json describes (another SHA-256): corrupt or of "
                        "another run")
    if load_dose_weights(weights).metadata.get("acceptance_met") is not accept["met"]:
        raise UserError(f"{weights} and model_card.json disagree on the acceptance: files of two runs")
    return card


def install_model(source: Path, models_dir: Path) -> int:
    """Copy the three model files of the finished run in ``source`` into ``models_dir`` when its model_card.json
    records that the acceptance holds: 0. 1 with a one-line message (nothing written) when it does not; a UserError
    when a file is missing or corrupt (:func:`read_finished_run`) or the copy fails. Each file is copied beside its
    place and renamed into it only when all three are copied."""
    from ImagingBasics.errors import UserError

    source = Path(source)
    card = read_finished_run(source)
    if not card["acceptance_met"]["met"]:
        log(f"not installed: {source / 'model_card.json'} records that the acceptance does not hold")
        return 1
    staged = [(models_dir / f".{name}.installing", models_dir / name) for name in MODEL_FILES]
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        for (tmp, _), name in zip(staged, MODEL_FILES):
            shutil.copy2(source / name, tmp)
        for tmp, final in staged:
            os.replace(tmp, final)
    except OSError as exc:
        raise UserError(f"could not install into {models_dir}: {exc.strerror or exc}") from None
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    log(f"installed {', '.join(MODEL_FILES)} from {source} into {models_dir}")
    return 0


# --- main -------------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    from ImagingBasics.devices import DEVICE_HELP

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", type=Path, help="state folder (outside the repository)")
    what.add_argument("--install-from", type=Path, metavar="DIR",
                      help="run nothing: install the model files of the finished run in DIR (its --out, or the files "
                           "it sent back) into --models-dir when its model_card.json records that the acceptance "
                           "holds (exit status 1 otherwise, 2 when a file is missing or corrupt)")
    ap.add_argument("--n-train", type=int, default=38,
                    help="training phantoms, validation ones included (38: 30 train the weights, 8 validate)")
    ap.add_argument("--n-heldout", type=int, default=8)
    ap.add_argument("--train-seed", type=int, default=21, help="cohort seed of the training phantoms")
    ap.add_argument("--heldout-seed", type=int, default=12, help="cohort seed of the held-out phantoms (12: the "
                                                                 "bundled model's held-out anatomies come first)")
    ap.add_argument("--train-decays", type=float, default=4e6, help="Monte Carlo decays per training phantom")
    ap.add_argument("--heldout-decays", type=float, default=8e6, help="Monte Carlo decays per held-out phantom")
    ap.add_argument("--times", type=float, nargs="+", default=[4.0, 24.0, 96.0, 168.0], metavar="H")
    ap.add_argument("--mix", type=float, default=0.0,
                    help="share of the training phantoms that also train with image-domain SPECTs (extra rows)")
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--train-hours", type=float, default=None,
                    help="pause the training after the epoch that crosses this many hours (run again to continue)")
    ap.add_argument("--val-fraction", type=float, default=0.2,
                    help="share of the training phantoms that validate (pick the best epoch); default 0.2")
    ap.add_argument("--patience", type=int, default=0, help="early stopping (epochs without a better validation loss)")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3,
                    help="Adam's learning rate (Li 2020: 1e-3); a resumed training given another one continues at it")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--init", help="initial weights: 'bundled' (the bundled model) or a weights file")
    ap.add_argument("--base-filters", type=int, default=16)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--depth-channels", type=int, nargs=3, default=[8, 16, 16])
    ap.add_argument("--device", default="cpu",
                    help="where the phantoms (OSEM SPECTs, Monte Carlo), the training's preparation, the training and "
                         "the evaluation compute: " + DEVICE_HELP + "; default cpu")
    ap.add_argument("--mc-device", default=None,
                    help="where the phantoms' Monte Carlo truths compute, when not on --device (a GPU machine: cpu, so "
                         "that its many cores run the truths side by side while the GPU makes the OSEM SPECTs)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: all cores)")
    ap.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                    help="processes making phantoms and OSEM SPECTs and preparing the training cases")
    ap.add_argument("--kernel-cache", type=Path, default=None)
    ap.add_argument("--install", action="store_true",
                    help="copy the weights and the cards into --models-dir when the acceptance holds")
    ap.add_argument("--no-bundled", action="store_true", help="do not evaluate the bundled model for comparison")
    # reduced phantoms and scanners, for tests and quick checks (not for a model to bundle)
    ap.add_argument("--size", default="small", choices=["small", "full"])
    ap.add_argument("--grid", type=float, nargs=6, metavar=("NX", "NY", "NZ", "SX", "SY", "SZ"),
                    help="phantom grid instead of --size (voxels and mm)")
    ap.add_argument("--spect-matrix", type=int, default=128)
    ap.add_argument("--spect-voxel-mm", type=float, default=4.8)
    ap.add_argument("--osem", type=int, nargs=3, default=[128, 16, 4], metavar=("VIEWS", "ITERATIONS", "SUBSETS"))
    ap.add_argument("--min-heldout", type=int, nargs=2, default=[8, 4], metavar=("PHANTOMS", "TIME_POINTS"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                    help="where --install and --install-from put the model (default DoseCNN/Resources/Models)")
    args = ap.parse_args(argv)
    args.grid_override = None
    if args.grid:
        g = args.grid
        args.grid_override = ((int(g[0]), int(g[1]), int(g[2])), (g[3], g[4], g[5]))
    if not 0.0 <= args.mix <= 1.0:
        ap.error("--mix must be between 0 and 1")
    return args


def main(argv=None) -> int:
    from ImagingBasics.errors import UserError

    try:
        return run(argv)
    except UserError as exc:
        log(f"error: {exc}")
        return 2


def run(argv=None) -> int:
    global _LOG
    args = parse_args(argv)
    _LOG = None  # (another run's log, in a process that runs several)
    if args.install_from is not None:
        return install_model(args.install_from.resolve(), args.models_dir)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    _LOG = out / "run.log"

    import torch

    from ImagingBasics.devices import describe_device, select_device

    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = select_device(args.device)  # resolved once: every step and every worker gets the same device
    args.mc_device = select_device(args.mc_device) if args.mc_device else args.device
    machine = f"{platform.node()}, {os.cpu_count()} cores; {describe_device(args.device)}; torch {torch.__version__}"
    command = " ".join(sys.argv[1:] if argv is None else argv)
    log(f"start: {command}; machine: {machine}")
    log(f"device {args.device} for the phantoms' OSEM SPECTs, the held-out OSEM SPECTs, the training's preparation, "
        f"the training and the evaluation, {args.mc_device} for the phantoms' Monte Carlo truths; {args.workers} worker "
        "process(es)")
    spects = spect_models(args)
    if not (out / "train" / "checkpoint.pt").is_file():
        init_weights(args)  # a missing or mismatched --init: refused before any phantom is made
    previous_model(out, args)  # kept before anything can replace it

    train_cohort = make_cohort(out, "train", args.n_train, args.train_seed, args.train_decays, spects["osem"], args)
    heldout = make_cohort(out, "heldout", args.n_heldout, args.heldout_seed, args.heldout_decays, spects["image"], args)
    heldout_osem_spects(out, heldout, args)
    manifest = training_manifest(out, train_cohort, args, spects["image"])

    summary = train_stage(out, manifest, args)
    if summary is None:
        return 0
    weights = fp16_weights(out)
    results = evaluate_stage(out, heldout, weights, args)
    accept = acceptance(results, *args.min_heldout)
    card = build_card(out, args, summary, results, accept, machine, spects, command)
    write_model(out, card)
    card["weights_sha256"] = sha256(out / WEIGHTS_NAME)  # --install-from checks that the weights are the card's
    write_json(card, out / "model_card.json")
    (out / "MODEL_CARD.md").write_text(render_card(card))
    for name in SETS:
        by = {s["region"]: s for s in results[name]["new"]}
        log(f"held-out {name}: " + "; ".join(
            f"{r} MDE gain {_pct(by.get(r, {}).get('mde_improvement'))}, NRMSE gain "
            f"{_pct(by.get(r, {}).get('nrmse_improvement'))}" for r in ("lesions", "kidneys")))
    log(f"acceptance {'met' if accept['met'] else 'NOT met'}; card: {out / 'MODEL_CARD.md'}")
    log(f"results in {out}: {', '.join(RESULT_FILES)}")
    if args.install:
        return install_model(out, args.models_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
