"""Time integration of activity and dose-rate curves: time-integrated activity (MBq*h) and absorbed dose (Gy).

A curve is a few samples ``y_i`` at times ``t_i`` (hours after administration, ``0 <= t_1 < t_2 < ...``): the
activity of an organ or a voxel (MBq), or its dose rate (mGy/s). Its integral from 0 to infinity is in the value's
unit times hours: MBq*h (the time-integrated activity, TIA) or mGy/s*h, which :func:`absorbed_dose_gy` turns into Gy
(x 3600 s/h / 1000 mGy/Gy = x 3.6).

Models (``FIT_MODELS``), each a named function for one curve and a vectorised one over many voxels:

* ``"mono"`` (default): ``y(t) = A0 exp(-lambda t)``, fitted by weighted log-linear least squares (weights ``y_i^2``,
  which makes the fit on the log scale approximate the ordinary least squares fit on the linear scale: the variance
  of ``log y`` is ``var(y) / y^2``); integral ``A0 / lambda`` (uptake taken as instantaneous at t = 0).
* ``"bi"``: uptake and washout, ``y(t) = A0 [exp(-lambda_w t) - exp(-lambda_u t)]`` with ``lambda_u > lambda_w``
  (zero at t = 0, peak between), fitted by Levenberg-Marquardt on the linear scale (ordinary least squares) from the
  best point of a grid (variable projection: A0 is solved exactly on the grid); integral
  ``A0 (1 / lambda_w - 1 / lambda_u)``. Three parameters: at least 3 time points, 4 or more advisable. Chosen over a
  sum of two decaying exponentials (4 parameters) because clinical Lu-177 schedules have 3-4 time points.
* ``"trapezoid"``: the measured points joined by straight lines; before the first point the first value is held
  constant back to t = 0 (``start="constant"``: uptake taken as fast compared with the first time point, as for
  Lu-177 peptides and PSMA ligands imaged from ~4 h on; ``start="zero"`` draws a line from (0, 0) instead); after the
  last point an exponential tail ``y_n exp(-lambda (t - t_n))`` whose rate is the mono-exponential fit of the points
  from the curve's maximum on (``tail="fit"``; the physical decay when fewer than two such points) or the physical
  decay itself (``tail="physical"``); tail integral ``y_n / lambda``.

Physical decay bounds every clearance: an effective decay constant below the physical one (a clearance slower than
decay, impossible once the radiopharmaceutical is bound) comes from noise, and is clamped to the physical decay
constant (the amplitude refitted with the rate fixed); such fits are counted as ``clamped``. A fit that fails (a rising
curve: fitted ``lambda <= 0``; fewer positive points than parameters; a bi-exponential whose maximum is the last
point, i.e. no washout seen; a non-finite result) falls back to the trapezoid with the physical-decay tail, counted as
``fallback``. Voxels that are zero at every time point integrate to zero (``zero``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ImagingBasics.errors import UserError

FIT_MODELS = ("mono", "bi", "trapezoid")
STARTS = ("constant", "zero")
TAILS = ("fit", "physical")
#: (mGy/s) x h -> Gy: 3600 s/h / 1000 mGy/Gy.
MGY_S_H_TO_GY = 3.6
#: Voxels per chunk of the vectorised fits (memory: a few float64 arrays of chunk x time points).
CHUNK_VOXELS = 1 << 18
#: Upper bound of the bi-exponential uptake rate (1/h): a 2-minute uptake half-time is instantaneous here.
MAX_UPTAKE_PER_H = 20.0
_LOG_FLOOR = -30.0


def physical_decay_constant_per_h(nuclide: str = "Lu-177") -> float:
    """Physical decay constant ``ln 2 / T_1/2`` (1/h) from the ICRP-107 half-life (Lu-177: 6.647 d, 0.004345 /h)."""
    from ..physics.decay import load_decay_data

    return float(np.log(2.0) / (load_decay_data(nuclide).half_life_s / 3600.0))


def absorbed_dose_gy(integral_mgy_s_h):
    """Absorbed dose (Gy) from a dose-rate integral in (mGy/s) x h: ``D = 3.6 x integral`` (scalars or arrays)."""
    if np.ndim(integral_mgy_s_h):
        return np.asarray(integral_mgy_s_h, dtype=np.float64) * MGY_S_H_TO_GY
    return float(integral_mgy_s_h) * MGY_S_H_TO_GY


def check_times(times_h: Sequence[float]) -> np.ndarray:
    """Times (h) as a float array: finite, >= 0, strictly increasing, at least two (a UserError otherwise)."""
    t = np.asarray(times_h, dtype=np.float64).reshape(-1)
    if t.size < 2:
        raise UserError(f"time integration needs at least 2 time points, got {t.size}")
    if not np.all(np.isfinite(t)) or t.min() < 0:
        raise UserError("time points must be finite hours after administration (>= 0)")
    if np.any(np.diff(t) <= 0):
        raise UserError("time points must be distinct and increasing")
    return t


def _check_lambda(lambda_phys_per_h: float) -> float:
    lam = float(lambda_phys_per_h)
    if not (np.isfinite(lam) and lam > 0):
        raise UserError("the physical decay constant must be positive")
    return lam


# --- one curve ------------------------------------------------------------------------------------------------
@dataclass
class CurveFit:
    """The integral of one curve and the model behind it.

    ``integral``: 0..infinity, in the values' unit x h (MBq*h for activity, mGy/s*h for dose rate).
    ``lambda_eff_per_h``: mono: the fitted (possibly clamped) rate; bi: the washout rate; trapezoid: the tail's rate.
    ``model``: the model used; ``requested``: the one asked for (they differ when ``fallback``).
    """

    model: str
    requested: str
    times_h: np.ndarray
    values: np.ndarray
    integral: float
    lambda_eff_per_h: float
    params: Dict[str, float] = field(default_factory=dict)
    clamped: bool = False
    fallback: bool = False
    note: str = ""

    @property
    def effective_half_life_h(self) -> float:
        """``ln 2 / lambda_eff`` (h)."""
        return float(np.log(2.0) / self.lambda_eff_per_h) if self.lambda_eff_per_h > 0 else float("inf")

    def evaluate(self, t_h) -> np.ndarray:
        """The fitted (or interpolated) curve at times ``t_h`` (h), in the values' unit."""
        t = np.asarray(t_h, dtype=np.float64)
        p = self.params
        if self.model == "mono":
            return p["a0"] * np.exp(-p["lambda_per_h"] * t)
        if self.model == "bi":
            return p["a0"] * (np.exp(-p["lambda_washout_per_h"] * t) - np.exp(-p["lambda_uptake_per_h"] * t))
        return _trapezoid_curve(self.times_h, self.values, t, p["lambda_tail_per_h"], self.params.get("start", "constant"))


