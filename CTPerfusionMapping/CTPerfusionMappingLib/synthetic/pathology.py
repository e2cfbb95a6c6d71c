"""Pathologies of a synthetic case: drawn once (recorded in ``meta.json``), evaluated on any grid.

* **Emphysema**: a smooth random field, weighted to the upper lungs, marks 5-30% of the lung as emphysematous
  (severity 0..1) plus 0-4 bullae (spheres 6-25 mm). Tissue destruction lowers HU towards -975 and perfusion
  (x 0.15 at full severity, x 0.03 in bullae); the capillary bed is lost with the alveolar walls.
* **Tumour**: a lobulated soft-tissue mass (union of 4 spheres) of 1-6 cm diameter, anywhere in a lung,
  touching the pleura or not. Arteries passing through or within 15% of its radius are compressed or encased:
  perfusion of everything downstream drops to 5-40%.
* **Pulmonary emboli**: 1-4 arteries of generations 1-4 occluded: downstream perfusion 0-15%; the only CT sign
  is mosaic attenuation, 15-35 HU lower density in the oligaemic territory.
* **Ground glass / consolidation**: 1-3 ellipsoidal blobs (12-40 mm) with a soft, irregular edge, consolidation
  favouring the dependent lower lungs. Ground glass: +150..+300 HU, perfusion x 0.8-1.0; consolidation:
  -80..+30 HU, perfusion x 0.2-0.5 (hypoxic vasoconstriction).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
from scipy import ndimage

from .vessels import ArterialTree

EMPHYSEMA_FIELD_SIGMA_MM = 8.0

#: values of ``pathology_labels.nrrd`` (later entries win where they overlap)
PATHOLOGY_LABELS = {
    1: "emphysema",  # severity above 0.5
    2: "bulla",
    4: "embolic_defect",  # territory downstream of an occluded artery
    5: "compressed_territory",  # territory downstream of an artery compressed by the tumour
    6: "ground_glass",  # membership above 0.5
    7: "consolidation",
    3: "tumour",
}


def draw_emphysema(rng: np.random.Generator, points_mm: np.ndarray, lung_height_mm: float) -> Dict:
    """Extent, field seed and bullae of an emphysematous lung (bullae centred on upper-lung points)."""
    upper = points_mm[points_mm[:, 2] > 0.55 * lung_height_mm]
    n_bullae = int(rng.integers(0, 5))
    bullae = []
    for _ in range(n_bullae):
        c = upper[rng.integers(len(upper))]
        bullae.append({"centre_mm": [float(v) for v in c], "radius_mm": float(rng.uniform(6, 25))})
    return {"extent_fraction": float(rng.uniform(0.05, 0.30)), "field_seed": int(rng.integers(2**31)), "bullae": bullae}


def emphysema_severity_model(emph: Dict, lung_mask: np.ndarray, spacing_mm: float, z_mm: np.ndarray,
                             lung_height_mm: float) -> np.ndarray:
    """Severity 0..1 on the (isotropic) model grid: the upper-weighted random field above its (1 - extent) quantile."""
    field_rng = np.random.default_rng(emph["field_seed"])
    noise = ndimage.gaussian_filter(field_rng.standard_normal(lung_mask.shape).astype(np.float32),
                                    EMPHYSEMA_FIELD_SIGMA_MM / spacing_mm)
    noise /= noise[lung_mask].std() + 1e-9
    weight = np.clip((z_mm / lung_height_mm - 0.2) / 0.6, 0.0, 1.0)[:, None, None]
    score = noise + 2.0 * weight
    thr = np.quantile(score[lung_mask], 1.0 - emph["extent_fraction"])
    severity = np.clip((score - thr) / 0.6, 0.0, 1.0)
    return np.where(lung_mask, severity, 0.0).astype(np.float32)


def in_spheres(x, y, z, spheres: List[Dict]) -> np.ndarray:
    """True inside any of the spheres ({'centre_mm', 'radius_mm'})."""
    inside = np.zeros(np.broadcast(x, y, z).shape, dtype=bool)
    for s in spheres:
        cx, cy, cz = s["centre_mm"]
        inside |= (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < s["radius_mm"] ** 2
    return inside


def draw_tumour(rng: np.random.Generator, points_mm: np.ndarray) -> Dict:
    """A lobulated mass: 4 spheres around a centre drawn among the lung points; diameter 1-6 cm."""
    centre = points_mm[rng.integers(len(points_mm))]
    radius = float(rng.uniform(5.0, 30.0))
    lobules = [{"centre_mm": [float(v) for v in centre], "radius_mm": radius * 0.85}]
    for _ in range(3):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        lobules.append({"centre_mm": [float(v) for v in centre + d * radius * rng.uniform(0.2, 0.45)],
                        "radius_mm": float(radius * rng.uniform(0.5, 0.7))})
    return {"centre_mm": [float(v) for v in centre], "radius_mm": radius, "lobules": lobules,
            "downstream_factor": float(rng.uniform(0.05, 0.4))}


def compressed_segments(tree: ArterialTree, tumour: Dict) -> List[int]:
    """Segments passing within 1.15 tumour radii of its centre, whose parent does not (the most upstream ones)."""
    c = np.asarray(tumour["centre_mm"])
    reach = 1.15 * tumour["radius_mm"]
    hit = []
    for s in range(tree.n_segments):
        a, b = tree.start[s], tree.end[s]
        ab = b - a
        t = np.clip(((c - a) @ ab) / (ab @ ab + 1e-12), 0.0, 1.0)
        if np.linalg.norm(a + t * ab - c) < reach:
            hit.append(s)
    hit_set = set(hit)
    return [s for s in hit if tree.parent[s] not in hit_set and tree.depth[s] > 0]


def draw_emboli(rng: np.random.Generator, tree: ArterialTree) -> Dict:
    """1-4 occluded arteries of generations 1-4, none downstream of another."""
    candidates = [s for s in range(tree.n_segments) if 1 <= tree.depth[s] <= 4]
    rng.shuffle(candidates)
    n_wanted = int(rng.integers(1, 5))
    chosen: List[int] = []
    for s in candidates:
        if len(chosen) == n_wanted:
            break
        anc = set(tree.ancestors(s))
        if any(c in anc or s in tree.ancestors(c) for c in chosen):
            continue
        chosen.append(s)
    return {"occluded_segments": [int(s) for s in chosen],
            "downstream_factor": [float(rng.uniform(0.0, 0.15)) for _ in chosen],
            "mosaic_hu": [float(-rng.uniform(15, 35)) for _ in chosen]}


def draw_opacities(rng: np.random.Generator, points_mm: np.ndarray, lung_height_mm: float) -> List[Dict]:
    """1-3 ground-glass or consolidation blobs; consolidation centres favour the dependent lower lungs."""
    blobs = []
    for _ in range(int(rng.integers(1, 4))):
        kind = "consolidation" if rng.uniform() < 0.5 else "ground_glass"
        if kind == "consolidation":
            w = np.clip(points_mm[:, 1] - points_mm[:, 1].min(), 0, None) + np.clip(lung_height_mm - points_mm[:, 2], 0, None)
            centre = points_mm[rng.choice(len(points_mm), p=w / w.sum())]
            hu = float(rng.uniform(-80, 30))
            factor = float(rng.uniform(0.2, 0.5))
        else:
            centre = points_mm[rng.integers(len(points_mm))]
            hu = float(rng.uniform(150, 300))  # an increase over the parenchyma
            factor = float(rng.uniform(0.8, 1.0))
        blobs.append({"kind": kind, "centre_mm": [float(v) for v in centre],
                      "semi_axes_mm": [float(v) for v in rng.uniform(12, 40, size=3)],
                      "hu": hu, "perfusion_factor": factor, "edge_phase": [float(v) for v in rng.uniform(0, 2 * np.pi, 3)]})
    return blobs


def opacity_weight(x, y, z, blob: Dict) -> np.ndarray:
    """0..1 membership of a blob: an ellipsoid with a wavy, 30%-wide soft edge."""
    cx, cy, cz = blob["centre_mm"]
    ax, ay, az = blob["semi_axes_mm"]
    px, py, pz = blob["edge_phase"]
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2)
    wobble = 0.12 * (np.sin(0.25 * x + px) + np.sin(0.25 * y + py) + np.sin(0.25 * z + pz)) / 3.0
    return np.clip((1.0 + wobble - r) / 0.3, 0.0, 1.0)


BULLA_PERFUSION = 0.03


def emphysema_perfusion_factor(severity: np.ndarray) -> np.ndarray:
    """Perfusion left in emphysematous tissue: 1 when healthy, 0.15 at full severity."""
    return 1.0 - 0.85 * severity


def opacity_perfusion_factor(blob: Dict, weight: np.ndarray) -> np.ndarray:
    """Perfusion factor of a ground-glass or consolidation blob at membership ``weight``."""
    return 1.0 - (1.0 - blob["perfusion_factor"]) * weight


def tissue_perfusion_factor(x, y, z, pathologies: Dict, emphysema_severity: Optional[np.ndarray]) -> np.ndarray:
    """Local perfusion factor of the lung tissue itself (emphysema, bullae, opacities) at points; 1 when healthy."""
    shape = np.broadcast(x, y, z).shape
    f = np.ones(shape, dtype=np.float32)
    if emphysema_severity is not None:
        f *= emphysema_perfusion_factor(emphysema_severity)
        f[in_spheres(x, y, z, pathologies["emphysema"]["bullae"])] = BULLA_PERFUSION
    for blob in pathologies.get("opacities", []):
        f *= opacity_perfusion_factor(blob, opacity_weight(x, y, z, blob))
    return f
