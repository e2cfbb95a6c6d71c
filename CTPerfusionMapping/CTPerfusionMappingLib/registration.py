"""Rigid registration of a perfusion SPECT to its CT, and resampling of the SPECT onto the CT grid.

Convention (ITK's): the fixed image is the CT, the moving image is the SPECT, and the transform maps a
**CT physical point (LPS mm) to the SPECT physical point** that shows the same anatomy, so
``SimpleITK.Resample(spect, ct, transform)`` puts the SPECT on the CT grid. The synthetic phantom records its
misalignment in the same convention (:func:`CTPerfusionMappingLib.synthetic.spect.transform_from_meta`).

Method (:func:`register_spect_to_ct`), chosen on the synthetic phantoms (bench/bench_registration.py):

* the CT and the lung mask are block-averaged (``BinShrink``) to a working grid of about ``working_spacing_mm``
  (4 mm: the SPECT voxel is 4.4 mm and its resolution 12-15 mm; nothing finer helps, and it makes a 512x512x270 CT
  cheap);
* fixed image ``"lungs"`` (default): the lung fraction of each working voxel blurred to the SPECT resolution
  (``spect_fwhm_mm``), i.e. what a SPECT of uniformly perfused lungs would look like. The lung mask is the given one
  or, without it, air inside the body found on the CT. (``"ct"``: the CT windowed to -1000..200 HU, blurred the same
  way; 2x less accurate on the phantoms, kept for comparison.) The fixed mask is the lung mask dilated by
  ``mask_margin_mm`` (2 cm: the lung border carries the information) and the working images are cropped to it;
* moving image: the SPECT clipped at its 99.9th percentile and divided by its smoothed local maximum
  (``normalise_radius_mm``). Without this, the gravity (posterior) and apex-to-base perfusion gradients pull the MI
  optimum 1-4 mm (up to 8 mm) toward the hot side: the fixed image has no such gradient;
* a rigid Euler3D transform rotating about the CT lung centre, initialised by moments (the lung centroid of the CT
  to the count centroid of the SPECT), by geometry (the centres of the two fields of view) or as the identity;
* Mattes mutual information, random sampling with a fixed seed (reproducible), three resolution levels,
  regular-step gradient descent with scales from physical shifts, and the metric's image-gradient filters OFF
  (with SimpleITK's default moving-image gradient filter, prototype runs landed ~5 cm off).

The SPECT is then resampled onto the full CT grid and the share of its counts inside the lungs before and after
registration is reported; a drop flags the result as suspicious.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.gaussian import FWHM_PER_SIGMA
from ImagingBasics.imageio import sitk_reason
from ImagingBasics.resample import resample, resample_image
from ImagingBasics.rigid import apply_transform, block_average, itk_seed, rotation_angle_deg, shrink_factors, transform_to_matrix
from ImagingBasics.validation import require_finite
from ImagingBasics.volume import Volume, from_sitk, to_sitk

Progress = Optional[Callable[[str], None]]

INITIALISATIONS = ("moments", "geometry", "identity")
FIXED_IMAGES = ("lungs", "ct")
#: A drop of the SPECT share in the lungs larger than this (absolute) flags the registration as suspicious.
FRACTION_DROP_WARNING = 0.02
#: Fewer SPECT counts than this share inside the lungs after registration flags the result as suspicious.
MIN_FRACTION_IN_LUNGS = 0.5
#: Corrections larger than these are flagged: a SPECT/CT pair is rarely off by more.
LARGE_SHIFT_MM = 40.0
LARGE_ROTATION_DEG = 15.0


@dataclass
class RegistrationResult:
    """The outcome of :func:`register_spect_to_ct` (or of :func:`resample_spect_to_ct` with a known transform).

    ``transform`` maps a CT physical point (LPS mm) to the SPECT physical point (ITK fixed -> moving);
    ``matrix_lps`` is the same map as a 4x4 homogeneous matrix. ``spect_on_ct`` is the SPECT resampled onto the
    CT grid (float32, linear interpolation, 0 outside the SPECT field of view). ``fraction_in_lungs_before`` /
    ``_after``: share of the SPECT counts on the CT grid inside the lung mask without / with the transform
    (None without a lung mask). ``suspicious`` is True when the result looks wrong; ``warnings`` say why.
    """

    transform: object
    matrix_lps: np.ndarray
    spect_on_ct: Volume
    metric_value: float = float("nan")
    iterations: int = 0
    seconds: float = 0.0
    fraction_in_lungs_before: Optional[float] = None
    fraction_in_lungs_after: Optional[float] = None
    translation_mm: float = 0.0
    rotation_deg: float = 0.0
    stop_condition: str = ""
    suspicious: bool = False
    warnings: List[str] = field(default_factory=list)

    @property
    def fraction_in_lungs(self) -> Optional[float]:
        """Share of the registered SPECT counts (on the CT grid) inside the lung mask."""
        return self.fraction_in_lungs_after


# --- checks ---------------------------------------------------------------------------------------
def _check_spect_values(spect: Volume) -> None:
    a = spect.array
    lo, hi = float(a.min()), float(a.max())
    if hi == lo:
        what = "all zero" if hi == 0 else f"constant ({hi:g} everywhere)"
        raise UserError(f"the SPECT is {what}: it holds no perfusion image; check that the right series was loaded")
    if hi <= 0:
        raise UserError("the SPECT has no positive counts; check that the right series was loaded")


def _bounds(volume: Volume) -> Tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical (LPS) bounding box of a volume, voxel edges included."""
    nx, ny, nz = volume.size
    corners = np.array([[i, j, k] for i in (-0.5, nx - 0.5) for j in (-0.5, ny - 0.5) for k in (-0.5, nz - 0.5)])
    pts = volume.index_to_lps(corners)
    return pts.min(axis=0), pts.max(axis=0)


