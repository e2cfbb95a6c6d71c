"""Analytic chest anatomy: every structure is a function of LPS position (mm), evaluated on any grid.

Coordinates: x to the patient's left, y posterior, z superior; the body axis is x = y = 0 and z = 0 is the
lowest point of the lungs (posterior costophrenic recess). Shapes (our choices, sized like an adult chest):

* body: an ellipse with subcutaneous fat, then chest-wall muscle, then a 12 mm rib layer, inside which lies
  the thoracic cavity (an inner offset of the body outline);
* each lung: the half of the cavity lateral to the mediastinum (narrow at the front, widest mid-chest), shrunk
  towards its own centre above 45% of its height (the apex), above a diaphragm dome (the right one higher),
  minus the heart, the descending aorta and the spine;
* lobes: oblique fissures (both lungs) that rise from the anterior base to the posterior upper third, and
  the right horizontal fissure; CIP regions 4 RUL, 5 RML, 6 RLL, 7 LUL, 8 LLL;
* mediastinum: fat with the heart, aorta, pulmonary trunk and arteries, trachea and main bronchi, oesophagus;
* bones: ribs that slope down anteriorly, costal cartilage, sternum, vertebral bodies with discs, the
  spinal canal and posterior elements; below the domes, liver and upper abdomen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .params import AnatomyParams

# tissue classes of the internal label map (not written to disk; ct.py gives each its HU)
AIR, FAT, MUSCLE, CORTICAL_BONE, CANCELLOUS_BONE, BLOOD, AIRWAY, AIRWAY_WALL = range(8)
LUNG_RIGHT, LUNG_LEFT, DISC, CANAL, LIVER, ABDOMEN, MEDIASTINAL_FAT, CARTILAGE = range(8, 16)

# CIP region values of the lobes (ChestConventions.xml)
RUL, RML, RLL, LUL, LLL = 4, 5, 6, 7, 8
LOBE_NAMES = {RUL: "RUL", RML: "RML", RLL: "RLL", LUL: "LUL", LLL: "LLL"}

RIB_LAYER_MM = 12.0
RIB_PITCH_MM = 25.0
RIB_WIDTH_MM = 9.0


@dataclass(frozen=True)
class Tube:
    """A polyline with a radius (mm): a vessel or airway outside the lungs."""

    points: Tuple[Tuple[float, float, float], ...]
    radius_mm: float
    tissue: int
    wall_mm: float = 0.0


class Thorax:
    """Derived geometry of one case's chest; every method takes broadcastable x, y, z arrays in mm."""

    def __init__(self, p: AnatomyParams):
        self.p = p
        self.wall_mm = p.fat_mm + p.muscle_mm + RIB_LAYER_MM
        self.cavity_lr = p.body_semi_lr_mm - self.wall_mm  # cavity half-width at the widest point
        self.cavity_ap = p.body_semi_ap_mm - self.wall_mm
        H, B, w = p.lung_height_mm, self.cavity_ap, p.mediastinum_half_width_mm
        self.lung_centre_x = (w + self.cavity_lr) / 2.0  # |x| of each lung's centre
        self.right_hilum = (-(w + 4.0), -0.05 * B, 0.56 * H)
        self.left_hilum = (w + 6.0, 0.0, 0.60 * H)
        carina = (0.0, -0.05 * B, 0.68 * H)
        self.tubes: List[Tube] = [
            Tube(((0.0, -0.15 * B, H + 60.0), carina), 9.0, AIRWAY, 2.0),  # trachea
            Tube((carina, (-(w + 2.0), -0.02 * B, 0.60 * H)), 7.0, AIRWAY, 2.0),  # right main bronchus
            Tube((carina, (w + 2.0, 0.02 * B, 0.61 * H)), 6.5, AIRWAY, 2.0),  # left main bronchus
            Tube(((-10.0, -0.40 * B, 0.40 * H), (-6.0, -0.30 * B, 0.80 * H), (18.0, 0.25 * B, 0.86 * H),
                  (27.0, B - 28.0, 0.74 * H), (26.0, B - 28.0, -60.0)), 12.5, BLOOD),  # aorta
            Tube(((14.0, -0.50 * B, 0.40 * H), (8.0, -0.22 * B, 0.58 * H)), 12.0, BLOOD),  # pulmonary trunk
            Tube(((8.0, -0.22 * B, 0.58 * H), self.right_hilum), 9.5, BLOOD),  # right pulmonary artery
            Tube(((8.0, -0.22 * B, 0.58 * H), self.left_hilum), 9.0, BLOOD),  # left pulmonary artery
            Tube(((6.0, B - 42.0, H + 60.0), (8.0, B - 40.0, -60.0)), 7.5, MUSCLE),  # oesophagus
        ]
        self.heart_centre = (p.heart_shift_lr_mm, -0.35 * B, 0.27 * H)
        self.rib_phase_mm = 7.0

    # --- outlines ----------------------------------------------------------------------------------
    def depth_below_skin(self, x, y, z):
        """Approximate distance (mm) inward from the skin (negative outside the body)."""
        a = self.p.body_semi_lr_mm * (1.0 - 0.15 * np.clip((z - 0.75 * self.p.lung_height_mm) / 100.0, 0.0, 1.0))
        b = self.p.body_semi_ap_mm
        r = np.sqrt(x * x + y * y) + 1e-6
        rho = np.sqrt((x / a) ** 2 + (y / b) ** 2) + 1e-6
        return (1.0 - rho) * r / rho

    def lung_taper(self, z):
        """Scale (0..1) of a lung's cross-section at height z (1 below 45% of the height, 0 above the apex)."""
        t = z / self.p.lung_height_mm
        s = np.sqrt(np.clip(1.0 - ((t - 0.45) / 0.55) ** 2, 0.0, 1.0))
        return np.where(t <= 0.45, 1.0, s)

    def dome_height(self, x, y):
        """Height (mm) of the diaphragm under (x, y): a dome per side, deepest in the posterior recess."""
        p, B = self.p, self.cavity_ap
        side_lr = self.lung_centre_x
        rho2 = ((np.abs(x) - side_lr) / (0.9 * (self.cavity_lr - p.mediastinum_half_width_mm))) ** 2 + (y / (0.9 * B)) ** 2
        top = np.where(x < 0, p.dome_height_right_mm, p.dome_height_left_mm)
        return top * (1.0 - np.clip(rho2, 0.0, 1.5)) + 12.0 - 12.0 * np.clip(y / B, 0.0, 1.0)

    def heart(self, x, y, z, grow_mm: float = 0.0):
        hx, hy, hz = (s + grow_mm for s in self.p.heart_semi_axes_mm)
        cx, cy, cz = self.heart_centre
        c, s = np.cos(np.deg2rad(30.0)), np.sin(np.deg2rad(30.0))
        u = (x - cx) * c - (y - cy) * s
        v = (x - cx) * s + (y - cy) * c
        return (u / hx) ** 2 + (v / hy) ** 2 + ((z - cz) / hz) ** 2 < 1.0

    def mediastinum_half_width(self, y):
        """Half-width (mm) of the mediastinum at depth y: narrow behind the sternum (anterior junction line),
        widest around the middle of the chest (great vessels, trachea, heart base), narrowing again posteriorly."""
        w = self.p.mediastinum_half_width_mm
        yn = (y + self.cavity_ap) / (2.0 * self.cavity_ap)  # 0 anterior .. 1 posterior
        return w * (0.3 + 0.9 * np.exp(-(((yn - 0.45) / 0.28) ** 2)))

    def spine_block(self, x, y):
        """The vertebral column and paravertebral gutter that the lungs wrap around."""
        B = self.cavity_ap
        return (x / 30.0) ** 2 + ((y - B) / 40.0) ** 2 < 1.0

    def lungs(self, x, y, z):
        """0 outside the lungs, LUNG_RIGHT or LUNG_LEFT inside."""
        p = self.p
        side = np.sign(x)
        cx = side * self.lung_centre_x
        s = np.maximum(self.lung_taper(z), 1e-3)
        xs = cx + (x - cx) / s  # the point scaled out from the lung's centre: the apex is a shrunken base
        ys = y / s
        inside = self.depth_below_skin(xs, ys, np.zeros_like(z)) > self.wall_mm
        inside &= np.abs(x) > self.mediastinum_half_width(y)
        inside &= (z >= 0.0) & (z < p.lung_height_mm) & (z > self.dome_height(x, y))
        inside &= ~self.heart(x, y, z, grow_mm=4.0)
        inside &= ~self.spine_block(x, y)
        inside &= ~(((x - 27.0) ** 2 + (y - (self.cavity_ap - 28.0)) ** 2 < 17.0**2) & (z < 0.8 * p.lung_height_mm))
        return np.where(inside, np.where(x < 0, LUNG_RIGHT, LUNG_LEFT), 0).astype(np.uint8)

    # --- lobes -------------------------------------------------------------------------------------
    def oblique_fissure_height(self, x, y, right: bool):
        """Height (mm) of the oblique fissure above (x, y); the lower lobe lies below it."""
        p, B = self.p, self.cavity_ap
        high = p.oblique_fissure_high_right if right else p.oblique_fissure_high_left
        yn = np.clip((y + B) / (2.0 * B), 0.0, 1.0)  # 0 anterior .. 1 posterior
        lateral = np.clip((np.abs(x) - p.mediastinum_half_width_mm) / (self.cavity_lr - p.mediastinum_half_width_mm), 0, 1)
        frac = p.oblique_fissure_low + (high - p.oblique_fissure_low) * yn + p.fissure_tilt * (lateral - 0.5)
        return p.lung_height_mm * (frac + 0.04 * np.sin(np.pi * yn))

    def horizontal_fissure_height(self, x, y):
        p = self.p
        return p.lung_height_mm * (p.horizontal_fissure - 0.03 * np.clip((y + self.cavity_ap) / (2 * self.cavity_ap), 0, 1))

    def lobes(self, x, y, z, lungs):
        """CIP lobe regions (4-8) where ``lungs`` is non-zero, else 0."""
        out = np.zeros(np.broadcast(x, y, z).shape, dtype=np.uint8)
        right = lungs == LUNG_RIGHT
        left = lungs == LUNG_LEFT
        below_r = z < self.oblique_fissure_height(x, y, True)
        above_h = z >= self.horizontal_fissure_height(x, y)
        out[right & below_r] = RLL
        out[right & ~below_r & above_h] = RUL
        out[right & ~below_r & ~above_h] = RML
        below_l = z < self.oblique_fissure_height(x, y, False)
        out[left & below_l] = LLL
        out[left & ~below_l] = LUL
        return out

    def fissure_distance(self, x, y, z, lungs):
        """Approximate distance (mm) to the nearest fissure inside the lungs (inf elsewhere)."""
        B, H = self.cavity_ap, self.p.lung_height_mm
        dist = np.full(np.broadcast(x, y, z).shape, np.inf, dtype=np.float32)
        for right, code in ((True, LUNG_RIGHT), (False, LUNG_LEFT)):
            high = self.p.oblique_fissure_high_right if right else self.p.oblique_fissure_high_left
            slope = H * (high - self.p.oblique_fissure_low) / (2.0 * B)
            d = np.abs(z - self.oblique_fissure_height(x, y, right)) / np.sqrt(1.0 + slope**2)
            if right:
                d_h = np.abs(z - self.horizontal_fissure_height(x, y))
                d_h = np.where(z >= self.oblique_fissure_height(x, y, True), d_h, np.inf)
                d = np.minimum(d, d_h)
            dist = np.where(lungs == code, np.minimum(dist, d), dist)
        return dist

    # --- other tissues -----------------------------------------------------------------------------
    def ribs(self, x, y, z, depth):
        """Rib bone and costal cartilage in the rib layer: bands that slope down towards the front."""
        inner = self.p.fat_mm + self.p.muscle_mm
        in_layer = (depth > inner) & (depth < inner + RIB_LAYER_MM)
        theta = np.arctan2(x, y)  # 0 posterior, +-pi anterior
        zz = z + 45.0 * (1.0 - np.cos(theta)) / 2.0 - self.rib_phase_mm
        band = np.mod(zz, RIB_PITCH_MM) < RIB_WIDTH_MM
        band &= (z > -30.0) & (z < self.p.lung_height_mm + 15.0)
        radial = np.abs(depth - (inner + RIB_LAYER_MM / 2.0)) < 4.5
        rib = in_layer & band & radial & ~((np.abs(x) < 22.0) & (y < 0))
        cartilage = rib & (np.abs(theta) > 0.82 * np.pi)
        return rib & ~cartilage, cartilage

    def vertebrae(self, x, y, z):
        """Labels of the spine: cortical rim, cancellous body, discs, canal, posterior elements."""
        B = self.cavity_ap
        out = np.zeros(np.broadcast(x, y, z).shape, dtype=np.uint8)
        r_body = np.sqrt(x**2 + (y - (B - 8.0)) ** 2)
        disc = np.mod(z + 3.0, 27.0) < 6.0
        body = r_body < 17.0
        out[body] = CANCELLOUS_BONE
        out[body & (r_body > 15.0)] = CORTICAL_BONE
        out[body & disc] = DISC
        r_canal = np.sqrt(x**2 + (y - (B + 20.0)) ** 2)
        out[(r_canal >= 8.0) & (r_canal < 13.0) & (y > B + 10.0)] = CORTICAL_BONE  # lamina
        out[(np.abs(x) < 4.0) & (y > B + 32.0) & (y < B + 58.0)] = CORTICAL_BONE  # spinous process
        out[r_canal < 8.0] = CANAL
        return out

    def sternum(self, x, y, z):
        B, H = self.cavity_ap, self.p.lung_height_mm
        return (np.abs(x) < 15.0) & (y > -B - 14.0) & (y < -B - 2.0) & (z > 0.30 * H) & (z < 0.98 * H)

    def tissue_labels(self, x, y, z):
        """The tissue class of every point (see the constants at the top of this module)."""
        shape = np.broadcast(x, y, z).shape
        depth = np.broadcast_to(self.depth_below_skin(x, y, z), shape)
        labels = np.full(shape, AIR, dtype=np.uint8)
        body = depth > 0
        labels[body] = FAT
        labels[depth > self.p.fat_mm] = MUSCLE
        cavity = depth > self.wall_mm
        zz = np.broadcast_to(z, shape)
        below = zz < self.dome_height(x, y)
        labels[cavity & below] = np.broadcast_to(np.where(x < 10.0, LIVER, ABDOMEN), shape)[cavity & below]
        labels[cavity & ~below & (zz < self.p.lung_height_mm)] = MEDIASTINAL_FAT
        labels[cavity & (zz >= self.p.lung_height_mm)] = MUSCLE  # root of the neck
        labels[cavity & self.spine_block(x, y) & ~below] = MUSCLE
        heart = self.heart(x, y, z)
        pericardial_fat = self.heart(x, y, z, grow_mm=3.0) & ~heart
        labels[cavity & pericardial_fat] = MEDIASTINAL_FAT
        labels[cavity & heart] = BLOOD
        for tube in self.tubes:
            d = _distance_to_polyline(x, y, z, tube.points)
            if tube.wall_mm > 0:
                labels[body & (d < tube.radius_mm + tube.wall_mm)] = AIRWAY_WALL
            labels[body & (d < tube.radius_mm)] = tube.tissue
        lungs = np.broadcast_to(self.lungs(x, y, z), shape)
        labels[lungs > 0] = lungs[lungs > 0]
        rib, cartilage = self.ribs(x, y, z, depth)
        labels[rib] = CORTICAL_BONE
        labels[cartilage] = CARTILAGE
        labels[np.broadcast_to(self.sternum(x, y, z), shape)] = CANCELLOUS_BONE
        spine = np.broadcast_to(self.vertebrae(x, y, z), shape)
        labels[body & (spine > 0)] = spine[body & (spine > 0)]
        return labels


