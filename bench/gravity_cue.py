"""Where does the perfusion map's gravity gradient come from: the anatomy, or the CT's dependent density?

Supine MAA SPECT shows perfusion rising from anterior to posterior whatever the lung's density does; many real CTs
also show a denser dependent lung, but emphysematous lungs can show none (the CIP COPD CT ``ct-64``: median lung HU
-953 / -919 / -939 in its anterior / middle / posterior thirds). A model whose gradient only follows the CT's density
would miss the gradient there. This experiment adds a linear dependent-density ramp of ``g`` HU (0 at the lungs'
most anterior row, ``g`` at their most posterior row, inside the lungs only) to a real CT and measures the posterior /
anterior ratio of the predicted perfusion (:func:`real_ct_plausibility.lung_measures`) for g in ``--ramps``:
a ratio that rises with g and stays near 1 at g = 0 means the model reads the gradient from the density.
The HU-only baseline (a function of the CT's density by construction) is shown beside it.

A last row per case replaces the whole lung with a uniform density (``UNIFORM_LUNG_HU`` with 20 HU of noise): the
CT then says nothing about the gradient, and what P/A remains is what the network learnt from position alone (the
baseline stays near 1).

    .venv/bin/python bench/gravity_cue.py [--data ../shared/data] [--cases "cip ct-64" "cip TestInput"]
                                          [--ramps -40 0 40 80] [--no-uniform] [--weights W]
                                          [--out bench/results/gravity_cue.md]
"""

from __future__ import annotations

import argparse
import os
import platform
from datetime import date
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from real_ct_plausibility import SIDES, lung_measures
from real_data_report import CASES as REAL_CASES

from CTPerfusionMappingLib.pipeline import run_pipeline
from CTPerfusionMappingLib.run_cli import load_model
from ImagingBasics.volume import Volume

HERE = Path(__file__).resolve().parent
MAPS = ("network", "baseline")


def dependent_ramp_hu(lungs: np.ndarray, gain_hu: float) -> np.ndarray:
    """``gain_hu`` x the posterior position across the lungs (0 at their most anterior row, 1 at the most posterior;
    LPS arrays ``[z, y, x]``, y posterior), inside the lungs only (float32 HU to add)."""
    rows = np.nonzero(lungs)[1]
    first, last = int(rows.min()), int(rows.max())
    position = np.clip((np.arange(lungs.shape[1]) - first) / max(1, last - first), 0.0, 1.0)
    return (gain_hu * position[None, :, None] * (lungs > 0)).astype(np.float32)


def posterior_to_anterior(ct: Volume, model, info, lungs: Optional[Volume] = None) -> Dict[str, Dict[str, float]]:
    """map -> lung side -> posterior-half over anterior-half mean perfusion, and the lungs used."""
    result = run_pipeline(ct, lungs=lungs, model=model, model_info=info)
    used = result.labels.lungs
    maps = {"network": result.perfusion.array, "baseline": result.baseline.array}
    return {name: {side: float(lung_measures(values, ct.array, used, value)["posterior_to_anterior"])
                   for side, value in SIDES.items()} for name, values in maps.items()}, used


#: the uniform lung of the position-only probe: normal parenchyma (HU) and its noise (HU, standard deviation)
UNIFORM_LUNG_HU = -870.0
UNIFORM_NOISE_HU = 20.0


def uniform_lung_hu(ct: np.ndarray, lungs: np.ndarray, seed: int = 0) -> np.ndarray:
    """``ct`` with every lung voxel replaced by ``UNIFORM_LUNG_HU`` plus Gaussian noise (``UNIFORM_NOISE_HU``)."""
    out = ct.astype(np.float32)
    inside = lungs > 0
    out[inside] = UNIFORM_LUNG_HU + np.random.default_rng(seed).normal(0.0, UNIFORM_NOISE_HU, int(inside.sum()))
    return out