def _centre(volume: Volume) -> np.ndarray:
    return volume.index_to_lps((np.asarray(volume.size, float) - 1.0) / 2.0)


def _check_overlap(ct: Volume, spect: Volume) -> None:
    a0, a1 = _bounds(ct)
    b0, b1 = _bounds(spect)
    gap = np.maximum(np.maximum(b0 - a1, a0 - b1), 0.0)
    if np.any(gap > 0):
        raise UserError(
            f"the SPECT and the CT do not overlap in space (gap of {float(np.linalg.norm(gap)):.0f} mm between their "
            "fields of view); check that they belong to the same patient and study"
        )


def _lung_array(ct: Volume, lung_mask: Optional[Volume]) -> Optional[np.ndarray]:
    """Boolean lung mask on the CT grid (resampled nearest-neighbour if given on another grid)."""
    if lung_mask is None:
        return None
    require_finite(lung_mask, "lung mask")
    if lung_mask.same_geometry(ct):
        mask = lung_mask.array > 0
    else:
        binary = lung_mask.with_array((lung_mask.array > 0).astype(np.uint8))
        mask = resample(binary, ct, interpolation="nearest", dtype=np.uint8).array > 0
    if not mask.any():
        raise UserError("the lung mask is empty on the CT grid; segment the lungs again or register without a mask")
    return mask


# --- transforms -------------------------------------------------------------------------------------




# --- resampling ---------------------------------------------------------------------------------------

def _spect_image(spect: Volume):
    import SimpleITK as sitk

    return sitk.Cast(to_sitk(spect), sitk.sitkFloat32)


def _fraction_in(values: np.ndarray, mask: Optional[np.ndarray]) -> Optional[float]:
    if mask is None:
        return None
    total = float(values.sum(dtype=np.float64))
    if total <= 0:
        return 0.0
    return float(values[mask].sum(dtype=np.float64)) / total


def resample_spect_to_ct(ct: Volume, spect: Volume, transform=None) -> Volume:
    """The SPECT on the CT grid (float32, linear, 0 outside) through ``transform`` (CT point -> SPECT point).

    Without ``transform`` the identity is used: the two images already share a frame of reference, as a SPECT/CT
    from one hybrid scanner does.
    """
    import SimpleITK as sitk

    require_finite(spect, "SPECT")
    try:
        out = resample_image(_spect_image(spect), ct, transform)
    except RuntimeError as exc:
        raise UserError(f"could not resample the SPECT onto the CT grid: {sitk_reason(exc)}") from None
    return from_sitk(out) if out.GetPixelID() == sitk.sitkFloat32 else from_sitk(sitk.Cast(out, sitk.sitkFloat32))


