"""The ``dosecnn`` command line: dosimetry (dose rate, time integration, Monte Carlo, training), DICOM RT export, decay
data, phantoms, image inspection and conversion.

Run ``dosecnn --help`` or ``dosecnn COMMAND --help``. Errors a user can fix print ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from ImagingBasics.cli_common import (
    CommandParser,
    add_convert_command,
    add_devices_command,
    add_info_command,
    run_main,
)
from ImagingBasics.dicom_inputs import CT_SERIES

from . import __version__
from .demo import add_demo_command
from .export_cli import add_export_command
from .options import INTEGRATE, RUN
from .phantom_cli import add_phantom_command


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="dosecnn", description="Lu-177 voxel dosimetry (DoseCNN core).")
    parser.add_argument("--version", action="version", version=f"dosecnn {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_decay_command(sub)
    add_kernel_command(sub)
    add_mc_command(sub)
    add_run_command(sub)
    add_train_command(sub)
    add_integrate_command(sub)
    add_export_command(sub)
    add_phantom_command(sub)
    add_demo_command(sub)
    add_devices_command(sub)
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
    from .physics.decay import load_decay_data

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

    from ImagingBasics.files import save_figure

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
    import math

    from ImagingBasics.errors import UserError
    from ImagingBasics.outputs import check_output_folder, output_folder

    from .physics.kernels import (
        MAX_KERNEL_SIZE,
        check_nuclide,
        kernel_parameters,
        read_kernel_folder,
        voxel_s_values,
        write_kernel_folder,
    )

    photon_size = args.photon_size or args.size
    for name, value in (("--size", args.size), ("--photon-size", photon_size)):
        if value < 1 or value % 2 == 0:
            raise UserError(f"{name} must be an odd number, got {value}")
        if value > MAX_KERNEL_SIZE:
            raise UserError(f"{name} must be at most {MAX_KERNEL_SIZE} voxels, got {value} (Li 2020's photon kernel has "
                            "99)")
    if photon_size < args.size:
        raise UserError("--photon-size must be at least --size")
    if not all(math.isfinite(s) and s > 0 for s in args.spacing) or args.decays < 1000:
        raise UserError("--spacing must be positive and --decays at least 1000")
    check_nuclide(args.nuclide)
    device = _device(args.device)
    check_output_folder(args.out, [], KERNEL_OUTPUTS)  # a file, not writable: refused before the Monte Carlo
    params = kernel_parameters(args.nuclide, args.spacing, args.size, photon_size, args.decays, args.seed)
    if read_kernel_folder(args.out, params) is not None:
        print(f"kernel with these parameters already in {args.out} (reused)")
        return 0
    k = voxel_s_values(params["nuclide"], args.spacing, args.size, args.decays, seed=args.seed, device=device,
                       photon_size=photon_size)
    with output_folder(args.out, [], KERNEL_OUTPUTS, "kernel.json") as staging:  # all four files or none
        summary = write_kernel_folder(k, params, staging)
        kernel_figure(k, staging / "kernel.png")
    print(f"{params['nuclide']} kernel {args.size}^3 at {tuple(params['spacing_mm'])} mm: self {summary['self']:.4g} "
          f"mGy/(MBq*s) (electrons {summary['electron_self']:.4g}); written to {args.out}")
    return 0


#: the files dosecnn kernel writes into --out (kernel.json last: its presence marks a complete kernel)
KERNEL_OUTPUTS = ["electron_kernel.nrrd", "photon_kernel.nrrd", "kernel.png", "kernel.json"]


def kernel_figure(k, path: Path) -> None:
    """Central profiles of the electron and photon kernels (log scale)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    from ImagingBasics.files import save_figure

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
    p.add_argument("--ct", required=True, help="CT in HU (an image or a DICOM folder)")
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
    import math
    import sys
    import time

    from ImagingBasics.dicom_inputs import read_ct
    from ImagingBasics.errors import UserError
    from ImagingBasics.files import write_json
    from ImagingBasics.imageio import read_volume, write_volume
    from ImagingBasics.outputs import output_folder
    from ImagingBasics.validation import check_ct, require_finite

    from .physics.kernels import check_nuclide
    from .physics.monte_carlo import run_mc

    if not (math.isfinite(args.activity_scale) and args.activity_scale > 0):
        raise UserError(f"--activity-scale must be positive, got {args.activity_scale:g}")
    if args.batches < 2:
        raise UserError("at least 2 batches are needed for an uncertainty estimate (--batches)")
    if args.decays < args.batches:
        raise UserError(f"--decays must be at least the number of batches ({args.batches})")
    check_nuclide(args.nuclide)
    device = _device(args.device)
    with output_folder(args.out, [args.ct, args.activity], ["dose_rate.nrrd", "uncertainty.nrrd", "mc.json"],
                       "mc.json") as staging:  # --out checked before any work
        ct = read_ct(args.ct)
        for warning in check_ct(ct):
            print(f"warning: {warning}", file=sys.stderr)
        activity = read_volume(args.activity)
        require_finite(activity, "activity map")
        activity = activity.with_array(activity.array.astype("float64") * args.activity_scale)
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=args.batches, desc="Monte Carlo", unit="batch", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            result = run_mc(activity, ct, args.nuclide, args.decays, args.batches, device, args.seed,
                            progress=(lambda done, total: bar.update(1)) if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        write_volume(result.dose_rate_mgy_s, staging / "dose_rate.nrrd")
        write_volume(result.relative_uncertainty, staging / "uncertainty.nrrd")
        summary = {"nuclide": result.nuclide, "decays": result.n_decays, "batches": result.batches,
                   "total_activity_bq": result.total_activity_bq, "seconds": seconds,
                   "decays_per_second": result.n_decays / seconds, "device": args.device,
                   "max_dose_rate_mgy_s": float(result.dose_rate_mgy_s.array.max())}
        write_json(summary, staging / "mc.json")
    print(f"{result.n_decays} decays in {seconds:.1f} s ({summary['decays_per_second']:.0f}/s); maximum dose rate "
          f"{summary['max_dose_rate_mgy_s']:.4g} mGy/s; results in {args.out}")
    return 0


def add_run_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="dose-rate map from a Lu-177 SPECT and its CT (VDK with density scaling, VDK with "
                                   "tissue-specific kernels, or the residual CNN, Li 2020)",
                       description="Resample the SPECT onto the CT grid, calibrate it to Bq (--activity-mbq: the total "
                                   "activity in the field of view; or --calibration: Bq per count), convolve with the "
                                   "electron and photon kernels of the CT's voxel size (bundled, cached, or computed "
                                   "once), scale by 1.04 / density; --method vdk-tissue uses lung, soft-tissue and "
                                   "bone kernels instead (electrons by the source voxel's tissue, photons by the "
                                   "target's); --method cnn adds the residual CNN's correction "
                                   "(Monte Carlo minus VDK, learned by dosecnn train). Writes dose_rate.nrrd (mGy/s), "
                                   "run.json, overview.png and, with --labels, table.csv (per label: volume, mean and "
                                   "maximum).")
    p.add_argument("--spect", required=True, help="SPECT in counts (or Bq with --calibration 1)")
    p.add_argument("--ct", required=True, help="CT in HU (an image, or a DICOM folder: a folder of several series gives "
                                               "its largest CT series)")
    CT_SERIES.add_argument(p)
    p.add_argument("--labels", help="organ/lesion label map on the CT grid (optional)")
    p.add_argument("--names", nargs="+", metavar="VALUE=NAME",
                   help="label names: pairs such as 1=liver 2=kidney, or a CSV file with columns label,name")
    p.add_argument("--weights", help="CNN weights for --method cnn (best.pt of dosecnn train; default: the bundled model)")
    RUN.add_arguments(p, require_exclusive=True)  # one calibration: --activity-mbq or --calibration
    p.add_argument("--kernel-cache", type=Path, help="folder of computed kernels (default ~/.cache/dosecnn/kernels)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--progress-lines", action="store_true",
                   help="print machine-readable progress lines on stdout (for a calling program such as the "
                        "Slicer module; see ImagingBasics/process.py)")
    p.set_defaults(func=_run)


