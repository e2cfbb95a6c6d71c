"""Draw the figures of docs/PLANNING.md: a synthetic patient with a lung tumour, its perfusion map (`ctpm run`, the
bundled model) and two made-up plans compared by `ctpm plan` (docs/figures/planning_dvh.png, planning_comparison.png).

The plans are not treatment plans: each is a 60 Gy Gaussian high-dose region on the tumour plus a low-dose bath
(up to 12 Gy) that enters from the front ("anterior") or from the back ("posterior") of the chest. Supine perfusion is
higher at the back, so the anterior plan spares more function than volume: its fMLD lies below its MLD.

    .venv/bin/python scripts/make_planning_figure.py [--out docs/figures]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def plan_dose(ct, tumour_centre_mm, from_front: bool) -> np.ndarray:
    """Dose (Gy) on the CT grid: 60 Gy x a Gaussian of 25 mm sigma on the tumour, plus a 12 Gy bath falling linearly
    from the entry side (front or back of the body) to 0 at the far side."""
    from CTPerfusionMappingLib.synthetic.grid import axis_coordinates

    xs, ys, zs = axis_coordinates(ct)
    z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")
    cx, cy, cz = tumour_centre_mm
    r2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
    high = 60.0 * np.exp(-r2 / (2 * 25.0**2))
    depth = (y - ys.min()) / (ys.max() - ys.min())  # 0 at the front (LPS: y grows posterior), 1 at the back
    bath = 12.0 * ((1.0 - depth) if from_front else depth) * (np.abs(z - cz) < 60.0)
    return (high + bath).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()

    from CTPerfusionMappingLib.cli import main as ctpm
    from ImagingBasics.imageio import read_volume, write_volume

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        assert ctpm(["phantom", "--out", str(work / "patient"), "--n", "1", "--seed", str(args.seed),
                     "--pathology", "tumour=1", "--acquisition", "none", "--quiet"]) == 0
        case = work / "patient" / "case000"
        meta = json.loads((case / "meta.json").read_text())
        assert ctpm(["run", "--ct", str(case / "ct.nrrd"), "--lobes", str(case / "lobes.nrrd"),
                     "--out", str(work / "results"), "--quiet"]) == 0
        ct = read_volume(case / "ct.nrrd")
        centre = meta["pathologies"]["tumour"]["centre_mm"]
        for name, front in (("anterior", True), ("posterior", False)):
            write_volume(ct.with_array(plan_dose(ct, centre, front)), work / f"{name}.nrrd")
        gtv = read_volume(case / "pathology_labels.nrrd")
        write_volume(gtv.with_array((gtv.array == 3).astype(np.uint8)), work / "gtv.nrrd")
        assert ctpm(["plan", "--results", str(work / "results"), "--dose", str(work / "anterior.nrrd") + ":anterior",
                     "--dose", str(work / "posterior.nrrd") + ":posterior", "--exclude", str(work / "gtv.nrrd"),
                     "--out", str(work / "plans")]) == 0
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / "plans" / "dvh.png", args.out / "planning_dvh.png")
        shutil.copy2(work / "plans" / "comparison.png", args.out / "planning_comparison.png")
        print((work / "plans" / "metrics.csv").read_text())
    print(f"wrote {args.out / 'planning_dvh.png'} and {args.out / 'planning_comparison.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
