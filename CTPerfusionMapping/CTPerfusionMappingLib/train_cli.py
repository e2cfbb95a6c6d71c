"""``ctpm train``: train (or fine-tune) the ARNN or the 3D U-Net on a SPECT/CT manifest."""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path

from ImagingBasics.errors import UserError
from ImagingBasics.parallel import default_workers


def add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train or fine-tune the network on a SPECT/CT cohort (manifest CSV)",
        description="Train on MANIFEST.csv (columns id, ct, spect; optional lungs, lobes, group, site). Hemi-lung samples "
                    "are preprocessed as for inference and cached; patients are split into training and validation. "
                    "Writes checkpoint.pt (every epoch), best.pt (weights for ctpm run --weights), log.csv and "
                    "learning_curve.png to --out.")
    _add_training_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.set_defaults(func=_train)


def add_cv_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cv", help="k-fold cross-validation by patient (and the transfer-learning comparison with --init)",
        description="Deal the manifest's patients into --folds folds; for each fold train on the others and score the "
                    "held-out patients (model and HU-only baseline; with --init also the pre-trained model). Writes "
                    "scores.csv (all held-out hemi-lungs and patients), cv_summary.json (per fold and overall mean +- sd, "
                    "paired Wilcoxon tests) and, with --init, transfer.png to --out.")
    _add_training_arguments(p)
    p.add_argument("--folds", type=int, default=3)
    p.set_defaults(func=_cv)


def add_ablate_command(sub: argparse._SubParsersAction) -> None:
    from .training.crossval import ABLATIONS

    p = sub.add_parser(
        "ablate", help="the ablation study of Ren 2021 Front Oncol: each ARNN component removed, the 3D U-Net and the "
                       "HU-only baseline",
        description="Cross-validate (same folds for all) the full ARNN, the ARNN without CT enhancement, without the "
                    "residual module, without ROI attention, without skip attention, the 3D U-Net, and score the HU-only "
                    "baseline. Writes ablation.csv (mean and sd per patient of Spearman R, Pearson r, SSIM, DSC high and "
                    "low), ablation_scores.csv, ablation.png and one cross-validation folder per variant to --out.")
    _add_training_arguments(p)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--variants", nargs="+", choices=list(ABLATIONS), help="a subset of the variants (default: all)")
    p.set_defaults(func=_ablate)


def _ablate(args: argparse.Namespace) -> int:
    from ImagingBasics.files import write_json

    from .training.crossval import ablation_study

    network, config = _network_and_config(args)
    samples = _load_samples(args)

    def say(name: str) -> None:
        if not args.quiet:
            print(f"variant {name}", file=sys.stderr, flush=True)

    result = ablation_study(samples, args.folds, network, config, args.out, args.val_fraction, args.variants, say)
    write_json(result, args.out / "ablation.json")
    print(f"{'variant':<30}{'Spearman':>16}{'SSIM':>16}{'DSC high':>16}{'DSC low':>16}")
    for r in result["table"]:
        cells = "".join(f"{r[m + '_mean']:>9.3f} +-{r[m + '_sd']:.3f}" for m in ("spearman", "ssim", "dsc_high", "dsc_low"))
        print(f"{r['variant']:<30}{cells}")
    print(f"results in {args.out}")
    return 0


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cache", type=Path, help="folder of preprocessed samples (default: OUT/cache)")
    p.add_argument("--arch", choices=["arnn", "unet"], help="network (default arnn; with --init: that of the weights)")
    p.add_argument("--base-channels", type=int, help="channels at full size (default 16; with --init: the weights')")
    p.add_argument("--max-channels", type=int, help="channel cap (default 128; with --init: the weights')")
    for name in ("residual", "roi-attention", "skip-attention"):
        p.add_argument(f"--no-{name}", action="store_true", help=f"ablation: ARNN without {name.replace('-', ' ')}")
    p.add_argument("--coordinates", action="store_true",
                   help="two position channels (cranio-caudal, anterior-posterior across the hemi-lung) as extra input; "
                        "they assume supine patients (with --init: taken from the weights)")
    p.add_argument("--epochs", type=int, default=500, help="at most this many epochs (Ren 2021 IJROBP: 500)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=50, help="early stopping: epochs without a better validation Spearman")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of patients kept for validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--density-ramp", type=float, default=0.0, metavar="R",
                   help="augmentation: a random front-to-back slope of -R..R added to the enhanced CT, so that the "
                        "dependent density is no cue for the supine gradient (0: off; the bundled model: 0.2)")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--init", type=Path, help="fine-tune from these weights (transfer learning, Ren 2022 Front Oncol); "
                                             "they are validated first (epoch 0), and best.pt stays them unless an "
                                             "epoch does better")
    p.add_argument("--freeze-encoder-epochs", type=int, default=0, help="with --init: keep the encoder fixed this long")
    p.add_argument("--no-register", action="store_true", help="use each SPECT where it lies")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help=f"processes preprocessing the cases not yet cached (default: cores - 1 = {default_workers()})")
    p.add_argument("--quiet", action="store_true")