def _trapezoid_curve(times: np.ndarray, values: np.ndarray, t: np.ndarray, lam_tail: float, start: str) -> np.ndarray:
    x = np.concatenate([[0.0], times]) if times[0] > 0 else times
    first = values[0] if start == "constant" else 0.0
    y = np.concatenate([[first], values]) if times[0] > 0 else values
    out = np.interp(t, x, y)
    after = t > times[-1]
    return np.where(after, values[-1] * np.exp(-lam_tail * np.clip(t - times[-1], 0.0, None)), out)


def fit_mono_exponential(times_h: Sequence[float], values: Sequence[float], lambda_phys_per_h: float,
                         start: str = "constant") -> CurveFit:
    """Mono-exponential ``y = A0 exp(-lambda t)`` (t in h), integral ``A0 / lambda`` (values' unit x h).

    Weighted log-linear least squares (module docstring); ``lambda < lambda_phys`` is clamped to ``lambda_phys``;
    a failed fit (rising curve, fewer than 2 positive points) falls back to the trapezoid with a physical tail.
    """
    t, y = _curve(times_h, values)
    a0, lam, ok, clamped = mono_exponential_batch(t, y[None, :], lambda_phys_per_h)
    if not ok[0]:
        return _fallback(t, y, lambda_phys_per_h, start, "mono", "mono-exponential fit failed (rising curve or < 2 positive "
                                                          "points): trapezoid with a physical-decay tail")
    return CurveFit("mono", "mono", t, y, float(a0[0] / lam[0]), float(lam[0]),
                    {"a0": float(a0[0]), "lambda_per_h": float(lam[0])}, bool(clamped[0]), False,
                    "clearance slower than physical decay: clamped to the physical decay constant" if clamped[0] else "")


