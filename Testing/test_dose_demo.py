"""dosecnn demo end to end on a coarse phantom: every step runs, every output exists, the numbers are consistent."""

import json

import numpy as np
import pytest

from DoseCNNLib.demo import run_demo

GRID = ((96, 80, 20), (1.96, 1.96, 3.0))  # the bundled kernels' voxel size; a 188 x 157 x 60 mm window of the torso


@pytest.fixture()
def tiny_weights(tmp_path):
    from DoseCNNLib.cnn.data import Normalisation
    from DoseCNNLib.cnn.network import DoseNetConfig, build_dose_network
    from DoseCNNLib.cnn.weights import save_dose_weights

    config = DoseNetConfig(depth_channels=(2, 2, 2), base_filters=4, levels=2)
    return save_dose_weights(build_dose_network(config), config, Normalisation.for_spacing(GRID[1]), GRID[1],
                             tmp_path / "tiny.pt")


def test_demo_runs_every_step_and_compares_with_the_truth(tmp_path, tiny_weights):
    summary = run_demo(tmp_path / "demo", seed=2, weights=tiny_weights, mc_decays=40_000, grid=GRID)
    results = tmp_path / "demo" / "results"
    for name in ("comparison.csv", "comparison.png", "overview.png", "dose_rate_vdk.nrrd", "dose_rate_cnn.nrrd",
                 "absorbed_dose_vs_truth.csv", "demo.json", "integrate/absorbed_dose.nrrd", "integrate/organs.csv",
                 "integrate/dvh.png"):
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