def _network_and_config(args: argparse.Namespace):
    """The checked network and training configurations, after every check that can be made before a case is
    preprocessed (:func:`_check_before_preprocessing`)."""
    from .training.trainer import TrainConfig

    if args.epochs < 1 or args.batch_size < 1 or args.workers < 1:
        raise UserError("--epochs, --batch-size and --workers must be at least 1")
    if not 0.0 < args.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be positive, got {args.lr:g} (Ren 2021 IJROBP: 0.001)")
    if not (math.isfinite(args.density_ramp) and 0.0 <= args.density_ramp <= 1.0):
        raise UserError(f"--density-ramp must be from 0 to 1, got {args.density_ramp:g}")
    for flag, value in (("--patience", args.patience), ("--freeze-encoder-epochs", args.freeze_encoder_epochs)):
        if value < 0:
            raise UserError(f"{flag} must be 0 or more, got {value}")
    network = _network_settings(args)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                         seed=args.seed, amp=not args.no_amp, augment=not args.no_augment,
                         freeze_encoder_epochs=args.freeze_encoder_epochs, device=args.device,
                         density_ramp=args.density_ramp)
    _check_before_preprocessing(args, network)
    return network, config


#: Network flags of the training commands: argparse destination -> (NetworkConfig field, value when given).
_SWITCHES = {"no_residual": ("residual", False), "no_roi_attention": ("roi_attention", False),
             "no_skip_attention": ("skip_attention", False), "coordinates": ("coordinates", True)}
_SIZES = ("arch", "base_channels", "max_channels")  # argparse destination = NetworkConfig field


def _network_settings(args: argparse.Namespace):
    """The network to train: the flags' settings, or with --init the configuration stored in those weights, which
    the flags given must agree with (one-line UserError naming the flags that do not)."""
    from .network import NetworkConfig
    from .weights import load_weights

    given = {field: getattr(args, field) for field in _SIZES if getattr(args, field) is not None}
    given.update({field: value for dest, (field, value) in _SWITCHES.items() if getattr(args, dest)})
    if args.init is None:
        return NetworkConfig(**given)
    _, stored, _ = load_weights(args.init)
    differ = {field: value for field, value in given.items() if getattr(stored, field) != value}
    if differ:
        flags = {field: "--" + field.replace("_", "-") for field in _SIZES}
        flags.update({field: "--" + dest.replace("_", "-") for dest, (field, _) in _SWITCHES.items()})
        raise UserError(f"--init {args.init} holds a {stored.arch} whose " +
                        ", ".join(f"{field} is {getattr(stored, field)}" for field in differ) +
                        f": leave out {', '.join(flags[field] for field in differ)} to fine-tune it as it is")
    return stored


