"""Validation report of the Lu-177 Monte Carlo engine (issue 6, point 5; the fast versions are in Testing/).

    python bench/validate_mc.py [--decays 400000] [--out bench/results]

Writes ``mc_validation.md`` and figures to --out:

1. Electron energy balance: Lu-177 electrons from a point in a phantom larger than their range deposit 0.1479 MeV/decay.
2. Voxel S values at 3, 4.42 and 4.8 mm against Lanconelli et al. 2012 (../shared/data/reference), voxel by voxel, and
   the self voxel against the second code's 4.795 mm kernel (PyTheranostics).
3. A heterogeneous slab phantom (soft tissue | cortical bone | lung, 1 mm voxels), the activity uniform in the soft
   tissue: Monte Carlo dose against the density-scaled voxel-kernel estimate of Li 2020 (soft-tissue kernel convolved with
   the activity, x 1.04 / local density), showing the interface effects the kernel method misses.
4. Spheres (DoseCNNLib.physics.sphere_model): Lu-177 uniform in soft-tissue spheres of 1-60 mm radius against the published
   sphere S values (absorbed energy per decay), and photon absorbed fractions of 113 and 208 keV photons in spheres of
   1-300 mm radius against their analytic bounds (first-flight escape probability; first-interaction energy).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "reference"


def lanconelli(voxel: str) -> dict:
    path = REFERENCE / "lanconelli_lu177_vsv" / f"177Lu{voxel}mmsoft.txt"
    rows = [line.split() for line in path.read_text(encoding="latin-1").splitlines()[2:] if line.strip()]
    return {(int(i), int(j), int(k)): float(s) for i, j, k, s in rows}


def energy_balance(n: int) -> dict:
    from DoseCNNLib.physics.decay import load_decay_data
    from DoseCNNLib.physics.electron_transport import electron_tables, transport_electrons
    from DoseCNNLib.physics.kernels import sample_emissions
    from DoseCNNLib.physics.photon_transport import isotropic_directions, uniform_grid

    lu = load_decay_data("Lu-177")
    rng = np.random.default_rng(1)
    em = sample_emissions(lu, n, rng)
    materials, density = uniform_grid((31, 31, 31), 3, 1.0)
    pos = np.full((len(em.electron_mev), 3), 15.5 * 0.5)
    r = transport_electrons(pos, isotropic_directions(len(pos), rng), em.electron_mev, em.electron_weight, materials,
                            density, (0.5, 0.5, 0.5), electron_tables(), seed=2)
    return {"deposited_mev_per_decay": float(r.deposit_mev.sum() / n), "icrp107_mev_per_decay": lu.electron_energy_per_decay_mev,
            "escaped": r.escaped_mev}


def kernel_comparison(n: int, out: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from DoseCNNLib.physics.kernels import voxel_s_values
    from ImagingBasics.files import save_figure

    rows = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, voxel in zip(axes, ("3", "4.42", "4.8")):
        ref = lanconelli(voxel)
        v = float(voxel)
        k = voxel_s_values("Lu-177", (v, v, v), size=11, n_decays=n, photon_size=41, seed=3)
        c = 5
        ours, theirs, dist = [], [], []
        for (i, j, kk), s in ref.items():
            if max(i, j, kk) <= 5:
                ours.append(k.total[c + kk, c + j, c + i])
                theirs.append(s)
                dist.append(v * np.sqrt(i * i + j * j + kk * kk))
        ours, theirs, dist = map(np.array, (ours, theirs, dist))
        for key in ((0, 0, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1), (0, 0, 2), (0, 0, 3)):
            o = float(k.total[c + key[2], c + key[1], c + key[0]])
            rows.append({"voxel_mm": voxel, "ijk": key, "ours": o, "lanconelli": ref[key], "ratio": o / ref[key]})
        ax.loglog(dist[dist > 0], theirs[dist > 0], "o", label="Lanconelli 2012", ms=4)
        ax.loglog(dist[dist > 0], ours[dist > 0], "x", label="this engine", ms=4)
        ax.set_title(f"{voxel} mm: self {ours[dist == 0][0]:.3f} vs {theirs[dist == 0][0]:.3f}", fontsize=9)
        ax.set_xlabel("distance (mm)")
        ax.set_ylabel("S (mGy/(MBq s))")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "mc_kernels_vs_lanconelli.png", dpi=90)
    return rows


def slab_phantom(n: int, out: Path) -> dict:
    """Soft tissue (activity) | bone | lung along x, 1 mm voxels; MC vs density-scaled kernel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import signal

    from DoseCNNLib.physics.kernels import voxel_s_values
    from DoseCNNLib.physics.materials import density_from_hu_li2020
    from DoseCNNLib.physics.monte_carlo import run_mc
    from ImagingBasics.files import save_figure
    from ImagingBasics.volume import Volume

    shape = (24, 24, 60)
    hu = np.zeros(shape, np.int16)
    hu[:, :, 20:30] = 1200  # cortical bone
    hu[:, :, 30:45] = -750  # lung
    ct = Volume(hu, (1.0, 1.0, 1.0))
    activity = np.zeros(shape, np.float32)
    activity[:, :, :20] = 1.0  # soft tissue (and also at the lung side below)
    activity[:, :, 45:] = 1.0
    activity *= 1e6 / activity.sum()
    mc = run_mc(ct.with_array(activity), ct, n_decays=n, batches=8, seed=5)
    kernel = voxel_s_values("Lu-177", (1.0, 1.0, 1.0), size=41, n_decays=n, photon_size=41, seed=6).total
    density = density_from_hu_li2020(hu.astype(np.float64))
    vdk = signal.fftconvolve(activity.astype(np.float64) / 1e6, kernel, mode="same")  # MBq x mGy/(MBq s)
    vdk = vdk * 1.04 / density  # Li 2020's density scaling
    profile_mc = mc.dose_rate_mgy_s.array[4:20, 4:20, :].mean(axis=(0, 1))
    profile_vdk = vdk[4:20, 4:20, :].mean(axis=(0, 1))
    x = np.arange(shape[2]) + 0.5
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.semilogy(x, profile_mc, label="Monte Carlo")
    ax.semilogy(x, profile_vdk, "--", label="soft-tissue kernel x 1.04 / density (Li 2020)")
    for edge, name in ((20, "bone"), (30, "lung"), (45, "soft tissue")):
        ax.axvline(edge, color="grey", lw=0.5)
        ax.text(edge + 0.5, profile_mc.max(), name, fontsize=8, va="top")
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("dose rate (mGy/s), 1 MBq in the soft tissue")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "mc_slab_phantom.png", dpi=90)
    pick = {"soft tissue centre (x=10)": 10, "last soft-tissue mm (x=19)": 19, "first bone mm (x=20)": 20,
            "bone centre (x=25)": 25, "first lung mm (x=30)": 30, "lung centre (x=37)": 37, "first soft mm after lung (x=45)": 45}
    return {k: {"mc": float(profile_mc[i]), "kernel": float(profile_vdk[i]), "ratio": float(profile_vdk[i] / profile_mc[i])}
            for k, i in pick.items()}