def changed_ct_row(ct: Volume, hu: np.ndarray, model, info, lungs: Volume, ramp_hu: Optional[float]) -> Dict[str, object]:
    """One table row: the ratios of both maps in both lungs of ``ct`` with its values replaced by ``hu`` (the lungs
    given, segmented on the original CT); ``ramp_hu`` names the change (None: the uniform lung)."""
    ratios, _ = posterior_to_anterior(ct.with_array(np.round(hu).astype(ct.array.dtype)), model, info, lungs)
    return {"ramp_hu": ramp_hu, **{f"{m}_{s}": ratios[m][s] for m in MAPS for s in SIDES}}


def ramp_table(ct: Volume, model, info, ramps: Sequence[float], uniform: bool = False) -> List[Dict[str, object]]:
    """One row per ramp: the ratios of both maps in both lungs. The lungs are segmented once on the original CT and
    kept for every ramp (a ramp must not change which voxels are lung); with ``uniform``, a last row for the uniform
    lung (:func:`uniform_lung_hu`, its ``ramp_hu`` None)."""
    _, lungs = posterior_to_anterior(ct, model, info)
    rows = [changed_ct_row(ct, ct.array.astype(np.float32) + dependent_ramp_hu(lungs.array, gain), model, info, lungs,
                           gain) for gain in ramps]
    if uniform:
        rows.append(changed_ct_row(ct, uniform_lung_hu(ct.array, lungs.array), model, info, lungs, None))
    return rows


def row_label(row: Dict[str, object]) -> str:
    """What a row changed: the ramp in HU (``+80``), or the uniform lung."""
    return f"{row['ramp_hu']:+g}" if row["ramp_hu"] is not None else f"uniform lung, {UNIFORM_LUNG_HU:g} HU"


def markdown(tables: Dict[str, List[Dict[str, object]]], weights: str) -> str:
    lines = ["# Gravity cue: predicted posterior/anterior perfusion vs an added dependent-density ramp", "",
             f"`bench/gravity_cue.py`, {date.today()}, {platform.node()} ({os.cpu_count()} cores, CPU); network "
             f"`{weights}`. Ramp: HU added inside the lungs, 0 at their most anterior row to the value at the most "
             "posterior row; lungs segmented once on the original CT. P/A = posterior-half over anterior-half mean "
             "perfusion (right / left); the acceptance asks >= 1.1 in each lung.", "",
             *table_lines(tables)]
    return "\n".join(lines) + "\n"


def table_lines(tables: Dict[str, List[Dict[str, object]]]) -> List[str]:
    """The markdown table of :func:`ramp_table`'s rows per case (also the model card's)."""
    lines = ["| case | ramp (HU) | network P/A right / left | baseline P/A right / left |", "|---|---:|---|---|"]
    for case, rows in tables.items():
        for r in rows:
            lines.append(f"| {case} | {row_label(r)} | {r['network_right']:.2f} / {r['network_left']:.2f} | "
                         f"{r['baseline_right']:.2f} / {r['baseline_left']:.2f} |")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--cases", nargs="+", default=["cip ct-64", "cip TestInput"])
    parser.add_argument("--ramps", nargs="+", type=float, default=[-40.0, 0.0, 40.0, 80.0])
    parser.add_argument("--no-uniform", action="store_true", help="leave out the uniform-lung row")
    parser.add_argument("--weights", type=Path, help="network weights (default: the bundled model)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gravity_cue.md")
    args = parser.parse_args(argv)
    if not (args.data / "real").is_dir():
        parser.error(f"no real CTs at {args.data}/real")
    model, info = load_model(args.weights, False, "cpu")
    tables = {}
    for name, _, reader in REAL_CASES:
        if name in args.cases:
            tables[name] = ramp_table(reader(args.data), model, info, args.ramps, uniform=not args.no_uniform)
            print(f"{name}: done", flush=True)
    text = markdown(tables, Path(info["weights"]).name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
