"""Whole-volume inference with the residual dose CNN (Li 2020): residual start, scaling, slabs, voxel sizes, weight files."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnn_synthetic import one_torch_thread, tiny_ct_and_activity, tiny_kernels  # noqa: E402, F401

from DoseCNNLib.cnn import weights as cnn_weights  # noqa: E402
from DoseCNNLib.cnn.data import DOSE_SCALE, Normalisation  # noqa: E402
from DoseCNNLib.cnn.inference import cnn_dose_rate, model_grid, spacing_differs  # noqa: E402
from DoseCNNLib.cnn.network import DoseNetConfig, ResidualDoseNet  # noqa: E402
from DoseCNNLib.cnn.weights import DoseModel, load_dose_weights, resolve_weights, save_dose_weights  # noqa: E402
from DoseCNNLib.physics.vdk import vdk_dose_rate  # noqa: E402
from ImagingBasics.errors import UserError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = DoseNetConfig(depth_channels=(2, 3, 2), base_filters=4, levels=2)


def _model(spacing, random_last_layer=True, seed=0) -> DoseModel:
    torch.manual_seed(seed)
    net = ResidualDoseNet(TINY)
    if random_last_layer:
        with torch.no_grad():
            net.unet.out.weight.normal_(0, 0.5)
            net.unet.out.bias.fill_(0.02)
    return DoseModel(net.eval(), TINY, Normalisation.for_spacing(spacing), tuple(spacing))


@pytest.fixture(scope="module")
def problem():
    ct, activity = tiny_ct_and_activity(3, shape=(14, 24, 28))
    vdk, _ = vdk_dose_rate(activity, ct, *tiny_kernels(ct.spacing))
    return ct, activity, vdk


def test_normalisation_round_trip_and_meaning():
    n = Normalisation.for_spacing((2.0, 2.0, 5.0))
    assert n.activity_scale == pytest.approx(1e6 / 20.0) and n.dose_scale == DOSE_SCALE
    a = np.array([1.0, 3.0], np.float32)
    np.testing.assert_allclose(n.activity(a, 4.0).sum() / n.activity_scale, 1.0)  # shares of the total
    np.testing.assert_allclose(n.dose_back(n.dose(a, 7.5), 7.5), a, rtol=1e-6)
    assert Normalisation.from_dict(n.to_dict()) == n


def test_untrained_network_gives_the_vdk_map_clamped_and_zero_in_air(problem):
    ct, activity, vdk = problem
    odd = vdk.array.copy()
    odd[ct.array < -950] = 1.0  # values where the CNN must give zero
    odd[5, 12, 14] = -1.0  # and a negative one
    dose, info = cnn_dose_rate(activity, ct, vdk.with_array(odd), _model(ct.spacing, random_last_layer=False))
    expected = np.where(ct.array < -950, 0.0, np.maximum(odd, 0.0))
    np.testing.assert_allclose(dose.array, expected, rtol=1e-6, atol=1e-12)
    assert dose.same_geometry(ct) and dose.array.dtype == np.float32
    assert info["cnn_resampled"] is False and info["cnn_correction_mgy_s"]["max"] == 0.0


def test_doubling_the_activity_doubles_the_dose_rate(problem):
    ct, activity, vdk = problem
    model = _model(ct.spacing)
    d1, info = cnn_dose_rate(activity, ct, vdk, model)
    d2, _ = cnn_dose_rate(activity.with_array(activity.array * 2), ct, vdk.with_array(vdk.array * 2), model)
    assert info["cnn_correction_mgy_s"]["max"] > 0  # the network does change the map
    np.testing.assert_allclose(d2.array, 2 * d1.array, rtol=1e-5, atol=1e-7 * d1.array.max())
    body = ct.array > -950
    assert not np.allclose(d1.array[body], vdk.array[body], rtol=1e-3)


def test_slabs_give_the_same_map_as_one_batch(problem):
    ct, activity, vdk = problem
    model = _model(ct.spacing)
    one, _ = cnn_dose_rate(activity, ct, vdk, model, batch_slices=ct.shape[0])
    for batch in (3,):
        slabs, _ = cnn_dose_rate(activity, ct, vdk, model, batch_slices=batch)
        np.testing.assert_allclose(slabs.array, one.array, rtol=1e-5, atol=1e-6 * one.array.max())


def test_another_voxel_size_is_resampled_to_the_models(problem):
    ct, activity, vdk = problem
    assert not spacing_differs((4.1, 4.0, 3.9), (4.0, 4.0, 4.0)) and spacing_differs((4.3, 4.0, 4.0), (4.0, 4.0, 4.0))
    grid = model_grid(ct, (2.0, 2.0, 4.0))
    assert grid.shape == (14, 48, 56)
    np.testing.assert_allclose(grid.index_to_lps([-0.5, -0.5, -0.5]), ct.index_to_lps([-0.5, -0.5, -0.5]))
    model = _model((2.0, 2.0, 4.0))
    dose, info = cnn_dose_rate(activity, ct, vdk, model)
    assert info["cnn_resampled"] is True and "resampled" in info["cnn_warnings"][0]
    assert dose.same_geometry(ct) and np.all(np.isfinite(dose.array)) and dose.array.min() >= 0
    assert (dose.array[ct.array < -950] == 0).all() and info["cnn_correction_mgy_s"]["max"] > 0
    untrained, info = cnn_dose_rate(activity, ct, vdk, _model((2.0, 2.0, 4.0), random_last_layer=False))
    np.testing.assert_allclose(untrained.array, np.where(ct.array < -950, 0, vdk.array), rtol=1e-6)


def test_inputs_are_checked(problem):
    ct, activity, vdk = problem
    model = _model(ct.spacing)
    bad = activity.array.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        cnn_dose_rate(activity.with_array(bad), ct, vdk, model)
    from ImagingBasics.volume import Volume

    with pytest.raises(UserError, match="CT grid"):
        cnn_dose_rate(Volume(activity.array[:-1], activity.spacing), ct, vdk, model)
    with pytest.raises(UserError, match="empty"):
        cnn_dose_rate(activity.with_array(np.zeros_like(activity.array)), ct, vdk, model)


def test_weights_round_trip_and_wrong_files(tmp_path, problem, monkeypatch):
    ct, activity, vdk = problem
    model = _model(ct.spacing)
    path = save_dose_weights(model.model, TINY, model.normalisation, ct.spacing, tmp_path / "w.pt",
                             metadata={"epoch": 3, "note": "test"})
    loaded = load_dose_weights(path)
    assert loaded.config == TINY and loaded.spacing_mm == ct.spacing and loaded.metadata["epoch"] == 3
    assert loaded.normalisation == model.normalisation and loaded.source == str(path)
    a, _ = cnn_dose_rate(activity, ct, vdk, model)
    b, info = cnn_dose_rate(activity, ct, vdk, path)
    np.testing.assert_allclose(a.array, b.array, rtol=1e-6, atol=1e-9)
    assert info["cnn_weights"] == str(path) and info["cnn_note"] == "test"
    half = save_dose_weights(model.model, TINY, model.normalisation, ct.spacing, tmp_path / "h.pt", half=True)
    assert half.stat().st_size < path.stat().st_size
    c, _ = cnn_dose_rate(activity, ct, vdk, half)
    np.testing.assert_allclose(c.array, a.array, rtol=1e-2, atol=1e-3 * a.array.max())

    (tmp_path / "text.pt").write_text("not weights")
    torch.save({"format": "ctpm-weights", "version": 1, "config": {}, "state_dict": {}}, tmp_path / "ctpm.pt")
    torch.save(model.model.state_dict(), tmp_path / "bare.pt")
    from fractions import Fraction

    torch.save({"format": "dosecnn-weights", "code": Fraction(1, 2)}, tmp_path / "unsafe.pt")
    (tmp_path / "truncated.pt").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    payload = torch.load(path, weights_only=True)
    payload["config"]["base_filters"] = 8  # the tensors no longer fit the configuration
    torch.save(payload, tmp_path / "mismatch.pt")
    for name, message in (("missing.pt", "not found"), ("text.pt", "not a readable"), ("ctpm.pt", "ctpm"),
                          ("bare.pt", "not a DoseCNN weights file"), ("mismatch.pt", "do not match"),
                          ("unsafe.pt", "for safety"), ("truncated.pt", "not a readable")):
        with pytest.raises(UserError, match=message):
            cnn_dose_rate(activity, ct, vdk, tmp_path / name)
    monkeypatch.delenv("DOSECNN_WEIGHTS", raising=False)
    monkeypatch.setattr(cnn_weights, "MODELS_DIR", tmp_path / "no_models")
    monkeypatch.setattr(cnn_weights, "MODELS_PACKAGE", "no_such_models_package")
    with pytest.raises(UserError, match="no CNN weights: train one with dosecnn train, or use --method vdk"):
        resolve_weights(None)
    monkeypatch.setenv("DOSECNN_WEIGHTS", str(path))
    assert resolve_weights(None).source == str(path)


def test_pipeline_and_run_command_with_the_cnn(tmp_path, problem, monkeypatch, capsys):
    import json

    from DoseCNNLib.cli import main as dosecnn
    from DoseCNNLib.dosimetry.pipeline import dose_rate_map
    from DoseCNNLib.physics import kernel_library
    from ImagingBasics.imageio import read_volume, write_volume

    ct, activity, vdk = problem
    monkeypatch.setattr(kernel_library, "kernel_pair_for", lambda spacing, *a, **k: tiny_kernels(spacing))
    model = _model(ct.spacing)
    weights = save_dose_weights(model.model, TINY, model.normalisation, ct.spacing, tmp_path / "w.pt")
    result = dose_rate_map(activity, ct, bq_per_count=1.0, method="cnn", weights=weights)
    expected, _ = cnn_dose_rate(activity, ct, vdk, model)
    np.testing.assert_allclose(result.dose_rate_mgy_s.array, expected.array, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(result.vdk_dose_rate_mgy_s.array, vdk.array, rtol=1e-6, atol=1e-12)
    assert result.info["method"] == "cnn" and result.info["cnn_weights"] == str(weights)

    write_volume(ct, tmp_path / "ct.nrrd")
    write_volume(activity, tmp_path / "spect.nrrd")
    args = ["run", "--spect", str(tmp_path / "spect.nrrd"), "--ct", str(tmp_path / "ct.nrrd"), "--calibration", "1",
            "--method", "cnn", "--weights", str(weights), "--out", str(tmp_path / "out")]
    assert dosecnn(args) == 0
    np.testing.assert_allclose(read_volume(tmp_path / "out" / "dose_rate.nrrd").array, expected.array, rtol=1e-5,
                               atol=1e-9)
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["method"] == "cnn" and "residual CNN" in summary["note"]
    capsys.readouterr()
    assert dosecnn(args[:-4] + ["--weights", str(tmp_path / "nothing.pt"), "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.startswith("error: network weights not found")


def test_the_bundled_model_loads_and_its_card_holds_the_held_out_numbers():
    import json

    from DoseCNNLib.cnn.weights import MODELS_DIR, bundled_weights, load_dose_weights

    model = load_dose_weights(bundled_weights())  # float16 on disk, float32 in memory
    assert model.spacing_mm == (1.96, 1.96, 3.0) and model.metadata["epoch"] >= 1
    assert next(model.model.parameters()).dtype == torch.float32
    card = json.loads((MODELS_DIR / "model_card.json").read_text())
    assert card["training"]["best_epoch"] == model.metadata["epoch"]
    text = (MODELS_DIR / "MODEL_CARD.md").read_text()
    assert "Not for clinical use" in text
    for entry in card["held_out"]["summary"]:
        if entry["region"] in ("lesions", "kidneys"):
            gain = float(entry["mde_improvement"])
            assert (gain >= 0.5) == card["acceptance_met"][f"{entry['region']}_mde_gain_ge_50pct"]
            mde_vdk, mde_cnn = 100 * float(entry["VDK_mde_mean"]), 100 * float(entry["CNN_mde_mean"])
            assert f"| {entry['region']} | {entry['n']} | {mde_vdk:.1f} +- " in text and f"{mde_cnn:.1f} +- " in text
