"""Built-in lung segmentation of a chest CT (classical image processing, no network weights).

Steps (each a function below):

1. :func:`working_image`: average-downsample the CT to about 2 mm voxels (integer factors; CTs already
   coarser, e.g. 4-7 mm, are used as they are) and smooth it lightly.
2. :func:`air_components`: voxels below ``air_threshold_hu`` (-400 HU) split into 3D connected components.
3. :func:`select_lung_components`: the body is found first (:func:`body_hull`: the patient table is cut off, so its
   foam core, about -850 HU, never becomes lung); outside air and gas are pure air (median about -1000 HU) while lung parenchyma
   is not (about -850 HU; -920 in a low-density lung): components touching the image border with a median below
   ``pure_air_hu`` (-970 HU) are outside air; components with such a median elsewhere are bowel or stomach gas. The
   remaining components of at least ``min_component_ml`` with at least half their voxels inside the body's
   per-slice convex hull (:func:`body_hull`) are lung; the others are air beside the body or the table's foam.
   This keeps lungs cut by the image border (cropped fields of view), which a "touches the border" rule would
   throw away.
4. :func:`remove_airways`: the trachea is found as a small round pure-air region (below -950 HU or the 3rd
   percentile of the lung, whichever is lower) at the top of the lungs, within 30 mm of their middle, and grown
   through the airway lumen (:func:`airway_threshold_hu`: voxels darker than 97 % of the lung) one voxel per step,
   with explosion control (growth stops when one step adds several times more than the steps before, which is a
   leak into the parenchyma). The grown trachea and main bronchi (dilated by one voxel) are removed. A fixed -950 HU
   would miss the lumen of a soft-kernel or thick-slice CT, whose air reads -890 to -950 HU on the working grid
   (measured: 1 mL of trachea removed on a 5 mm soft-kernel CT against 30 mL on the sharp kernel of the same scan).
5. :func:`split_left_right`: two large components are the two lungs; a single one (lungs touching at the anterior
   junction) is eroded until it falls apart and re-grown by watershed on the distance map. Smaller components join
   the nearer lung when they lie within ``max_gap_mm`` (20 mm) of it, and are dropped otherwise (gas in the bowel
   below the diaphragm whose median HU is lung-like). Sides come from the patient's x axis (LPS: right lung at
   smaller x).
6. :func:`fill_vessels`: per axial slice, holes in each lung (vessels, nodules, tumours surrounded by lung) are
   filled, after a closing of ``closing_mm`` (5 mm) that also takes in small juxtapleural nodules.
7. Back to the CT grid by linear interpolation of each lung's mask (threshold 0.5).

The result is 1 right lung, 2 left lung on the CT grid. Fewer than ``min_lung_ml`` (500 mL) of lung is an error:
the CT does not show the lungs (e.g. an abdominal CT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from ImagingBasics.errors import UserError
from ImagingBasics.resample import resample
from ImagingBasics.validation import check_ct
from ImagingBasics.volume import Volume, from_sitk, to_sitk

RIGHT, LEFT = 1, 2


@dataclass(frozen=True)
class LungSegmentationParams:
    working_spacing_mm: float = 2.0
    air_threshold_hu: float = -400.0
    pure_air_hu: float = -970.0
    airway_hu: float = -950.0
    min_component_ml: float = 20.0
    min_inside_body: float = 0.5
    min_lung_ml: float = 500.0
    closing_mm: float = 5.0
    max_trachea_area_mm2: float = 800.0
    min_trachea_area_mm2: float = 40.0
    max_trachea_offset_mm: float = 30.0
    max_gap_mm: float = 20.0


@dataclass
class LungSegmentation:
    lungs: Volume  # uint8 on the CT grid: 1 right, 2 left
    info: Dict = field(default_factory=dict)  # volumes, steps taken, warnings



def working_image(ct: Volume, spacing_mm: float) -> Volume:
    """The CT average-downsampled by integer factors to about ``spacing_mm``, then smoothed by a Gaussian of half a
    voxel (noise suppression: quantum noise would otherwise break thin structures into speckle)."""
    import SimpleITK as sitk

    factors = [max(1, int(round(spacing_mm / s))) for s in ct.spacing]
    img = sitk.Cast(to_sitk(ct), sitk.sitkFloat32)
    if any(f > 1 for f in factors):
        img = sitk.BinShrink(img, factors)
    sigma = [0.5 * s for s in img.GetSpacing()]
    return from_sitk(sitk.SmoothingRecursiveGaussian(img, sigma))


def air_components(work: Volume, threshold_hu: float) -> Tuple[np.ndarray, int]:
    """3D connected components (6-connectivity) of voxels below ``threshold_hu``."""
    labels, n = ndimage.label(work.array < threshold_hu)
    return labels, n


def select_lung_components(work: Volume, labels: np.ndarray, n: int, p: LungSegmentationParams) -> Tuple[np.ndarray, Dict]:
    """Boolean mask of the air components that are lung (see the module docstring, step 3)."""
    if n == 0:
        return np.zeros(labels.shape, bool), {"components": 0}
    idx = np.arange(1, n + 1)
    counts = ndimage.sum_labels(np.ones_like(labels, dtype=np.float32), labels, idx)
    stride = 2 if labels.size > 4_000_000 else 1  # the median of a large component needs no every voxel
    medians = np.nan_to_num(ndimage.median(work.array[::stride, ::stride, ::stride], labels[::stride, ::stride, ::stride], idx),
                            nan=-1000.0)
    border = np.zeros(n + 1, bool)
    for axis in range(3):
        for end in (0, -1):
            border[np.unique(np.take(labels, end, axis=axis))] = True
    voxel_ml = work.voxel_volume_ml
    keep = np.zeros(n + 1, bool)
    reasons = {"outside_air": 0, "gas": 0, "small": 0, "outside_body": 0, "lung": 0}
    hull = body_hull(work, p.air_threshold_hu)
    inside = ndimage.sum_labels(hull.astype(np.float32), labels, idx) / np.maximum(counts, 1)
    for k, count, median, frac in zip(idx, counts, medians, inside):
        if median < p.pure_air_hu:
            reasons["outside_air" if border[k] else "gas"] += 1
        elif count * voxel_ml < p.min_component_ml:
            reasons["small"] += 1
        elif frac < p.min_inside_body:
            reasons["outside_body"] += 1  # air beside the body, the foam core of the patient table
        else:
            keep[k] = True
            reasons["lung"] += 1
    return keep[labels], {"components": int(n), **reasons}


def body_hull(work: Volume, tissue_hu: float, table_mm: float = 6.0) -> np.ndarray:
    """Per axial slice, the convex hull of the body: the largest 3D component of voxels above ``tissue_hu`` after an
    in-plane opening of radius ``table_mm``.

    Pulmonary vessels connect to the mediastinum, so the body component reaches into the lungs and its hull
    covers them even where the field of view cuts them. The opening cuts the patient table off the body: its
    shells are a few millimetres thick and often touch the back, and without the cut the hull spans the table and
    its foam core (-850 HU, lung-like) becomes "lung" (seen on the GATE Lu-177 patient: 2.4 L). Outside air and the
    table then lie outside the hull.
    """
    from skimage.morphology import convex_hull_image

    ry, rx = (max(1, int(round(table_mm / s))) for s in (work.spacing[1], work.spacing[0]))
    yy, xx = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    disk = ((yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0)[None]  # in the axial plane only
    tissue = work.array > tissue_hu
    core, n = ndimage.label(ndimage.binary_opening(tissue, disk))
    hull = np.zeros(tissue.shape, bool)
    if n == 0:
        return hull
    sizes = ndimage.sum_labels(np.ones_like(core), core, np.arange(1, n + 1))
    # the body's core, grown back by the opening's radius inside the tissue: thin parts of the body (a chest wall cut
    # by the field of view) come back, the table beyond a band of that width does not
    body = ndimage.binary_dilation(core == (int(np.argmax(sizes)) + 1), disk) & tissue
    for k in np.nonzero(body.any(axis=(1, 2)))[0]:
        hull[k] = convex_hull_image(body[k])
    return hull


def find_trachea_seed(work: Volume, lung: np.ndarray, airway_hu: float, p: LungSegmentationParams) -> Optional[np.ndarray]:
    """A small, round, pure-air region in the top slices of the lung mask, nearest the lungs' middle and at most
    ``max_trachea_offset_mm`` from it (or None): the trachea runs in the midline, and a dark spot in an apex (noise,
    an emphysematous bulla) is not it (measured: such spots 55-61 mm from the middle on a COPD CT and a phantom, the
    trachea within 20 mm on the real CTs)."""
    z_axis = int(np.argmax(np.abs(work.direction[2, :])))  # the array axis closest to the patient's S-I axis
    if z_axis != 2:
        return None  # trachea search needs axial slices (ITK axis 2 = array axis 0)
    zs = np.nonzero(lung.any(axis=(1, 2)))[0]
    if zs.size == 0:
        return None
    top_first = zs[::-1] if work.direction[2, 2] > 0 else zs
    pixel_mm2 = work.spacing[0] * work.spacing[1]
    cols = np.nonzero(lung.any(axis=(0, 1)))[0]
    x_mid = 0.5 * (cols.min() + cols.max())
    for k in top_first[: max(3, len(zs) // 3)]:
        sl, n = ndimage.label(lung[k] & (work.array[k] < airway_hu))
        best, best_d = None, np.inf
        for j in range(1, n + 1):
            comp = sl == j
            area = comp.sum() * pixel_mm2
            if not p.min_trachea_area_mm2 <= area <= p.max_trachea_area_mm2:
                continue
            yy, xx = np.nonzero(comp)
            extent = max(np.ptp(yy) + 1, np.ptp(xx) + 1)
            if comp.sum() < 0.4 * extent * extent:  # not round enough
                continue
            d = abs(xx.mean() - x_mid)
            if d * work.spacing[0] > p.max_trachea_offset_mm:
                continue
            if d < best_d:
                best, best_d = comp, d
        if best is not None:
            seed = np.zeros(lung.shape, bool)
            seed[k] = best
            return seed
    return None


def grow_airways(seed: np.ndarray, allowed: np.ndarray, max_steps: int = 60, leak_factor: float = 4.0) -> np.ndarray:
    """Geodesic growth of ``seed`` inside ``allowed``, one voxel per step, stopping before an explosive step.

    Works in the bounding box of the part of ``allowed`` connected to the seed."""
    comps, _ = ndimage.label(allowed)
    ids = np.unique(comps[seed & allowed])
    ids = ids[ids > 0]
    out = np.zeros(seed.shape, bool)
    if ids.size == 0:
        return out
    region = np.isin(comps, ids)
    box = ndimage.find_objects(region.astype(np.uint8))[0]
    out[box] = _grow(seed[box], region[box], max_steps, leak_factor)
    return out


def _grow(seed: np.ndarray, allowed: np.ndarray, max_steps: int, leak_factor: float) -> np.ndarray:
    grown = seed & allowed
    history: List[int] = []
    structure = ndimage.generate_binary_structure(3, 1)
    for _ in range(max_steps):
        new = ndimage.binary_dilation(grown, structure) & allowed & ~grown
        added = int(new.sum())
        if added == 0:
            break
        if len(history) >= 4 and added > leak_factor * max(np.median(history[-4:]), 1.0) and added > 200:
            break  # leak into the parenchyma
        history.append(added)
        grown |= new
    return grown


def airway_threshold_hu(work: Volume, lung: np.ndarray, seed: np.ndarray) -> float:
    """The HU below which a lung-mask voxel connected to the trachea seed is airway lumen: the lung's 3rd percentile
    (the darkest 3 % of the mask: lumen, and the darkest parenchyma that the growth's leak control stops at), but never
    above halfway between the seed's median (this scan's air as its kernel and slice thickness show it) and the lung's
    median (dense lungs: consolidation, expiration)."""
    values = work.array[lung]
    lumen_hu, parenchyma_hu = float(np.median(work.array[seed])), float(np.median(values))
    return min(float(np.percentile(values, 3)), 0.5 * (lumen_hu + parenchyma_hu))


def remove_airways(work: Volume, lung: np.ndarray, p: LungSegmentationParams) -> Tuple[np.ndarray, Dict]:
    """The lung mask without the trachea and main bronchi (module docstring, step 4)."""
    if not lung.any():
        return lung, {"airways_removed_ml": 0.0}
    pure_air_hu = min(p.airway_hu, float(np.percentile(work.array[lung], 3)))
    seed = find_trachea_seed(work, lung, pure_air_hu, p)
    if seed is None:
        return lung, {"airways_removed_ml": 0.0, "trachea_found": False}
    lumen_hu = airway_threshold_hu(work, lung, seed)
    airways = grow_airways(seed, lung & (work.array < lumen_hu))
    airways = ndimage.binary_dilation(airways, iterations=1) & lung
    return lung & ~airways, {"airways_removed_ml": float(airways.sum() * work.voxel_volume_ml), "trachea_found": True,
                             "airway_threshold_hu": round(lumen_hu, 1)}


def split_left_right(work: Volume, lung: np.ndarray, p: LungSegmentationParams) -> Tuple[np.ndarray, Dict]:
    """Label map 1 right / 2 left from a lung mask (module docstring, step 5)."""
    labels, n = ndimage.label(lung)
    if n == 0:
        return np.zeros(lung.shape, np.uint8), {"split": "none"}
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, np.arange(1, n + 1))
    order = np.argsort(sizes)[::-1] + 1
    min_voxels = p.min_component_ml / work.voxel_volume_ml
    info = {"split": "components"}
    if n >= 2 and sizes[order[1] - 1] >= max(min_voxels, 0.15 * sizes[order[0] - 1]):
        parts = [labels == order[0], labels == order[1]]
    else:
        parts = _split_by_erosion(labels == order[0])
        info["split"] = "erosion" if len(parts) == 2 else "single lung"
    # smaller components near a lung (a piece cut off by the field of view or a fissure) join the nearer lung; those
    # farther than max_gap_mm from both (gas in the bowel below the diaphragm) are not lung
    main = np.zeros(lung.shape, np.uint8)
    for i, part in enumerate(parts, start=1):
        main[part] = i
    if len(parts) == 2 and (lung & (main == 0)).any():
        box = ndimage.find_objects(lung.astype(np.uint8))[0]
        sub = main[box]
        distance, nearest = ndimage.distance_transform_edt(sub == 0, sampling=work.spacing[::-1], return_indices=True)
        far = lung[box] & (sub == 0) & (distance > p.max_gap_mm)
        info["distant_components_ml"] = float(far.sum() * work.voxel_volume_ml)
        main[box] = np.where(lung[box] & ~far, sub[tuple(nearest)], 0)
    out = np.zeros(lung.shape, np.uint8)
    centroid_x = [_centroid_x(work, main == i) for i in range(1, len(parts) + 1)]
    if len(parts) == 2:
        right_first = centroid_x[0] < centroid_x[1]
        out[main == 1] = RIGHT if right_first else LEFT
        out[main == 2] = LEFT if right_first else RIGHT
    else:
        body_x = _centroid_x(work, work.array > -400)
        out[main == 1] = RIGHT if centroid_x[0] < body_x else LEFT
    return out, info


def _centroid_x(work: Volume, mask: np.ndarray) -> float:
    """Patient x (LPS mm) of a mask's centroid."""
    kji = np.array(ndimage.center_of_mass(mask))
    return float(work.index_to_lps(kji[::-1])[0])


