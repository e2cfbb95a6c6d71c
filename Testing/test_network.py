"""The ARNN / U-Net networks, their weight files and inference (network.py, weights.py, inference.py)."""

from __future__ import annotations

import time
import warnings
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from CTPerfusionMappingLib.inference import predict
from CTPerfusionMappingLib.network import (
    ARNN,
    NetworkConfig,
    UNet3D,
    build_model,
    count_parameters,
    kaiming_bound,
    position_channels,
)
from CTPerfusionMappingLib.weights import load_weights, save_weights  # noqa: E402
from ImagingBasics.devices import describe_device, run_with_oom_fallback, select_device
from ImagingBasics.errors import UserError  # noqa: E402

TINY = NetworkConfig(base_channels=4, max_channels=16, input_shape=(32, 16, 16))
SHAPE = (2, 1, 32, 16, 16)


def _tiny(**changes):
    """A seeded tiny model (4-8-16-16 channels) for the given config changes."""
    torch.manual_seed(0)
    return build_model(replace(TINY, **changes))


def _input(shape=SHAPE, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _forward(model, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _count(model, name: str) -> int:
    return sum(type(m).__name__ == name for m in model.modules())


# ---------------------------------------------------------------------------------------------------- network


@pytest.mark.parametrize("arch", ["arnn", "unet"])
def test_output_shape_and_range(arch):
    y = _forward(_tiny(arch=arch), _input())
    assert y.shape == SHAPE
    assert np.all((y > 0) & (y < 1))


def test_channel_widths_and_default_structure():
    assert NetworkConfig().channels == (16, 32, 64, 128)
    assert TINY.channels == (4, 8, 16, 16)
    model = _tiny()
    assert _count(model, "ResConv") == 7  # S1-S3 encoder, S4 bottom, S3-S1 decoder
    assert sorted(model.gates.keys()) == ["1", "2"]  # the S2 and S3 skips, the two deepest
    assert _count(model, "ROIAttention") == 1
    assert model.head.in_channels == 4
    assert model.down[0][0].kernel_size == (2, 2, 2) and model.down[0][0].stride == (2, 2, 2)
    assert model.up[0][0].kernel_size == (2, 2, 2) and model.enc[1].unit1[0].kernel_size == (5, 5, 5)
    prelu = next(m for m in model.modules() if isinstance(m, torch.nn.PReLU))
    assert torch.allclose(prelu.weight, torch.full_like(prelu.weight, 0.2))
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(d.p == 0.1 for d in drops)


@pytest.mark.parametrize(
    "switch, module, expected",
    [("residual", "ResConv", 0), ("roi_attention", "ROIAttention", 0), ("skip_attention", "SkipAttention", 0)],
)
def test_ablation_switches_remove_their_component(switch, module, expected):
    full, ablated = _tiny(), _tiny(**{switch: False})
    assert _count(full, module) > 0 and _count(ablated, module) == expected
    assert count_parameters(ablated) != count_parameters(full)
    y = _forward(ablated, _input())
    assert y.shape == SHAPE and np.all((y > 0) & (y < 1))
    if switch == "residual":
        assert _count(ablated, "PlainConv") == 7


def test_unet_structure():
    model = _tiny(arch="unet")
    assert _count(model, "DoubleConv") == 7 and _count(model, "MaxPool3d") == 1
    assert _count(model, "SkipAttention") == 0 and _count(model, "ResConv") == 0
    assert model.enc[0][0].kernel_size == (3, 3, 3)


def test_kaiming_uniform_init():
    model = _tiny()
    conv = model.enc[1].unit1[0]  # 8 -> 8 channels, 5x5x5
    bound = kaiming_bound(conv.in_channels * 125, 0.2)
    w = conv.weight.detach().abs()
    assert float(w.max()) <= bound and float(w.max()) > 0.95 * bound
    assert abs(float(w.mean()) - bound / 2) < 0.05 * bound  # uniform on [-b, b]: E|w| = b / 2
    assert not model.head.bias.detach().any() and not model.gates["1"].psi.bias.detach().any()


def test_roi_attention_is_literal():
    model = _tiny().eval()
    roi = model.roi
    x = torch.randn(2, 4, 8, 8, 8)
    with torch.inference_mode():
        f, mask = roi.features_and_mask(x)
        out = roi(x)
    assert f.shape[1] == 4
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    assert torch.equal(mask, (f > 0).float())
    assert torch.allclose(out, f * torch.sigmoid(mask))
    assert 0 < float(mask.mean()) < 1


def test_gradients_reach_every_component():
    model = _tiny().train()
    x = torch.from_numpy(_input((1, *SHAPE[1:])))
    target = torch.rand(x.shape)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model.forward_logits(x), target)
    loss.backward()
    for name, param in [("first conv", model.enc[0].unit1[0].weight), ("ROI conv", model.roi.conv[0].weight),
                        ("gate psi", model.gates["2"].psi.weight), ("head", model.head.weight)]:
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name


def test_forward_is_sigmoid_of_logits():
    model = _tiny().eval()
    x = torch.from_numpy(_input())
    with torch.inference_mode():
        assert torch.allclose(model(x), torch.sigmoid(model.forward_logits(x)))


def test_config_dict_round_trip_and_validation():
    cfg = replace(TINY, skip_attention=False, dropout=0.2)
    d = cfg.to_dict()
    assert d["input_shape"] == [32, 16, 16] and NetworkConfig.from_dict(d) == cfg
    with pytest.raises(UserError, match="unknown network setting"):
        NetworkConfig.from_dict({**d, "depth": 3})
    for bad in ({"arch": "vnet"}, {"kernel_size": 4}, {"dropout": 1.0}, {"levels": 1}, {"input_shape": (30, 16, 16)}):
        with pytest.raises(UserError):
            NetworkConfig(**bad)


def test_position_channels_are_the_z_and_y_position_across_the_sample():
    x = torch.zeros(2, 1, 4, 3, 5, dtype=torch.float64)
    pos = position_channels(x)
    assert pos.shape == (2, 2, 4, 3, 5) and pos.dtype == torch.float64
    np.testing.assert_allclose(pos[1, 0, :, 2, 4].numpy(), [-1, -1 / 3, 1 / 3, 1])  # z: apex row to base row
    np.testing.assert_allclose(pos[0, 1, 3, :, 0].numpy(), [-1, 0, 1])  # y: anterior row to posterior row
    assert torch.equal(pos[:, 0], pos[:, 0, :, :1, :1].expand(2, 4, 3, 5))  # z constant over y and x
    assert torch.equal(pos[:, 1], pos[:, 1, :1, :, :1].expand(2, 4, 3, 5))  # y constant over z and x
    assert torch.equal(position_channels(torch.zeros(1, 1, 1, 1, 2))[0, :, 0, 0], torch.zeros(2, 2))


@pytest.mark.parametrize("arch, first_kernel, shortcut", [("arnn", 5, 1), ("unet", 3, 0)])
def test_coordinates_add_two_input_channels_to_the_first_convolution(arch, first_kernel, shortcut):
    plain, with_coords = _tiny(arch=arch), _tiny(arch=arch, coordinates=True)
    extra = count_parameters(with_coords) - count_parameters(plain)
    # only the first block reads more channels: its convolution, and the ARNN's 1x1x1 shortcut projection
    assert extra == 2 * (first_kernel**3 + shortcut) * TINY.base_channels
    first = next(m for m in with_coords.modules() if isinstance(m, torch.nn.Conv3d))
    seen = []
    first.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = _input()
    y = _forward(with_coords, x)
    assert y.shape == SHAPE and seen[0].shape == (2, 3, 32, 16, 16)
    np.testing.assert_array_equal(seen[0][:, :1].numpy(), x)
    assert torch.equal(seen[0][:, 1:], position_channels(torch.from_numpy(x)))


def test_coordinates_change_the_map_of_a_uniform_lung_by_position():
    """A uniform input gives the same interior value at every position of the same parity without position channels
    (translation equivariance away from the zero padding, up to the 2-voxel period of the stride-2 layers); with
    them, the interior changes from front to back."""
    config = replace(TINY, levels=2, input_shape=(48, 48, 48), kernel_size=3)
    x = np.full((1, 1, 48, 48, 48), 0.5, np.float32)

    def front_to_back_change(coordinates: bool) -> float:
        torch.manual_seed(0)
        y = _forward(build_model(replace(config, coordinates=coordinates)), x)[0, 0, 20:28, 20:28, 20:28]
        return float(np.abs(y[:, 2:] - y[:, :-2]).max())

    assert front_to_back_change(False) < 1e-6
    assert front_to_back_change(True) > 1e-4


def test_weights_without_the_coordinates_setting_load_as_before(tmp_path):
    d = TINY.to_dict()
    del d["coordinates"]  # weights saved before the setting existed
    assert NetworkConfig.from_dict(d).coordinates is False
    with pytest.raises(UserError, match="coordinates must be true or false"):
        NetworkConfig(coordinates=1)
    model = _tiny(coordinates=True)
    path = save_weights(model, model.config, tmp_path / "w.pt")
    loaded, config, _ = load_weights(path)
    assert config.coordinates is True
    np.testing.assert_array_equal(_forward(loaded, _input()), _forward(model, _input()))


def test_indivisible_input_size_is_a_user_error():
    with pytest.raises(UserError, match="not divisible by 8"):
        _forward(_tiny(), _input((1, 1, 20, 16, 16)))


def test_default_sizes_and_one_full_forward():
    """Default ARNN (16-128, 5x5x5) and the U-Nets; one 128x64x64 forward pass (~1.5-3 s on 2 cores)."""
    assert count_parameters(build_model(NetworkConfig(arch="unet"))) == 1_401_265
    assert count_parameters(build_model(NetworkConfig(arch="unet", base_channels=32, max_channels=256))) == 5_601_121
    torch.manual_seed(0)
    model = build_model(NetworkConfig()).eval()
    assert count_parameters(model) == 7_627_971
    x = torch.rand(1, 1, 128, 64, 64)
    start = time.perf_counter()
    with torch.inference_mode():
        y = model(x)
    assert y.shape == x.shape and float(y.min()) > 0 and float(y.max()) < 1
    assert time.perf_counter() - start < 30


def test_build_model_makes_the_module_level_classes():
    assert type(_tiny()) is ARNN and type(_tiny(arch="unet")) is UNet3D
    with pytest.raises(TypeError):
        build_model(TINY.to_dict())


# ---------------------------------------------------------------------------------------------------- weights


def test_save_load_round_trip(tmp_path):
    model = _tiny(skip_attention=False)
    x = _input()
    ref = _forward(model, x)
    path = save_weights(model, model.config, tmp_path / "w.pt", metadata={"epochs": np.int64(3), "note": "tiny"})
    assert not [p for p in tmp_path.iterdir() if p.name != "w.pt"]  # no temporary file left
    raw = torch.load(str(path), weights_only=True)
    assert raw["format"] == "ctpm-weights" and raw["version"] == 1
    loaded, config, metadata = load_weights(path)
    assert config == model.config and metadata == {"epochs": 3, "note": "tiny"}
    assert not loaded.training
    np.testing.assert_array_equal(_forward(loaded, x), ref)


def test_half_precision_round_trip(tmp_path):
    model = _tiny()
    x = _input()
    path = save_weights(model, model.config, tmp_path / "w16.pt", half=True)
    assert torch.load(str(path), weights_only=True)["state_dict"]["head.weight"].dtype == torch.float16
    loaded, _, _ = load_weights(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    np.testing.assert_allclose(_forward(loaded, x), _forward(model, x), atol=1e-2)


def test_mismatched_architecture_is_a_one_line_user_error(tmp_path):
    model = _tiny()
    path = save_weights(model, model.config, tmp_path / "w.pt")
    raw = torch.load(str(path), weights_only=True)
    raw["config"]["base_channels"] = 8
    torch.save(raw, str(path))
    with pytest.raises(UserError) as info:
        load_weights(path)
    message = str(info.value)
    assert "do not match the architecture" in message and "\n" not in message
    assert "enc.0" in message and "in the file" in message


def test_unreadable_weight_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_weights(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(UserError, match="not a readable torch weights file"):
        load_weights(garbage)
    bare = tmp_path / "bare.pt"
    torch.save(_tiny().state_dict(), str(bare))
    with pytest.raises(UserError, match="bare state dict"):
        load_weights(bare)
    unknown = tmp_path / "unknown.pt"
    torch.save({"format": "ctpm-weights", "version": 1, "config": {"colour": 1}, "state_dict": {}}, str(unknown))
    with pytest.raises(UserError, match="unknown network setting"):
        load_weights(unknown)


def test_metadata_must_be_plain(tmp_path):
    model = _tiny()
    with pytest.raises(UserError, match="only numbers, strings"):
        save_weights(model, model.config, tmp_path / "w.pt", metadata={"when": object()})


# ---------------------------------------------------------------------------------------------------- inference


def test_predict_on_cpu_is_deterministic_and_keeps_inputs():
    model = _tiny()
    x = _input()
    before = x.copy()
    calls = []
    res = predict(model, x, device="cpu", batch_size=1, progress=lambda done, total: calls.append((done, total)))
    assert res["mean"].shape == (2, 32, 16, 16) and res["mean"].dtype == np.float32 and res["std"] is None
    assert res["device"] == "cpu" and calls == [(1, 2), (2, 2)]
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(res["mean"], _forward(model, x)[:, 0], atol=1e-6)
    np.testing.assert_array_equal(predict(model, x, device="cpu", batch_size=1)["mean"], res["mean"])
    np.testing.assert_allclose(predict(model, x, device="cpu")["mean"], res["mean"], atol=1e-5)  # one batch of 2


def test_mc_dropout_spread_and_mean():
    model = _tiny()
    x = _input()
    plain = predict(model, x, device="cpu")["mean"]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    mc = predict(model, x, device="cpu", mc_dropout_passes=8)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert mc["std"].shape == plain.shape and float(mc["std"].mean()) > 0
    assert float(np.abs(mc["mean"] - plain).mean()) < 0.05
    np.testing.assert_array_equal(predict(model, x, device="cpu", mc_dropout_passes=8)["std"], mc["std"])
    assert not any(m.training for m in model.modules())  # dropout switched back off


def test_predict_rejects_bad_inputs():
    model = _tiny()
    with pytest.raises(UserError, match="N, channels"):
        predict(model, np.zeros((32, 16, 16), np.float32))
    bad = _input()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        predict(model, bad)
    with pytest.raises(UserError, match="input channel"):
        predict(model, _input((1, 2, 32, 16, 16)))


def test_oom_fallback_warns_and_runs_on_cpu():
    seen = []

    def fn(device):
        seen.append(device)
        if device != "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "done"

    with pytest.warns(RuntimeWarning, match="out of GPU memory"):
        assert run_with_oom_fallback(fn, "cuda") == "done"
    assert seen == ["cuda", "cpu"]


def test_other_errors_are_not_swallowed():
    def fn(device):
        raise ValueError("a bug")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError):
            run_with_oom_fallback(fn, "cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_selection_without_gpu():
    assert select_device("cpu") == "cpu"
    assert select_device("auto") in ("cpu", "mps")
    for requested in ("cuda", "gpu", "cuda:0"):
        with pytest.raises(UserError, match="no CUDA GPU"):
            select_device(requested)
    with pytest.raises(UserError, match="unknown device"):
        select_device("tpu")
    assert describe_device("cpu").startswith("CPU (")