def fit_bi_exponential(times_h: Sequence[float], values: Sequence[float], lambda_phys_per_h: float,
                       start: str = "constant", iterations: int = 200) -> CurveFit:
    """Uptake-washout ``y = A0 [exp(-lw t) - exp(-lu t)]`` (t in h, ``lu > lw >= lambda_phys``), integral
    ``A0 (1/lw - 1/lu)`` (values' unit x h). Falls back to the trapezoid with a physical tail when it fails."""
    t, y = _curve(times_h, values)
    a0, lw, lu, ok, clamped = bi_exponential_batch(t, y[None, :], lambda_phys_per_h, iterations)
    if not ok[0]:
        return _fallback(t, y, lambda_phys_per_h, start, "bi", "bi-exponential fit failed (< 3 positive points, no washout "
                                                        "seen, or no convergence): trapezoid with a physical-decay tail")
    integral = float(a0[0] * (1.0 / lw[0] - 1.0 / lu[0]))
    return CurveFit("bi", "bi", t, y, integral, float(lw[0]),
                    {"a0": float(a0[0]), "lambda_washout_per_h": float(lw[0]), "lambda_uptake_per_h": float(lu[0])},
                    bool(clamped[0]), False,
                    "washout at the physical decay constant (bound reached)" if clamped[0] else "")


def trapezoid_integral(times_h: Sequence[float], values: Sequence[float], lambda_phys_per_h: float,
                       start: str = "constant", tail: str = "fit") -> CurveFit:
    """Trapezoid over the points, a start from t = 0 and an exponential tail (module docstring); values' unit x h."""
    t, y = _curve(times_h, values)
    integral, lam_tail, clamped = trapezoid_batch(t, y[None, :], lambda_phys_per_h, start, tail)
    note = "tail clearance slower than physical decay: clamped to the physical decay constant" if clamped[0] else ""
    return CurveFit("trapezoid", "trapezoid", t, y, float(integral[0]), float(lam_tail[0]),
                    {"lambda_tail_per_h": float(lam_tail[0]), "start": start, "tail": tail}, bool(clamped[0]), False, note)


def integrate_curve(times_h: Sequence[float], values: Sequence[float], model: str, lambda_phys_per_h: float,
                    start: str = "constant") -> CurveFit:
    """The integral (values' unit x h) of one curve by ``model`` (``"mono"``, ``"bi"`` or ``"trapezoid"``)."""
    if model == "mono":
        return fit_mono_exponential(times_h, values, lambda_phys_per_h, start)
    if model == "bi":
        return fit_bi_exponential(times_h, values, lambda_phys_per_h, start)
    if model == "trapezoid":
        return trapezoid_integral(times_h, values, lambda_phys_per_h, start)
    raise UserError(f"unknown fit model {model!r}; choose one of {', '.join(FIT_MODELS)}")


def _curve(times_h, values) -> Tuple[np.ndarray, np.ndarray]:
    t = check_times(times_h)
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    if y.shape != t.shape:
        raise UserError(f"{t.size} time points but {y.size} values")
    if not np.all(np.isfinite(y)):
        raise UserError("the curve holds NaN or infinite values")
    return t, y


def _fallback(t: np.ndarray, y: np.ndarray, lambda_phys_per_h: float, start: str, requested: str, note: str) -> CurveFit:
    fit = trapezoid_integral(t, y, lambda_phys_per_h, start, "physical")
    fit.requested, fit.fallback, fit.note = requested, True, note
    return fit


# --- many curves at once (rows of an (n, T) array) --------------------------------------------------------------
def _weighted_log_line(t: np.ndarray, y: np.ndarray, mask: Optional[np.ndarray] = None):
    """Weighted least-squares line through ``log y`` (weights ``(y / max y)^2``, zero where ``y <= 0`` or outside
    ``mask``): (intercept, slope, weights, log y, solvable) per row."""
    scale = np.max(y, axis=1, keepdims=True)
    positive = y > 0
    if mask is not None:
        positive &= mask
    safe = np.where(scale > 0, scale, 1.0)
    w = np.where(positive, (y / safe) ** 2, 0.0)
    logy = np.where(positive, np.log(np.where(positive, y, 1.0)), 0.0)
    sw = w.sum(axis=1)
    st = w @ t
    stt = w @ (t * t)
    sl = (w * logy).sum(axis=1)
    stl = (w * logy) @ t
    det = sw * stt - st * st
    enough = (positive.sum(axis=1) >= 2) & (det > 1e-12 * np.maximum(sw * stt, 1e-300))
    det_safe = np.where(enough, det, 1.0)
    slope = np.where(enough, (sw * stl - st * sl) / det_safe, 0.0)
    intercept = np.where(enough, (sl - slope * st) / np.where(sw > 0, sw, 1.0), 0.0)
    return intercept, slope, w, logy, enough