def _split_by_erosion(mask: np.ndarray, max_iterations: int = 8) -> List[np.ndarray]:
    """Erode until two large parts appear, then give every voxel to the nearer part (watershed on distance)."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    parts = _split_box(mask[box], max_iterations)
    out = []
    for part in parts:
        full = np.zeros(mask.shape, bool)
        full[box] = part
        out.append(full)
    return out


def _split_box(mask: np.ndarray, max_iterations: int) -> List[np.ndarray]:
    from skimage.segmentation import watershed

    eroded = mask
    for _ in range(max_iterations):
        eroded = ndimage.binary_erosion(eroded)
        labels, n = ndimage.label(eroded)
        if n >= 2:
            sizes = ndimage.sum_labels(np.ones_like(labels), labels, np.arange(1, n + 1))
            a, b = np.argsort(sizes)[::-1][:2] + 1
            if sizes[b - 1] >= 0.15 * sizes[a - 1]:
                markers = np.where(labels == a, 1, np.where(labels == b, 2, 0))
                ws = watershed(-ndimage.distance_transform_edt(mask), markers, mask=mask)
                return [ws == 1, ws == 2]
    return [mask]


def fill_vessels(work: Volume, labels: np.ndarray, closing_mm: float) -> np.ndarray:
    """Each lung closed (``closing_mm``) and its holes filled slice by slice (vessels, surrounded nodules)."""
    out = np.zeros_like(labels)
    radius = [max(1, int(round(closing_mm / s))) for s in work.spacing[:2]]
    yy, xx = np.ogrid[-radius[1]:radius[1] + 1, -radius[0]:radius[0] + 1]
    disk = (yy / max(radius[1], 1)) ** 2 + (xx / max(radius[0], 1)) ** 2 <= 1.0
    for side in (RIGHT, LEFT):
        mask = labels == side
        for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
            sl = ndimage.binary_closing(np.pad(mask[k], radius[1] + 1), disk)
            sl = ndimage.binary_fill_holes(sl)[radius[1] + 1:-radius[1] - 1, radius[1] + 1:-radius[1] - 1]
            out[k][sl & (out[k] == 0)] = side
    return out


def to_ct_grid(work: Volume, labels: np.ndarray, ct: Volume) -> np.ndarray:
    """Each lung's mask interpolated linearly onto the CT grid and thresholded at 0.5."""
    if work.same_geometry(ct):
        return labels.astype(np.uint8)
    out = np.zeros(ct.shape, np.uint8)
    for side in (RIGHT, LEFT):
        frac = resample(work.with_array((labels == side).astype(np.float32)), ct).array
        out[(frac >= 0.5) & (out == 0)] = side
    return out


