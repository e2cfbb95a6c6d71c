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
