"""The CTPerfusionMapping Slicer module's child process: the ``ctpm run`` command line and its environment (pure
Python: no Slicer, no Qt, no torch). The protocol and the process handling are the foundation's
(:mod:`ImagingBasics.process`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ImagingBasics.dicom_inputs import PATIENT_POSITION

from ..options import RUN

#: the folder that holds ``CTPerfusionMappingLib`` (put on the child's PYTHONPATH beside the foundation's folder)
CTPM_LIB_PARENT = Path(__file__).resolve().parent.parent.parent


def child_environment(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The child's environment: the foundation's and this library's folders first on PYTHONPATH (a checkout keeps
    them in two folders; an installed extension in one)."""
    from ImagingBasics.process import child_environment as shared

    return shared(base, extra_paths=[CTPM_LIB_PARENT])


def run_command(ct: str, out: str, python: Optional[str] = None, spect: Optional[str] = None,
                lungs: Optional[str] = None, lobes: Optional[str] = None, weights: Optional[str] = None,
                baseline: bool = False, patient_position: Optional[str] = None, **options: Any) -> List[str]:
    """The child's command line: ``ctpm run`` with protocol lines, run by ``python`` (default: this interpreter; in
    Slicer ``sys.executable`` is PythonSlicer). ``options``: values of :data:`~.options.RUN` by name (the others at
    their defaults), checked and written by the option definitions, so that ``ctpm run`` reads back the same values.
    ``patient_position``: the CT's DICOM PatientPosition when the Slicer node has one (the exported NRRD has not)."""
    cmd = [python or sys.executable, "-m", "CTPerfusionMappingLib.cli", "run", "--ct", str(ct), "--out", str(out)]
    for flag, value in (("--spect", spect), ("--lungs", lungs), ("--lobes", lobes), ("--weights", weights)):
        if value:
            cmd += [flag, str(value)]
    if baseline:
        cmd.append("--baseline")
    if patient_position:
        cmd += [PATIENT_POSITION.flag, PATIENT_POSITION.check(patient_position)]
    return cmd + RUN.to_argv(options) + ["--progress-lines"]