#: the files dosecnn run writes into --out (run.json last: its presence marks a finished run)
RUN_OUTPUTS = ["dose_rate.nrrd", "table.csv", "run.json", "overview.png"]


def _run(args: argparse.Namespace) -> int:
    import sys
    import time

    from ImagingBasics.dicom_inputs import check_series_choice, read_ct
    from ImagingBasics.errors import UserError
    from ImagingBasics.files import write_csv, write_json
    from ImagingBasics.imageio import read_volume, write_volume
    from ImagingBasics.outputs import output_folder
    from ImagingBasics.validation import check_label_map

    from .dosimetry.pipeline import dose_rate_map, label_names_from_args, label_table, load_dose_weights_for
    from .physics.kernels import check_nuclide
    from .physics.vdk import check_calibration

    options = RUN.from_arguments(args)  # first: a wrong value is refused before any file is read
    ct_series = CT_SERIES.check(args.ct_series)
    check_series_choice(args.ct, ct_series)
    check_calibration(options["bq_per_count"], options["activity_mbq"])
    check_nuclide(options["nuclide"])
    device = _device(options["device"])  # "cuda" without a GPU: refused now, not in the convolution
    _check_kernel_cache(args.kernel_cache)
    say = _progress_lines(args)
    names = label_names_from_args(args.names)
    inputs = [args.spect, args.ct, args.labels, args.weights] + list(args.names or [])
    with output_folder(args.out, inputs, RUN_OUTPUTS, "run.json") as staging:  # --out checked before any work
        weights = load_dose_weights_for(options["method"], args.weights)  # a wrong weights file, too
        say(0.0, "reading the images")
        t0 = time.perf_counter()
        ct = read_ct(args.ct, ct_series)
        spect = read_volume(args.spect)
        labels = read_volume(args.labels) if args.labels else None
        if labels is not None and not labels.same_geometry(ct):
            raise UserError("the label map must be on the CT grid")
        if labels is not None:
            check_label_map(labels)
        say(0.1, "computing the dose rate")
        result = dose_rate_map(spect, ct, **dict(options, device=device), weights=weights,
                               kernel_cache=args.kernel_cache, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        dose = result.dose_rate_mgy_s
        for warning in result.info.get("warnings", []):
            print(f"warning: {warning['message']}", file=sys.stderr)
        say(0.9, "writing the results")
        write_volume(dose, staging / "dose_rate.nrrd")
        rows = label_table(dose, labels, result.activity_bq, names) if labels is not None else []
        if rows:
            write_csv(rows, staging / "table.csv")
        summary = {**result.info, "max_dose_rate_mgy_s": float(dose.array.max()), "seconds": time.perf_counter() - t0,
                   "labels": rows,
                   "note": "research use only; " + (
                       RUN_NOTES[options["method"]])}
        write_json(summary, staging / "run.json")
        dose_figure(ct, dose, staging / "overview.png")
    print(f"dose rate: maximum {summary['max_dose_rate_mgy_s']:.4g} mGy/s for {summary['total_activity_mbq']:.4g} MBq "
          f"({summary['seconds']:.1f} s); results in {args.out}")
    for r in rows:
        print(f"  label {r['label']:>4}: {r['volume_ml']:9.1f} mL  mean {r['mean_dose_rate_mgy_s']:.4g} mGy/s  "
              f"max {r['max_dose_rate_mgy_s']:.4g}")
    say(1.0, "done", out=args.out)
    return 0


#: run.json's note per method
RUN_NOTES = {"vdk": "VDK with density scaling (Li 2020) ignores heterogeneity effects",
             "vdk-tissue": "VDK with lung, soft-tissue and bone kernels; heterogeneity within a tissue class and across "
                           "its borders is approximated (see docs/METHODS.md)",
             "cnn": "VDK plus a residual CNN correction (Li 2020); the CNN is only as good as its training data"}


def dose_figure(ct, dose, path: Path) -> None:
    """Axial and coronal CT slices through the dose maximum with the dose rate overlaid."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    from ImagingBasics.display import label_orientation, radiological_view
    from ImagingBasics.files import save_figure

    ct_view, dose_view = radiological_view(ct), radiological_view(dose)
    k, j, _ = np.unravel_index(int(np.argmax(dose_view.array)), dose_view.shape)
    floor = dose_view.array.max() * 1e-3
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, view, index in zip(axes, ("axial", "coronal"), (k, j)):
        extent = ct_view.extent(view)
        ax.imshow(ct_view.cut(view, index), cmap="gray", vmin=-1000, vmax=600, extent=extent)
        cut = np.ma.masked_less_equal(dose_view.cut(view, index), floor)
        im = ax.imshow(cut, cmap="inferno", alpha=0.7, extent=extent)
        ax.set_title(f"dose rate ({view}, through the maximum)", fontsize=9)
        ax.axis("off")
        label_orientation(ax, view)
    fig.colorbar(im, ax=axes, label="mGy/s", shrink=0.8)
    save_figure(fig, path, dpi=80)


def add_integrate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("integrate", help="time-integrated activity and absorbed dose (Gy) from SPECT/CT time points",
                       description="Read a manifest of time points (CSV: time_h = hours after administration, spect, "
                                   "ct, and per row activity_mbq = MBq in the SPECT's field of view, or bq_per_count; "
                                   "paths relative to the CSV), register every CT rigidly to the reference CT, compute "
                                   "each dose-rate map (VDK or CNN) and fit every voxel's activity and dose-rate curve. "
                                   "Writes absorbed_dose.nrrd (Gy), tia.nrrd (MBq*h per voxel), integrate.json and, "
                                   "with --labels, organs.csv, dvh.csv, dvh.png and time_activity.png to --out.")
    p.add_argument("manifest", type=Path, help="CSV with columns time_h, spect, ct and activity_mbq or bq_per_count")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--labels", type=Path, help="organ/lesion label map on the reference CT's grid (optional)")
    p.add_argument("--names", nargs="+", metavar="VALUE=NAME",
                   help="label names: pairs such as 1=liver 2=kidney, or a CSV file with columns label,name "
                        "(dosecnn phantom writes labels.csv)")
    p.add_argument("--reference-ct", type=Path, help="CT whose frame and grid the outputs use (default: the first "
                                                     "time point's CT)")
    p.add_argument("--weights", help="CNN weights for --method cnn (default: the bundled model)")
    INTEGRATE.add_arguments(p)
    p.add_argument("--kernel-cache", type=Path, help="folder of computed kernels (default ~/.cache/dosecnn/kernels)")
    p.add_argument("--dose-rate-maps", action="store_true",
                   help="also write each time point's dose rate in the reference frame (dose_rate_NN.nrrd, mGy/s)")
    p.add_argument("--progress-lines", action="store_true",
                   help="print machine-readable progress lines on stdout (for a calling program such as the "
                        "Slicer module; see ImagingBasics/process.py)")
    p.set_defaults(func=_integrate)


def _integrate(args: argparse.Namespace) -> int:
    import sys

    from .dosimetry.integrate import run_integrate
    from .dosimetry.pipeline import label_names_from_args
    from .physics.kernels import check_nuclide

    options = INTEGRATE.from_arguments(args)  # first: a wrong value is refused before any file is read
    check_nuclide(options["nuclide"])
    _check_kernel_cache(args.kernel_cache)
    say = _progress_lines(args)
    names = label_names_from_args(args.names)
    s = run_integrate(args.manifest, args.out, labels_path=args.labels, reference_ct_path=args.reference_ct,
                      names=names, weights=args.weights, kernel_cache=args.kernel_cache,
                      progress=lambda msg: print(msg, file=sys.stderr, flush=True), fraction=say,
                      dose_rate_maps=args.dose_rate_maps, **dict(options, device=_device(options["device"])))
    print(f"{len(s['time_points'])} time points, {s['method']} dose rate, {s['fit']} fits "
          f"({s['nuclide']}, physical half-life {s['physical_half_life_h']:.1f} h); results in {args.out}")
    for tp in s["time_points"]:
        r = tp["registration"]
        how = r["skipped"] or f"registered: {r['translation_mm']:.1f} mm, {r['rotation_deg']:.1f} deg"
        print(f"  {tp['time_h']:7.1f} h  {tp['total_activity_mbq']:10.4g} MBq  max {tp['max_dose_rate_mgy_s']:.4g} mGy/s"
              f"  ({how})")
    for quantity, c in s["voxel_fits"].items():
        print(f"  voxel fits of {quantity}: {c['fitted']} fitted, {c['clamped']} clamped to physical decay, "
              f"{c['fallback']} fallback (trapezoid; {100 * c['fallback_share']:.2g} % of the integral), {c['zero']} zero")
    print(f"total TIA {s['total_tia_mbq_h']:.4g} MBq*h; maximum absorbed dose {s['max_absorbed_dose_gy']:.4g} Gy")
    if s["organs"]:
        print(f"  {'label':>5} {'name':<14}{'mL':>9}{'TIA MBq*h':>12}{'T_eff h':>9}{'D fit Gy':>10}{'D map Gy':>10}"
              f"{'D98':>8}{'D50':>8}{'D2':>8}")
        for r in s["organs"]:
            print(f"  {r['label']:>5} {str(r['name'])[:13]:<14}{r['volume_ml']:9.1f}{r['tia_mbq_h']:12.4g}"
                  f"{r['effective_half_life_h']:9.1f}{r['mean_dose_gy_organ_fit']:10.4g}"
                  f"{r['mean_dose_gy_voxel_map']:10.4g}{r['d98_gy']:8.3g}{r['d50_gy']:8.3g}{r['d2_gy']:8.3g}")
    for warning in s["warnings"]:
        print(f"warning: {warning['message']}", file=sys.stderr)
    say(1.0, "done", out=args.out)
    return 0


def _progress_lines(args: argparse.Namespace):
    """``say(fraction, step, out=None)``: with --progress-lines, the protocol lines of ``ImagingBasics.process``
    on stdout (``out``: the done line with the output folder, as ``ctpm run`` prints it); otherwise nothing."""
    from ImagingBasics.process import progress_line

    def say(fraction: float, step: str, out: Optional[Path] = None) -> None:
        if not getattr(args, "progress_lines", False):
            return
        print(progress_line({"progress": round(float(fraction), 4), "step": step}), flush=True)
        if out is not None:
            print(progress_line({"done": True, "out": str(Path(out).resolve())}), flush=True)

    return say


def _device(requested: str) -> str:
    """The torch device of ``requested`` (:func:`ImagingBasics.devices.select_device`): ``auto`` a CUDA GPU when torch
    sees one, else the CPU (as ``ctpm``); a device that is not there (``cuda`` on a machine without a GPU) is a
    one-line UserError before any work, not a torch error in the middle of it."""
    from ImagingBasics.devices import select_device

    return select_device(requested)


def _check_kernel_cache(folder: Optional[Path]) -> None:
    """--kernel-cache must be a folder (or not exist yet): found out now, not after a kernel was computed."""
    if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
        from ImagingBasics.errors import UserError

        raise UserError(f"--kernel-cache {folder} is a file; give a folder for the computed kernels")


def add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train the residual dose CNN (Li 2020) on SPECT/CT cases with Monte Carlo reference dose rates",
        description="Train on MANIFEST.csv (columns id, ct, spect, reference and one of activity_mbq, bq_per_count; "
                    "optional group; paths relative to the manifest; reference: the Monte Carlo dose rate of the true "
                    "activity in mGy/s on the CT grid). Each case's activity, density and VDK dose rate are computed as "
                    "by dosecnn run and cached. Writes checkpoint.pt (every epoch; --resume continues), best.pt (the "
                    "best validation epoch: dosecnn run --method cnn --weights OUT/best.pt), log.csv, "
                    "learning_curve.png and train_summary.json to --out. Defaults are Li 2020's settings.")
    p.add_argument("manifest", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=200, help="epochs (Li 2020: 200)")
    p.add_argument("--batch-size", type=int, default=32, help="slices per batch (Li 2020: 32)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="Adam learning rate, lowered on plateaus (Li 2020: 1e-3); --resume with another value "
                        "continues at it")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share held out for validation (Li 2020: 0.2)")
    p.add_argument("--val-by", choices=["slice", "patient"], default="slice",
                   help="hold out random slices (default, as Li 2020) or whole patients (stricter: neighbouring slices of "
                        "one patient are nearly alike)")
    p.add_argument("--patience", type=int, default=0, help="stop after this many epochs without a better validation "
                                                            "loss (default 0: never, as Li 2020)")
    p.add_argument("--crop", type=int, help="train on random in-plane crops of this many pixels (e.g. 128; faster)")
    p.add_argument("--no-augment", action="store_true", help="no random flips and quarter turns")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init", metavar="WEIGHTS",
                   help="start from these weights (a best.pt, or 'bundled' for the bundled model; same network "
                        "options): fine-tuning, e.g. on SPECTs reconstructed like yours; they are validated first "
                        "(epoch 0), and best.pt stays them unless an epoch does better; ignored with --resume")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 mixed precision on CUDA")
    p.add_argument("--cache", type=Path, help="folder of prepared cases (default: OUT/cache)")
    p.add_argument("--kernel-cache", type=Path, help="folder of computed kernels (default ~/.cache/dosecnn/kernels)")
    p.add_argument("--nuclide", default="Lu-177")
    p.add_argument("--base-filters", type=int, default=16, help="U-Net filters at full resolution (Li 2020: 16)")
    p.add_argument("--levels", type=int, default=4, help="U-Net down/up-sampling levels (Li 2020: 4)")
    p.add_argument("--depth-channels", type=int, nargs=3, default=[8, 16, 16], metavar=("C1", "C2", "C3"),
                   help="channels of the three 3D convolutions (default 8 16 16)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    import json
    import sys

    from ImagingBasics.errors import UserError
    from ImagingBasics.outputs import check_output_folder

    from .cnn.network import DoseNetConfig
    from .cnn.training import DoseTrainConfig, train_from_manifest
    from .physics.kernels import check_nuclide

    try:
        network = DoseNetConfig(base_filters=args.base_filters, levels=args.levels,
                                depth_channels=tuple(args.depth_channels))
    except ValueError as exc:
        raise UserError(f"network configuration: {exc}") from None
    config = DoseTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                             val_fraction=args.val_fraction, val_by=args.val_by, crop=args.crop,
                             augment=not args.no_augment, seed=args.seed, amp=not args.no_amp, device=args.device)
    # what would otherwise be found out only after every case's dose rate was computed
    check_nuclide(args.nuclide)
    _device(args.device)
    _check_kernel_cache(args.kernel_cache)
    if args.resume and not (args.out / "checkpoint.pt").is_file():
        raise UserError(f"--resume: no checkpoint in {args.out}; start without --resume")
    check_output_folder(args.out, [args.manifest])
    init = _init_weights(args.init, network) if args.init and not args.resume else None
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=1, desc="preparing cases", unit="case", file=sys.stderr)

    def prep(done: int, total: int, case_id: str) -> None:
        nonlocal bar
        if bar is None:
            return
        bar.total, bar.n = total, done
        bar.set_postfix_str(case_id)
        bar.refresh()
        if done == total:  # every case ready: training starts
            bar.close()
            from tqdm import tqdm

            bar = tqdm(total=config.epochs, desc="training", unit="epoch", file=sys.stderr)

    def progress(epoch: int, total: int, row) -> None:
        if bar is not None:
            bar.n = epoch  # a resumed run starts later
            if epoch == 0:  # the --init weights, validated before any training: no training loss yet
                bar.set_postfix(initial_val=f"{row['val_loss']:.4g}", vdk=f"{row['val_loss_vdk']:.4g}")
            else:
                bar.set_postfix(loss=f"{row['train_loss']:.4g}", val=f"{row['val_loss']:.4g}",
                                vdk=f"{row['val_loss_vdk']:.4g}")

    try:
        summary = train_from_manifest(args.manifest, args.out, network, config, args.cache, args.kernel_cache,
                                      args.nuclide, args.resume, prep, progress, init=init)
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps(summary, indent=2))
    return 0


def _init_weights(value: str, network):
    """``dosecnn train --init``: the loaded weights (``bundled``: the bundled model), read and checked against the
    network options now, so that a missing, damaged or mismatched file is refused before the cases are prepared."""
    from ImagingBasics.errors import UserError

    from .cnn.weights import bundled_weights, resolve_weights

    dm = resolve_weights(bundled_weights() if value == "bundled" else value)
    if dm.config.to_dict() != network.to_dict():
        raise UserError(f"--init: {Path(dm.source).name} holds another network ({dm.config.to_dict()}) than the "
                        f"options ask for ({network.to_dict()}); give the same --base-filters, --levels and "
                        "--depth-channels")
    return dm


if __name__ == "__main__":
    raise SystemExit(main())
