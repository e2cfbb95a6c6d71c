"""The DoseCNN Slicer module's child processes: ``dosecnn run`` and ``dosecnn integrate`` command lines, the time-point
manifest the Logic writes, and the choices the GUI offers (pure Python: no Slicer, no Qt, no torch).

The child runs with the protocol and the process handling of ``ImagingBasics.process`` (progress lines,
Cancel, timeout, error text), shared with the CTPerfusionMapping module; only the command lines are DoseCNN's.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from ImagingBasics.errors import UserError

#: the folder that holds ``DoseCNNLib`` (put on the child's PYTHONPATH beside the foundation's folder)
DOSE_LIB_PARENT = Path(__file__).resolve().parent.parent.parent

#: GUI label -> ``--method``
METHODS: Dict[str, str] = {"VDK": "vdk", "VDK + CNN": "cnn"}
#: GUI label of the calibration; the first: total activity in the SPECT's field of view, the second: Bq per count
CALIBRATIONS = ("Activity in the field of view (MBq)", "Bq per count")
#: GUI label -> ``dosecnn integrate --fit``
FIT_MODELS: Dict[str, str] = {"Mono-exponential": "mono", "Bi-exponential (uptake and washout)": "bi",
                              "Trapezoid with exponential tail": "trapezoid"}
#: GUI label -> ``--start`` (the trapezoid before the first time point)
START_MODES: Dict[str, str] = {"First value held back to 0 h": "constant", "Line from zero at 0 h": "zero"}
#: GUI label -> ``--registration-metric`` (CT to reference CT)
REGISTRATION_METRICS: Dict[str, str] = {"Mean squares (HU)": "meansquares", "Mattes mutual information": "mattes"}


def child_environment(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The child's environment: the foundation's and this library's folders first on PYTHONPATH (a checkout keeps
    them in two folders; an installed extension in one)."""
    from ImagingBasics.process import child_environment as shared

    return shared(base, extra_paths=[DOSE_LIB_PARENT])


def _calibration(activity_mbq: Optional[float], bq_per_count: Optional[float]) -> List[str]:
    if (activity_mbq is None) == (bq_per_count is None):
        raise UserError("give exactly one calibration: the activity in the field of view (MBq) or Bq per count")
    if activity_mbq is not None:
        return ["--activity-mbq", repr(float(activity_mbq))]
    return ["--calibration", repr(float(bq_per_count))]


def _weights(method: str, weights: Optional[str]) -> List[str]:
    if method not in METHODS.values():
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS.values())}")
    return ["--weights", str(weights)] if method == "cnn" and weights else []


def run_command(spect: str, ct: str, out: str, *, python: Optional[str] = None, activity_mbq: Optional[float] = None,
                bq_per_count: Optional[float] = None, labels: Optional[str] = None, method: str = "vdk",
                weights: Optional[str] = None, device: str = "auto", kernel_cache: Optional[str] = None) -> List[str]:
    """``dosecnn run`` with protocol lines, run by ``python`` (default this interpreter; in Slicer PythonSlicer)."""
    cmd = [python or sys.executable, "-m", "DoseCNNLib.cli", "run", "--spect", str(spect), "--ct", str(ct),
           "--out", str(out), "--method", method, "--device", device, "--progress-lines"]
    cmd += _calibration(activity_mbq, bq_per_count) + _weights(method, weights)
    if labels:
        cmd += ["--labels", str(labels)]
    if kernel_cache:
        cmd += ["--kernel-cache", str(kernel_cache)]
    return cmd


def integrate_command(manifest: str, out: str, *, python: Optional[str] = None, reference_ct: Optional[str] = None,
                      labels: Optional[str] = None, names: Optional[Mapping[int, str]] = None, method: str = "vdk",
                      weights: Optional[str] = None, fit: str = "mono", start: str = "constant", register: bool = True,
                      registration_metric: str = "meansquares", device: str = "auto",
                      kernel_cache: Optional[str] = None) -> List[str]:
    """``dosecnn integrate`` with protocol lines and the dose-rate map of every time point written too."""
    if fit not in FIT_MODELS.values() or start not in START_MODES.values():
        raise UserError(f"unknown fit {fit!r} or start {start!r}")
    if registration_metric not in REGISTRATION_METRICS.values():
        raise UserError(f"unknown registration metric {registration_metric!r}")
    cmd = [python or sys.executable, "-m", "DoseCNNLib.cli", "integrate", str(manifest), "--out", str(out),
           "--method", method, "--fit", fit, "--start", start, "--registration-metric", registration_metric,
           "--device", device, "--dose-rate-maps", "--progress-lines"]
    cmd += _weights(method, weights)
    if reference_ct:
        cmd += ["--reference-ct", str(reference_ct)]
    if labels:
        cmd += ["--labels", str(labels)]
        if names:
            cmd += ["--names"] + [f"{int(v)}={n}" for v, n in sorted(names.items())]
    if not register:
        cmd.append("--no-register")
    if kernel_cache:
        cmd += ["--kernel-cache", str(kernel_cache)]
    return cmd


@dataclass
class TimePointFiles:
    """One row of the manifest the Logic writes for ``dosecnn integrate`` (files in the Logic's temporary folder)."""

    time_h: float
    spect: str
    ct: str
    activity_mbq: Optional[float] = None
    bq_per_count: Optional[float] = None


def write_time_manifest(points: Sequence[TimePointFiles], path: Path) -> Path:
    """The manifest of ``dosecnn integrate`` (columns time_h, spect, ct, activity_mbq, bq_per_count; absolute paths)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["time_h", "spect", "ct", "activity_mbq", "bq_per_count"])
        for p in points:
            writer.writerow([repr(float(p.time_h)), str(Path(p.spect).resolve()), str(Path(p.ct).resolve()),
                             "" if p.activity_mbq is None else repr(float(p.activity_mbq)),
                             "" if p.bq_per_count is None else repr(float(p.bq_per_count))])
    return path


def time_label(hours: float) -> str:
    """A time point's name in node and column titles: ``4 h``, ``24 h``, ``2.5 h``."""
    return f"{float(hours):g} h"


def dose_rate_map_name(index: int) -> str:
    """The file ``dosecnn integrate --dose-rate-maps`` writes for the ``index``-th time point (0-based, in time order)."""
    from ..dosimetry.integrate import DOSE_RATE_MAP

    return DOSE_RATE_MAP.format(index=index)
