"""The CTPerfusionMapping Slicer module's child process: the ``ctpm run`` command line and its environment (pure
Python: no Slicer, no Qt, no torch). The protocol and the process handling are the foundation's
(:mod:`ImagingBasics.process`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional

#: the folder that holds ``CTPerfusionMappingLib`` (put on the child's PYTHONPATH beside the foundation's folder)
CTPM_LIB_PARENT = Path(__file__).resolve().parent.parent.parent


def child_environment(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The child's environment: the foundation's and this library's folders first on PYTHONPATH (a checkout keeps
    them in two folders; an installed extension in one)."""
    from ImagingBasics.process import child_environment as shared

    return shared(base, extra_paths=[CTPM_LIB_PARENT])


def run_command(ct: str, out: str, python: Optional[str] = None, spect: Optional[str] = None,
                lungs: Optional[str] = None, lobes: Optional[str] = None, weights: Optional[str] = None,
                baseline: bool = False, device: str = "auto", register: bool = True, threshold: float = 0.66,
                mc_dropout: int = 0, labels_source: str = "auto", high_percentile: Optional[float] = None) -> List[str]:
    """The child's command line: ``ctpm run`` with protocol lines, run by ``python`` (default: this interpreter;
    in Slicer ``sys.executable`` is PythonSlicer)."""
    cmd = [python or sys.executable, "-m", "CTPerfusionMappingLib.cli", "run", "--ct", str(ct), "--out", str(out),
           "--device", device, "--threshold", repr(float(threshold)), "--labels-source", labels_source,
           "--mc-dropout", str(int(mc_dropout)), "--progress-lines"]
    for flag, value in (("--spect", spect), ("--lungs", lungs), ("--lobes", lobes), ("--weights", weights)):
        if value:
            cmd += [flag, str(value)]
    if high_percentile is not None:
        cmd += ["--high-percentile", repr(float(high_percentile))]
    if baseline:
        cmd.append("--baseline")
    if not register:
        cmd.append("--no-register")
    return cmd
