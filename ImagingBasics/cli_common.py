"""Pieces shared by the ``ctpm`` and ``dosecnn`` command lines: error handling and common subcommands.

Every command follows one contract: a :class:`~.errors.UserError` (or a missing file) prints
``error: <message>`` on stderr and exits with status 2, without a traceback; success exits 0. Ctrl-C and SIGTERM (a
job scheduler's stop) end a command with status 130 or 143 after its cleanup has run (temporary and staging files
removed: :mod:`.files`, :mod:`.outputs`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from typing import Callable, Optional, Sequence

from .errors import UserError


class CommandParser(argparse.ArgumentParser):
    """argparse for ``ctpm`` and ``dosecnn`` (and their subcommands, which inherit the class): a malformed command
    line (an unknown flag, a missing required option, a value of the wrong type) gives one line,
    ``error: <command>: <argparse's message> (see <command> --help)``, and status 2, like every other user error,
    instead of argparse's usage block followed by the error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and context managers clean up as for Ctrl-C."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def run_main(build_parser: Callable[[], argparse.ArgumentParser], argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv``, run the chosen subcommand's ``func(args)`` and turn user errors into exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: Python's own warning format, for the warnings that are not the project's
_PYTHON_FORMATWARNING = warnings.formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """How the commands print a Python warning: ``warning: <message>`` for the project's (UserWarning) warnings, as
    they print quality warnings; other categories (a library's deprecation, say) keep Python's format."""
    if issubclass(category, UserWarning):
        return f"warning: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


def add_info_command(sub: argparse._SubParsersAction) -> None:
    """``info FILE``: print the geometry and value range of an image (any readable format)."""
    p = sub.add_parser("info", help="print the geometry and value range of an image file or DICOM folder")
    p.add_argument("image", help="NRRD, NIfTI, MHA, Interfile header (.h33/.hdr) or a DICOM series folder")
    p.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from .imageio import read_volume

    volume = read_volume(args.image)
    print(f"{args.image}: {volume.describe()}")
    return 0


def add_devices_command(sub: argparse._SubParsersAction) -> None:
    """``devices [--json]``: what torch can compute on (CUDA GPUs, Apple MPS, CPU) and what 'auto' picks."""
    p = sub.add_parser("devices", help="show what torch can compute on (CUDA GPUs, Apple MPS, CPU) and what 'auto' picks")
    p.add_argument("--json", action="store_true", help="one JSON line instead of text")
    p.set_defaults(func=_devices)


def _devices(args: argparse.Namespace) -> int:
    from .devices import print_device_report

    return print_device_report(args.json)


def add_convert_command(sub: argparse._SubParsersAction) -> None:
    """``convert IN OUT``: read any supported image and write it as NRRD or NIfTI."""
    p = sub.add_parser("convert", help="convert an image (NRRD, NIfTI, MHA, Interfile, DICOM folder) to NRRD or NIfTI")
    p.add_argument("input", help="input image file or DICOM series folder")
    p.add_argument("output", help="output file: .nrrd, .nii or .nii.gz")
    p.add_argument("--add", type=float, default=0.0, metavar="VALUE",
                   help="add VALUE to every voxel (e.g. --add -1000 for CT stored as HU+1000)")
    p.add_argument("--orientation", metavar="CODE",
                   help="patient orientation of an Interfile image, whose header gives none: three letters, the "
                        "directions in which the column, row and slice index grow (e.g. LAI for GATE's CTs; "
                        "default LPS with a warning)")
    p.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from .imageio import read_volume, write_volume

    if Path(args.input).expanduser().resolve() == Path(args.output).expanduser().resolve():
        raise UserError(f"the output {args.output} is the input: choose another file name (the input is never "
                        "overwritten)")
    volume = read_volume(args.input, args.orientation)
    if args.add:
        volume = volume.with_array(volume.array.astype(np.float32) + np.float32(args.add))
    write_volume(volume, args.output)
    print(f"wrote {args.output}: {volume.describe()}")
    return 0
