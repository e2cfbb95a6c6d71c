"""The ``dosecnn`` command line: image inspection and conversion now; dosimetry in later versions.

Run ``dosecnn --help`` or ``dosecnn COMMAND --help``. Errors a user can fix print ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from CTPerfusionMappingLib.cli_common import add_convert_command, add_info_command, run_main

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dosecnn", description="Lu-177 voxel dosimetry (DoseCNN core).")
    parser.add_argument("--version", action="version", version=f"dosecnn {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_info_command(sub)
    add_convert_command(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(build_parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