def _check_before_preprocessing(args: argparse.Namespace, network) -> None:
    """What a run would otherwise find out only after preprocessing every case (minutes to hours): the device, the
    --init weights and their architecture, --out, and the manifest (its columns, ids and files; two patients at least,
    as many as --folds for cv and ablate). One-line UserErrors."""
    from ImagingBasics.devices import select_device
    from ImagingBasics.manifest import read_manifest
    from ImagingBasics.outputs import check_output_folder

    select_device(args.device)
    folds = getattr(args, "folds", None)
    if folds is not None and folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    rows = read_manifest(args.manifest, required=("id", "ct", "spect"))
    for row in rows:
        for column in ("ct", "spect", "lungs", "lobes"):
            if row.get(column) and not Path(row[column]).exists():
                raise UserError(f"{args.manifest}: case {row['id']}: {column} file {row[column]} not found")
    needed = max(2, folds or 2)
    if len(rows) < needed:
        raise UserError(f"{args.manifest} has {len(rows)} case(s); at least {needed} patients are needed "
                        f"({'one per fold' if folds else 'training and validation patients'})")
    if getattr(args, "resume", False) and not (args.out / "checkpoint.pt").is_file():
        raise UserError(f"--resume: no checkpoint in {args.out}; start without --resume")
    check_output_folder(args.out, [args.manifest])


@contextmanager
def _no_empty_folders_left(*folders: Path):
    """The folders of ``folders`` that do not exist yet and that the block leaves empty (the cache folder of a run
    refused while its first case is preprocessed) are removed when the block fails: a refused run leaves --out as it
    was. Folders holding files (samples already cached) are kept."""
    new = [Path(f) for f in folders if f is not None and not Path(f).exists()]
    try:
        yield
    except BaseException:
        for folder in sorted(new, key=lambda f: len(f.parts), reverse=True):
            try:
                folder.rmdir()  # only an empty folder
            except OSError:
                pass
        raise


def _load_samples(args: argparse.Namespace, progress=None):
    """The preprocessed samples of the manifest (cached under --cache, default OUT/cache)."""
    from .training.dataset import load_samples

    cache = args.cache or args.out / "cache"
    with _no_empty_folders_left(args.out, cache):
        return load_samples(args.manifest, cache, register=not args.no_register, progress=progress,
                            workers=args.workers)


def _cv(args: argparse.Namespace) -> int:
    from ImagingBasics.files import write_json

    from .training.crossval import cross_validate

    network, config = _network_and_config(args)
    samples = _load_samples(args)

    def say(fold: int, folds: int, message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    result = cross_validate(samples, args.folds, network, config, args.out, args.init, args.val_fraction, say)
    write_json(result, args.out / "cv_summary.json")
    for predictor, scopes in result["summary"].items():
        s = scopes["patient"]
        print(f"{predictor:>12} per patient: " + ", ".join(f"{m} {s[m]['mean']:.3f} +- {s[m]['sd']:.3f}" for m in s))
    for key in ("model_vs_hu_baseline", "fine_tuned_vs_pretrained"):
        if key in result:
            t = result[key]
            print(f"{key}: mean Spearman difference {t['mean_difference']:+.3f} over {t['patients']} patients, "
                  f"Wilcoxon p = {t['p_value']:.3g}")
    print(f"results in {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .training.dataset import split_by_patient
    from .training.trainer import train

    network, config = _network_and_config(args)
    import os

    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    bar = None
    if not args.quiet and main_process:
        from tqdm import tqdm

        bar = tqdm(total=1, desc="preprocessing", unit="case", file=sys.stderr)

    def prep(done: int, total: int, case_id: str) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.set_postfix_str(case_id)
            bar.refresh()

    try:
        samples = _load_samples(args, prep)
    except BaseException:
        if bar is not None:  # the bar ends before the error line
            bar.close()
        raise
    train_s, val_s = split_by_patient(samples, args.val_fraction, args.seed)
    if bar is not None:
        bar.close()
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, desc="training", unit="epoch", file=sys.stderr)
        bar.n = 0

    def progress(epoch: int, total: int, row) -> None:
        if bar is not None:
            bar.n = epoch
            if epoch == 0:  # the --init weights, validated before any training: no training loss yet
                bar.set_postfix(initial_val_r=f"{row['val_spearman']:.3f}")
            else:
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_r=f"{row['val_spearman']:.3f}")
            bar.refresh()

    try:
        summary = train(network, train_s, val_s, args.out, config, args.init, args.resume, progress)
    finally:
        if bar is not None:
            bar.close()
    summary.update(train_hemilungs=len(train_s), validation_hemilungs=len(val_s),
                   validation_patients=sorted({s.case_id for s in val_s}))
    if main_process:
        print(json.dumps(summary, indent=2))
    return 0
