"""``dosecnn phantom``: write synthetic Lu-177 patients (see :mod:`.phantoms.case`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_phantom_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantom", help="synthetic Lu-177 DOTATATE patients: CT, labels, SPECTs at several time points, "
                                       "Monte Carlo truth",
                       description="Write N synthetic torso phantoms (liver, kidneys, spleen, lung bases, bone, bowel "
                                   "with gas, lesions, some necrotic) with known kinetics: per time point the true "
                                   "activity, a simulated SPECT (counts) and the Monte Carlo dose rate of the true "
                                   "activity; the true time-integrated activity and absorbed dose; timepoints.csv (for "
                                   "dosecnn integrate) per case and cohort.csv (for dosecnn train).")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed: case i uses seed*1000+i")
    p.add_argument("--size", choices=["small", "full"], default="small",
                   help="small: 256x256x64 at 1.96x1.96x3 mm (default); full: 512x512x130 at 0.98x0.98x3 mm (Li 2020)")
    p.add_argument("--times", type=float, nargs="+", default=[4.0, 24.0, 96.0, 168.0], metavar="H",
                   help="acquisition times in hours after administration (default 4 24 96 168)")
    p.add_argument("--mc-decays", type=float, default=2e6,
                   help="Monte Carlo decays per case for the truth (default 2e6; 0 skips the Monte Carlo)")
    p.add_argument("--device", default="cpu", help="device of the Monte Carlo (cpu, cuda)")
    p.add_argument("--prefix", default="case", help="case folder prefix (default case -> case000, case001, ...)")
    p.add_argument("--gate-phantom", nargs=2, metavar=("ATTN", "SRC"),
                   help="instead of synthetic torsos: one case on a real patient's CT and organ codes, the GATE "
                        "Lu-177 DOTATATE example's patient15_LuDOTATATE_attn.h33 and _src.h33")
    p.add_argument("--spect", choices=["gaussian", "osem"], default="gaussian",
                   help="SPECT model: gaussian (image-domain resolution and noise; fast, default) or osem (projections "
                        "with attenuation, collimator response and Poisson noise, reconstructed by OSEM 16x4 as in "
                        "Li 2020; tens of seconds per SPECT on a CPU)")
    p.add_argument("--preview", action="store_true", help="write preview.png per case")
    p.add_argument("--resume", action="store_true",
                   help="keep the case folders that a stopped run of the same command already finished (same seed, "
                        "size, times, SPECT model, Monte Carlo decays) and make only the others")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_phantom)


def _phantom(args: argparse.Namespace) -> int:
    from ImagingBasics.errors import UserError

    from .phantoms.case import generate_cohort
    from .phantoms.spect_sim import SpectModel

    if args.mc_decays < 0 or (0 < args.mc_decays < 1000):
        raise UserError("--mc-decays must be 0 (no Monte Carlo) or at least 1000")
    t0 = time.perf_counter()
    say = None if args.quiet else (lambda msg: print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr,
                                                       flush=True))
    model = SpectModel(reconstruction=args.spect)
    if args.gate_phantom:
        folders = [_gate_case(args, say, model)]
    else:
        folders = generate_cohort(args.out, args.n, args.seed, args.size, args.times, int(args.mc_decays), args.device,
                                  args.prefix, args.preview, say, model, keep_complete=args.resume)
    print(f"{len(folders)} case(s) in {args.out} ({time.perf_counter() - t0:.1f} s); manifest {args.out / 'cohort.csv'}")
    return 0


def _gate_case(args: argparse.Namespace, say, spect_model):
    from ImagingBasics.files import write_csv

    from .phantoms.case import training_rows, write_case
    from .phantoms.gate_patient import gate_patient_case

    attn, src = (Path(p) for p in args.gate_phantom)
    for path in (attn, src):
        if not path.is_file():
            from ImagingBasics.errors import UserError

            raise UserError(f"file not found: {path}")
    case = gate_patient_case(attn, src, seed=args.seed, times_h=args.times, mc_decays=int(args.mc_decays),
                             device=args.device, spect_model=spect_model, say=say or (lambda msg: None))
    case_id = attn.name.split("_")[0] if "_" in attn.name else "patient"
    folder = write_case(case, args.out / case_id, args.preview)
    write_csv(training_rows(folder, case_id, case.meta), args.out / "cohort.csv")
    return folder