def mono_exponential_batch(times_h: np.ndarray, values: np.ndarray, lambda_phys_per_h: float,
                           mask: Optional[np.ndarray] = None):
    """Mono-exponential fits of the rows of ``values`` (n, T) at ``times_h`` (T,) (h).

    Returns ``(a0, lambda_per_h, ok, clamped)``: amplitude (values' unit), decay constant (1/h, clamped to at least
    ``lambda_phys_per_h``), fit usable (rate > 0, at least 2 positive points), rate clamped. ``mask`` (n, T) limits
    the points each row uses.
    """
    lam_p = _check_lambda(lambda_phys_per_h)
    t = np.asarray(times_h, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    intercept, slope, w, logy, enough = _weighted_log_line(t, y, mask)
    lam = -slope
    ok = enough & np.isfinite(lam) & (lam > 0) & np.isfinite(intercept)
    clamped = ok & (lam < lam_p)
    if clamped.any():  # refit the amplitude with the rate fixed at the physical decay constant
        sw = np.where(w.sum(axis=1) > 0, w.sum(axis=1), 1.0)
        fixed = (w * (logy + lam_p * t)).sum(axis=1) / sw
        intercept = np.where(clamped, fixed, intercept)
        lam = np.where(clamped, lam_p, lam)
    a0 = np.where(ok, np.exp(np.clip(intercept, -700, 700)), 0.0)
    return a0, np.where(ok, lam, lam_p), ok, clamped


def trapezoid_batch(times_h: np.ndarray, values: np.ndarray, lambda_phys_per_h: float, start: str = "constant",
                    tail: str = "fit"):
    """Trapezoid integrals (values' unit x h) of the rows of ``values`` (n, T); returns ``(integral, lambda_tail,
    tail_clamped)`` (see the module docstring for the start and the tail)."""
    lam_p = _check_lambda(lambda_phys_per_h)
    if start not in STARTS:
        raise UserError(f"unknown start {start!r}; choose one of {', '.join(STARTS)}")
    if tail not in TAILS:
        raise UserError(f"unknown tail {tail!r}; choose one of {', '.join(TAILS)}")
    t = np.asarray(times_h, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    middle = (0.5 * (y[:, 1:] + y[:, :-1]) * np.diff(t)).sum(axis=1)
    head = y[:, 0] * t[0] * (1.0 if start == "constant" else 0.5)
    lam_tail = np.full(y.shape[0], lam_p)
    clamped = np.zeros(y.shape[0], dtype=bool)
    if tail == "fit":
        from_peak = np.arange(t.size)[None, :] >= np.argmax(y, axis=1)[:, None]
        _, lam, ok, clamped = mono_exponential_batch(t, y, lam_p, mask=from_peak)
        lam_tail = np.where(ok, lam, lam_p)
        clamped = ok & clamped
    return head + middle + np.maximum(y[:, -1], 0.0) / lam_tail, lam_tail, clamped


def _bi_model(t, a, lw, lu):
    ew = np.exp(-lw[:, None] * t[None, :])
    eu = np.exp(-lu[:, None] * t[None, :])
    return a[:, None] * (ew - eu), ew, eu


def _bi_rates(theta: np.ndarray, lam_p: float):
    lw = lam_p + np.exp(theta[:, 1])
    lu = lw + np.exp(theta[:, 2])
    return lw, lu


def _bi_start(t: np.ndarray, y: np.ndarray, lam_p: float) -> np.ndarray:
    """Best (log A0, log(lw - lambda_phys), log(lu - lw)) on a grid, A0 solved exactly (variable projection)."""
    dw = np.geomspace(1e-5, 2.0, 14)
    du = np.geomspace(1e-3, MAX_UPTAKE_PER_H, 14)
    gw, gu = np.meshgrid(dw, du, indexing="ij")
    lw = lam_p + gw.ravel()
    lu = lw + gu.ravel()
    basis = np.exp(-lw[:, None] * t[None, :]) - np.exp(-lu[:, None] * t[None, :])  # (G, T)
    norm = (basis * basis).sum(axis=1)
    proj = y @ basis.T  # (n, G)
    sse = -np.where(proj > 0, proj * proj / norm[None, :], 0.0)  # |y|^2 - (y.b)^2/|b|^2, up to the constant
    best = np.argmin(sse, axis=1)
    a = np.maximum(proj[np.arange(y.shape[0]), best] / norm[best], 1e-12)
    return np.stack([np.log(a), np.log(gw.ravel()[best]), np.log(gu.ravel()[best])], axis=1)


def _bi_cost(theta: np.ndarray, t: np.ndarray, y: np.ndarray, lam_p: float) -> np.ndarray:
    lw, lu = _bi_rates(theta, lam_p)
    f, _, _ = _bi_model(t, np.exp(theta[:, 0]), lw, lu)
    return ((f - y) ** 2).sum(axis=1)


def _lm_step(theta: np.ndarray, t: np.ndarray, y: np.ndarray, lam_p: float, mu: np.ndarray) -> np.ndarray:
    """One Levenberg-Marquardt step per row (Marquardt's diagonal scaling); rows whose damped normal equations are
    singular (a Jacobian column vanishes, e.g. for a curve that drops to zero) take no step and so end the search."""
    a = np.exp(theta[:, 0])
    lw, lu = _bi_rates(theta, lam_p)
    f, ew, eu = _bi_model(t, a, lw, lu)
    dlw = np.exp(theta[:, 1])[:, None] * a[:, None] * t[None, :] * (eu - ew)  # lu = lw + exp(theta_2) moves with lw
    dlu = np.exp(theta[:, 2])[:, None] * a[:, None] * t[None, :] * eu
    jac = np.stack([f, dlw, dlu], axis=2)  # (n, T, 3)
    jtj = np.einsum("nti,ntj->nij", jac, jac)
    g = np.einsum("nti,nt->ni", jac, f - y)
    diag = np.diagonal(jtj, axis1=1, axis2=2) + 1e-12
    damped = jtj + mu[:, None, None] * (np.eye(3)[None] * diag[:, :, None])
    step = np.zeros_like(theta)
    good = np.all(np.isfinite(damped), axis=(1, 2)) & np.all(np.isfinite(g), axis=1)
    good[good] = np.linalg.det(damped[good]) != 0.0  # a singular system (e.g. a curve that falls to 0): no step
    if good.any():
        step[good] = np.linalg.solve(damped[good], -g[good][:, :, None])[:, :, 0]
    return step


def bi_exponential_batch(times_h: np.ndarray, values: np.ndarray, lambda_phys_per_h: float, iterations: int = 200):
    """Uptake-washout fits of the rows of ``values`` (n, T) by Levenberg-Marquardt (vectorised over rows).

    Parameters ``theta = (log A0, log(lw - lambda_phys), log(lu - lw))`` keep ``lu > lw >= lambda_phys`` without
    bounds; each row is scaled by its maximum first. Returns ``(a0, lw, lu, ok, clamped)`` (rates in 1/h);
    ``clamped``: the washout converged onto the physical decay constant (within 0.1 %).
    """
    lam_p = _check_lambda(lambda_phys_per_h)
    t = np.asarray(times_h, dtype=np.float64)
    y_raw = np.asarray(values, dtype=np.float64)
    n = y_raw.shape[0]
    scale = np.max(y_raw, axis=1)
    safe = np.where(scale > 0, scale, 1.0)
    y = y_raw / safe[:, None]
    theta = _bi_start(t, y, lam_p)
    live = np.arange(n)
    mu = np.full(n, 1e-3)
    current = _bi_cost(theta, t, y, lam_p)
    for _ in range(int(iterations)):
        if live.size == 0:
            break
        th, yl, m = theta[live], y[live], mu[live]
        trial = th + _lm_step(th, t, yl, lam_p, m)
        trial[:, 0] = np.clip(trial[:, 0], -50.0, 50.0)
        trial[:, 1:] = np.clip(trial[:, 1:], _LOG_FLOOR, np.log(MAX_UPTAKE_PER_H))
        new = _bi_cost(trial, t, yl, lam_p)
        better = np.isfinite(new) & (new <= current[live])
        moved = np.abs(trial - th).max(axis=1)
        theta[live] = np.where(better[:, None], trial, th)
        current[live] = np.where(better, new, current[live])
        mu[live] = np.where(better, m / 3.0, m * 4.0)
        done = (better & (moved < 1e-10)) | (mu[live] > 1e10)  # converged, or no step lowers the cost any more
        live = live[~done]
    lw, lu = _bi_rates(theta, lam_p)
    a0 = np.exp(theta[:, 0]) * safe
    enough = (y_raw > 0).sum(axis=1) >= 3
    washout_seen = np.argmax(y_raw, axis=1) < t.size - 1
    ok = enough & washout_seen & (scale > 0) & np.isfinite(a0) & np.isfinite(lw) & np.isfinite(lu) & (a0 > 0)
    clamped = ok & (lw - lam_p < 1e-3 * lam_p)
    return a0, lw, lu, ok, clamped


# --- whole volumes ------------------------------------------------------------------------------------------------
@dataclass
class VoxelIntegration:
    """Per-voxel integrals of a stack of maps: ``integral`` (values' unit x h, the maps' shape, float64),
    ``lambda_eff_per_h`` (float32, 0 where zero) and counts of voxels: ``voxels``, ``zero`` (zero at every time),
    ``fitted`` (the model worked), ``clamped`` (rate raised to the physical decay), ``fallback`` (the model failed:
    trapezoid with a physical tail); ``fallback_share``: the fallback voxels' share of the summed integral (0..1)."""

    integral: np.ndarray
    lambda_eff_per_h: np.ndarray
    counts: Dict[str, float]
    model: str


def integrate_voxels(times_h: Sequence[float], maps: Sequence[np.ndarray], model: str, lambda_phys_per_h: float,
                     start: str = "constant", chunk_voxels: int = CHUNK_VOXELS) -> VoxelIntegration:
    """Integrate every voxel's curve through the maps ``maps[i]`` taken at ``times_h[i]`` (h), chunk by chunk.

    ``maps``: one array per time point (same shape; e.g. activity in MBq per voxel or dose rate in mGy/s), or one
    (T, ...) array. Only voxels positive at some time are fitted (at most ``chunk_voxels`` at once, in float64).
    """
    if model not in FIT_MODELS:
        raise UserError(f"unknown fit model {model!r}; choose one of {', '.join(FIT_MODELS)}")
    t = check_times(times_h)
    if len(maps) != t.size:
        raise UserError(f"{t.size} time points but {len(maps)} maps")
    shape = np.shape(maps[0])
    if any(np.shape(m) != shape for m in maps):
        raise UserError("the maps of all time points must have the same shape")
    flat = [np.asarray(m).reshape(-1) for m in maps]
    active = np.zeros(flat[0].size, dtype=bool)
    for m in flat:
        active |= m > 0
    index = np.flatnonzero(active)
    integral = np.zeros(flat[0].size, dtype=np.float64)
    lam_map = np.zeros(flat[0].size, dtype=np.float32)
    counts: Dict[str, float] = {"voxels": int(flat[0].size), "zero": int(flat[0].size - index.size), "fitted": 0,
                                "clamped": 0, "fallback": 0}
    fallback_sum = 0.0
    for lo in range(0, index.size, max(1, int(chunk_voxels))):
        idx = index[lo:lo + chunk_voxels]
        y = np.stack([np.asarray(m[idx], dtype=np.float64) for m in flat], axis=1)
        value, lam, ok, clamped = _integrate_rows(t, y, model, lambda_phys_per_h, start)
        integral[idx] = value
        lam_map[idx] = lam
        counts["fitted"] += int(ok.sum())
        counts["clamped"] += int(clamped.sum())
        counts["fallback"] += int((~ok).sum())
        fallback_sum += float(value[~ok].sum())
    total = float(integral.sum())
    counts["fallback_share"] = fallback_sum / total if total > 0 else 0.0
    return VoxelIntegration(integral.reshape(shape), lam_map.reshape(shape), counts, model)


def _integrate_rows(t: np.ndarray, y: np.ndarray, model: str, lam_p: float, start: str):
    """(integral, lambda_eff, ok, clamped) of rows; failed rows get the trapezoid with a physical tail."""
    if model == "trapezoid":
        value, lam, clamped = trapezoid_batch(t, y, lam_p, start, "fit")
        return value, lam, np.ones(y.shape[0], dtype=bool), clamped
    if model == "mono":
        a0, lam, ok, clamped = mono_exponential_batch(t, y, lam_p)
        value = a0 / lam
    else:
        a0, lam, lu, ok, clamped = bi_exponential_batch(t, y, lam_p)
        value = a0 * (1.0 / lam - 1.0 / lu)
    if not ok.all():
        fallback, lam_fb, _ = trapezoid_batch(t, y[~ok], lam_p, start, "physical")
        value = value.copy()
        value[~ok] = fallback
        lam = lam.copy()
        lam[~ok] = lam_fb
    return value, lam, ok, clamped