# --- registration ---------------------------------------------------------------------------------------

def _crude_lungs(hu_small) -> Optional[object]:
    """A crude lung mask on the working CT: air inside the body (HU < -400, not connected to the image's x/y
    border, components of 50 ml or more: lungs and airways, not bowel gas); None when nothing is found."""
    import SimpleITK as sitk

    air = sitk.BinaryThreshold(hu_small, -1.0e9, -400.0, 1, 0)
    cc = sitk.ConnectedComponent(air)
    arr = sitk.GetArrayViewFromImage(cc)
    border = np.unique(np.concatenate([arr[:, 0, :].ravel(), arr[:, -1, :].ravel(), arr[:, :, 0].ravel(), arr[:, :, -1].ravel()]))
    counts = np.bincount(arr.ravel())
    counts[0] = 0
    counts[border] = 0
    voxel_ml = float(np.prod(hu_small.GetSpacing())) / 1000.0
    keep = counts * voxel_ml >= 50.0
    if not keep.any():
        return None
    mask = sitk.GetImageFromArray(keep[arr].astype(np.uint8))
    mask.CopyInformation(hu_small)
    return mask



def _local_max_normalised(moving, radius_mm: float, floor: float):
    """SPECT divided by its smoothed local maximum: edges of equal height whatever the perfusion gradient."""
    import SimpleITK as sitk

    radius = [max(1, int(round(radius_mm / sp))) for sp in moving.GetSpacing()]
    local_max = sitk.GrayscaleDilate(moving, radius, sitk.sitkBox)
    local_max = sitk.SmoothingRecursiveGaussian(local_max, 0.5 * float(radius_mm))
    return sitk.Divide(moving, sitk.Maximum(local_max, float(floor)))


def _dilate_mm(mask_img, margin_mm: float):
    import SimpleITK as sitk

    if margin_mm <= 0:
        return mask_img
    dist = sitk.SignedMaurerDistanceMap(mask_img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return sitk.Cast(dist <= margin_mm, sitk.sitkUInt8)


def _crop_to_mask(images: Sequence[object], mask_img, pad: int = 1):
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(mask_img)
    nz = np.nonzero(arr)
    lo = [max(0, int(v.min()) - pad) for v in nz]  # z, y, x
    hi = [min(n, int(v.max()) + 1 + pad) for v, n in zip(nz, arr.shape)]
    index = [lo[2], lo[1], lo[0]]
    size = [hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]]
    return [sitk.RegionOfInterest(img, size, index) for img in images]


def _centroid(img, weights: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    import SimpleITK as sitk

    w = sitk.GetArrayViewFromImage(img).astype(np.float64) if weights is None else weights
    total = float(w.sum())
    if total <= 0:
        return None
    k, j, i = np.indices(w.shape, dtype=np.float64)
    ijk = np.array([(w * i).sum(), (w * j).sum(), (w * k).sum()]) / total
    return np.array(img.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in ijk)))