def _distance_to_polyline(x, y, z, points: Sequence[Sequence[float]]) -> np.ndarray:
    """Distance (mm) from every point to a polyline."""
    best = None
    for a, b in zip(points[:-1], points[1:]):
        d = distance_to_segment(x, y, z, np.asarray(a, float), np.asarray(b, float))
        best = d if best is None else np.minimum(best, d)
    return best


def distance_to_segment(x, y, z, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (mm) from points (x, y, z) to the segment a-b."""
    ab = b - a
    L2 = float(ab @ ab) + 1e-12
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / L2, 0.0, 1.0)
    dx, dy, dz = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
    return np.sqrt(dx * dx + dy * dy + dz * dz)


def evaluate_on_grid(thorax: Thorax, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, slab: int = 8) -> Dict[str, np.ndarray]:
    """Tissue labels, lobes and fissure distance on the grid spanned by 1D axis coordinates, slab by slab in z."""
    nz, ny, nx = len(zs), len(ys), len(xs)
    tissue = np.zeros((nz, ny, nx), np.uint8)
    lobes = np.zeros((nz, ny, nx), np.uint8)
    fissure = np.full((nz, ny, nx), np.inf, np.float32)
    for k0 in range(0, nz, slab):
        z, y, x = np.meshgrid(zs[k0:k0 + slab], ys, xs, indexing="ij")
        lab = thorax.tissue_labels(x, y, z)
        lungs = np.where((lab == LUNG_RIGHT) | (lab == LUNG_LEFT), lab, 0)
        tissue[k0:k0 + slab] = lab
        lobes[k0:k0 + slab] = thorax.lobes(x, y, z, lungs)
        fissure[k0:k0 + slab] = thorax.fissure_distance(x, y, z, lungs)
    return {"tissue": tissue, "lobes": lobes, "fissure_mm": fissure}
