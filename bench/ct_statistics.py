"""Do the randomised phantoms' CTs look like real chest CTs? Lung HU histogram, noise and edge sharpness, side by side.

For every real chest CT in ``../shared/data`` and for synthetic phantoms (randomised acquisition, and a few with the
acquisition switched off for comparison), on the lungs of the built-in segmentation:

* lung HU histogram: the 5th, 25th, 50th, 75th and 95th percentiles and the share of lung below -950 HU;
* noise level: the global noise level of Christianson et al. (AJR Am J Roentgenol 2015): the mode of the histogram of local
  standard deviations (3 x 3 pixels in plane) over soft tissue (0-100 HU after smoothing, eroded);
* noise texture: the mean spatial frequency (lp/mm) of the noise power spectrum, averaged over regions of about
  16 x 16 mm of soft tissue after removing each region's plane fit (low: smooth kernel, high: sharp kernel);
* edge sharpness: the 10-90 % rise distance (mm) of the skin-air edge along the left-right axis of the central
  slices, and the overshoot (HU above the tissue plateau just inside the edge: sharp kernels ring).

Writes ``ct_statistics.md`` (a table, and for each measure the range over the real CTs against the range over the
randomised phantoms: covered or not) and ``ct_statistics.png`` to ``--out``.

    .venv/bin/python bench/ct_statistics.py [--data ../shared/data] [--out bench/results] [--phantoms 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
SOFT_TISSUE_HU = (0.0, 100.0)
LOCAL_SD_PIXELS = 3
NPS_ROI_MM = 16.0
PERCENTILES = (5, 25, 50, 75, 95)


# --- measures ------------------------------------------------------------------------------------------------------
def lung_histogram(hu: np.ndarray, lungs: np.ndarray) -> Dict[str, float]:
    """Percentiles of lung HU and the share (%) of lung below -950 HU."""
    values = hu[lungs > 0].astype(np.float64)
    out = {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}
    out["below_950_percent"] = 100.0 * float((values < -950).mean())
    return out


def soft_tissue_mask(hu: np.ndarray, pixel_mm: float, erosion_pixels: int = 2) -> np.ndarray:
    """Soft tissue: 0-100 HU after a 2 mm in-plane Gaussian smoothing (so that noise, however strong, does not decide
    which voxels count), eroded in plane so that local windows do not straddle an edge."""
    sigma = max(2.0 / pixel_mm, 0.5)
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), (0.0, sigma, sigma))
    mask = (smooth >= SOFT_TISSUE_HU[0]) & (smooth <= SOFT_TISSUE_HU[1])
    structure = np.zeros((1, 3, 3), bool)
    structure[0] = True
    return ndimage.binary_erosion(mask, structure, iterations=erosion_pixels)


def global_noise_level_hu(hu: np.ndarray, mask: np.ndarray) -> float:
    """Christianson et al. (AJR Am J Roentgenol 2015): the mode of the local standard deviations (3 x 3 in plane) in ``mask``,
    from a histogram of 1 HU bins (NaN when the mask holds fewer than 1000 voxels)."""
    if mask.sum() < 1000:
        return float("nan")
    size = (1, LOCAL_SD_PIXELS, LOCAL_SD_PIXELS)
    x = hu.astype(np.float64)
    mean = ndimage.uniform_filter(x, size)
    var = ndimage.uniform_filter(x * x, size) - mean * mean
    n = LOCAL_SD_PIXELS**2
    sd = np.sqrt(np.clip(var, 0.0, None) * n / (n - 1))[mask]
    counts, edges = np.histogram(sd, bins=np.arange(0.0, float(np.percentile(sd, 99)) + 2.0, 1.0))
    k = int(np.argmax(counts))
    return float((edges[k] + edges[k + 1]) / 2.0)


def _plane_residual(roi: np.ndarray) -> np.ndarray:
    ny, nx = roi.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    design = np.stack([np.ones(roi.size), yy.ravel(), xx.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design, roi.ravel(), rcond=None)
    return roi - (design @ coef).reshape(roi.shape)


def nps_mean_frequency(hu: np.ndarray, mask: np.ndarray, pixel_mm: float, max_rois: int = 400,
                       rng: Optional[np.random.Generator] = None) -> float:
    """Mean radial spatial frequency (lp/mm) of the noise power spectrum, from up to ``max_rois`` square regions of
    about 16 mm (at least 6 pixels) lying wholly in ``mask`` (each detrended by a plane fit); NaN when fewer than 10
    regions fit."""
    rng = rng or np.random.default_rng(0)
    r = max(6, int(round(NPS_ROI_MM / pixel_mm)))
    inside = ndimage.minimum_filter(mask.astype(np.uint8), size=(1, r, r), mode="constant") > 0
    centres = np.argwhere(inside[:, r // 2:-r // 2, r // 2:-r // 2])
    if len(centres) < 10:
        return float("nan")
    pick = centres[rng.choice(len(centres), size=min(max_rois, len(centres)), replace=False)]
    power = np.zeros((r, r))
    for k, j, i in pick:
        roi = hu[k, j:j + r, i:i + r].astype(np.float64)
        power += np.abs(np.fft.fft2(_plane_residual(roi))) ** 2
    f = np.fft.fftfreq(r, d=pixel_mm)
    radial = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    power[0, 0] = 0.0
    return float((power * radial).sum() / power.sum())


def skin_edge(hu: np.ndarray, pixel_mm: float, slices: Optional[List[int]] = None) -> Tuple[float, float]:
    """(10-90 % rise distance in mm, overshoot in HU) of the skin-air edge along x, from the rows through the middle
    third of the body on the given slices (default: the central fifth of the slices); NaN when no clean edge."""
    nz, ny, nx = hu.shape
    slices = slices if slices is not None else list(range(2 * nz // 5, 3 * nz // 5 + 1))
    widths, overshoots = [], []
    for k in slices:
        body_rows = np.flatnonzero((hu[k] > -300).sum(axis=1) > nx // 8)
        if body_rows.size < 6:
            continue
        rows = body_rows[len(body_rows) // 3: 2 * len(body_rows) // 3]
        for j in rows:
            profile = hu[k, j].astype(np.float64)
            for p in (profile, profile[::-1]):  # the patient's right and left edges
                w, o = _edge_on_profile(p, pixel_mm)
                if np.isfinite(w):
                    widths.append(w)
                    overshoots.append(o)
    if not widths:
        return float("nan"), float("nan")
    return float(np.median(widths)), float(np.median(overshoots))


def _edge_on_profile(profile: np.ndarray, pixel_mm: float) -> Tuple[float, float]:
    """The first air-to-tissue edge of a profile: 10-90 % rise distance (mm, linear interpolation between samples)
    between the air level and the tissue plateau 6-12 mm inside, and the overshoot above that plateau."""
    tissue = np.flatnonzero(profile > -300)
    if tissue.size == 0 or tissue[0] < 4:
        return float("nan"), float("nan")
    e = int(tissue[0])
    inner = max(1, int(round(6.0 / pixel_mm)))
    outer = max(inner + 1, int(round(12.0 / pixel_mm)))
    if e + outer >= profile.size:
        return float("nan"), float("nan")
    air = float(np.median(profile[max(0, e - 8):e - 2])) if e - 2 > 0 else float("nan")
    plateau = float(np.median(profile[e + inner:e + outer]))
    step = plateau - air
    if not np.isfinite(step) or step < 600.0 or air > -800.0:
        return float("nan"), float("nan")
    seg = profile[max(0, e - 8):e + inner]
    x = np.arange(seg.size) * pixel_mm
    lo, hi = air + 0.1 * step, air + 0.9 * step
    above_lo = np.flatnonzero(seg >= lo)
    above_hi = np.flatnonzero(seg >= hi)
    if above_lo.size == 0 or above_hi.size == 0 or above_lo[0] == 0 or above_hi[0] == 0:
        return float("nan"), float("nan")
    x_lo = np.interp(lo, seg[above_lo[0] - 1:above_lo[0] + 1], x[above_lo[0] - 1:above_lo[0] + 1])
    x_hi = np.interp(hi, seg[above_hi[0] - 1:above_hi[0] + 1], x[above_hi[0] - 1:above_hi[0] + 1])
    overshoot = float(seg[above_hi[0]:].max() - plateau)
    return float(x_hi - x_lo), max(overshoot, 0.0)


def measure(hu: np.ndarray, lungs: np.ndarray, spacing_mm) -> Dict[str, float]:
    """Every measure of one CT (``hu`` and ``lungs`` as z, y, x arrays; ``spacing_mm`` as x, y, z)."""
    soft = soft_tissue_mask(hu, float(spacing_mm[0]))
    width, overshoot = skin_edge(hu, float(spacing_mm[0]))
    out = lung_histogram(hu, lungs)
    out.update({"noise_hu": global_noise_level_hu(hu, soft),
                "nps_mean_lp_mm": nps_mean_frequency(hu, soft, float(spacing_mm[0])),
                "edge_10_90_mm": width, "edge_overshoot_hu": overshoot,
                "pixel_mm": float(spacing_mm[0]), "slice_mm": float(spacing_mm[2])})
    return out


# --- cases ---------------------------------------------------------------------------------------------------------
def real_cases(data: Path) -> List[Tuple[str, Callable]]:
    """The real chest CTs (the abdominal CT and the raw GATE file are left out: the pipeline refuses them)."""
    sys.path.insert(0, str(HERE))
    from real_data_report import CASES

    return [(name, reader) for name, _what, reader in CASES if "abdomen" not in name and "raw" not in name]


def range_ends():
    """Acquisitions at the ends of the drawn ranges (synthetic/acquisition.py): what the model can make, beside what a
    small random sample happens to show. (name, size, AcquisitionParams, pathology probabilities)."""
    from CTPerfusionMappingLib.synthetic.acquisition import AcquisitionParams

    def acq(**kw):
        base = dict(kernel_sharpness=0.5, relative_dose=0.5, slice_thickness_mm=2.5, pixel_mm=0.8, contrast_hu=0.0,
                    hu_offset=0.0, lung_density_factor=1.0, breathing_mm=0.0, downsampled_mm=None, apex_cut_mm=0.0,
                    base_cut_mm=0.0, lateral_fov_fraction=1.05)
        base.update(kw)
        return AcquisitionParams(**base)

    return [
        ("sharpest kernel, lowest dose, thinnest slices, deepest breath, emphysema", "full",
         acq(kernel_sharpness=1.0, relative_dose=0.1, slice_thickness_mm=0.625, pixel_mm=0.62, lung_density_factor=0.55),
         {"emphysema": 1.0}),
        ("smoothest kernel, standard dose, downsampled to 5.5 x 7 mm, shallowest breath, contrast", "full",
         acq(kernel_sharpness=0.0, relative_dose=1.0, slice_thickness_mm=5.0, pixel_mm=0.98, lung_density_factor=1.75,
             contrast_hu=300.0, downsampled_mm=(5.5, 7.0)), {"emphysema": 0.0}),
        ("small, smoothest kernel, standard dose, shallowest breath", "small",
         acq(kernel_sharpness=0.0, relative_dose=1.0, slice_thickness_mm=5.0, pixel_mm=3.90625,
             lung_density_factor=1.75), {"emphysema": 0.0}),
    ]


def phantom_cases(n: int, workdir: Path) -> List[Tuple[str, Callable]]:
    """``n`` randomised phantoms (half small, half full-size), the ends of the acquisition's ranges, and two with the
    acquisition switched off."""
    from CTPerfusionMappingLib.synthetic.cohort import generate_case

    def make(seed, size, acquisition, pathology=None):
        def read(_data):
            return generate_case(seed, size, pathology_probabilities=pathology, acquisition=acquisition).ct
        return read

    out = []
    for i in range(n):
        size = "small" if i % 2 == 0 else "full"
        out.append((f"phantom {size} #{100 + i}, random", make(100 + i, size, "random")))
    for k, (name, size, acquisition, pathology) in enumerate(range_ends()):
        out.append((f"phantom {size} #{200 + k}, range end: {name}", make(200 + k, size, acquisition, pathology)))
    out.append(("phantom small #100, acquisition none", make(100, "small", None)))
    out.append(("phantom full #101, acquisition none", make(101, "full", None)))
    return out


def run(data: Path, n_phantoms: int) -> List[Tuple[str, Dict[str, float]]]:
    from CTPerfusionMappingLib.lungseg import segment_lungs
    from ImagingBasics.volume import Volume

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, reader in real_cases(data) + phantom_cases(n_phantoms, Path(tmp)):
            t0 = time.perf_counter()
            ct: Volume = reader(data)
            lungs = segment_lungs(ct).lungs.array
            m = measure(np.asarray(ct.array, np.float32), lungs, ct.spacing)
            m["seconds"] = time.perf_counter() - t0
            rows.append((name, m))
            print(f"{name}: " + ", ".join(f"{k} {v:.3g}" for k, v in m.items()), flush=True)
    return rows


COLUMNS = [("pixel_mm", "pixel mm", "{:.2f}"), ("slice_mm", "slice mm", "{:.2f}"), ("p5", "lung P5", "{:.0f}"),
           ("p50", "lung P50", "{:.0f}"), ("p95", "lung P95", "{:.0f}"), ("below_950_percent", "<-950 %", "{:.1f}"),
           ("noise_hu", "noise HU", "{:.0f}"), ("nps_mean_lp_mm", "NPS mean lp/mm", "{:.2f}"),
           ("edge_10_90_mm", "edge 10-90 mm", "{:.2f}"), ("edge_overshoot_hu", "overshoot HU", "{:.0f}")]


def coverage(rows, groups=("random",)) -> List[Tuple[str, Tuple[float, float], Tuple[float, float], bool]]:
    """Per measure: (real min, max), (min, max) over the phantoms whose name holds one of ``groups``, and whether
    that range holds the real one."""
    out = []
    for key, title, _fmt in COLUMNS:
        real = [m[key] for n, m in rows if not n.startswith("phantom") and np.isfinite(m[key])]
        synth = [m[key] for n, m in rows
                 if n.startswith("phantom") and any(g in n for g in groups) and np.isfinite(m[key])]
        if not real or not synth:
            continue
        r, s = (min(real), max(real)), (min(synth), max(synth))
        out.append((title, r, s, s[0] <= r[0] and s[1] >= r[1]))
    return out


def write_report(rows, out: Path) -> None:
    lines = [
        "# CT statistics: real chest CTs and the randomised phantoms", "",
        f"{date.today().isoformat()}, {platform.node()}, {os.cpu_count()} cores. Made by `bench/ct_statistics.py`; "
        "lungs from the built-in segmentation. Noise: global noise level (Christianson et al., AJR Am J Roentgenol 2015) in "
        "soft tissue; NPS: mean frequency of the noise power spectrum; edge: skin-air edge along left-right.", "",
        "| CT | " + " | ".join(t for _k, t, _f in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, m in rows:
        cells = ["n/a" if not np.isfinite(m[k]) else f.format(m[k]) for k, _t, f in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Do the randomised phantoms cover the real CTs?", "",
              "The random sample is small (full-size phantoms take minutes each); the range ends are phantoms made with "
              "acquisitions at the ends of the drawn ranges, i.e. what the acquisition model can produce.", "",
              "| measure | real CTs | random sample | covered | random sample and range ends | covered |",
              "|---|---|---|---|---|---|"]
    wide = {title: (s, ok) for title, _r, s, ok in coverage(rows, ("random", "range end"))}
    for title, r, s, ok in coverage(rows):
        s2, ok2 = wide[title]
        lines.append(f"| {title} | {r[0]:.3g} to {r[1]:.3g} | {s[0]:.3g} to {s[1]:.3g} | {'yes' if ok else 'no'} | "
                     f"{s2[0]:.3g} to {s2[1]:.3g} | {'yes' if ok2 else 'no'} |")
    (out / "ct_statistics.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_figure(rows, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("p50", "lung median HU"), ("noise_hu", "noise (HU)"), ("nps_mean_lp_mm", "NPS mean frequency (lp/mm)"),
            ("edge_10_90_mm", "skin edge 10-90 % (mm)")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6))
    groups = [("real", lambda n: not n.startswith("phantom"), "tab:red"),
              ("phantoms, random", lambda n: n.startswith("phantom") and "random" in n, "tab:blue"),
              ("phantoms, range ends", lambda n: n.startswith("phantom") and "range end" in n, "tab:green"),
              ("phantoms, none", lambda n: n.startswith("phantom") and "none" in n, "tab:grey")]
    for ax, (key, title) in zip(axes, keys):
        for g, (_label, pick, colour) in enumerate(groups):
            values = [m[key] for n, m in rows if pick(n) and np.isfinite(m[key])]
            ax.scatter(np.full(len(values), g) + np.linspace(-0.15, 0.15, max(len(values), 1))[:len(values)], values,
                       color=colour, s=18)
        ax.set_xticks(range(len(groups)), [g[0] for g in groups], rotation=20)
        ax.set_ylabel(title)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "ct_statistics.png", dpi=90)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--phantoms", type=int, default=8, help="randomised phantoms (half small, half full-size)")
    args = ap.parse_args()
    rows = run(args.data, args.phantoms)
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(rows, args.out)
    write_figure(rows, args.out)
    print(f"wrote {args.out / 'ct_statistics.md'} and {args.out / 'ct_statistics.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
