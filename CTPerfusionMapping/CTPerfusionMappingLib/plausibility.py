"""Physiological plausibility of a perfusion map: does it look like the MAA SPECT of a supine patient?

A map made from a CT alone has no SPECT to be compared with, but a supine patient's lung perfusion has features that
a faithful map shares, and a map without them should not be trusted for its spatial pattern:

* it rises from front to back: gravity raises the perfusion of the dependent lung (West et al., J Appl Physiol 1964;
  measured in supine humans by Hopkins et al., J Appl Physiol 2007): :func:`posterior_to_anterior`, the mean of the
  posterior half over that of the anterior half (split at the lung's median anterior-posterior coordinate);
* the right lung takes about half of it, 52.5 +- 2.1 % in 206 normal scans (Cheng et al., Congenit Heart Dis 2006):
  :func:`right_lung_share`;
* emphysematous lung is poorly perfused: :func:`emphysema_to_rest`, voxels below -950 HU (the usual LAA-950 cut-off)
  against the rest of the lung.

:func:`lung_plausibility` measures one lung, :func:`map_plausibility` both lungs of a map (``metrics.json``'s
``plausibility``), and :func:`plausibility_warnings` turns what a map fails into quality warnings. The warning limits
are deliberately wider than the perfusion-model issue's acceptance (posterior/anterior >= 1.1, judged on the bundled
model's validation in ``bench/real_ct_plausibility.py``): a warning means the map lacks the feature or runs against
it, not that it is weak. A lung cut by the field of view is not judged (its halves are those of the part in view),
nor is the gradient of a patient who was not lying on the back.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from ImagingBasics.quality import QualityWarning
from ImagingBasics.volume import Volume

from .labels import LEFT_LUNG, RIGHT_LUNG

#: lung label value of each side (lungs.nrrd)
SIDES = {"right": RIGHT_LUNG, "left": LEFT_LUNG}
#: CT number below which lung counts as emphysema-like (HU), the usual LAA-950 cut-off
EMPHYSEMA_HU = -950.0
#: a lung needs at least this share of its voxels below EMPHYSEMA_HU for its emphysema contrast to be judged
MIN_EMPHYSEMA_SHARE = 0.005
#: below this posterior/anterior ratio, a supine lung's map runs against the gravity gradient (a warning): its
#: anterior half more perfused by more than 5 %. The margin below 1 keeps lungs whose true gradient is weak from
#: warning on noise (pathology-free phantom lungs' truth: median 1.22, 1 of 40 below 1.0, lowest 0.90; the demo
#: phantom's truth 1.04 in both lungs, its map 1.13 and 0.99)
MIN_POSTERIOR_TO_ANTERIOR = 0.95
#: outside this right-lung share of a map (both lungs whole), a warning: about 5 standard deviations from the normal
#: 52.5 +- 2.1 % (Cheng 2006), as in the acceptance of the perfusion-model issue
RIGHT_SHARE_RANGE = (0.42, 0.65)
#: the posterior half "holds more" emphysema-like lung when its share exceeds the anterior half's by this much
EMPHYSEMA_IMBALANCE = 0.02


def lung_coordinates_mm(lungs: Volume, mask: np.ndarray) -> Dict[str, np.ndarray]:
    """Patient coordinates (mm) of the voxels of ``mask`` (an array of ``lungs``' shape): ``posterior`` (LPS y,
    larger toward the back) and ``superior`` (LPS z, larger toward the head), whatever the file's voxel order."""
    kji = np.argwhere(mask)
    lps = lungs.index_to_lps(kji[:, ::-1].astype(float))
    return {"posterior": lps[:, 1], "superior": lps[:, 2]}


def halves_and_thirds(values: np.ndarray, coordinate: np.ndarray) -> Dict[str, float]:
    """Mean of ``values`` in the two halves (split at the median of ``coordinate``) and three thirds (its tertiles),
    from the low to the high end of the coordinate."""
    median = np.median(coordinate)
    t1, t2 = np.quantile(coordinate, [1 / 3, 2 / 3])
    return {"low_half": float(values[coordinate <= median].mean()), "high_half": float(values[coordinate > median].mean()),
            "low_third": float(values[coordinate <= t1].mean()),
            "mid_third": float(values[(coordinate > t1) & (coordinate <= t2)].mean()),
            "high_third": float(values[coordinate > t2].mean())}


def posterior_to_anterior(perfusion: np.ndarray, lungs: Volume, side: int) -> float:
    """Mean perfusion of one lung's posterior half over its anterior half (``side``: the lung's label value, 1 right,
    2 left; halves split at the lung's median anterior-posterior coordinate in mm): above 1 in a supine patient's
    MAA SPECT, where gravity raises the dependent lung's perfusion (West 1964; Hopkins 2007). NaN for an empty lung
    or an anterior half without perfusion."""
    mask = np.asarray(lungs.array) == side
    if np.count_nonzero(mask) < 2:
        return float("nan")
    halves = halves_and_thirds(np.asarray(perfusion)[mask].astype(float), lung_coordinates_mm(lungs, mask)["posterior"])
    return halves["high_half"] / halves["low_half"] if halves["low_half"] > 0 else float("nan")


