"""The ``ctpm`` command line: the CT-to-perfusion pipeline (run, evaluate, batch), plan evaluation, DICOM RT export,
training and synthetic cohorts.

Run ``ctpm --help`` or ``ctpm COMMAND --help``. Errors a user can fix print ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ImagingBasics.cli_common import (
    CommandParser,
    add_convert_command,
    add_devices_command,
    add_info_command,
    run_main,
)

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="ctpm", description="CT-to-perfusion mapping (CTPerfusionMapping core).")
    parser.add_argument("--version", action="version", version=f"ctpm {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    from .export_cli import add_export_command
    from .phantom_cli import add_demo_command, add_phantom_command
    from .plan_cli import add_plan_command
    from .run_cli import add_batch_command, add_evaluate_command, add_run_command
    from .train_cli import add_ablate_command, add_cv_command, add_train_command

    add_run_command(sub)
    add_evaluate_command(sub)
    add_batch_command(sub)
    add_plan_command(sub)
    add_export_command(sub)
    add_train_command(sub)
    add_cv_command(sub)
    add_ablate_command(sub)
    add_phantom_command(sub)
    add_demo_command(sub)
    add_devices_command(sub)
    add_info_command(sub)
    add_convert_command(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(build_parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
