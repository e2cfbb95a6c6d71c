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
