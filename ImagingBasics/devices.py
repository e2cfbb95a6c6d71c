"""Where torch computes: device choice, a device report, mixed precision, and the fallback to the CPU when a GPU runs
out of memory. Shared by both networks (the perfusion ARNN and the dose CNN).

torch is imported inside the functions, so that this module (and the Slicer modules that read :data:`DEVICE`) loads
without it. ``python -m ImagingBasics.devices --json`` prints :func:`device_report` as one JSON line: the Slicer
modules ask a child process for it, so that torch is never imported into Slicer itself.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from typing import Any, Callable, Dict, Optional, Sequence

from .errors import UserError
from .options import Option

#: The devices a pipeline run may ask for: the same on every surface (command line, batch scripts, GUIs). The training
#: commands also take "cuda:N" (:data:`DEVICE_HELP`); a run on another GPU than the first sets CUDA_VISIBLE_DEVICES.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
#: The ``--device`` option of the pipeline commands (``ctpm run/evaluate/batch``, ``dosecnn run/integrate``), their
#: batch scripts and their Slicer modules.
DEVICE = Option("device", "--device", str, "auto", choices=DEVICE_CHOICES,
                help="where torch computes: auto (a CUDA GPU, then Apple MPS, then the CPU), cpu, cuda (the first GPU "
                     "that CUDA_VISIBLE_DEVICES leaves visible) or mps (Apple silicon)")
#: Help text of a --device option that also takes "cuda:N" (no pipeline command uses it: they take DEVICE).
DEVICE_HELP = "auto (CUDA, then Apple MPS, then CPU), cpu, cuda (or cuda:N) or mps"


def select_device(requested: str = "auto") -> str:
    """Resolve "auto" / "cpu" / "cuda" / "cuda:N" / "gpu" / "mps" to an available torch device string.

    "auto" picks CUDA, then Apple MPS, then the CPU. An unavailable GPU that was asked for raises UserError.
    """
    import torch

    req = str(requested or "auto").strip().lower()
    if req == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if mps_available() else "cpu"
    if req == "cpu":
        return "cpu"
    if req in ("gpu", "cuda") or req.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"device {requested!r} was requested but no CUDA GPU is available to torch; use 'cpu' or 'auto'")
        if req.startswith("cuda:"):
            index = req.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UserError(f"no CUDA device {requested!r}: this machine has {torch.cuda.device_count()} GPU(s)")
            return req
        return "cuda"
    if req == "mps":
        if not mps_available():
            raise UserError("device 'mps' was requested but Apple MPS is not available; use 'cpu' or 'auto'")
        return "mps"
    raise UserError(f"unknown device {requested!r}; use 'auto', 'cpu', 'cuda' (or 'cuda:N') or 'mps'")


def mps_available() -> bool:
    """True when torch has a usable Apple-silicon (MPS) backend."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def describe_device(device: str) -> str:
    """Human-readable device, e.g. "CUDA: NVIDIA H100 80GB HBM3 (79 GB)", "Apple MPS", "CPU (2 threads)"."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev.index or 0)
        return f"CUDA: {props.name} ({props.total_memory / 1024**3:.0f} GB)"
    if dev.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def device_report() -> Dict[str, Any]:
    """What torch can compute on here: torch and CUDA versions, every CUDA GPU, and what "auto" picks.

    For ``ctpm devices``, ``dosecnn devices`` and the Slicer modules' device line ("GPU not detected" is the most
    common question).
    """
    import torch

    gpus = [describe_device(f"cuda:{i}") for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "gpus": gpus, "mps_available": mps_available(), "auto": describe_device(select_device("auto"))}


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a GPU out-of-memory error (CUDA's own class, or MPS's RuntimeError message)."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def run_with_oom_fallback(fn: Callable[[str], Any], device: str) -> Any:
    """Return ``fn(device)``; if a GPU device runs out of memory, warn once and return ``fn("cpu")``."""
    import torch

    try:
        return fn(device)
    except Exception as exc:
        if device == "cpu" or not is_out_of_memory(exc):
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.startswith("mps") and mps_available():
        torch.mps.empty_cache()
    warnings.warn(f"out of GPU memory on {device}; running on the CPU instead (slower)", RuntimeWarning, stacklevel=2)
    return fn("cpu")


def amp_dtype(device: str):
    """The autocast type of :func:`autocast_context` on ``device``: bfloat16 on a CUDA GPU that has it, else float16
    (which needs loss scaling in training); None off CUDA (no autocast). Asked of ``device`` itself, not of the
    current GPU ("cuda:1" on a machine with GPUs of two generations)."""
    import torch

    if not str(device).startswith("cuda"):
        return None
    with torch.cuda.device(torch.device(device)):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: str, amp: bool):
    """Mixed-precision context: autocast to :func:`amp_dtype` (bfloat16 or float16) on CUDA when ``amp``, else a
    no-op."""
    import torch

    dtype = amp_dtype(device) if amp else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def device_report_text(report: Dict[str, Any]) -> str:
    """The report of :func:`device_report` as the lines ``ctpm devices`` / ``dosecnn devices`` print."""
    cuda = f"CUDA {report['cuda_build']}" if report["cuda_build"] else "CPU-only build"
    lines = [f"torch {report['torch']} ({cuda})"]
    lines += [f"  cuda:{i}  {gpu}" for i, gpu in enumerate(report["gpus"])]
    if not report["gpus"]:
        lines.append("  no CUDA GPU visible" + (" (the installed torch has no CUDA support)" if not report["cuda_build"]
                                               else " (check the NVIDIA driver and CUDA_VISIBLE_DEVICES)"))
    lines.append(f"auto -> {report['auto']}")
    return "\n".join(lines)


def print_device_report(as_json: bool = False) -> int:
    """Print what torch can compute on (text, or one JSON line); a missing torch is a UserError."""
    try:
        report = device_report()
    except ImportError:
        raise UserError("PyTorch is not installed: pip install torch (or, in Slicer, the PyTorch extension)") from None
    print(json.dumps(report) if as_json else device_report_text(report))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ImagingBasics.devices [--json]``: the device probe of the Slicer modules."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return print_device_report("--json" in args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
