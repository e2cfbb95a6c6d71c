"""A synthetic abdominal torso for Lu-177 DOTATATE dosimetry: CT (HU), organ/lesion labels and uptake compartments.

No patient SPECT/CT exists here, so the dose engine is trained and tested on phantoms (Li 2020 built its phantoms from
patients' Ga-68 PET/CT; we build ours from geometry). The field of view is centred on the kidneys and liver, as in
Li 2020 ("130 slices that covered the field of view of SPECT camera with liver and kidney centered").

Coordinates: millimetres, LPS (x to the patient's left, y posterior, z superior), the body axis at x = y = 0 and
z = 0 at the centre of the field of view. Every structure is an analytic shape (ellipses, ellipsoids, tubes) with
randomly drawn sizes and positions (:func:`draw_torso`), so the phantom exists at any voxel size
(:func:`torso_on_grid`).

Structures (label values in :data:`LABELS`): body (fat, muscle and soft tissue; label 1 = the remainder), liver,
kidneys (cortex and medulla: DOTATATE binds in the cortex), spleen, lung bases above the diaphragm domes
(heterogeneity: lung beside liver and spleen), bone (vertebrae with discs and canal, ribs, and their marrow), bowel
loops with gas pockets (heterogeneity), aorta, and lesions (``LESION_LABEL_START`` onwards, one label each): liver
metastases (some necrotic: a core without uptake), a para-aortic lymph node, a vertebral bone lesion and a lung
nodule (the last two sit where VDK with density scaling is least accurate).

HU values (our choice, typical non-contrast CT): fat -100, muscle 45, soft tissue 35, liver 58, spleen 48, kidney 32,
blood 40, lung -840, trabecular bone 220, cortical bone 900, bowel wall 40, bowel content 15, gas -950, viable lesion
45, necrosis 20; quantum noise 12 HU (at 1 mm^3, scaled with voxel volume).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from ImagingBasics.volume import Volume

#: Label values of the phantom's label map (lesions: one label each from LESION_LABEL_START).
LABELS: Dict[int, str] = {1: "body", 2: "liver", 3: "right kidney", 4: "left kidney", 5: "spleen", 6: "lungs",
                          7: "bone", 8: "bowel"}
LESION_LABEL_START = 10
#: Diaphragm domes fall by this many mm per mm^2 from their tops (laterally and posteriorly: the recesses).
DOME_CURVATURE = 0.012

HU = {"air": -1000.0, "fat": -100.0, "muscle": 45.0, "soft": 35.0, "liver": 58.0, "spleen": 48.0, "kidney": 32.0,
      "blood": 40.0, "lung": -840.0, "trabecular": 220.0, "cortical": 900.0, "disc": 80.0, "bowel_wall": 40.0,
      "bowel_content": 15.0, "gas": -950.0, "lesion": 45.0, "necrosis": 20.0}

#: Preset grids (CT voxels x, y, z; spacing mm): ``full`` is Li 2020's 512 x 512 x 130 at 0.98 x 0.98 x 3 mm;
#: ``small`` bins it 2 x 2 in-plane over half the slices (the same body, for CPU-sized work).
GRIDS = {"full": ((512, 512, 130), (0.98, 0.98, 3.0)), "small": ((256, 256, 64), (1.96, 1.96, 3.0))}


@dataclass
class Ellipsoid:
    centre_mm: Tuple[float, float, float]
    semi_axes_mm: Tuple[float, float, float]

    def inside(self, x, y, z) -> np.ndarray:
        (cx, cy, cz), (a, b, c) = self.centre_mm, self.semi_axes_mm
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1.0


@dataclass
class Lesion:
    site: str  # "liver", "node", "bone" or "lung"
    centre_mm: Tuple[float, float, float]
    radius_mm: float
    necrotic_radius_mm: float = 0.0  # a core without uptake (0: none)


@dataclass
class TorsoParams:
    """Every drawn number of one torso (mm)."""

    body_semi_axes: Tuple[float, float]  # x, y
    fat_mm: float
    spine_y: float
    liver: Ellipsoid
    spleen: Ellipsoid
    kidneys: Tuple[Ellipsoid, Ellipsoid]  # right (x < 0), left
    cortex_mm: float
    dome_z: Tuple[float, float]  # right and left diaphragm dome tops
    bowel_path: List[Tuple[float, float, float]] = field(default_factory=list)  # a polyline (x, y, z)
    bowel_radius_mm: float = 14.0
    gas_pockets: List[Tuple[float, float, float, float]] = field(default_factory=list)  # x, y, z, radius
    lesions: List[Lesion] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def draw_torso(rng: np.random.Generator, n_lesions: Tuple[int, int] = (2, 5)) -> TorsoParams:
    """Draw a torso: sizes within adult ranges, organ positions jittered by 1-2 cm, 2-5 lesions."""
    ax, ay = rng.uniform(150, 185), rng.uniform(105, 130)
    u = rng.uniform
    liver = Ellipsoid((u(-75, -55), u(-5, 15), u(25, 45)), (u(85, 100), u(75, 90), u(60, 75)))
    spleen = Ellipsoid((u(85, 105), u(45, 60), u(30, 50)), (u(25, 32), u(40, 50), u(45, 60)))
    kz = u(-20, 0)
    right = Ellipsoid((u(-80, -65), u(50, 60), kz - u(5, 15)), (u(27, 33), u(22, 27), u(50, 60)))
    left = Ellipsoid((u(65, 80), u(50, 60), kz + u(0, 10)), (u(27, 33), u(22, 27), u(50, 60)))
    params = TorsoParams(body_semi_axes=(ax, ay), fat_mm=u(10, 30), spine_y=u(55, 65), liver=liver, spleen=spleen,
                         kidneys=(right, left), cortex_mm=u(6, 9), dome_z=(u(85, 100), u(75, 90)),
                         bowel_radius_mm=u(11, 15))
    params.bowel_path = _bowel_path(rng, ax, ay)
    params.gas_pockets = [(*params.bowel_path[i], u(6, 12)) for i in rng.choice(len(params.bowel_path), 4, replace=False)]
    params.lesions = _draw_lesions(rng, params, int(rng.integers(n_lesions[0], n_lesions[1] + 1)))
    return params


def _bowel_path(rng: np.random.Generator, ax: float, ay: float) -> List[Tuple[float, float, float]]:
    """A meandering loop in the anterior lower abdomen (below the liver, in front of the kidneys)."""
    t = np.linspace(0, 1, 40)
    phase = rng.uniform(0, 2 * np.pi, 3)
    x = 0.55 * ax * np.sin(2 * np.pi * (1.5 * t) + phase[0])
    y = -0.35 * ay + 0.2 * ay * np.sin(2 * np.pi * 2.5 * t + phase[1])
    z = -90 + 80 * t + 12 * np.sin(2 * np.pi * 3 * t + phase[2])
    return [(float(a), float(b), float(c)) for a, b, c in zip(x, y, z)]


def _draw_lesions(rng: np.random.Generator, p: TorsoParams, n: int) -> List[Lesion]:
    """Liver metastases first (1-3), then a node, a bone and a lung lesion while the count lasts."""
    lesions: List[Lesion] = []
    n_liver = min(n, int(rng.integers(1, 4)))
    (cx, cy, cz), (a, b, c) = p.liver.centre_mm, p.liver.semi_axes_mm
    for _ in range(n_liver):
        r = float(rng.uniform(8, 28))
        d = rng.uniform(0, 0.55, 3) * rng.choice([-1, 1], 3)
        necrotic = float(rng.uniform(0.3, 0.6) * r) if r > 15 and rng.uniform() < 0.5 else 0.0
        lesions.append(Lesion("liver", (cx + d[0] * a, cy + d[1] * b, cz + d[2] * c - 10), r, necrotic))
    others = [("node", (float(rng.uniform(-30, -15)), p.spine_y - 45, float(rng.uniform(-50, 0))), rng.uniform(8, 15)),
              ("bone", (0.0, p.spine_y, float(rng.uniform(-60, 40))), rng.uniform(8, 12)),
              _lung_lesion(rng, p)]
    for site, centre, r in others[: max(0, n - n_liver)]:
        lesions.append(Lesion(site, centre, float(r)))
    return lesions


def _lung_lesion(rng: np.random.Generator, p: TorsoParams):
    """A nodule in the posterior right lung base, just above the diaphragm (in the small field of view too)."""
    x, y, r = float(rng.uniform(-110, -80)), float(rng.uniform(45, 70)), float(rng.uniform(6, 12))
    dome = p.dome_z[0] - DOME_CURVATURE * ((x + 70) ** 2 + 0.6 * (y - 10) ** 2)
    return "lung", (x, y, float(dome + r + 6)), r


def _coordinates(grid: Volume) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable x [1,1,nx], y [1,ny,1], z [nz,1,1] (mm) of the voxel centres (axis-aligned grid)."""
    nx, ny, nz = grid.size
    sx, sy, sz = grid.spacing
    ox, oy, oz = grid.origin
    x = (ox + sx * np.arange(nx, dtype=np.float32))[None, None, :]
    y = (oy + sy * np.arange(ny, dtype=np.float32))[None, :, None]
    z = (oz + sz * np.arange(nz, dtype=np.float32))[:, None, None]
    return x, y, z