def _prepare(ct: Volume, spect_img, lungs: Optional[np.ndarray], *, fixed_image: str, working_spacing_mm: float,
             mask_margin_mm: float, spect_fwhm_mm: float, normalise_radius_mm: float):
    """The images the metric compares: (fixed, fixed mask or None, moving, lung centre or None).

    fixed: ``"lungs"``: the lung fraction of each working-grid voxel, blurred to the SPECT resolution (what a SPECT
    of uniformly perfused lungs would look like); ``"ct"``: the CT windowed to -1000..200 HU, blurred the same way.
    moving: the SPECT clipped at its 99.9th percentile and, when ``normalise_radius_mm`` > 0, divided by its local
    maximum (removes the gravity and apex-to-base perfusion gradients, which otherwise bias the optimum by 1-4 mm).
    """
    import SimpleITK as sitk

    factors = shrink_factors(ct.spacing, working_spacing_mm)
    hu = sitk.Cast(block_average(to_sitk(ct), factors), sitk.sitkFloat32)
    if lungs is not None:
        pct = block_average(to_sitk(ct.with_array(lungs.astype(np.uint8) * np.uint8(100))), factors)
        lung_fraction = sitk.Cast(sitk.Cast(pct, sitk.sitkFloat32) / 100.0, sitk.sitkFloat32)
        lung_small = sitk.Cast(lung_fraction >= 0.5, sitk.sitkUInt8)
        if not sitk.GetArrayViewFromImage(lung_small).any():
            lung_small = sitk.Cast(lung_fraction > 0.0, sitk.sitkUInt8)
    else:
        lung_small = _crude_lungs(hu)
        lung_fraction = None if lung_small is None else sitk.Cast(lung_small, sitk.sitkFloat32)
    if fixed_image == "lungs" and lung_fraction is not None:
        fixed = lung_fraction
    else:
        fixed = sitk.Clamp(hu, sitk.sitkFloat32, -1000.0, 200.0)
    if spect_fwhm_mm > 0:
        fixed = sitk.SmoothingRecursiveGaussian(fixed, float(spect_fwhm_mm) / FWHM_PER_SIGMA)
    fixed_mask = None
    lung_centre = None
    if lung_small is not None:
        lung_centre = _centroid(lung_small)
        fixed_mask = _dilate_mm(lung_small, mask_margin_mm)
        fixed, fixed_mask = _crop_to_mask([fixed, fixed_mask], fixed_mask)

    s_arr = sitk.GetArrayViewFromImage(spect_img)
    positive = s_arr[s_arr > 0]
    hi = float(np.percentile(positive, 99.9)) if positive.size else float(s_arr.max())
    moving = sitk.Clamp(spect_img, sitk.sitkFloat32, 0.0, hi) if hi > 0 else spect_img
    if normalise_radius_mm > 0 and hi > 0:
        moving = _local_max_normalised(moving, normalise_radius_mm, 0.1 * hi)
    return sitk.Cast(fixed, sitk.sitkFloat32), fixed_mask, sitk.Cast(moving, sitk.sitkFloat32), lung_centre



def _count_centroid(spect_img) -> Optional[np.ndarray]:
    """Physical centroid of the SPECT counts above 20% of the 99th percentile (background and scatter left out)."""
    import SimpleITK as sitk

    a = sitk.GetArrayViewFromImage(spect_img)
    positive = a[a > 0]
    if positive.size == 0:
        return None
    thr = 0.2 * float(np.percentile(positive, 99.0))
    return _centroid(spect_img, np.clip(a.astype(np.float64) - thr, 0.0, None))


def assess_registration(
    before: Optional[float], after: Optional[float], shift_mm: float, rotation_deg: float, metric_value: float
) -> Tuple[bool, List[str]]:
    """(suspicious, warnings) of a registration result.

    Suspicious: the share of SPECT counts in the lungs dropped by more than FRACTION_DROP_WARNING, fewer than
    MIN_FRACTION_IN_LUNGS of the counts fall in the lungs after registration, or the metric is not finite.
    A correction larger than LARGE_SHIFT_MM / LARGE_ROTATION_DEG only adds a warning (it may well be right).
    """
    warnings: List[str] = []
    suspicious = False
    if before is not None and after is not None and after < before - FRACTION_DROP_WARNING:
        suspicious = True
        warnings.append(f"the share of SPECT counts in the lungs dropped from {before:.0%} to {after:.0%} with the "
                        "registration: it is probably wrong; check the fused images")
    if after is not None and after < MIN_FRACTION_IN_LUNGS:
        suspicious = True
        warnings.append(f"only {after:.0%} of the SPECT counts fall inside the lungs after registration: check the fused "
                        "images and the lung mask")
    if not np.isfinite(metric_value):
        suspicious = True
        warnings.append("the registration metric is not finite: check the fused images")
    if shift_mm > LARGE_SHIFT_MM or rotation_deg > LARGE_ROTATION_DEG:
        warnings.append(f"large correction ({shift_mm:.0f} mm, {rotation_deg:.0f} deg): check the fused images")
    return suspicious, warnings


