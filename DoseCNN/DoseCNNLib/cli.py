"""The ``dosecnn`` command line: decay data, image inspection and conversion now; dosimetry in later versions.

Run ``dosecnn --help`` or ``dosecnn COMMAND --help``. Errors a user can fix print ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from CTPerfusionMappingLib.cli_common import add_convert_command, add_info_command, run_main

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dosecnn", description="Lu-177 voxel dosimetry (DoseCNN core).")
    parser.add_argument("--version", action="version", version=f"dosecnn {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_decay_command(sub)
    add_kernel_command(sub)
    add_mc_command(sub)
    add_info_command(sub)
    add_convert_command(sub)
    return parser


def add_decay_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decay", help="ICRP-107 decay data of a nuclide: energy per decay by emission type, main lines",
                       description="Print a nuclide's half-life, its energy per decay by emission type (MeV) and its "
                                   "main photon lines (ICRP Publication 107); --plot writes the beta spectrum and lines.")
    p.add_argument("--nuclide", default="Lu-177", help="e.g. Lu-177 (default), Y-90, I-131, Tc-99m")
    p.add_argument("--plot", type=Path, help="PNG of the beta spectrum and the photon and electron lines")
    p.set_defaults(func=_decay)


def _decay(args: argparse.Namespace) -> int:
    from .decay import load_decay_data

    d = load_decay_data(args.nuclide)
    s = d.summary()
    print(f"{d.nuclide}: half-life {s['half_life_d']:.4g} d (ICRP Publication 107)")
    print(f"  electrons {s['electrons_mev']:.4f} MeV/decay (beta- {s['beta_minus_mev']:.4f}, conversion "
          f"{s['internal_conversion_mev']:.4f}, Auger {s['auger_mev']:.4f})")
    print(f"  photons   {s['photons_mev']:.4f} MeV/decay (gamma {s['gamma_mev']:.4f}, X-ray {s['xray_mev']:.4f})")
    if d.beta_minus is not None:
        print(f"  beta- spectrum: {d.beta_minus.yield_per_decay:.3f} per decay, mean {d.beta_minus.mean_energy_mev:.4f} MeV, "
              f"end point {d.beta_minus.energies_mev.max():.4f} MeV")
    order = sorted(range(len(d.gamma.energies_mev)), key=lambda i: -d.gamma.yields_per_decay[i])[:5]
    for i in order:
        print(f"  gamma {1000 * d.gamma.energies_mev[i]:7.1f} keV  {100 * d.gamma.yields_per_decay[i]:6.2f} %")
    if args.plot:
        decay_figure(d, args.plot)
        print(f"figure: {args.plot}")
    return 0


def decay_figure(d, path: Path) -> None:
    """Beta spectrum (left) and the discrete lines (right, log yield) of a nuclide."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from CTPerfusionMappingLib.files import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    if d.beta_minus is not None:
        a.plot(1000 * d.beta_minus.energies_mev, d.beta_minus.density_per_mev / 1000)
    a.set_xlabel("beta kinetic energy (keV)")
    a.set_ylabel("betas per keV per decay")
    a.set_title(f"{d.nuclide} beta- spectrum")
    for lines, label in ((d.gamma, "gamma"), (d.xray, "X-ray"), (d.internal_conversion, "conversion e-"),
                         (d.auger, "Auger e-")):
        keep = lines.yields_per_decay > 1e-4
        if keep.any():
            b.vlines(1000 * lines.energies_mev[keep], 1e-4, lines.yields_per_decay[keep], label=label)
    b.set_yscale("log")
    b.set_xscale("log")
    b.set_xlabel("energy (keV)")
    b.set_ylabel("yield per decay")
    b.legend(fontsize=8)
    b.set_title("discrete emissions (yield > 1e-4)")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(build_parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())


def add_kernel_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kernel", help="voxel S values (electron and photon dose kernels) of a nuclide by Monte Carlo",
                       description="Simulate decays uniformly in the central voxel of uniform soft tissue (1.04 g/cm3) "
                                   "and write electron_kernel.nrrd and photon_kernel.nrrd (mGy/(MBq*s) per voxel), "
                                   "kernel.json (parameters, self and neighbour values) and kernel.png to --out. An "
                                   "existing kernel with the same parameters is reused.")
    p.add_argument("--nuclide", default="Lu-177")
    p.add_argument("--spacing", type=float, nargs=3, required=True, metavar=("SX", "SY", "SZ"), help="voxel size (mm)")
    p.add_argument("--size", type=int, default=9, help="electron kernel size (odd, default 9)")
    p.add_argument("--photon-size", type=int, default=None, help="photon kernel size (odd, default --size)")
    p.add_argument("--decays", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_kernel)


