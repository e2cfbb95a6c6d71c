"""The DoseCNN Slicer module's child processes: ``dosecnn run`` and ``dosecnn integrate`` command lines and the
time-point manifest the Logic writes (pure Python: no Slicer, no Qt, no torch).

The child runs with the protocol and the process handling of ``ImagingBasics.process`` (progress lines,
Cancel, timeout, error text), shared with the CTPerfusionMapping module; only the command lines are DoseCNN's. Their
options are written by the option definitions (:data:`~.options.RUN`, :data:`~.options.INTEGRATE`), so that the
child reads back the values the Logic checked.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ImagingBasics.errors import UserError

from ..options import INTEGRATE, RUN

#: the folder that holds ``DoseCNNLib`` (put on the child's PYTHONPATH beside the foundation's folder)
DOSE_LIB_PARENT = Path(__file__).resolve().parent.parent.parent


def child_environment(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The child's environment: the foundation's and this library's folders first on PYTHONPATH (a checkout keeps
    them in two folders; an installed extension in one)."""
    from ImagingBasics.process import child_environment as shared

    return shared(base, extra_paths=[DOSE_LIB_PARENT])


def _files(weights: Optional[str], method: str, labels: Optional[str], kernel_cache: Optional[str]) -> List[str]:
    cmd = ["--weights", str(weights)] if method == "cnn" and weights else []
    if labels:
        cmd += ["--labels", str(labels)]
    if kernel_cache:
        cmd += ["--kernel-cache", str(kernel_cache)]
    return cmd


def run_command(spect: str, ct: str, out: str, *, python: Optional[str] = None, labels: Optional[str] = None,
                weights: Optional[str] = None, kernel_cache: Optional[str] = None, **options: Any) -> List[str]:
    """``dosecnn run`` with protocol lines, run by ``python`` (default this interpreter; in Slicer PythonSlicer).
    ``options``: values of :data:`~.options.RUN` by name (the others at their defaults); exactly one calibration
    (``activity_mbq`` or ``bq_per_count``)."""
    if (options.get("activity_mbq") is None) == (options.get("bq_per_count") is None):
        raise UserError("give exactly one calibration: the activity in the field of view (MBq) or Bq per count")
    cmd = [python or sys.executable, "-m", "DoseCNNLib.cli", "run", "--spect", str(spect), "--ct", str(ct),
           "--out", str(out)] + RUN.to_argv(options)
    return cmd + _files(weights, options.get("method", "vdk"), labels, kernel_cache) + ["--progress-lines"]


def integrate_command(manifest: str, out: str, *, python: Optional[str] = None, reference_ct: Optional[str] = None,
                      labels: Optional[str] = None, names: Optional[Mapping[int, str]] = None,
                      weights: Optional[str] = None, kernel_cache: Optional[str] = None, **options: Any) -> List[str]:
    """``dosecnn integrate`` with protocol lines and the dose-rate map of every time point written too. ``options``:
    values of :data:`~.options.INTEGRATE` by name (the others at their defaults)."""
    cmd = [python or sys.executable, "-m", "DoseCNNLib.cli", "integrate", str(manifest), "--out", str(out)]
    cmd += INTEGRATE.to_argv(options) + _files(weights, options.get("method", "vdk"), labels, kernel_cache)
    if reference_ct:
        cmd += ["--reference-ct", str(reference_ct)]
    if labels and names:
        cmd += ["--names"] + [f"{int(v)}={n}" for v, n in sorted(names.items())]
    return cmd + ["--dose-rate-maps", "--progress-lines"]


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


def export_time_points(points: Sequence[Any], reference_ct: Any, folder: str, by_activity: bool,
                       bq_per_count: Optional[float]) -> Dict[str, Any]:
    """Write the time points of a Slicer run for ``dosecnn integrate``: each SPECT and CT node as NRRD in ``folder`` (a
    node used twice is written once; the reference CT node is ``folder/ct.nrrd``, written already; a point without a
    CT uses it) and the manifest, in time order. ``points``: the module's time points (``spect``, ``ct``, ``hours``,
    ``activityMBq``, used when ``by_activity``; else ``bq_per_count`` for every row). Returns the manifest's path and
    the hours in time order."""
    from ImagingBasics.imageio import write_volume
    from ImagingBasics.slicer_nodes import volume_from_node

    written = [(reference_ct, str(Path(folder) / "ct.nrrd"))]

    def file_of(node: Any, what: str) -> str:
        for known, path in written:
            if known is node:
                return path
        path = str(Path(folder) / f"{what}_{len(written)}.nrrd")
        write_volume(volume_from_node(node, what), path)
        written.append((node, path))
        return path

    points = sorted(points, key=lambda point: point.hours)
    rows = [TimePointFiles(point.hours, file_of(point.spect, "spect"),
                           file_of(point.ct if point.ct is not None else reference_ct, "ct"),
                           point.activityMBq if by_activity else None, None if by_activity else bq_per_count)
            for point in points]
    manifest = write_time_manifest(rows, Path(folder) / "timepoints.csv")
    return {"manifest": str(manifest), "times": [point.hours for point in points]}


def time_label(hours: float) -> str:
    """A time point's name in node and column titles: ``4 h``, ``24 h``, ``2.5 h``."""
    return f"{float(hours):g} h"


def dose_rate_map_name(index: int) -> str:
    """The file ``dosecnn integrate --dose-rate-maps`` writes for the ``index``-th time point (0-based, in time order)."""
    from ..dosimetry.integrate import DOSE_RATE_MAP

    return DOSE_RATE_MAP.format(index=index)