def segment_lungs(ct: Volume, params: Optional[LungSegmentationParams] = None) -> LungSegmentation:
    """Right (1) and left (2) lungs of a chest CT in HU, on the CT grid (see the module docstring)."""
    p = params or LungSegmentationParams()
    check_ct(ct)
    work = working_image(ct, p.working_spacing_mm)
    comps, n = air_components(work, p.air_threshold_hu)
    lung, info = select_lung_components(work, comps, n, p)
    lung, airway_info = remove_airways(work, lung, p)
    labels, split_info = split_left_right(work, lung, p)
    labels = fill_vessels(work, labels, p.closing_mm)
    out = to_ct_grid(work, labels, ct)
    vml = ct.voxel_volume_ml
    volumes = {"right_ml": float((out == RIGHT).sum() * vml), "left_ml": float((out == LEFT).sum() * vml)}
    total = volumes["right_ml"] + volumes["left_ml"]
    if total < p.min_lung_ml:
        raise UserError(f"no lungs found in the CT ({total:.0f} mL of lung-like tissue, at least {p.min_lung_ml:.0f} mL "
                        "needed): is this a chest CT that covers the lungs?")
    info = {**info, **airway_info, **split_info, **volumes, "working_spacing_mm": list(work.spacing)}
    return LungSegmentation(ct.with_array(out), info)