def spheres(n: int, out: Path) -> dict:
    """Lu-177 sphere S values against the published table; photon absorbed fractions against their bounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from DoseCNNLib.physics.sphere_model import (
        LU177_SOFT_TISSUE_SPHERES,
        compare_with_reference,
        mc_photon_absorbed_fraction,
        photon_absorbed_fraction_bounds,
    )
    from ImagingBasics.files import save_figure

    lu = [compare_with_reference(r, n_decays=n, seed=7) for r, _, _ in LU177_SOFT_TISSUE_SPHERES]
    radii = np.geomspace(1.0, 300.0, 12)
    photons = {}
    for e in (0.113, 0.208):
        photons[e] = [dict(zip(("lower", "upper"), photon_absorbed_fraction_bounds(e, r)), radius_mm=float(r),
                           mc=mc_photon_absorbed_fraction(e, float(r), n=n, seed=8)) for r in radii]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ax = axes[0]
    ax.semilogx([c["radius_mm"] for c in lu], [c["ratio"] for c in lu], "o-")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_ylim(0.9, 1.1)
    ax.set_xlabel("sphere radius (mm)")
    ax.set_ylabel("absorbed energy per decay: this engine / table")
    ax.set_title("Lu-177 in soft-tissue spheres vs published S values", fontsize=9)
    ax = axes[1]
    for (e, rows), colour in zip(photons.items(), ("C0", "C1")):
        r = [x["radius_mm"] for x in rows]
        ax.fill_between(r, [x["lower"] for x in rows], [x["upper"] for x in rows], color=colour, alpha=0.2,
                        label=f"{1000 * e:.0f} keV bounds")
        ax.loglog(r, [x["mc"] for x in rows], "o", color=colour, ms=4, label=f"{1000 * e:.0f} keV Monte Carlo")
    ax.set_xlabel("sphere radius (mm)")
    ax.set_ylabel("photon absorbed fraction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "mc_spheres.png", dpi=90)
    return {"lu177": lu, "photons": photons}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decays", type=int, default=400_000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    balance = energy_balance(args.decays // 4)
    kernels = kernel_comparison(args.decays, args.out)
    slab = slab_phantom(args.decays, args.out)
    sph = spheres(args.decays // 2, args.out)
    lines = [f"# Lu-177 Monte Carlo validation ({platform.node()}, {os.cpu_count()} cores, {args.decays} decays, "
             f"{time.perf_counter() - t0:.0f} s)", "",
             "## 1. Electron energy balance (point source, 15 mm cube, nothing escapes)", "",
             f"deposited {balance['deposited_mev_per_decay']:.5f} MeV/decay; ICRP-107 {balance['icrp107_mev_per_decay']:.5f}; "
             f"difference {100 * (balance['deposited_mev_per_decay'] / balance['icrp107_mev_per_decay'] - 1):+.2f} %", "",
             "## 2. Voxel S values against Lanconelli et al. 2012 (soft tissue), mGy/(MBq s)", "",
             "| voxel | (i,j,k) | this engine | Lanconelli | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {r['voxel_mm']} mm | {r['ijk']} | {r['ours']:.4g} | {r['lanconelli']:.4g} | {r['ratio']:.3f} |"
              for r in kernels]
    lines += ["", "Figure: mc_kernels_vs_lanconelli.png. Second code (PyTheranostics, 4.795 mm) self voxel 0.2066.", "",
              "## 3. Slab phantom: soft tissue (activity) | bone | lung | soft tissue (activity), 1 mm voxels", "",
              "| position | Monte Carlo (mGy/s) | density-scaled kernel | kernel / MC |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['mc']:.4g} | {v['kernel']:.4g} | {v['ratio']:.3f} |" for k, v in slab.items()]
    lines += ["", "Figure: mc_slab_phantom.png.", "",
              "## 4. Spheres", "",
              "Lu-177 uniform in soft-tissue spheres (1.03 g/cm3) in vacuum: absorbed energy per decay, this engine against "
              "S x mass from the published sphere S values (PyTheranostics spheres.json, 100 % soft tissue; the file "
              "does not name its source). The photon share is this engine's.", "",
              "| radius (mm) | table (MeV/decay) | this engine | of which photons | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {c['radius_mm']:g} | {c['reference_mev']:.5f} | {c['ours_mev']:.5f} | {c['ours_photons_mev']:.5f} | "
              f"{c['ratio']:.3f} |" for c in sph["lu177"]]
    lines += ["", "Photon absorbed fractions of monoenergetic photons uniform in soft-tissue spheres (1.0 g/cm3): "
              "lower bound = energy deposited at the first interaction, upper bound = probability of interacting "
              "(1 - first-flight escape probability, Case, de Hoffmann & Placzek 1953).", "",
              "| energy | radius (mm) | lower | Monte Carlo | upper |", "|---|---|---|---|---|"]
    lines += [f"| {1000 * e:.0f} keV | {x['radius_mm']:.3g} | {x['lower']:.4f} | {x['mc']:.4f} | {x['upper']:.4f} |"
              for e, rows in sph["photons"].items() for x in rows]
    lines += ["", "Figure: mc_spheres.png."]
    (args.out / "mc_validation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
