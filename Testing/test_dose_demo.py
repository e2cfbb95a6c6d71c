"""dosecnn demo end to end on a coarse phantom: every step runs, every output exists, the numbers are consistent."""

import json

import numpy as np
import pytest

from DoseCNNLib.demo import DEMO_MC_RUNS, print_summary, run_demo

GRID = ((96, 80, 20), (1.96, 1.96, 3.0))  # the bundled kernels' voxel size; a 188 x 157 x 60 mm window of the torso


@pytest.fixture()
def tiny_weights(tmp_path):
    from DoseCNNLib.cnn.data import Normalisation
    from DoseCNNLib.cnn.network import DoseNetConfig, build_dose_network
    from DoseCNNLib.cnn.weights import save_dose_weights

    config = DoseNetConfig(depth_channels=(2, 2, 2), base_filters=4, levels=2)
    return save_dose_weights(build_dose_network(config), config, Normalisation.for_spacing(GRID[1]), GRID[1],
                             tmp_path / "tiny.pt")


def test_demo_runs_every_step_and_compares_with_the_truth(tmp_path, tiny_weights, capsys):
    summary = run_demo(tmp_path / "demo", seed=2, weights=tiny_weights, mc_decays=40_000, grid=GRID)
    results = tmp_path / "demo" / "results"
    for name in ("comparison.csv", "comparison.png", "overview.png", "dose_rate_vdk.nrrd", "dose_rate_cnn.nrrd",
                 "absorbed_dose_vs_truth.csv", "demo.json", "integrate/absorbed_dose.nrrd", "integrate/organs.csv",
                 "integrate/dvh.png", "integrate/dose_rate_00.nrrd"):
        assert (results / name).is_file(), name
    assert (tmp_path / "demo" / "patient" / "preview.png").is_file()
    methods = {r["method"] for r in summary["comparison"]}
    assert methods == {"VDK", "CNN"}
    liver = [r for r in summary["comparison"] if r["name"] == "liver" and r["method"] == "VDK"][0]
    assert liver["mde"] < 0.15  # the VDK gets a large organ's mean dose rate right within the SPECT's blur
    doses = {r["name"]: r for r in summary["absorbed_dose"]}
    assert doses["liver"]["truth_gy"] > 0 and abs(doses["liver"]["error_percent"]) < 25
    assert json.loads((results / "demo.json").read_text())["weights"] == str(tiny_weights)
    assert np.isfinite([r["estimate_gy"] for r in summary["absorbed_dose"]]).all()
    # the truth's noise per region: measured by independent runs, stated beside the errors
    truth = summary["monte_carlo_truth"]
    assert truth["decays"] == 40_000 and truth["runs"] == DEMO_MC_RUNS and truth["cache"] == "off"
    for row in summary["comparison"] + summary["absorbed_dose"]:
        assert 0 < row["truth_relative_se"] < 0.2, row["name"]
    print_summary(summary)
    printed = capsys.readouterr().out
    assert "40,000 decays" in printed and "not cached" in printed and "truth SE %" in printed


def test_demo_cnn_estimate_is_the_integration_s_first_time_point(tmp_path, tiny_weights):
    """The CNN runs once per time point: the 4 h estimate compared with the truth is time integration's, and equal to
    a separate dose-rate computation of that time point."""
    from DoseCNNLib.demo import integrate_patient
    from DoseCNNLib.dosimetry.pipeline import dose_rate_map
    from DoseCNNLib.phantoms.case import generate_case, write_case

    case = generate_case(2, grid_override=GRID, mc_decays=0, times_h=(4.0, 24.0))
    folder = write_case(case, tmp_path / "patient")
    names = {int(k): v for k, v in case.meta["labels"].items()}
    integ = integrate_patient(case, folder, tmp_path / "integrate", names, "cnn", tiny_weights, "cpu", lambda m: None)
    direct = dose_rate_map(case.spect[0], case.ct, case.meta["spect_model"]["bq_per_count"], method="cnn",
                           weights=tiny_weights)
    assert integ["first_dose_rate"].same_geometry(case.ct)
    assert np.array_equal(integ["first_dose_rate"].array, direct.dose_rate_mgy_s.array)
