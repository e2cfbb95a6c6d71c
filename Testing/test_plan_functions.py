"""The formulas of plan evaluation (CTPerfusionMappingLib.planning), each against a brute-force or closed-form answer,
and the Python entry point a Slicer Logic would call (:func:`evaluate_plans` on Volumes)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from CTPerfusionMappingLib.planning.dose_grid import check_dose_values, dose_on_grid, fraction_outside_dose_grid
from CTPerfusionMappingLib.planning.dose_metrics import (
    function_percent_receiving,
    function_weighted_mean_dose_gy,
    mean_dose_gy,
    volume_percent_receiving,
)
from CTPerfusionMappingLib.planning.dvh import (
    DOSE_TOLERANCE_GY,
    anatomical_dvh,
    cumulative_histogram,
    dose_bins_gy,
    function_weighted_dvh,
)
from CTPerfusionMappingLib.planning.evaluation import evaluate_plans
from CTPerfusionMappingLib.planning.options import PLAN
from CTPerfusionMappingLib.planning.perfusion_weights import normalised_perfusion, perfusion_weights
from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume


def test_cumulative_histogram_is_the_brute_force_sum():
    rng = np.random.default_rng(3)
    dose = rng.uniform(0, 60, 5000)
    weights = rng.uniform(0, 1, 5000)
    levels = np.arange(0, 61, 0.5)
    brute_v = np.array([np.mean(dose >= d) for d in levels])
    brute_f = np.array([weights[dose >= d].sum() / weights.sum() for d in levels])
    assert np.allclose(cumulative_histogram(dose, levels), brute_v, atol=1e-12)
    assert np.allclose(cumulative_histogram(dose, levels, weights), brute_f, atol=1e-12)
    mask = dose > 10
    assert np.allclose(anatomical_dvh(dose, mask, levels), cumulative_histogram(dose[mask], levels))
    assert np.allclose(function_weighted_dvh(dose, weights, mask, levels),
                       cumulative_histogram(dose[mask], levels, weights[mask]))


def test_histogram_and_metrics_of_a_structure_without_function_are_nan():
    dose = np.array([1.0, 2.0, 3.0])
    zero = np.zeros(3)
    everything = np.ones(3, bool)
    assert np.all(np.isnan(cumulative_histogram(dose, [0.0, 1.0], zero)))
    assert np.isnan(function_weighted_mean_dose_gy(dose, zero, everything))
    assert np.isnan(function_percent_receiving(dose, zero, everything, 2.0))
    assert np.isnan(mean_dose_gy(dose, np.zeros(3, bool)))


def test_a_dose_a_rounding_error_below_the_level_still_receives_it():
    dose = np.array([20.0 - DOSE_TOLERANCE_GY / 10, 20.0 - 1e-3, 25.0])
    everything = np.ones(3, bool)
    assert volume_percent_receiving(dose, everything, 20.0) == pytest.approx(200 / 3)
    assert cumulative_histogram(dose, [20.0])[0] == pytest.approx(2 / 3)


def test_metrics_are_the_textbook_formulas():
    dose = np.array([0.0, 10.0, 20.0, 30.0])
    w = np.array([1.0, 1.0, 2.0, 4.0])
    m = np.ones(4, bool)
    assert mean_dose_gy(dose, m) == 15.0
    assert function_weighted_mean_dose_gy(dose, w, m) == pytest.approx((10 + 40 + 120) / 8)
    assert volume_percent_receiving(dose, m, 20.0) == 50.0
    assert function_percent_receiving(dose, w, m, 20.0) == 75.0


def test_dose_bins_reach_past_the_maximum():
    bins = dose_bins_gy(20.0, 0.1)
    assert bins[0] == 0.0 and bins[-1] == pytest.approx(20.1) and len(bins) == 202
    assert dose_bins_gy(0.0)[-1] > 0
    with pytest.raises(UserError):
        dose_bins_gy(10.0, 0.0)


def test_weights_are_the_normalised_perfusion_and_the_threshold_keeps_the_high_function_volume():
    from CTPerfusionMappingLib.metrics import functional_volumes

    p = np.array([[[-0.5, 1.0, 2.0, 4.0, 3.0]]])
    m = np.array([[[True, True, True, True, False]]])
    assert np.allclose(normalised_perfusion(p, m), [[[0.0, 0.25, 0.5, 1.0, 0.0]]])
    w = perfusion_weights(p, m, 0.5)
    assert np.allclose(w, [[[0.0, 0.0, 0.5, 1.0, 0.0]]])
    assert np.array_equal(w > 0, functional_volumes(p, m, 0.5) == 2)
    with pytest.raises(UserError, match="no positive value"):
        normalised_perfusion(np.full(p.shape, -1.0), m)


GRID = Volume(np.zeros((10, 10, 10), np.float32), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0))


@pytest.mark.parametrize("values,message", [
    (np.zeros((10, 10, 10)), "0 in every voxel"),
    (np.full((10, 10, 10), 6000.0), "is it in cGy?"),
    (np.full((10, 10, 10), -1.0), "negative"),
    (np.full((10, 10, 10), np.inf), "NaN or infinite"),
])
def test_implausible_doses_are_refused(values, message):
    with pytest.raises(UserError, match=message.replace("?", r"\?")):
        check_dose_values(GRID.with_array(values.astype(np.float32)), "dose")


def test_a_few_lung_voxels_outside_the_dose_grid_get_0_gy_and_a_warning():
    mask = np.zeros(GRID.shape, bool)
    mask[2:9, 2:9, 2:9] = True
    mask[0, 0, 0] = True  # outside the dose grid below
    dose = Volume(np.full((9, 9, 9), 10.0, np.float32), (3.0,) * 3, (3.0, 3.0, 3.0))
    assert fraction_outside_dose_grid(dose, GRID, mask) == pytest.approx(1 / 344)
    on_grid, warnings = dose_on_grid(dose, GRID, mask, "dose")
    assert [w.code for w in warnings] == ["dose_grid_partial"]
    assert on_grid.array[0, 0, 0] == 0.0 and np.all(on_grid.array[2:9, 2:9, 2:9] == 10.0)


def test_the_options_round_trip_through_the_command_line():
    parser = argparse.ArgumentParser()
    PLAN.add_arguments(parser)
    values = {"high_function_threshold": 0.7, "bin_width_gy": 0.25, "labels_source": "cip"}
    assert PLAN.from_arguments(parser.parse_args(PLAN.to_argv(values))) == values
    with pytest.raises(UserError, match="--high-function-threshold must be from 0.05 to 0.95"):
        PLAN.check({"high_function_threshold": 1.5})


def _lungs_with_thirds():
    lungs = np.zeros((12, 12, 12), np.uint8)
    lungs[2:10, 2:10, 1:5] = 1
    lungs[2:10, 2:10, 7:11] = 2
    return Volume(lungs, (4.0,) * 3, (-22.0, -22.0, -22.0))


def test_evaluate_plans_on_volumes_names_thirds_and_warns_of_what_is_excluded():
    from CTPerfusionMappingLib.labels import lung_thirds

    lungs = _lungs_with_thirds()
    perfusion = lungs.with_array((lungs.array > 0).astype(np.float32))
    thirds = lung_thirds(lungs)
    gtv = np.zeros(lungs.shape, np.uint8)
    gtv[thirds.array == 12] = 1  # the right upper third
    far = Volume(np.ones((2, 2, 2), np.uint8), (4.0,) * 3, (-22.0, -22.0, -22.0))  # a corner outside the lungs
    result = evaluate_plans(perfusion, lungs, {"A": lungs.with_array(np.full(lungs.shape, 2.0, np.float32))}, thirds,
                            {"gtv": lungs.with_array(gtv), "far": far})
    names = [row["structure"] for row in result.plans[0].rows]
    assert names == ["right lung", "left lung", "both lungs", "left upper third", "left middle third",
                     "left lower third", "right middle third", "right lower third"]
    codes = {w.code for w in result.warnings}
    assert {"regions_are_thirds", "structure_excluded", "exclusion_outside_lungs"} <= codes
    assert all(row["fmld_gy"] == pytest.approx(2.0) for row in result.plans[0].rows)


def test_an_exclusion_covering_a_whole_lung_is_refused():
    lungs = _lungs_with_thirds()
    perfusion = lungs.with_array((lungs.array > 0).astype(np.float32))
    dose = lungs.with_array(np.full(lungs.shape, 2.0, np.float32))
    with pytest.raises(UserError, match="cover the whole left lung"):
        evaluate_plans(perfusion, lungs, {"A": dose}, exclusions={"ptv": lungs.with_array(lungs.array == 2)})
