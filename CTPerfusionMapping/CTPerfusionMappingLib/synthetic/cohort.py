"""One synthetic chest SPECT/CT case end to end, and cohorts of cases written to disk.

Files of a case folder (all on the CT grid except the SPECT):

=====================  ==========================================================================
``ct.nrrd``            CT in HU, int16
``spect.nrrd``         Tc-99m MAA SPECT in counts, float32, on its own grid, rigidly misaligned
``perfusion_truth.nrrd`` truth perfusion, float32, relative units (mean 1 over the lungs), 0 outside
``lungs.nrrd``         1 right lung, 2 left lung (anatomical lungs: vessels, airways, tumour inside included)
``lobes.nrrd``         CIP regions 4 RUL, 5 RML, 6 RLL, 7 LUL, 8 LLL
``meta.json``          every drawn parameter, the pathologies, the SPECT misalignment, volumes
=====================  ==========================================================================

A case is a pure function of its seed, size and options: the same inputs give identical arrays.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.files import atomic_output
from ImagingBasics.imageio import write_volume
from ImagingBasics.resample import resample
from ImagingBasics.volume import Volume, from_sitk

from . import acquisition as AQ
from . import anatomy as A
from . import ct as C
from . import pathology as PA
from . import perfusion as PF
from .grid import axis_coordinates, ct_grid, model_grid, spect_grid
from .params import CaseParams, check_pathology_probabilities, draw_case_params
from .spect import misalignment_transform, simulate_spect, transform_matrix
from .vessels import assign_radii, bronchus_offsets, grow_tree, rasterise_segments, territory_map

GENERATOR_VERSION = "4"  # 2: lobe proportions of supine CT, SPECT drawn before the CT noise, acquisition model;
#                           3: dependent lung density drawn from 0-80 HU (was 30-80), independent of the perfusion gradient;
#                           4: flow split unevenly at every arterial branching, flow conserved (vessels.split_flow_factors)
CASE_FILES = {
    "ct": "ct.nrrd",
    "spect": "spect.nrrd",
    "truth": "perfusion_truth.nrrd",
    "lungs": "lungs.nrrd",
    "lobes": "lobes.nrrd",
    "pathology": "pathology_labels.nrrd",
}
MANIFEST_COLUMNS = {"ct": "ct", "spect": "spect", "truth": "perfusion_truth", "lungs": "lungs", "lobes": "lobes",
                    "pathology": "pathology_labels"}
BRONCHUS_GENERATIONS = 3

Progress = Optional[Callable[[str], None]]
#: the values of the ``acquisition`` option: ``none`` (one scanner: white noise, no contrast, the base grid) or
#: ``random`` (a randomised acquisition, see acquisition.py)
ACQUISITIONS = ("none", "random")


@dataclass
class SyntheticCase:
    ct: Volume
    spect: Volume
    truth: Volume
    lungs: Volume
    lobes: Volume
    pathology: Volume  # PATHOLOGY_LABELS codes on the CT grid
    meta: Dict


def case_seed(cohort_seed: int, index: int) -> int:
    """The seed of case ``index`` of a cohort: independent streams, stable when the cohort grows."""
    return int(np.random.SeedSequence([int(cohort_seed), int(index)]).generate_state(1)[0])


def _upsample(values: np.ndarray, src: Volume, dst: Volume) -> np.ndarray:
    """Linear interpolation of a model-grid field onto the CT grid (edge values held outside)."""
    return resample(src.with_array(values.astype(np.float32)), dst, extrapolate=True).array


def _upsample_nearest(labels: np.ndarray, src: Volume, dst: Volume) -> np.ndarray:
    """Nearest-neighbour resampling of a model-grid label map onto the CT grid."""
    return resample(src.with_array(labels), dst, interpolation="nearest", dtype=np.uint8, extrapolate=True).array


def _defect_codes(tree, pathologies: Dict) -> np.ndarray:
    """Per segment: 4 for leaves downstream of an embolus, 5 downstream of tumour compression, else 0."""
    lut = np.zeros(tree.n_segments, np.uint8)
    for key, segs, code in (("tumour", "compressed_segments", 5), ("embolism", "occluded_segments", 4)):
        for s in (pathologies.get(key) or {}).get(segs, []):
            lut[tree.leaves_below(s)] = code
    return lut


def _box(grid: Volume, centre: Sequence[float], half_extent_mm: float):
    """Slices and coordinate arrays of the grid voxels within a cube around ``centre`` (None if outside)."""
    xs, ys, zs = axis_coordinates(grid)
    c = np.asarray(centre, float)
    sl = []
    for axis_coords, ci in zip((zs, ys, xs), c[::-1]):
        lo = int(np.searchsorted(axis_coords, ci - half_extent_mm))
        hi = int(np.searchsorted(axis_coords, ci + half_extent_mm, side="right"))
        if hi <= lo:
            return None
        sl.append(slice(lo, hi))
    z, y, x = np.meshgrid(zs[sl[0]], ys[sl[1]], xs[sl[2]], indexing="ij")
    return tuple(sl), x, y, z


def _draw_pathologies(rng, params: CaseParams, thorax: A.Thorax, points: np.ndarray, tree) -> Dict:
    H = params.anatomy.lung_height_mm
    out: Dict = {}
    if params.pathologies["emphysema"]:
        out["emphysema"] = PA.draw_emphysema(rng, points, H)
    if params.pathologies["tumour"]:
        tumour = PA.draw_tumour(rng, points)
        tumour["compressed_segments"] = [int(s) for s in PA.compressed_segments(tree, tumour)]
        out["tumour"] = tumour
    if params.pathologies["embolism"]:
        out["embolism"] = PA.draw_emboli(rng, tree)
    if params.pathologies["opacities"]:
        out["opacities"] = PA.draw_opacities(rng, points, H)
    return out


def check_acquisition(acquisition) -> Optional[AQ.AcquisitionParams]:
    """``None``/``"none"`` -> None; an :class:`~.acquisition.AcquisitionParams` is kept; ``"random"`` -> ``"random"``."""
    if acquisition is None or isinstance(acquisition, AQ.AcquisitionParams):
        return acquisition
    if acquisition not in ACQUISITIONS:
        raise UserError(f"unknown acquisition {acquisition!r}; choose from {', '.join(ACQUISITIONS)}")
    return None if acquisition == "none" else acquisition


def generate_case(
    seed: int,
    size: str = "small",
    spect_grid_name: str = "standard",
    pathology_probabilities: Optional[Mapping[str, float]] = None,
    case_id: str = "case",
    progress: Progress = None,
    acquisition=None,
) -> SyntheticCase:
    """Generate one synthetic chest SPECT/CT case (see the module docstring for what each volume holds).

    ``acquisition``: None or ``"none"`` renders the CT as one scanner would (white noise, no contrast, the base
    grid); ``"random"`` draws a randomised acquisition (acquisition.py) from its own random stream, or give an
    :class:`~.acquisition.AcquisitionParams`. The anatomy, the truth perfusion and the SPECT do not depend on the
    acquisition, except that they are written on the acquisition's CT grid.
    """
    say = progress or (lambda _msg: None)
    acq = check_acquisition(acquisition)
    rng = np.random.default_rng(int(seed))
    params = draw_case_params(rng, size, pathology_probabilities)
    if acq == "random":
        acq = AQ.draw_acquisition(AQ.acquisition_rng(seed), size, params.anatomy.body_semi_lr_mm)
    thorax = A.Thorax(params.anatomy)
    H, B = params.anatomy.lung_height_mm, thorax.cavity_ap
    base_slice_mm = params.slice_thickness_mm
    if acq is not None and size == "full":
        base_slice_mm = AQ.base_slice_spacing_mm(acq.slice_thickness_mm)
    ct0 = ct_grid(size, base_slice_mm, H)
    spect_ref = spect_grid(ct0, spect_grid_name)

    # --- model grid: lungs, arterial tree, pathologies, territorial perfusion ----------------------------
    say("arterial tree")
    mg = model_grid(ct0)
    mx, my, mz = axis_coordinates(mg)
    m_anat = A.evaluate_on_grid(thorax, mx, my, mz)
    m_lung = (m_anat["tissue"] == A.LUNG_RIGHT) | (m_anat["tissue"] == A.LUNG_LEFT)
    idx = np.flatnonzero(m_lung)
    if idx.size == 0:
        raise UserError("the drawn anatomy has no lungs (internal error in the phantom parameters)")
    kk, jj, ii = np.unravel_index(idx, m_lung.shape)
    points = np.stack([mx[ii], my[jj], mz[kk]], axis=1)
    pp = params.perfusion
    tree = grow_tree(thorax, points, m_anat["lobes"].ravel()[idx], mg.voxel_volume_ml, pp.leaf_volume_ml,
                     pp.branch_sigma, rng)
    pathologies = _draw_pathologies(rng, params, thorax, points, tree)
    emph_m = None
    if "emphysema" in pathologies:
        emph_m = PA.emphysema_severity_model(pathologies["emphysema"], m_lung, mg.spacing[0], mz, H)
    tissue_pts = PA.tissue_perfusion_factor(points[:, 0], points[:, 1], points[:, 2], pathologies,
                                            None if emph_m is None else emph_m.ravel()[idx])
    position_pts = (PF.gravity_factor(points[:, 1], B, pp.gravity_gain) * PF.basal_factor(points[:, 2], H, pp.basal_gain))
    terr = territory_map(tree, idx.size)
    chronic = {leaf: float((position_pts * tissue_pts)[m].sum()) * tree.leaf_flow_factor(leaf)
               for leaf, m in tree.territory.items()}
    assign_radii(tree, chronic)
    leaf_f = PF.leaf_factors(tree, pathologies)
    mosaic_leaf = PF.mosaic_shift_by_leaf(tree, pathologies)
    leaf_ids = np.array(tree.leaves())
    lut_f = np.zeros(tree.n_segments, np.float32)
    lut_h = np.zeros(tree.n_segments, np.float32)
    lut_f[leaf_ids] = [leaf_f[s] for s in leaf_ids]
    lut_h[leaf_ids] = [mosaic_leaf[s] for s in leaf_ids]
    healthy_leaf = np.zeros(tree.n_segments, np.float32)
    healthy_leaf[leaf_ids] = [tree.leaf_flow_factor(s) for s in leaf_ids]
    right_pts = m_anat["tissue"].ravel()[idx] == A.LUNG_RIGHT
    share_r, share_l = PF.lung_share_factors(position_pts * healthy_leaf[terr], right_pts, pp.right_share)
    territorial = np.zeros(m_lung.shape, np.float32)
    territorial.ravel()[idx] = position_pts * lut_f[terr] * np.where(right_pts, share_r, share_l)
    mosaic = np.zeros(m_lung.shape, np.float32)
    mosaic.ravel()[idx] = lut_h[terr]
    defect = np.zeros(m_lung.shape, np.uint8)
    defect.ravel()[idx] = _defect_codes(tree, pathologies)[terr]
    sig = PF.SMOOTHING_MM / mg.spacing[0]
    territorial = PF.smooth_and_extend(territorial, m_lung, sig)
    mosaic = PF.smooth_and_extend(mosaic, m_lung, sig)

    # --- CT grid ------------------------------------------------------------------------------------
    say("anatomy")
    xs, ys, zs = axis_coordinates(ct0)
    anat = A.evaluate_on_grid(thorax, xs, ys, zs)
    tissue = anat["tissue"]
    lung = (tissue == A.LUNG_RIGHT) | (tissue == A.LUNG_LEFT)
    say("vessels")
    occ = {"vessel": rasterise_segments(ct0, np.array(tree.start), np.array(tree.end), tree.radius_mm,
                                        np.zeros(ct0.shape, np.float32))}
    br = bronchus_offsets(tree, BRONCHUS_GENERATIONS)
    occ["bronchus_lumen"] = rasterise_segments(ct0, br["start"], br["end"], br["lumen_mm"], np.zeros(ct0.shape, np.float32))
    outer = rasterise_segments(ct0, br["start"], br["end"], br["lumen_mm"] + br["wall_mm"], np.zeros(ct0.shape, np.float32))
    occ["bronchus_wall"] = np.clip(outer - occ["bronchus_lumen"], 0.0, 1.0)
    for k in occ:
        occ[k] *= lung

    say("pathologies")
    tumour = np.zeros(ct0.shape, bool)
    if "tumour" in pathologies:
        t = pathologies["tumour"]
        box = _box(ct0, t["centre_mm"], 1.6 * t["radius_mm"])
        if box is not None:
            sl, x, y, z = box
            tumour[sl] = PA.in_spheres(x, y, z, t["lobules"])
        tumour &= tissue != A.AIR
    tissue_f = np.ones(ct0.shape, np.float32)
    emph = bulla = gg_hu = cons_w = cons_hu = None
    if emph_m is not None:
        emph = np.clip(_upsample(emph_m, mg, ct0), 0.0, 1.0) * lung
        tissue_f *= PA.emphysema_perfusion_factor(emph)
        bulla = np.zeros(ct0.shape, bool)
        for b in pathologies["emphysema"]["bullae"]:
            box = _box(ct0, b["centre_mm"], b["radius_mm"])
            if box is not None:
                sl, x, y, z = box
                bulla[sl] |= PA.in_spheres(x, y, z, [b])
        bulla &= lung
        tissue_f[bulla] = PA.BULLA_PERFUSION
    for blob in pathologies.get("opacities", []):
        box = _box(ct0, blob["centre_mm"], 1.3 * max(blob["semi_axes_mm"]))
        if box is None:
            continue
        sl, x, y, z = box
        w = PA.opacity_weight(x, y, z, blob).astype(np.float32) * lung[sl]
        tissue_f[sl] *= PA.opacity_perfusion_factor(blob, w)
        if blob["kind"] == "ground_glass":
            gg_hu = np.zeros(ct0.shape, np.float32) if gg_hu is None else gg_hu
            gg_hu[sl] += blob["hu"] * w
        else:
            if cons_w is None:
                cons_w, cons_hu = np.zeros(ct0.shape, np.float32), np.zeros(ct0.shape, np.float32)
            cons_hu[sl] = np.where(w > cons_w[sl], blob["hu"], cons_hu[sl])
            cons_w[sl] = np.maximum(cons_w[sl], w)

    labels = _upsample_nearest(defect, mg, ct0) * lung
    if emph is not None:
        labels[emph > 0.5] = 1
        labels[bulla] = 2
    for blob in pathologies.get("opacities", []):
        box = _box(ct0, blob["centre_mm"], 1.3 * max(blob["semi_axes_mm"]))
        if box is not None:
            sl, x, y, z = box
            code = 6 if blob["kind"] == "ground_glass" else 7
            labels[sl][(PA.opacity_weight(x, y, z, blob) > 0.5) & lung[sl]] = code
    labels[tumour] = 3

    # --- truth perfusion ----------------------------------------------------------------------------
    say("perfusion")
    parenchyma = C.lung_fractions(occ) * ~tumour
    territorial_ct = _upsample(territorial, mg, ct0)
    territorial_ct /= max(float(territorial_ct[lung].mean()), 1e-9) if lung.any() else 1.0
    truth = PF.normalise_to_mean(territorial_ct * tissue_f * parenchyma, lung)

    # --- CT -----------------------------------------------------------------------------------------
    say("CT")
    voxel_mm = float(np.cbrt(np.prod(ct0.spacing)))
    contrast_hu = acq.contrast_hu if acq is not None else 0.0
    hu = C.base_tissue_hu(tissue)
    if contrast_hu:
        hu[tissue == A.BLOOD] += np.float32(contrast_hu)
    texture = C.correlated_noise(ct0.shape, ct0.spacing, C.TEXTURE_CORRELATION_MM, rng)
    y_norm = np.clip((ys[None, :, None] + B) / (2.0 * B), 0.0, 1.0)
    par = C.parenchyma_hu(params.tissue, y_norm, texture, _upsample(mosaic, mg, ct0), territorial_ct,
                          gg_hu, cons_w, cons_hu, emph, bulla)
    if acq is not None:
        par = AQ.lung_density(par, acq.lung_density_factor)
    par = C.mix(par, C.fissure_fraction(anat["fissure_mm"], voxel_mm), C.PLEURA_HU)
    par = C.mix(par, occ["vessel"], C.BLOOD_HU + contrast_hu)
    par = C.mix(par, occ["bronchus_wall"], C.TISSUE_HU[A.AIRWAY_WALL])
    par = C.mix(par, occ["bronchus_lumen"], C.TISSUE_HU[A.AIRWAY])
    hu = np.where(lung, par, hu)
    hu = np.where(tumour, C.TUMOUR_HU + 0.4 * params.tissue.texture_hu * texture, hu)
    del par, texture

    # --- SPECT --------------------------------------------------------------------------------------
    say("SPECT")
    sp = params.spect
    body = tissue != A.AIR
    activity = truth + sp.background_fraction * (body & ~lung)
    centre = np.asarray(ct0.origin) + np.asarray(ct0.spacing) * (np.asarray(ct0.size) - 1) / 2.0
    transform = misalignment_transform(sp.misalignment_rotation_deg, sp.misalignment_translation_mm, centre)
    spect = simulate_spect(ct0.with_array(activity.astype(np.float32)), spect_ref, sp.fwhm_mm, sp.total_counts, transform, rng)

    if acq is None:
        hu = C.add_quantum_noise(hu, params.tissue.noise_hu, float(np.prod(ct0.spacing)), rng)
        ct = ct0.with_array(C.to_int16_hu(hu))
    else:
        say("acquisition")
        ct_float = AQ.acquire(ct0.with_array(hu.astype(np.float32)), acq, H, AQ.acquisition_rng(seed))
        ct = ct_float.with_array(C.to_int16_hu(ct_float.array))
    del hu

    lungs_arr = np.where(tissue == A.LUNG_RIGHT, 1, np.where(tissue == A.LUNG_LEFT, 2, 0)).astype(np.uint8)
    truth_v, lungs_v = ct0.with_array(truth.astype(np.float32)), ct0.with_array(lungs_arr)
    lobes_v, pathology_v = ct0.with_array(anat["lobes"]), ct0.with_array(labels.astype(np.uint8))
    if not ct.same_geometry(ct0):  # the acquisition reconstructed onto its own grid: every volume follows the CT
        truth_v = resample(truth_v, ct, extrapolate=False)
        lungs_v, lobes_v, pathology_v = (resample(v, ct, interpolation="nearest", dtype=np.uint8)
                                         for v in (lungs_v, lobes_v, pathology_v))
        # relative perfusion again: mean 1 over the lungs in view (a cut field of view keeps only part of them)
        truth_v = truth_v.with_array(PF.normalise_to_mean(truth_v.array, lungs_v.array > 0))
    vml = ct.voxel_volume_ml
    meta = {
        "case_id": case_id,
        "seed": int(seed),
        "size": size,
        "generator_version": GENERATOR_VERSION,
        "params": params.to_dict(),
        "pathologies": pathologies,
        "pathology_probabilities": probabilities_record(pathology_probabilities),
        "ct": {"size": list(ct.size), "spacing_mm": list(ct.spacing), "origin_mm": list(ct.origin),
               "anatomy_grid_spacing_mm": list(ct0.spacing)},
        "acquisition": {"enabled": acq is not None, **(acq.to_dict() if acq is not None else {})},
        "spect": {
            "grid": spect_grid_name, "size": list(spect_ref.size), "spacing_mm": list(spect_ref.spacing),
            "fwhm_mm": sp.fwhm_mm, "total_counts": sp.total_counts,
            "misalignment": {
                "rotation_deg": list(sp.misalignment_rotation_deg),
                "translation_mm": list(sp.misalignment_translation_mm),
                "centre_mm": [float(v) for v in centre],
                "matrix_lps": transform_matrix(transform).tolist(),
                "convention": "ITK Euler3DTransform mapping a CT physical point (LPS mm) to the SPECT physical point "
                              "showing the same anatomy; SimpleITK.Resample(spect, ct, transform) undoes it",
            },
        },
        "lung_volume_ml": {"right": float((lungs_v.array == 1).sum() * vml),
                           "left": float((lungs_v.array == 2).sum() * vml)},
        "lobe_volume_ml": {A.LOBE_NAMES[k]: float((lobes_v.array == k).sum() * vml) for k in sorted(A.LOBE_NAMES)},
        "mean_lung_hu": float(ct.array[lungs_v.array > 0].mean()),
        "pathology_labels": {str(k): v for k, v in sorted(PA.PATHOLOGY_LABELS.items())},
        "arterial_tree": {"segments": tree.n_segments, "leaves": len(tree.territory)},
        "units": {"ct": "HU", "spect": "counts", "perfusion_truth": "relative perfusion, mean 1 over the lungs"},
        "files": dict(CASE_FILES),
    }
    return SyntheticCase(
        ct=ct,
        spect=spect,
        truth=truth_v,
        lungs=lungs_v,
        lobes=lobes_v,
        pathology=pathology_v,
        meta=meta,
    )


def write_case(case: SyntheticCase, folder: Path) -> Path:
    """Write a case into ``folder`` (replaced whole): files go to a temporary sibling folder renamed at the end
    (:func:`ImagingBasics.files.atomic_folder`)."""
    from ImagingBasics.files import atomic_folder

    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        for key, name in CASE_FILES.items():
            write_volume(getattr(case, key), tmp / name)
        with open(tmp / "meta.json", "w", encoding="utf-8") as f:
            json.dump(case.meta, f, indent=2)
    return folder


def probabilities_record(pathology_probabilities: Optional[Mapping[str, float]]) -> Optional[Dict[str, float]]:
    """The pathology-probability overrides as ``meta.json`` records them: None for the defaults (no override)."""
    if not pathology_probabilities:
        return None
    return {k: float(v) for k, v in sorted(pathology_probabilities.items())}


def is_complete_case(folder: Path, seed: int, size: str, spect_grid_name: str = "standard",
                     pathology_probabilities: Optional[Mapping[str, float]] = None, acquisition=None,
                     preview: bool = False) -> bool:
    """True when ``folder`` holds a whole case that :func:`generate_case` would make again from these arguments:
    every file of :data:`CASE_FILES` and a ``meta.json`` recording the same case id (the folder's name), seed, size,
    SPECT grid, pathology probabilities, acquisition (on or off) and :data:`GENERATOR_VERSION` (and ``preview.png``
    when a preview is asked for). :func:`write_case` renames a folder into place only when it is whole, so a stopped
    cohort leaves only whole cases and hidden ``.partial-`` folders."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        probabilities = probabilities_record(pathology_probabilities)
        same = (meta["case_id"] == folder.name and meta["seed"] == int(seed) and meta["size"] == size
                and meta["generator_version"] == GENERATOR_VERSION and meta["spect"]["grid"] == spect_grid_name
                and meta.get("pathology_probabilities", "absent") == probabilities
                and meta["acquisition"]["enabled"] == (check_acquisition(acquisition) is not None))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    files = list(CASE_FILES.values()) + (["preview.png"] if preview else [])
    return same and all((folder / name).is_file() for name in files)


def _generate_and_write(job) -> Path:
    """One cohort case (a picklable job for :func:`~ImagingBasics.parallel.map_in_processes`)."""
    seed, size, spect_grid_name, probabilities, case_id, folder, preview, acquisition = job
    case = generate_case(seed, size, spect_grid_name, probabilities, case_id, acquisition=acquisition)
    write_case(case, folder)
    if preview:
        from .preview import write_preview

        write_preview(case, folder / "preview.png")
    return folder


def generate_cohort(
    out_dir: Path,
    n: int,
    seed: int = 0,
    size: str = "small",
    spect_grid_name: str = "standard",
    pathology_probabilities: Optional[Mapping[str, float]] = None,
    preview: bool = False,
    progress: bool = False,
    workers: int = 1,
    prefix: str = "case",
    acquisition: Optional[str] = None,
    keep_complete: bool = False,
) -> List[Path]:
    """Generate and write ``n`` cases ``case000``... into ``out_dir`` plus ``cohort.csv`` (a manifest).

    ``workers`` > 1 generates cases in that many single-threaded processes (the cases are the same: each has its
    own seed). ``prefix`` names the case folders and ids (``prefix000``...), so that cohorts can be pooled.
    ``acquisition``: ``none`` (None) or ``random`` (see :func:`generate_case`). ``keep_complete``: a case folder
    that already holds this very case (:func:`is_complete_case`) is kept, not made again, so that a cohort stopped
    part-way (a multi-day training run on a few cores) continues where it was; any other folder of that name is
    replaced, and the temporary folders a killed run left for the cases still to make are removed.
    """
    from ImagingBasics.parallel import map_in_processes

    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
        raise UserError(f"case prefix {prefix!r} must hold letters, digits, '_' or '-' only")
    check_pathology_probabilities(pathology_probabilities)
    check_acquisition(acquisition)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}") from None
    probabilities = dict(pathology_probabilities) if pathology_probabilities is not None else None
    jobs = [(case_seed(seed, i), size, spect_grid_name, probabilities, f"{prefix}{i:03d}", out_dir / f"{prefix}{i:03d}",
             preview, acquisition) for i in range(n)]
    kept = {job[5] for job in jobs if keep_complete
            and is_complete_case(job[5], job[0], size, spect_grid_name, probabilities, acquisition, preview)}
    todo = [job for job in jobs if job[5] not in kept]
    if keep_complete:  # what a killed run was writing (write_case's temporary folders) goes before it is made again
        for job in todo:
            for stale in out_dir.glob(f".{job[5].name}.partial-*"):
                shutil.rmtree(stale, ignore_errors=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, initial=len(kept), unit="case", desc="phantom")
    try:
        map_in_processes(_generate_and_write, todo, workers,
                         (lambda done, total, folder: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    folders = [job[5] for job in jobs]
    write_manifest(out_dir / "cohort.csv", folders)
    return folders


def write_manifest(path: Path, folders: Sequence[Path]) -> None:
    """A CSV manifest (id, ct, spect, lungs, lobes, perfusion_truth, pathology_labels, group: tumour or no_tumour)
    with paths relative to the manifest's folder."""
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id"] + [MANIFEST_COLUMNS[k] for k in CASE_FILES] + ["group"])
        for folder in folders:
            rel = os.path.relpath(folder, path.parent)
            meta = json.loads((Path(folder) / "meta.json").read_text(encoding="utf-8"))
            group = "tumour" if "tumour" in meta["pathologies"] else "no_tumour"
            w.writerow([folder.name] + [f"{rel}/{name}" for name in CASE_FILES.values()] + [group])


def load_case(folder: Path) -> SyntheticCase:
    """Read a case folder written by :func:`write_case`."""
    from ImagingBasics.imageio import read_volume

    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"{folder} is not a synthetic case folder (no meta.json)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    vols = {k: read_volume(folder / name) for k, name in CASE_FILES.items()}
    return SyntheticCase(meta=meta, **vols)


__all__ = ["SyntheticCase", "generate_case", "write_case", "generate_cohort", "is_complete_case", "load_case", "case_seed",
           "from_sitk"]
