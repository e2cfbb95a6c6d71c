"""The Monte Carlo truth of a phantom case: dose rate per time point and absorbed dose from one Monte Carlo run per
uptake compartment (Li 2020: "MC dose rate of the TRUE activity").

Each compartment is simulated once with a total activity of 1 MBq (:func:`DoseCNNLib.physics.monte_carlo.run_mc`).
Dose rate is linear in activity, so the dose rate at any time point is ``sum_c A_c(t) D_c`` (``A_c``: the
compartment's activity in MBq, ``D_c``: its dose rate per MBq in mGy/(MBq*s)) and the absorbed dose is
``sum_c TIA_c D_c`` exactly; the uncertainties combine the same way (``sd^2 = sum_c A_c(t)^2 sd_c^2``: the
compartments' runs are independent). Decays are shared among the compartments in proportion to their time-integrated
activity (:func:`decay_shares`).

Two ways to run a compartment (``runs``):

* ``runs == 1`` (``dosecnn phantom``): one run of ``batches`` batches; the voxel standard error is the engine's
  batch estimate. No per-label standard error (the engine reports voxel errors only, and a label mean's error cannot
  be derived from them: neighbouring voxels are correlated).
* ``runs >= 2`` (``dosecnn demo``): ``runs`` independent runs (their own seeds, 2 batches each) of ``decays / runs``
  decays; the dose is their mean, the voxel standard error and the standard error of every label's mean dose rate
  come from the spread of the runs (sample standard deviation / sqrt(runs)), so the per-organ noise of the truth is
  measured, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ImagingBasics.volume import Volume

#: no compartment gets fewer decays than this (or half an equal share when the total is small)
MIN_DECAYS_PER_COMPARTMENT = 20_000
SECONDS_PER_HOUR = 3600.0
#: a compartment's runs have the seeds ``compartment_seed * RUN_SEED_STRIDE + run``
RUN_SEED_STRIDE = 1000


@dataclass
class McTruth:
    """The truth of one case as arrays ``[z, y, x]`` on the CT grid (float32), and per label its mean's standard
    error (float64; empty arrays when the truth came from single runs)."""

    dose_rate_mgy_s: List[np.ndarray]  # per time point (mGy/s)
    dose_rate_sd_mgy_s: List[np.ndarray]  # its voxel standard error (mGy/s)
    absorbed_dose_gy: np.ndarray  # Gy
    label_values: np.ndarray  # (L,) int64: the labels with a standard error below
    label_rate_se_mgy_s: np.ndarray  # (L, time points): standard error of each label's mean dose rate (mGy/s)
    label_dose_se_gy: np.ndarray  # (L,): standard error of each label's mean absorbed dose (Gy)

    def label_errors(self) -> Dict[int, Dict[str, object]]:
        """Label value -> ``{"mean_dose_rate_se_mgy_s": [per time point], "mean_absorbed_dose_se_gy": ...}``."""
        return {int(v): {"mean_dose_rate_se_mgy_s": [float(x) for x in self.label_rate_se_mgy_s[i]],
                         "mean_absorbed_dose_se_gy": float(self.label_dose_se_gy[i])}
                for i, v in enumerate(self.label_values)}


def decay_shares(compartments: Mapping[str, np.ndarray], kinetics, voxel_ml: float, total: int) -> Dict[str, int]:
    """Decays per compartment in proportion to its time-integrated activity (at least the minimum each)."""
    tia = {name: kinetics[name].integral() * float(mask.sum()) * voxel_ml for name, mask in compartments.items()}
    whole = sum(tia.values())
    floor = min(MIN_DECAYS_PER_COMPARTMENT, total // (2 * len(tia)))
    return {name: max(floor, int(round(total * v / whole))) for name, v in tia.items()}


class _LabelMeans:
    """Mean of a map over each label > 0 (one pass of :func:`numpy.bincount`)."""

    def __init__(self, labels: np.ndarray):
        self.flat = labels.reshape(-1).astype(np.intp)
        counts = np.bincount(self.flat)
        self.values = np.nonzero(counts)[0]
        self.values = self.values[self.values > 0]
        self.counts = counts[self.values].astype(np.float64)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        sums = np.bincount(self.flat, weights=image.reshape(-1), minlength=int(self.values.max(initial=0)) + 1)
        return sums[self.values] / self.counts


def compartment_dose(unit: Volume, ct: Volume, decays: int, batches: int, runs: int, device: str, seed: int,
                     label_means: _LabelMeans) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Dose rate of 1 MBq in ``unit`` (mGy/(MBq*s), float64 ``[z, y, x]``), its voxel standard error, and the standard
    error of each label's mean (``runs >= 2``; None for a single run). See the module docstring."""
    from ..physics.monte_carlo import run_mc

    if runs <= 1:
        r = run_mc(unit, ct, n_decays=decays, batches=batches, device=device, seed=seed)
        per_mbq = r.dose_rate_mgy_s.array.astype(np.float64)
        return per_mbq, np.nan_to_num(r.relative_uncertainty.array.astype(np.float64)) * per_mbq, None
    total = np.zeros(ct.shape, np.float64)
    squares = np.zeros(ct.shape, np.float64)
    means = []
    for k in range(runs):
        r = run_mc(unit, ct, n_decays=max(2, decays // runs), batches=2, device=device,
                   seed=seed * RUN_SEED_STRIDE + k)
        d = r.dose_rate_mgy_s.array.astype(np.float64)
        total += d
        squares += d * d
        means.append(label_means(d))
    mean = total / runs
    variance = np.maximum(squares / runs - mean * mean, 0.0) * (runs / (runs - 1.0))  # sample variance of one run
    label_se = np.std(np.asarray(means), axis=0, ddof=1) / np.sqrt(runs)
    return mean, np.sqrt(variance / runs), label_se


def _compartment_job(job) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """One compartment's :func:`compartment_dose` (a picklable job for
    :func:`ImagingBasics.parallel.map_in_processes`): ``(mask, ct, labels, decays, batches, runs, device, seed)``."""
    mask, ct, labels, decays, batches, runs, device, seed = job
    unit = ct.with_array(mask.astype(np.float32) * np.float32(1e6 / mask.sum()))  # 1 MBq in total
    return compartment_dose(unit, ct, decays, batches, runs, device, seed, _LabelMeans(labels))


def monte_carlo_truth(ct: Volume, labels: Volume, compartments: Mapping[str, np.ndarray], kinetics, voxel_ml: float,
                      times_h: Sequence[float], shares: Mapping[str, int], batches: int = 5, runs: int = 1,
                      device: str = "cpu", seed: int = 0,
                      say: Callable[[str], None] = lambda msg: None, workers: int = 1) -> McTruth:
    """Dose rate per time point and absorbed dose of the compartments' true kinetics (module docstring).

    ``shares``: decays per compartment (:func:`decay_shares`); compartment i's seed is ``seed * 100 + i``.
    ``workers`` > 1 simulates the compartments in that many single-threaded processes (CPU only; the result is the
    same bit for bit: each compartment has its own seed)."""
    from ImagingBasics.parallel import map_in_processes

    shape, n_t = ct.shape, len(times_h)
    rates = [np.zeros(shape, np.float64) for _ in range(n_t)]
    variances = [np.zeros(shape, np.float64) for _ in range(n_t)]
    dose_gy = np.zeros(shape, np.float64)
    label_means = _LabelMeans(labels.array)
    n_labels = len(label_means.values) if runs > 1 else 0
    rate_var = np.zeros((n_labels, n_t))
    dose_var = np.zeros(n_labels)
    how = f" in {runs} runs" if runs > 1 else ""
    names = list(compartments)
    jobs = [(compartments[name], ct, labels.array, shares[name], batches, runs, device, seed * 100 + i)
            for i, name in enumerate(names)]
    workers = 1 if str(device) != "cpu" else max(1, min(int(workers), len(jobs)))

    def announce(i: int) -> None:
        say(f"Monte Carlo {i + 1}/{len(names)}: {names[i]} ({shares[names[i]]} decays{how})")

    if workers == 1:
        results = []
        for i, job in enumerate(jobs):
            announce(i)
            results.append(_compartment_job(job))
    else:
        say(f"Monte Carlo of {len(names)} compartments in {workers} processes")
        results = map_in_processes(_compartment_job, jobs, workers, lambda done, total, r: announce(done - 1))
    for name, (per_mbq, sd, label_se) in zip(names, results):
        total_mbq = float(compartments[name].sum()) * voxel_ml  # MBq per (MBq/mL) of concentration
        for k, t in enumerate(times_h):
            a_mbq = float(kinetics[name].concentration(t)) * total_mbq
            rates[k] += a_mbq * per_mbq
            variances[k] += (a_mbq * sd) ** 2
            if label_se is not None:
                rate_var[:, k] += (a_mbq * label_se) ** 2
        gy_per_mgy_s = kinetics[name].integral() * total_mbq * SECONDS_PER_HOUR / 1000.0  # MBq h -> Gy
        dose_gy += kinetics[name].integral() * total_mbq * per_mbq * SECONDS_PER_HOUR / 1000.0
        if label_se is not None:
            dose_var += (gy_per_mgy_s * label_se) ** 2
    return McTruth([r.astype(np.float32) for r in rates], [np.sqrt(v).astype(np.float32) for v in variances],
                   dose_gy.astype(np.float32), label_means.values[:n_labels].astype(np.int64), np.sqrt(rate_var),
                   np.sqrt(dose_var))