def right_lung_share(perfusion: np.ndarray, lungs: Volume) -> float:
    """The right lung's share of the perfusion summed over both lungs (normal: 0.525 +- 0.021, Cheng 2006); NaN
    without perfusion."""
    labels = np.asarray(lungs.array)
    values = np.asarray(perfusion, dtype=float)
    right, left = float(values[labels == RIGHT_LUNG].sum()), float(values[labels == LEFT_LUNG].sum())
    return right / (right + left) if right + left > 0 else float("nan")


def emphysema_to_rest(perfusion: np.ndarray, ct_hu: np.ndarray, mask: np.ndarray) -> float:
    """Mean perfusion of the lung voxels of ``mask`` below -950 HU (emphysema-like) over that of the rest: below 1
    where the map follows the poor perfusion of emphysematous lung. NaN when less than 0.5 % of the lung lies below
    -950 HU (too little to judge) or the rest has no perfusion."""
    p, hu = np.asarray(perfusion)[mask].astype(float), np.asarray(ct_hu)[mask]
    emphysema = hu < EMPHYSEMA_HU
    if p.size == 0 or emphysema.mean() < MIN_EMPHYSEMA_SHARE or emphysema.all():
        return float("nan")
    rest = float(p[~emphysema].mean())
    return float(p[emphysema].mean()) / rest if rest > 0 else float("nan")


def lung_plausibility(perfusion: np.ndarray, ct_hu: np.ndarray, lungs: Volume, side: int) -> Dict[str, float]:
    """The measures of one lung (label value ``side``): its posterior/anterior ratio, the share of its voxels below
    -950 HU over the whole lung and in its anterior and posterior halves (where a posterior half holds more
    emphysema-like lung, a faithful map's gradient may fall short), and the emphysema-to-rest ratio."""
    mask = np.asarray(lungs.array) == side
    if np.count_nonzero(mask) < 2:
        nan = float("nan")
        return {"posterior_to_anterior": nan, "emphysema_share": nan, "emphysema_anterior": nan,
                "emphysema_posterior": nan, "emphysema_to_rest": nan}
    emphysema = (np.asarray(ct_hu)[mask] < EMPHYSEMA_HU).astype(float)
    by_half = halves_and_thirds(emphysema, lung_coordinates_mm(lungs, mask)["posterior"])
    return {"posterior_to_anterior": posterior_to_anterior(perfusion, lungs, side),
            "emphysema_share": float(emphysema.mean()),
            "emphysema_anterior": by_half["low_half"], "emphysema_posterior": by_half["high_half"],
            "emphysema_to_rest": emphysema_to_rest(perfusion, ct_hu, mask)}


def map_plausibility(perfusion: Volume, ct: Volume, lungs: Volume, truncated: Sequence[str] = (),
                     supine: bool = True) -> Dict[str, Any]:
    """Both lungs of a map on the CT grid: ``lungs`` (per side, :func:`lung_plausibility` and whether it is
    ``judged``: not cut by the field of view), the ``right_share`` (judged when both lungs are whole), and the limits
    the warnings use. ``truncated``: the sides ("right", "left") the field of view cuts; ``supine``: False when the
    CT's patient position is known and not supine (then no gradient is expected toward the back)."""
    values, hu = np.asarray(perfusion.array), np.asarray(ct.array)
    per_lung = {side: dict(lung_plausibility(values, hu, lungs, label), judged=side not in truncated)
                for side, label in SIDES.items()}
    return {"lungs": per_lung, "right_share": right_lung_share(values, lungs),
            "right_share_judged": not truncated, "supine": supine,
            "limits": {"min_posterior_to_anterior": MIN_POSTERIOR_TO_ANTERIOR,
                       "right_share": list(RIGHT_SHARE_RANGE), "emphysema_hu": EMPHYSEMA_HU,
                       "min_emphysema_share": MIN_EMPHYSEMA_SHARE}}


def with_reference_spect(plausibility: Dict[str, Any], spect_on_ct: Volume, ct: Volume, lungs: Volume) -> Dict[str, Any]:
    """``plausibility`` (of a map) with the same measures of the patient's SPECT on the CT grid under ``"spect"``:
    where the real SPECT lacks a feature too, the map may be right to lack it. No warnings come from the SPECT."""
    truncated = [side for side, m in plausibility["lungs"].items() if not m["judged"]]
    spect = map_plausibility(spect_on_ct, ct, lungs, truncated, plausibility["supine"])
    return dict(plausibility, spect={"lungs": spect["lungs"], "right_share": spect["right_share"]})


