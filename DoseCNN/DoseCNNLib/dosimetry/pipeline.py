"""The dose-rate pipeline shared by ``dosecnn run``, ``dosecnn integrate``, ``dosecnn demo`` and the Slicer Logic.

One SPECT/CT time point -> dose-rate map (mGy/s) on the CT grid:

1-3. :func:`DoseCNNLib.physics.vdk.vdk_from_counts`: the SPECT resampled onto the CT grid (total kept) and
   calibrated to Bq per voxel (Bq per count, or the total activity in the field of view); the electron and photon
   voxel S values of the CT's voxel size (bundled, cached, or computed once); VDK convolution with density scaling
   (Li 2020).
   ``method="vdk-tissue"``: steps 1-2 as above, then the tissue-specific kernels of lung, soft tissue and bone
   (:mod:`DoseCNNLib.physics.tissue_kernels`: electrons by the source voxel's tissue, photons by the target's).
4. ``method="cnn"``: the residual CNN adds its learned correction (Monte Carlo minus VDK) to the VDK map (the
   density-scaled VDK it was trained on).

:func:`label_table` summarises a dose-rate map per organ/lesion label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume

METHODS = ("vdk", "vdk-tissue", "cnn")


@dataclass
class DoseRateResult:
    dose_rate_mgy_s: Volume  # on the CT grid
    activity_bq: Volume  # the calibrated activity on the CT grid
    vdk_dose_rate_mgy_s: Volume  # the kernel map (equal to dose_rate for methods "vdk" and "vdk-tissue")
    method: str
    info: Dict[str, object] = field(default_factory=dict)



def dose_rate_map(spect: Volume, ct: Volume, bq_per_count: Optional[float] = None,
                  activity_mbq: Optional[float] = None, method: str = "vdk", weights=None, device: str = "cpu",
                  nuclide: str = "Lu-177", kernel_cache: Optional[Path] = None,
                  progress: Optional[Callable[[str], None]] = None) -> DoseRateResult:
    """Dose rate (mGy/s) of one SPECT/CT time point (steps in the module docstring).

    ``weights``: a CNN weights file (``method="cnn"``; default the bundled demonstration model).
    """
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "vdk-tissue":
        from ..physics.tissue_kernels import tissue_vdk_from_counts as kernel_dose
    else:
        from ..physics.vdk import vdk_from_counts as kernel_dose

    activity, vdk, vdk_info = kernel_dose(spect, ct, bq_per_count, activity_mbq, nuclide, kernel_cache, device,
                                          progress)
    info: Dict[str, object] = {"method": method, **vdk_info}
    dose = vdk
    if method == "cnn":
        from ..cnn.inference import cnn_dose_rate

        dose, cnn_info = cnn_dose_rate(activity, ct, vdk, weights=weights, device=device)
        info.update(cnn_info)
    return DoseRateResult(dose, activity, vdk, method, info)


def load_dose_weights_for(method: str, weights=None, device: str = "cpu"):
    """The CNN weights a run of ``method`` needs, loaded now (``method="cnn"``: a file, or the bundled model when
    ``weights`` is None), so that a missing or damaged weights file is refused before any dose is computed; None for
    ``method="vdk"``."""
    if method != "cnn":
        return None
    from ..cnn.weights import resolve_weights

    return resolve_weights(weights, device)


def label_table(dose_rate: Volume, labels: Volume, activity: Optional[Volume] = None,
                names: Optional[Dict[int, str]] = None) -> List[Dict[str, object]]:
    """Per label > 0: name, volume (mL), mean and maximum dose rate (mGy/s), activity (MBq) when given."""
    if not labels.same_geometry(dose_rate):
        raise UserError("the label map must be on the CT grid")
    lab = labels.array.astype(np.int64)
    rows: List[Dict[str, object]] = []
    voxel_ml = dose_rate.voxel_volume_ml
    for value in sorted(int(v) for v in np.unique(lab) if v > 0):
        inside = lab == value
        d = dose_rate.array[inside]
        row: Dict[str, object] = {"label": value, "name": (names or {}).get(value, f"label {value}"),
                                  "volume_ml": float(d.size * voxel_ml), "mean_dose_rate_mgy_s": float(d.mean()),
                                  "max_dose_rate_mgy_s": float(d.max())}
        if activity is not None:
            row["activity_mbq"] = float(activity.array[inside].sum(dtype=np.float64) / 1e6)
        rows.append(row)
    return rows


def label_names_from_args(items: Optional[List[str]]) -> Dict[int, str]:
    """Label names from ``--names``: ``VALUE=NAME`` pairs, or one CSV file with columns ``label,name``."""
    from ImagingBasics.manifest import read_rows

    items = list(items or [])
    if len(items) == 1 and items[0].lower().endswith(".csv"):
        rows = read_rows(Path(items[0]), ("label", "name"), path_columns=())
        items = [f"{r['label']}={r['name']}" for r in rows]
    names: Dict[int, str] = {}
    for item in items:
        value, sep, name = item.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip():
            raise UserError(f"--names takes VALUE=NAME pairs such as 1=liver (or a CSV file), got {item!r}")
        names[int(value)] = name.strip()
    return names
