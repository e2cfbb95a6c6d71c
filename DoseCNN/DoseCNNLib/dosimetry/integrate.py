"""Time-integrated absorbed dose from several SPECT/CT time points (``dosecnn integrate``).

Steps:

1. :func:`read_time_manifest`: a CSV with columns ``time_h, spect, ct`` and, per row, exactly one calibration:
   ``activity_mbq`` (total activity in the SPECT's field of view, MBq) or ``bq_per_count``. Paths are relative to
   the CSV; ``time_h`` is hours after administration. Rows are sorted by time; at least two distinct times.
2. The reference frame is a reference CT (given, or the first time point's CT). Every other CT is rigidly
   registered to it (:func:`register_ct_to_ct`: SimpleITK Euler3D, mean squares in HU or Mattes mutual
   information, multi-resolution, fixed seed); identical CTs, and every CT with ``register=False``, keep the
   identity (then images are matched by their scanner coordinates).
3. Each time point's dose rate (mGy/s) is computed on its own CT (:func:`.pipeline.dose_rate_map`: VDK or CNN; the
   SPECT is taken to share its CT's frame of reference, as a hybrid SPECT/CT's does), then the dose rate and the
   activity are resampled into the reference frame (:func:`to_reference_frame`; the activity as a concentration, so
   that Bq per voxel stay Bq per voxel on another grid).
4. Per voxel (:func:`.time_integration.integrate_voxels`): the activity curves give the time-integrated activity
   (MBq*h, ``tia``), the dose-rate curves the absorbed dose (Gy). With labels, :func:`organ_rows` fits each organ's
   total activity and mean dose rate too, and summarises the voxel dose map (mean, D2, D50, D98, maximum, DVH).

Rigid registration moves whole images: organ motion and deformation between time points are not modelled.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume

from ..options import ACTIVITY_MBQ, BQ_PER_COUNT
from .time_integration import CurveFit

Progress = Optional[Callable[[str], None]]
#: ``fraction(done, step)``: how far the work is (0..1) and what it does now (the Slicer module's progress bar)
Fraction = Optional[Callable[[float, str], None]]

MANIFEST_COLUMNS = ("time_h", "spect", "ct")
CALIBRATION_COLUMNS = ("activity_mbq", "bq_per_count")
CT_METRICS = ("meansquares", "mattes")
OUTPUT_FILES = ("absorbed_dose.nrrd", "tia.nrrd", "organs.csv", "dvh.csv", "dvh.png", "time_activity.png",
                "integrate.json")
#: with ``dose_rate_maps``: the dose rate (mGy/s) of the i-th time point (0-based, in time order) in the reference frame
DOSE_RATE_MAP = "dose_rate_{index:02d}.nrrd"
#: the files ``dosecnn integrate`` writes into --out (integrate.json last: its presence marks a finished run)
INTEGRATE_OUTPUTS = ["absorbed_dose.nrrd", "tia.nrrd", "dose_rate_[0-9][0-9].nrrd", "organs.csv", "dvh.csv", "dvh.png",
                     "time_activity.png", "integrate.json"]


# --- the manifest --------------------------------------------------------------------------------------------------
@dataclass
class TimePointSpec:
    """One row of the manifest: time (h after administration), SPECT and CT files, one calibration."""

    time_h: float
    spect: Path
    ct: Path
    activity_mbq: Optional[float] = None
    bq_per_count: Optional[float] = None


def _number(text: str, what: str, where: str) -> Optional[float]:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: {what} must be finite")
    return value


def read_time_manifest(path: Path) -> List[TimePointSpec]:
    """Time points of a manifest, sorted by time (module docstring); one clear UserError per problem."""
    from ImagingBasics.manifest import read_rows

    path = Path(path)
    rows = read_rows(path, MANIFEST_COLUMNS, path_columns=("spect", "ct"),
                     needed="time_h, spect, ct and activity_mbq or bq_per_count")
    if rows and not any(c in rows[0] for c in CALIBRATION_COLUMNS):
        raise UserError(f"{path} needs a calibration column: activity_mbq (MBq in the SPECT's field of view) or "
                        "bq_per_count")
    specs = [_spec(row, path, n) for n, row in enumerate(rows, start=2)]
    if len(specs) < 2:
        raise UserError(f"{path}: time integration needs at least 2 time points, got {len(specs)}")
    specs.sort(key=lambda s: s.time_h)
    times = [s.time_h for s in specs]
    if len(set(times)) != len(times):
        raise UserError(f"{path}: two rows share a time point ({', '.join(f'{t:g}' for t in times)} h)")
    return specs


def _spec(row: Dict[str, str], path: Path, line: int) -> TimePointSpec:
    where = f"{path.name}, line {line}"
    t = _number(row.get("time_h", ""), "time_h", where)
    if t is None or t < 0:
        raise UserError(f"{where}: time_h must be the hours after administration (>= 0)")
    files = {}
    for key in ("spect", "ct"):
        if not row.get(key):
            raise UserError(f"{where}: no {key} file given")
        p = Path(row[key])  # made absolute by read_rows
        if not p.exists():
            raise UserError(f"{where}: {key} file {p} not found")
        files[key] = p
    activity = _number(row.get("activity_mbq", ""), "activity_mbq", where)
    factor = _number(row.get("bq_per_count", ""), "bq_per_count", where)
    if (activity is None) == (factor is None):
        raise UserError(f"{where}: give exactly one of activity_mbq and bq_per_count")
    try:  # the ranges of --activity-mbq and --calibration
        ACTIVITY_MBQ.check(activity, "activity_mbq")
        BQ_PER_COUNT.check(factor, "bq_per_count")
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return TimePointSpec(t, files["spect"], files["ct"], activity, factor)


# --- registration between CTs ---------------------------------------------------------------------------------------
@dataclass
class CTRegistration:
    """A rigid map from the reference CT's physical points (LPS mm) to another CT's (ITK fixed -> moving).

    ``transform`` is None for the identity; ``skipped`` says why no registration ran (empty when one ran);
    ``translation_mm``: how far the reference CT's centre moves; ``rotation_deg``: the rotation angle.
    """

    transform: object = None
    matrix_lps: np.ndarray = field(default_factory=lambda: np.eye(4))
    translation_mm: float = 0.0
    rotation_deg: float = 0.0
    metric_value: float = float("nan")
    iterations: int = 0
    seconds: float = 0.0
    skipped: str = ""

    def summary(self) -> Dict[str, object]:
        return {"registered": not self.skipped, "skipped": self.skipped or None, "translation_mm": self.translation_mm,
                "rotation_deg": self.rotation_deg, "metric_value": self.metric_value, "iterations": self.iterations,
                "seconds": self.seconds, "matrix_lps": self.matrix_lps.tolist()}


def _ct_image(ct: Volume, factors: Sequence[int]):
    """The CT clipped to -1000..1500 HU and shifted to 0..2500 (air 0: its intensity moments are the body's), block
    averaged to the working grid, as a SimpleITK float32 image."""
    import SimpleITK as sitk

    from ImagingBasics.rigid import block_average
    from ImagingBasics.volume import to_sitk

    image = sitk.Cast(to_sitk(ct), sitk.sitkFloat32)
    image = sitk.Clamp(image, sitk.sitkFloat32, -1000.0, 1500.0) + 1000.0
    return sitk.Cast(block_average(image, factors), sitk.sitkFloat32)


def register_ct_to_ct(fixed: Volume, moving: Volume, *, metric: str = "meansquares", working_spacing_mm: float = 4.0,
                      max_iterations: int = 300, histogram_bins: int = 32, samples: int = 100_000, seed: int = 0,
                      progress: Progress = None) -> CTRegistration:
    """Rigidly register ``moving`` (a CT of another time point) to ``fixed`` (the reference CT), both in HU.

    Both CTs are clipped to -1000..1500 HU and block-averaged to about ``working_spacing_mm``; an Euler3D transform
    about the body's centre is initialised by intensity moments (body centroid to body centroid) and optimised by
    regular-step gradient descent (steps from 4 mm down to 0.001 mm, relaxation 0.8) over up to three resolution
    levels (shrink 4, 2, 1 where the image stays at least 16 voxels wide, Gaussian smoothing of half the level's voxel
    size; a small image gets one smoothed level of its own). ``metric``: ``"meansquares"`` (default: the same
    modality in calibrated HU; on small test phantoms it finds whole-voxel shifts exactly where mutual information
    strays by 1-3 mm) or ``"mattes"`` (Mattes mutual information, ``histogram_bins``, for CTs of different contrast
    or reconstruction). At most ``samples`` random samples per level with a fixed ``seed``: reproducible.
    """
    import SimpleITK as sitk

    from ImagingBasics.imageio import sitk_reason
    from ImagingBasics.rigid import itk_seed, rotation_angle_deg, shrink_factors, transform_to_matrix
    from ImagingBasics.validation import require_finite

    if metric not in CT_METRICS:
        raise UserError(f"unknown registration metric {metric!r}; choose one of {', '.join(CT_METRICS)}")
    t0 = time.perf_counter()
    require_finite(fixed, "reference CT")
    require_finite(moving, "CT")
    f_img = _ct_image(fixed, shrink_factors(fixed.spacing, working_spacing_mm))
    m_img = _ct_image(moving, shrink_factors(moving.spacing, working_spacing_mm))
    base = float(np.mean(f_img.GetSpacing()))
    levels = [s for s in (4, 2) if min(f_img.GetSize()) // s >= 16] + [1]
    sigmas = [0.5 * s * base if s > 1 else 0.0 for s in levels]
    if len(levels) == 1:
        levels, sigmas = [1, 1], [base, 0.0]
    try:
        initial = sitk.CenteredTransformInitializer(f_img, m_img, sitk.Euler3DTransform(),
                                                    sitk.CenteredTransformInitializerFilter.MOMENTS)
    except RuntimeError as exc:
        raise UserError(f"could not initialise the CT registration: {sitk_reason(exc)}") from None
    reg = sitk.ImageRegistrationMethod()
    if metric == "mattes":
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(histogram_bins))
        reg.SetMetricUseFixedImageGradientFilter(False)
        reg.SetMetricUseMovingImageGradientFilter(False)
    else:
        reg.SetMetricAsMeanSquares()
    n_voxels = int(np.prod(f_img.GetSize()))
    if n_voxels > samples:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(samples / n_voxels, itk_seed(seed))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=4.0, minStep=0.001, numberOfIterations=int(max_iterations),
                                                 relaxationFactor=0.8, gradientMagnitudeTolerance=1e-10)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(levels)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    counter = {"iterations": 0}
    reg.AddCommand(sitk.sitkIterationEvent, lambda: counter.__setitem__("iterations", counter["iterations"] + 1))
    if progress is not None:
        progress(f"registering the CT to the reference CT ({len(levels)} level(s))")
    try:
        out = reg.Execute(f_img, m_img)
    except RuntimeError as exc:
        raise UserError(f"the CT-to-CT registration failed: {sitk_reason(exc)}; check that the CTs show the same "
                        "patient and region, or use --no-register") from None
    if isinstance(out, sitk.CompositeTransform) and out.GetNumberOfTransforms() == 1:
        out = out.GetNthTransform(0)
    transform = sitk.Euler3DTransform(out) if out.GetName() == "Euler3DTransform" else out
    matrix = transform_to_matrix(transform)
    centre = fixed.index_to_lps((np.asarray(fixed.size, float) - 1.0) / 2.0)
    shift = float(np.linalg.norm(matrix[:3, :3] @ centre + matrix[:3, 3] - centre))
    return CTRegistration(transform, matrix, shift, rotation_angle_deg(matrix), float(reg.GetMetricValue()),
                          counter["iterations"], time.perf_counter() - t0)


def to_reference_frame(volume: Volume, reference: Volume, transform=None, per_voxel: bool = False) -> Volume:
    """``volume`` on the reference grid (float32, linear, 0 outside) through ``transform`` (reference point ->
    ``volume``'s point; None: identity).

    ``per_voxel``: the values are amounts per voxel (activity in Bq or MBq per voxel): resampled as concentrations
    (divided by the voxel volume before, multiplied by the reference's after). Dose rates are intensive: as they are.
    """
    from ImagingBasics.resample import resample, resample_amount

    if transform is None and volume.same_geometry(reference):
        return volume.with_array(volume.array.astype(np.float32, copy=False))
    if per_voxel:
        return resample_amount(volume, reference, transform, dtype=np.float32)
    return resample(volume, reference, transform)


# --- the integration ------------------------------------------------------------------------------------------------
@dataclass
class IntegrationResult:
    """Maps on the reference CT grid: ``tia_mbq_h`` (MBq*h per voxel), ``absorbed_dose_gy`` (Gy); per time point
    (float32 arrays on that grid): ``activity_mbq`` (MBq per voxel) and ``dose_rate_mgy_s``. ``time_points``: one
    dict per time point (files, calibration, activity, registration); ``voxel_fits``: counts per quantity."""

    times_h: np.ndarray
    reference_ct: Volume
    tia_mbq_h: Volume
    absorbed_dose_gy: Volume
    activity_mbq: List[np.ndarray]
    dose_rate_mgy_s: List[np.ndarray]
    time_points: List[Dict[str, object]]
    fit: str
    start: str
    lambda_phys_per_h: float
    voxel_fits: Dict[str, Dict[str, float]]


def _same_image(a: Volume, b: Volume) -> bool:
    return a.same_geometry(b) and np.array_equal(a.array, b.array)


def _registration_for(ct: Volume, reference_ct: Volume, register: bool, metric: str, progress: Progress) -> CTRegistration:
    if _same_image(ct, reference_ct):
        return CTRegistration(skipped="the reference CT itself (identical images)")
    if not register:
        return CTRegistration(skipped="registration turned off (scanner coordinates used)")
    return register_ct_to_ct(reference_ct, ct, metric=metric, progress=progress)


def integrate_time_points(specs: Sequence[TimePointSpec], reference_ct: Volume, *, method: str = "vdk", weights=None,
                          fit: str = "mono", start: str = "constant", register: bool = True,
                          registration_metric: str = "meansquares", device: str = "cpu", nuclide: str = "Lu-177",
                          kernel_cache: Optional[Path] = None, progress: Progress = None,
                          fraction: Fraction = None) -> IntegrationResult:
    """Dose rate per time point in the reference frame, then per-voxel TIA (MBq*h) and absorbed dose (Gy)."""
    from ImagingBasics.imageio import read_volume

    from .pipeline import dose_rate_map
    from .time_integration import (
        FIT_MODELS,
        MGY_S_H_TO_GY,
        check_times,
        integrate_voxels,
        physical_decay_constant_per_h,
    )

    say = progress or (lambda _msg: None)
    done = fraction or (lambda _f, _step: None)
    if fit not in FIT_MODELS:
        raise UserError(f"unknown fit model {fit!r}; choose one of {', '.join(FIT_MODELS)}")
    times = check_times([s.time_h for s in specs])
    if fit == "bi" and len(specs) < 3:
        raise UserError("the bi-exponential fit needs at least 3 time points (4 or more advisable); use --fit mono")
    lam_p = physical_decay_constant_per_h(nuclide)
    activities: List[np.ndarray] = []
    dose_rates: List[np.ndarray] = []
    info: List[Dict[str, object]] = []
    for i, spec in enumerate(specs):
        say(f"time point {i + 1}/{len(specs)}: {spec.time_h:g} h")
        done(i / (len(specs) + 2), f"dose rate at {spec.time_h:g} h ({i + 1} of {len(specs)})")
        ct = read_volume(spec.ct)
        spect = read_volume(spec.spect)
        reg = _registration_for(ct, reference_ct, register, registration_metric, say)
        result = dose_rate_map(spect, ct, spec.bq_per_count, spec.activity_mbq, method=method, weights=weights,
                               device=device, nuclide=nuclide, kernel_cache=kernel_cache, progress=say)
        activity = to_reference_frame(result.activity_bq, reference_ct, reg.transform, per_voxel=True)
        dose = to_reference_frame(result.dose_rate_mgy_s, reference_ct, reg.transform)
        activities.append((activity.array / np.float32(1e6)).astype(np.float32))
        dose_rates.append(np.maximum(dose.array, 0.0).astype(np.float32))
        info.append({"time_h": spec.time_h, "spect": str(spec.spect), "ct": str(spec.ct),
                     "activity_mbq": spec.activity_mbq, "bq_per_count": spec.bq_per_count,
                     "total_activity_mbq": result.info.get("total_activity_mbq"),
                     "activity_in_reference_frame_mbq": float(activities[-1].sum(dtype=np.float64)),
                     "max_dose_rate_mgy_s": float(dose_rates[-1].max()), "method": result.method,
                     "registration": reg.summary()})
        del ct, spect, result
    say(f"fitting {fit} curves per voxel")
    done(len(specs) / (len(specs) + 2), "fitting the time curves")
    tia = integrate_voxels(times, activities, fit, lam_p, start)
    dose = integrate_voxels(times, dose_rates, fit, lam_p, start)
    grid = reference_ct
    return IntegrationResult(times, reference_ct, grid.with_array(tia.integral.astype(np.float32)),
                             grid.with_array((dose.integral * MGY_S_H_TO_GY).astype(np.float32)), activities, dose_rates,
                             info, fit, start, lam_p, {"activity": tia.counts, "dose_rate": dose.counts})


# --- per organ --------------------------------------------------------------------------------------------------------
def organ_rows(result: IntegrationResult, labels: Volume, names: Optional[Mapping[int, str]] = None
               ) -> Tuple[List[Dict[str, object]], Dict[int, Tuple[CurveFit, CurveFit]]]:
    """Per label > 0: volume (mL); TIA (MBq*h) and effective half-life (h) from the fit of the organ's total activity
    (and the sum of the voxel TIA map); mean absorbed dose (Gy) from the fit of the organ's mean dose rate and from
    the voxel dose map; D2, D50, D98, maximum (Gy) of the voxel map. Also returns the two organ-level fits per label
    (activity in MBq, mean dose rate in mGy/s) for the figure."""
    from .metrics import dose_statistics
    from .time_integration import MGY_S_H_TO_GY, integrate_curve

    if not labels.same_geometry(result.reference_ct):
        raise UserError("the label map must be on the reference CT's grid")
    stats = {r["label"]: r for r in dose_statistics(result.absorbed_dose_gy, labels, names, unit="gy")}
    lab = labels.array
    rows: List[Dict[str, object]] = []
    fits: Dict[int, Tuple[CurveFit, CurveFit]] = {}
    for value, s in stats.items():
        inside = lab == value
        activity = [float(a[inside].sum(dtype=np.float64)) for a in result.activity_mbq]
        dose_rate = [float(d[inside].mean(dtype=np.float64)) for d in result.dose_rate_mgy_s]
        a_fit = integrate_curve(result.times_h, activity, result.fit, result.lambda_phys_per_h, result.start)
        d_fit = integrate_curve(result.times_h, dose_rate, result.fit, result.lambda_phys_per_h, result.start)
        fits[value] = (a_fit, d_fit)
        rows.append({"label": value, "name": s["name"], "volume_ml": s["volume_ml"],
                     "tia_mbq_h": a_fit.integral,
                     "tia_voxel_map_mbq_h": float(result.tia_mbq_h.array[inside].sum(dtype=np.float64)),
                     "effective_half_life_h": a_fit.effective_half_life_h, "fit": a_fit.model,
                     "mean_dose_gy_organ_fit": d_fit.integral * MGY_S_H_TO_GY, "mean_dose_gy_voxel_map": s["mean_gy"],
                     "d2_gy": s["d2_gy"], "d50_gy": s["d50_gy"], "d98_gy": s["d98_gy"], "max_gy": s["max_gy"],
                     "note": "; ".join(n for n in (a_fit.note, d_fit.note) if n) or None})
    return rows, fits


def time_activity_figure(result: IntegrationResult, fits: Mapping[int, Tuple[CurveFit, CurveFit]],
                         names: Mapping[int, str], path: Path) -> None:
    """Measured organ activities (MBq) and mean dose rates (mGy/s) with the fitted curves, one colour per label."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ImagingBasics.files import save_figure

    t = np.linspace(0.0, 1.3 * float(result.times_h[-1]), 300)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for n, (value, pair) in enumerate(fits.items()):
        colour = f"C{n % 10}"
        for ax, f in zip(axes, pair):
            ax.plot(f.times_h, f.values, "o", color=colour)
            ax.plot(t, f.evaluate(t), "-", color=colour, label=f"{names.get(value, f'label {value}')} ({f.model}, "
                                                                 f"T_eff {f.effective_half_life_h:.3g} h)")
    for ax, unit in zip(axes, ("activity (MBq)", "mean dose rate (mGy/s)")):
        ax.set_xlabel("time after administration (h)")
        ax.set_ylabel(unit)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("organ activity: measured and fitted", fontsize=10)
    axes[1].set_title("organ mean dose rate: measured and fitted", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


# --- the command ------------------------------------------------------------------------------------------------------
def check_time_point_cts(specs: Sequence[TimePointSpec], reference_ct: Volume, reference_path: Path
                         ) -> List[Dict[str, object]]:
    """Every CT checked before any dose is computed (:func:`ImagingBasics.validation.check_ct`): a bad CT of the last
    time point fails at once, not after the first time points' work. The reference CT is "the CT" in messages when
    it is a time point's own CT (the default), "the reference CT" otherwise; the others are named by their time
    point. Returns the quality warnings (as dicts for integrate.json), each once."""
    from ImagingBasics.imageio import read_volume
    from ImagingBasics.quality import warning_dicts
    from ImagingBasics.validation import check_ct

    reference = Path(reference_path).resolve()
    own = [spec for spec in specs if Path(spec.ct).resolve() == reference]
    warnings = check_ct(reference_ct, "CT" if own else "reference CT")  # "CT": the messages of dosecnn run
    for spec in specs:
        if Path(spec.ct).resolve() != reference:
            warnings += check_ct(read_volume(spec.ct), f"CT of the {spec.time_h:g} h time point")
    return warning_dicts(warnings)


def run_integrate(manifest: Path, out: Path, *, labels_path: Optional[Path] = None,
                  reference_ct_path: Optional[Path] = None, names: Optional[Mapping[int, str]] = None,
                  method: str = "vdk", weights=None, fit: str = "mono", start: str = "constant", register: bool = True,
                  registration_metric: str = "meansquares", device: str = "cpu", nuclide: str = "Lu-177",
                  kernel_cache: Optional[Path] = None, progress: Progress = None, fraction: Fraction = None,
                  dose_rate_maps: bool = False) -> Dict[str, object]:
    """``dosecnn integrate``: read the manifest, integrate, write every output into ``out``; returns the summary
    written to ``integrate.json`` (organ rows under ``"organs"``). ``dose_rate_maps``: also write each time point's
    dose rate in the reference frame (:data:`DOSE_RATE_MAP`); ``fraction``: see :data:`Fraction`."""
    from ImagingBasics.files import write_csv, write_json
    from ImagingBasics.imageio import read_volume, write_volume
    from ImagingBasics.outputs import output_folder
    from ImagingBasics.validation import check_label_map

    from .metrics import dvh_figure, dvh_rows
    from .pipeline import load_dose_weights_for

    t0 = time.perf_counter()
    specs = read_time_manifest(manifest)
    inputs = [manifest, labels_path, reference_ct_path, weights if isinstance(weights, (str, Path)) else None]
    inputs += [path for spec in specs for path in (spec.ct, spec.spect)]
    with output_folder(out, inputs, INTEGRATE_OUTPUTS, "integrate.json") as staging:  # --out checked before any work
        weights = load_dose_weights_for(method, weights)  # a wrong weights file, too
        reference_path = Path(reference_ct_path) if reference_ct_path else specs[0].ct
        reference_ct = read_volume(reference_path)
        warnings = check_time_point_cts(specs, reference_ct, reference_path)
        labels = read_volume(labels_path) if labels_path else None
        if labels is not None and not labels.same_geometry(reference_ct):
            raise UserError("the label map must be on the reference CT's grid (the first time point's CT, or "
                            "--reference-ct)")
        if labels is not None:
            check_label_map(labels)  # whole numbers >= 0, found before any dose is computed
        result = integrate_time_points(specs, reference_ct, method=method, weights=weights, fit=fit, start=start,
                                       register=register, registration_metric=registration_metric, device=device,
                                       nuclide=nuclide, kernel_cache=kernel_cache, progress=progress, fraction=fraction)
        if fraction is not None:
            fraction((len(specs) + 1) / (len(specs) + 2), "writing the results")
        write_volume(result.absorbed_dose_gy, staging / "absorbed_dose.nrrd")
        write_volume(result.tia_mbq_h, staging / "tia.nrrd")
        if dose_rate_maps:
            for index, rate in enumerate(result.dose_rate_mgy_s):
                write_volume(reference_ct.with_array(rate), staging / DOSE_RATE_MAP.format(index=index))
        rows: List[Dict[str, object]] = []
        label_names: Dict[int, str] = dict(names or {})
        if labels is not None:
            rows, fits = organ_rows(result, labels, label_names)
            if rows:
                write_csv(rows, staging / "organs.csv")
                dvh = dvh_rows(result.absorbed_dose_gy, labels, label_names)
                write_csv(dvh, staging / "dvh.csv")
                dvh_figure(dvh, staging / "dvh.png")
                time_activity_figure(result, fits, label_names, staging / "time_activity.png")
        summary = {"nuclide": nuclide, "physical_half_life_h": math.log(2.0) / result.lambda_phys_per_h,
                   "method": method, "fit": fit, "start": start, "reference_ct": str(reference_path),
                   "registration_metric": registration_metric if register else None,
                   "time_points": result.time_points, "voxel_fits": result.voxel_fits,
                   "total_tia_mbq_h": float(result.tia_mbq_h.array.sum(dtype=np.float64)),
                   "max_absorbed_dose_gy": float(result.absorbed_dose_gy.array.max()), "organs": rows,
                   "seconds": time.perf_counter() - t0, "notes": _notes(result), "warnings": warnings}
        write_json(summary, staging / "integrate.json")  # last: its presence marks a finished run
    return summary


def _notes(result: IntegrationResult) -> List[str]:
    fit_text = {"mono": "mono-exponential A0 exp(-lambda t) from t = 0 (uptake taken as instantaneous), integral A0/lambda",
                "bi": "uptake-washout A0 (exp(-lw t) - exp(-lu t)), integral A0 (1/lw - 1/lu)",
                "trapezoid": f"trapezoid over the points, start {result.start!r} back to t = 0, exponential tail fitted "
                             "from the curve's maximum on"}[result.fit]
    notes = ["research use only, not for clinical use",
             f"fit: {fit_text}; effective decay constants below the physical one are clamped to it",
             "TIA per voxel from the activity curves, absorbed dose per voxel from the dose-rate curves "
             "(Gy = (mGy/s) x h x 3.6)",
             "each time point's dose rate is computed on its own CT and moved to the reference CT by a rigid "
             "registration: organ motion and deformation between time points are not modelled"]
    for quantity, c in result.voxel_fits.items():
        if c["fallback"]:
            notes.append(f"{quantity}: {c['fallback']} of {c['voxels'] - c['zero']} voxels could not be fitted "
                         f"(rising or too few positive points; {100 * c['fallback_share']:.2g} % of the summed integral): "
                         "trapezoid with a physical-decay tail used")
        if c["clamped"]:
            notes.append(f"{quantity}: {c['clamped']} voxels cleared slower than physical decay: clamped to it")
    return notes