def _gradient_warning(side: str, m: Dict[str, float]) -> QualityWarning:
    ratio = m["posterior_to_anterior"]
    more_behind = m["emphysema_posterior"] > m["emphysema_anterior"] + EMPHYSEMA_IMBALANCE
    why = (f"its posterior half holds more emphysema-like lung ({100 * m['emphysema_posterior']:.0f} % vs "
           f"{100 * m['emphysema_anterior']:.0f} % below -950 HU), which can explain it" if more_behind else
           "treat the map's front-to-back pattern in this lung with caution")
    return QualityWarning(
        "no_gravity_gradient",
        f"the {side} lung's map runs against the supine gravity gradient (posterior/anterior half mean {ratio:.2f}, "
        f"below {MIN_POSTERIOR_TO_ANTERIOR:.2f}; a supine patient's perfusion rises toward the back): {why}",
        {"lung": side, "posterior_to_anterior": round(ratio, 3), "min_posterior_to_anterior": MIN_POSTERIOR_TO_ANTERIOR,
         "emphysema_anterior_percent": round(100 * m["emphysema_anterior"], 1),
         "emphysema_posterior_percent": round(100 * m["emphysema_posterior"], 1)})


def plausibility_warnings(plausibility: Dict[str, Any]) -> List[QualityWarning]:
    """The warnings of a :func:`map_plausibility` result: a judged lung of a supine (or unknown-position) patient
    whose posterior/anterior ratio is below :data:`MIN_POSTERIOR_TO_ANTERIOR` (``no_gravity_gradient``), a judged
    right-lung share outside :data:`RIGHT_SHARE_RANGE` (``right_share_unusual``), and a judged lung whose
    emphysema-like voxels are at least as perfused as the rest (``emphysema_perfused``)."""
    warnings: List[QualityWarning] = []
    for side, m in plausibility["lungs"].items():
        if not m["judged"]:
            continue
        ratio = m["posterior_to_anterior"]
        if plausibility["supine"] and np.isfinite(ratio) and ratio < MIN_POSTERIOR_TO_ANTERIOR:
            warnings.append(_gradient_warning(side, m))
        if np.isfinite(m["emphysema_to_rest"]) and m["emphysema_to_rest"] >= 1.0:
            warnings.append(QualityWarning(
                "emphysema_perfused",
                f"the {side} lung's map perfuses its emphysema-like lung ({100 * m['emphysema_share']:.1f} % of it below "
                f"-950 HU) as much as the rest (ratio {m['emphysema_to_rest']:.2f}), whereas emphysematous lung is "
                "poorly perfused: treat the map's pattern in this lung with caution",
                {"lung": side, "emphysema_to_rest": round(m["emphysema_to_rest"], 3),
                 "emphysema_percent": round(100 * m["emphysema_share"], 2)}))
    share = plausibility["right_share"]
    low, high = RIGHT_SHARE_RANGE
    if plausibility["right_share_judged"] and np.isfinite(share) and not low <= share <= high:
        warnings.append(QualityWarning(
            "right_share_unusual",
            f"the right lung takes {100 * share:.0f} % of the map's perfusion, outside {100 * low:.0f}-{100 * high:.0f} % "
            "(normal lungs 52.5 +- 2.1 %): one-sided disease (a tumour, an embolus, an effusion) can do this; "
            "otherwise check the lung labels",
            {"right_share_percent": round(100 * share, 1), "usual_percent": [100 * low, 100 * high]}))
    return warnings


def truncated_sides(warnings: Sequence[QualityWarning]) -> List[str]:
    """The lung sides that ``lung_truncated`` warnings name (the field of view cuts them)."""
    return [str(w.values.get("lung")) for w in warnings if w.code == "lung_truncated"]


def summary_text(plausibility: Dict[str, Any]) -> str:
    """One line for a status bar: the map's posterior/anterior ratio per lung ("cut": not judged) and, with a SPECT,
    the SPECT's, e.g. ``posterior/anterior right 1.21, left 1.07 (SPECT 1.30, 1.18)``."""

    def pair(lungs: Dict[str, Any], marks: bool) -> List[str]:
        texts = []
        for side in SIDES:
            ratio = lungs[side]["posterior_to_anterior"]
            text = "n/a" if ratio is None or not np.isfinite(ratio) else f"{ratio:.2f}"
            texts.append(text + (" (cut)" if marks and not lungs[side].get("judged", True) else ""))
        return texts

    right, left = pair(plausibility["lungs"], True)
    line = f"posterior/anterior right {right}, left {left}"
    if plausibility.get("spect"):
        line += " (SPECT {}, {})".format(*pair(plausibility["spect"]["lungs"], False))
    return line


def status_summary(metrics_path) -> str:
    """``", posterior/anterior right ..., left ..."`` (:func:`summary_text`) for the Slicer module's status line, from
    a run's ``metrics.json``; ``""`` for the outputs of a version without the plausibility measures."""
    import json

    with open(metrics_path, encoding="utf-8") as f:
        plausibility = json.load(f).get("plausibility")
    return ", " + summary_text(plausibility) if plausibility else ""