def centred_grid(size_xyz: Tuple[int, int, int], spacing_mm: Tuple[float, float, float]) -> Volume:
    """An empty grid with its centre at (0, 0, 0) mm."""
    origin = tuple(-0.5 * (n - 1) * s for n, s in zip(size_xyz, spacing_mm))
    return Volume(np.zeros(size_xyz[::-1], np.uint8), spacing_mm, origin)


def _tube(x, y, z, path: List[Tuple[float, float, float]], radius: float) -> np.ndarray:
    """Voxels within ``radius`` of a polyline (segment by segment, only near each segment's bounding box)."""
    shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
    out = np.zeros(shape, bool)
    pts = np.asarray(path, np.float32)
    for a, b in zip(pts[:-1], pts[1:]):
        ab = b - a
        t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / float(ab @ ab)
        t = np.clip(t, 0.0, 1.0)
        d2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
        out |= d2 <= radius ** 2
    return out


def _sphere(x, y, z, centre, radius) -> np.ndarray:
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius ** 2


def _ribs(x, y, z, p: TorsoParams) -> np.ndarray:
    """Rib arcs: 9 mm bands every 28 mm along z, sloping down anteriorly, in a 10 mm shell inside the body wall,
    from the spine laterally and anteriorly (not across the front of the abdomen), above z = -40 mm."""
    ax, ay = p.body_semi_axes
    inner = (x / (ax - p.fat_mm - 8)) ** 2 + (y / (ay - p.fat_mm - 8)) ** 2
    shell = (inner <= 1.0) & (inner >= ((ax - p.fat_mm - 18) / (ax - p.fat_mm - 8)) ** 2)
    slope_z = z + 0.35 * (-y)  # anterior (y < 0) ribs lie lower
    band = np.mod(slope_z + 14.0, 28.0) < 9.0
    lateral = y > -0.45 * ay
    return shell & band & lateral & (z > -40)