def register_spect_to_ct(
    ct: Volume,
    spect: Volume,
    lung_mask: Optional[Volume] = None,
    *,
    initialise: str = "moments",
    sampling_percentage: float = 0.25,
    levels: Sequence[int] = (4, 2, 1),
    smoothing_sigmas_mm: Optional[Sequence[float]] = None,
    max_iterations: int = 200,
    working_spacing_mm: float = 4.0,
    mask_margin_mm: float = 20.0,
    fixed_image: str = "lungs",
    spect_fwhm_mm: float = 13.0,
    normalise_radius_mm: float = 20.0,
    histogram_bins: int = 32,
    learning_rate_mm: float = 4.0,
    min_step_mm: float = 0.01,
    seed: int = 0,
    progress: Progress = None,
) -> RegistrationResult:
    """Rigidly register ``spect`` (moving) to ``ct`` (fixed) by Mattes mutual information.

    Args:
        ct: CT in HU (any grid; full-resolution CTs are block-averaged to ``working_spacing_mm`` first).
        spect: perfusion SPECT in counts (any grid overlapping the CT).
        lung_mask: labels on the CT grid (>0 = lung; another grid is resampled onto the CT's). It makes the fixed
            image and, dilated by ``mask_margin_mm``, the fixed mask; it gives the lung centre and the quality
            check. Without it, air inside the body on the CT (a crude lung mask) is used for the registration.
        initialise: ``"moments"`` (lung centroid <-> SPECT count centroid), ``"geometry"`` (centre of the CT field
            of view <-> centre of the SPECT's) or ``"identity"`` (the images already share a frame of reference).
        sampling_percentage: share of the cropped working-grid voxels drawn at random per level (those outside the
            fixed mask are dropped).
        levels: shrink factors of the multi-resolution pyramid, relative to the working grid.
        smoothing_sigmas_mm: Gaussian smoothing per level (mm); default half the level's voxel size (0 at the last).
        max_iterations: optimiser iterations per level at most.
        working_spacing_mm: the CT is block-averaged to about this voxel size before registering.
        mask_margin_mm: dilation of the lung mask that makes the fixed mask.
        fixed_image: ``"lungs"`` (blurred lung fraction) or ``"ct"`` (windowed, blurred CT); see the module notes.
        spect_fwhm_mm: resolution of the SPECT (FWHM); the fixed image is blurred by it (0: not blurred).
        normalise_radius_mm: the SPECT is divided by its local maximum over this radius (0: not normalised).
        histogram_bins: Mattes mutual information histogram bins.
        learning_rate_mm, min_step_mm: first and last step of the regular-step gradient descent (about mm).
        seed: the metric's random sampling seed (same inputs, seed and thread count -> the same transform; other
            thread counts may differ by far less than a micrometre).
        progress: called with a short message at each step and level.

    Returns:
        a :class:`RegistrationResult`; the inputs are not modified.

    Raises:
        UserError: NaN/inf voxels, an empty or constant SPECT, images that do not overlap, or a failed registration.
    """
    import SimpleITK as sitk

    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    if initialise not in INITIALISATIONS:
        raise UserError(f"unknown initialisation {initialise!r}; choose one of {', '.join(INITIALISATIONS)}")
    levels = [int(v) for v in levels]
    if not levels or min(levels) < 1:
        raise UserError(f"registration levels must be shrink factors >= 1, got {tuple(levels)}")
    if fixed_image not in FIXED_IMAGES:
        raise UserError(f"unknown fixed image {fixed_image!r}; choose one of {', '.join(FIXED_IMAGES)}")
    if not 0.0 < sampling_percentage <= 1.0:
        raise UserError(f"the sampling percentage must be in (0, 1], got {sampling_percentage}")
    if max_iterations < 1:
        raise UserError(f"max_iterations must be at least 1, got {max_iterations}")
    require_finite(ct, "CT")
    require_finite(spect, "SPECT")
    _check_spect_values(spect)
    _check_overlap(ct, spect)
    lungs = _lung_array(ct, lung_mask)

    say("preparing the images")
    spect_img = _spect_image(spect)
    fixed, fixed_mask, moving, lung_centre = _prepare(
        ct, spect_img, lungs, fixed_image=fixed_image, working_spacing_mm=working_spacing_mm, mask_margin_mm=mask_margin_mm,
        spect_fwhm_mm=spect_fwhm_mm, normalise_radius_mm=normalise_radius_mm,
    )

    # --- initial transform -----------------------------------------------------------------------------------
    ct_centre = _centre(ct)
    centre = lung_centre if lung_centre is not None else ct_centre
    translation = np.zeros(3)
    if initialise == "geometry":
        translation = _centre(spect) - ct_centre
    elif initialise == "moments":
        spect_centroid = _count_centroid(spect_img)
        if spect_centroid is not None and lung_centre is not None:
            translation = spect_centroid - lung_centre
        else:
            translation = _centre(spect) - ct_centre
    initial = sitk.Euler3DTransform()
    initial.SetCenter(tuple(float(v) for v in centre))
    initial.SetTranslation(tuple(float(v) for v in translation))

    # --- registration -------------------------------------------------------------------------------------------
    if smoothing_sigmas_mm is None:
        base = float(np.mean(fixed.GetSpacing()))
        smoothing_sigmas_mm = [0.5 * f * base if f > 1 else 0.0 for f in levels]
    sigmas = [float(s) for s in smoothing_sigmas_mm]
    if len(sigmas) != len(levels):
        raise UserError(f"give one smoothing sigma per level ({len(levels)}), got {len(sigmas)}")
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(histogram_bins))
    reg.SetMetricUseFixedImageGradientFilter(False)
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(sampling_percentage), itk_seed(seed))
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=float(learning_rate_mm), minStep=float(min_step_mm), numberOfIterations=int(max_iterations),
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(levels)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    counter = {"iterations": 0, "level": 0}

    def _on_iteration() -> None:
        counter["iterations"] += 1

    def _on_level() -> None:
        counter["level"] += 1
        say(f"registration level {counter['level']}/{len(levels)}")

    reg.AddCommand(sitk.sitkIterationEvent, _on_iteration)
    reg.AddCommand(sitk.sitkMultiResolutionIterationEvent, _on_level)
    try:
        out = reg.Execute(fixed, moving)
    except RuntimeError as exc:
        reason = sitk_reason(exc)
        if "outside" in reason.lower() or "samples" in reason.lower():
            raise UserError(
                "the registration failed: too little of the SPECT overlaps the CT lungs; check that both images "
                "cover the chest, or try another initialisation"
            ) from None
        raise UserError(f"the registration failed: {reason}") from None
    if isinstance(out, sitk.CompositeTransform) and out.GetNumberOfTransforms() == 1:
        out = out.GetNthTransform(0)
    transform = sitk.Euler3DTransform(out) if out.GetName() == "Euler3DTransform" else out
    metric_value = float(reg.GetMetricValue())
    stop = reg.GetOptimizerStopConditionDescription()

    # --- SPECT on the CT grid and quality ---------------------------------------------------------------------
    say("resampling the SPECT onto the CT")
    spect_on_ct = from_sitk(resample_image(spect_img, ct, transform))
    before = after = None
    if lungs is not None:
        after = _fraction_in(spect_on_ct.array, lungs)
        before = _fraction_in(sitk.GetArrayFromImage(resample_image(spect_img, ct, None)), lungs)
    matrix = transform_to_matrix(transform)
    shift = float(np.linalg.norm(apply_transform(transform, centre[None, :])[0] - centre))
    rotation = rotation_angle_deg(matrix)
    suspicious, warnings = assess_registration(before, after, shift, rotation, metric_value)
    return RegistrationResult(
        transform=transform,
        matrix_lps=matrix,
        spect_on_ct=spect_on_ct,
        metric_value=metric_value,
        iterations=int(counter["iterations"]),
        seconds=time.perf_counter() - t_start,
        fraction_in_lungs_before=before,
        fraction_in_lungs_after=after,
        translation_mm=shift,
        rotation_deg=rotation,
        stop_condition=stop,
        suspicious=suspicious,
        warnings=warnings,
    )