def _kernel(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from CTPerfusionMappingLib.errors import UserError
    from CTPerfusionMappingLib.files import atomic_output
    from CTPerfusionMappingLib.imageio import write_volume
    from CTPerfusionMappingLib.volume import Volume

    from .decay import normalise_nuclide_name
    from .kernels import KERNEL_DENSITY_G_CM3, voxel_s_values

    photon_size = args.photon_size or args.size
    for name, value in (("--size", args.size), ("--photon-size", photon_size)):
        if value < 1 or value % 2 == 0:
            raise UserError(f"{name} must be an odd number, got {value}")
    if photon_size < args.size:
        raise UserError("--photon-size must be at least --size")
    if min(args.spacing) <= 0 or args.decays < 1000:
        raise UserError("--spacing must be positive and --decays at least 1000")
    params = {"nuclide": normalise_nuclide_name(args.nuclide), "spacing_mm": list(args.spacing), "size": args.size,
              "photon_size": photon_size, "decays": args.decays, "seed": args.seed,
              "density_g_cm3": KERNEL_DENSITY_G_CM3, "units": "mGy/(MBq*s)", "version": 1}
    meta_path = args.out / "kernel.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("parameters") == params:
        print(f"kernel with these parameters already in {args.out} (reused)")
        return 0
    k = voxel_s_values(params["nuclide"], args.spacing, args.size, args.decays, seed=args.seed, device=args.device,
                       photon_size=photon_size)
    spacing = (args.spacing[0], args.spacing[1], args.spacing[2])
    write_volume(Volume(k.electron.astype(np.float32), spacing), args.out / "electron_kernel.nrrd")
    write_volume(Volume(k.photon.astype(np.float32), spacing), args.out / "photon_kernel.nrrd")  # --photon-size
    c = args.size // 2
    summary = {"parameters": params, "self": float(k.total[c, c, c]), "electron_self": float(k.electron[c, c, c]),
               "face_neighbour_mean": float(np.mean([k.total[c, c, c + 1], k.total[c, c, c - 1], k.total[c, c + 1, c],
                                                     k.total[c, c - 1, c], k.total[c + 1, c, c], k.total[c - 1, c, c]]))
               if args.size >= 3 else None}
    with atomic_output(meta_path) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2))
    kernel_figure(k, args.out / "kernel.png")
    print(f"{params['nuclide']} kernel {args.size}^3 at {spacing} mm: self {summary['self']:.4g} mGy/(MBq*s) "
          f"(electrons {summary['electron_self']:.4g}); written to {args.out}")
    return 0


def kernel_figure(k, path: Path) -> None:
    """Central profiles of the electron and photon kernels (log scale)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    from CTPerfusionMappingLib.files import save_figure

    c = k.electron.shape[0] // 2
    x = (np.arange(k.electron.shape[2]) - c) * k.spacing_mm[0]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.semilogy(x, np.maximum(k.electron[c, c, :], 1e-12), "o-", label="electrons")
    ax.semilogy(x, np.maximum(k.photon_cropped[c, c, :], 1e-12), "s-", label="photons")
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("S (mGy/(MBq s))")
    ax.set_title(f"{k.nuclide} voxel S values, {k.n_decays} decays", fontsize=9)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def add_mc_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mc", help="Monte Carlo dose-rate map of a patient from an activity map and its CT",
                       description="Sample decays from the activity map (Bq per voxel; --activity-scale converts), "
                                   "transport electrons and photons on the CT grid, write dose_rate.nrrd (mGy/s), "
                                   "uncertainty.nrrd (relative standard error) and mc.json to --out.")
    p.add_argument("--activity", required=True, help="activity map (Bq per voxel after --activity-scale)")
    p.add_argument("--ct", required=True, help="CT in HU")
    p.add_argument("--activity-scale", type=float, default=1.0, help="factor to Bq per voxel (e.g. a SPECT calibration)")
    p.add_argument("--nuclide", default="Lu-177")
    p.add_argument("--decays", type=int, default=1_000_000)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_mc)


def _mc(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    from CTPerfusionMappingLib.errors import UserError
    from CTPerfusionMappingLib.files import atomic_output
    from CTPerfusionMappingLib.imageio import read_volume, write_volume

    from .mc import run_mc

    if args.activity_scale <= 0:
        raise UserError("--activity-scale must be positive")
    ct = read_volume(args.ct)
    activity = read_volume(args.activity)
    activity = activity.with_array(activity.array.astype("float64") * args.activity_scale)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.batches, desc="Monte Carlo", unit="batch", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        result = run_mc(activity, ct, args.nuclide, args.decays, args.batches, args.device, args.seed,
                        progress=(lambda done, total: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    write_volume(result.dose_rate_mgy_s, args.out / "dose_rate.nrrd")
    write_volume(result.relative_uncertainty, args.out / "uncertainty.nrrd")
    summary = {"nuclide": result.nuclide, "decays": result.n_decays, "batches": result.batches,
               "total_activity_bq": result.total_activity_bq, "seconds": seconds,
               "decays_per_second": result.n_decays / seconds, "device": args.device,
               "max_dose_rate_mgy_s": float(result.dose_rate_mgy_s.array.max())}
    with atomic_output(args.out / "mc.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2))
    print(f"{result.n_decays} decays in {seconds:.1f} s ({summary['decays_per_second']:.0f}/s); maximum dose rate "
          f"{summary['max_dose_rate_mgy_s']:.4g} mGy/s; results in {args.out}")
    return 0