def torso_on_grid(p: TorsoParams, grid: Volume, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """(HU float32 [z,y,x], labels uint8, compartment masks) of a torso on ``grid``.

    Compartments (boolean arrays) carry the activity: remainder, liver, kidney cortex/medulla per side, spleen, lungs,
    marrow, bowel, and one per lesion (viable part); cortical bone, gas, necrosis and air carry none.
    """
    x, y, z = _coordinates(grid)
    ax, ay = p.body_semi_axes
    r_body = (x / ax) ** 2 + (y / ay) ** 2
    body = np.broadcast_to(r_body <= 1.0, grid.shape)
    muscle_wall = (r_body <= 1.0) & ((x / (ax - p.fat_mm)) ** 2 + (y / (ay - p.fat_mm)) ** 2 > 1.0)
    hu = np.where(body, HU["soft"], HU["air"]).astype(np.float32)
    hu[np.broadcast_to(muscle_wall, grid.shape)] = HU["fat"]
    labels = np.where(body, 1, 0).astype(np.uint8)

    # lungs: above the diaphragm, inside the rib cage, behind and beside the (absent) heart
    cavity = (x / (ax - p.fat_mm - 12)) ** 2 + (y / (ay - p.fat_mm - 12)) ** 2 <= 1.0
    right_dome = p.dome_z[0] - DOME_CURVATURE * ((x + 70) ** 2 + 0.6 * (y - 10) ** 2)
    left_dome = p.dome_z[1] - DOME_CURVATURE * ((x - 70) ** 2 + 0.6 * (y - 10) ** 2)
    dome = np.where(x < 0, right_dome, left_dome)
    paravertebral = (np.abs(x) < 32) & (y > p.spine_y - 28)  # the spine and its muscles, not lung
    lungs = cavity & (z > dome) & (np.abs(x) > 25 - 0.3 * y) & ~paravertebral
    hu[lungs] = HU["lung"]
    labels[lungs] = 6

    liver = p.liver.inside(x, y, z) & (z < dome - 3) & cavity
    hu[liver], labels[liver] = HU["liver"], 2
    spleen = p.spleen.inside(x, y, z) & (z < dome - 3)
    hu[spleen], labels[spleen] = HU["spleen"], 5
    compartments: Dict[str, np.ndarray] = {}
    for side, (label, kidney) in (("right", (3, p.kidneys[0])), ("left", (4, p.kidneys[1]))):
        k_in = kidney.inside(x, y, z)
        shrunk = Ellipsoid(kidney.centre_mm, tuple(a - p.cortex_mm for a in kidney.semi_axes_mm))
        medulla = shrunk.inside(x, y, z) & k_in
        hu[k_in], labels[k_in] = HU["kidney"], label
        compartments[f"{side} kidney cortex"] = k_in & ~medulla
        compartments[f"{side} kidney medulla"] = medulla

    bowel = _tube(x, y, z, p.bowel_path, p.bowel_radius_mm) & (labels == 1) & np.broadcast_to(r_body < 0.8, grid.shape)
    lumen = _tube(x, y, z, p.bowel_path, p.bowel_radius_mm - 3) & bowel
    hu[bowel], labels[bowel] = HU["bowel_wall"], 8
    hu[lumen] = HU["bowel_content"]
    gas = np.zeros(grid.shape, bool)
    for gx, gy, gz, gr in p.gas_pockets:
        gas |= _sphere(x, y, z, (gx, gy, gz), gr) & lumen
    hu[gas] = HU["gas"]

    aorta = ((x - 15) ** 2 + (y - (p.spine_y - 32)) ** 2 <= 11 ** 2) & np.broadcast_to(True, grid.shape)
    hu[aorta & (labels == 1)] = HU["blood"]

    # bone: vertebral bodies (cortical rim, trabecular core, discs every 30 mm), canal, ribs
    r_vb = (x ** 2 + (y - p.spine_y) ** 2) ** 0.5
    vertebra = np.broadcast_to(r_vb <= 20, grid.shape)
    disc = np.mod(z + 15.0, 30.0) < 6.0
    canal = (x ** 2 + (y - p.spine_y - 32) ** 2) <= 9 ** 2
    posterior = (np.abs(x) <= 28) & (y > p.spine_y + 18) & (y < p.spine_y + 50) & ~canal & ~disc
    cortical_rim = vertebra & np.broadcast_to(r_vb > 17, grid.shape) & ~disc
    trabecular = vertebra & ~cortical_rim & ~disc
    ribs = _ribs(x, y, z, p) & (labels == 1)
    bone = (vertebra & ~disc) | np.broadcast_to(posterior, grid.shape) | ribs
    labels[bone] = 7
    hu[vertebra & disc] = HU["disc"]
    hu[trabecular] = HU["trabecular"]
    hu[cortical_rim | np.broadcast_to(posterior, grid.shape) | ribs] = HU["cortical"]
    hu[np.broadcast_to(canal, grid.shape)] = HU["soft"]
    compartments["marrow"] = trabecular.copy()

    viable_lesions = []
    for i, lesion in enumerate(p.lesions):
        ball = _sphere(x, y, z, lesion.centre_mm, lesion.radius_mm) & body
        core = _sphere(x, y, z, lesion.centre_mm, lesion.necrotic_radius_mm) if lesion.necrotic_radius_mm > 0 else None
        hu[ball] = HU["lesion"] if lesion.site != "bone" else 0.5 * (HU["lesion"] + HU["trabecular"])
        if core is not None:
            hu[core & ball] = HU["necrosis"]
        labels[ball] = LESION_LABEL_START + i
        viable_lesions.append(ball & ~core if core is not None else ball)
    compartments["liver"] = labels == 2
    compartments["spleen"] = labels == 5
    compartments["lungs"] = labels == 6
    compartments["bowel"] = (labels == 8) & ~gas
    for side in ("right", "left"):
        label = 3 if side == "right" else 4
        for part in ("cortex", "medulla"):
            compartments[f"{side} kidney {part}"] &= labels == label
    compartments["marrow"] &= labels == 7
    taken = np.zeros(grid.shape, bool)
    for mask in compartments.values():
        taken |= mask
    for i, viable in enumerate(viable_lesions):
        compartments[f"lesion {LESION_LABEL_START + i}"] = viable
        taken |= viable
    soft = (hu > -500) & (hu < 150)
    compartments["remainder"] = (labels == 1) & soft & ~taken
    hu = _add_noise(hu, body, grid, rng)
    return hu, labels, compartments


def _add_noise(hu: np.ndarray, body: np.ndarray, grid: Volume, rng: np.random.Generator) -> np.ndarray:
    """Quantum noise (12 HU at 1 mm^3, ~1/sqrt(voxel volume)) inside the body and a little in the air."""
    sigma = 12.0 / np.sqrt(max(float(np.prod(grid.spacing)), 1e-6))
    noise = rng.standard_normal(hu.shape, dtype=np.float32) * sigma
    noise[~body] *= 0.3
    return np.clip(hu + noise, -1024, 3000)
