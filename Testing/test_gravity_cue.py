"""bench/gravity_cue.py: the dependent-density ramp it adds to a CT, and the ratio it reads, on a synthetic phantom
whose lungs and truth are known (the HU-only baseline follows an added ramp by construction)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
cue = pytest.importorskip("gravity_cue")


def test_ramp_runs_from_the_most_anterior_to_the_most_posterior_lung_row_inside_the_lungs_only():
    lungs = np.zeros((2, 10, 4), np.uint8)
    lungs[:, 2:8, 1:3] = 1  # rows 2..7 (LPS: y grows posterior)
    ramp = cue.dependent_ramp_hu(lungs, 50.0)
    assert ramp[0, 2, 1] == 0.0 and ramp[0, 7, 1] == pytest.approx(50.0)
    assert ramp[0, 4, 2] == pytest.approx(50.0 * 2 / 5)
    assert np.all(ramp[lungs == 0] == 0.0)
    assert np.all(np.diff(ramp[0, 2:8, 1]) > 0)


def test_the_hu_baseline_gradient_grows_with_an_added_dependent_density():
    from CTPerfusionMappingLib.synthetic.cohort import generate_case

    case = generate_case(3, "small")
    rows = cue.ramp_table(case.ct, None, {"predictor": "hu_baseline"}, [0.0, 80.0])
    for side in ("right", "left"):
        assert rows[1][f"baseline_{side}"] > rows[0][f"baseline_{side}"] + 0.1


def test_a_uniform_lung_leaves_the_baseline_without_a_gradient():
    """The position-only probe: lung voxels replaced by one density with noise; the HU baseline, which sees only the
    density, then shows no gradient (the phantom as it is shows one), and the table names the row."""
    from CTPerfusionMappingLib.synthetic.cohort import generate_case

    case = generate_case(3, "small")
    lungs = case.lungs.array
    hu = cue.uniform_lung_hu(case.ct.array, lungs)
    assert np.all(hu[lungs == 0] == case.ct.array[lungs == 0])
    assert abs(hu[lungs > 0].mean() - cue.UNIFORM_LUNG_HU) < 1.0 and abs(hu[lungs > 0].std() - cue.UNIFORM_NOISE_HU) < 1.0
    rows = cue.ramp_table(case.ct, None, {"predictor": "hu_baseline"}, [0.0], uniform=True)
    assert rows[-1]["ramp_hu"] is None
    for side in ("right", "left"):
        assert abs(rows[-1][f"baseline_{side}"] - 1.0) < 0.05
        assert abs(rows[0][f"baseline_{side}"] - 1.0) > abs(rows[-1][f"baseline_{side}"] - 1.0)
    assert "| phantom | uniform lung, -870 HU |" in "\n".join(cue.table_lines({"phantom": rows}))
