"""The residual dose CNN (Li 2020): shapes, receptive field, slab = packs, residual start, configuration, BN folding."""

import pytest

torch = pytest.importorskip("torch")

from cnn_synthetic import one_torch_thread  # noqa: E402, F401  (fixture)

from DoseCNNLib.cnn.network import DoseNetConfig, ResidualDoseNet, count_parameters, fuse_batch_norm, physical_dose

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = DoseNetConfig(depth_channels=(2, 3, 2), base_filters=4, levels=2)


def _random_network(config=TINY, seed=0):
    """A network in eval mode whose batch norms and last layer are random (so that the output is not zero)."""
    torch.manual_seed(seed)
    net = ResidualDoseNet(config)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0, 0.1)
        net.unet.out.weight.normal_()
        net.unet.out.bias.fill_(0.05)
    return net.eval()


def test_default_network_is_the_papers():
    c = DoseNetConfig()
    assert c.slices == 11 and c.depth_kernels == (5, 3, 3) and c.folded_depth == 3 and c.half_window == 5
    assert c.filters == (16, 32, 64, 128, 128) and c.levels == 4
    net = ResidualDoseNet(c)
    kernels = [m.kernel_size for m in net.depth.modules() if isinstance(m, torch.nn.Conv3d)]
    assert kernels == [(5, 7, 7), (3, 7, 7), (3, 7, 7)]
    assert 1e6 < count_parameters(net) < 2e6
    assert DoseNetConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError):
        DoseNetConfig(slices=10)  # 10 - 8 = 2 folded slices: no middle one
    with pytest.raises(ValueError):
        DoseNetConfig.from_dict({**c.to_dict(), "colour": 1})


def test_shapes_with_sizes_that_are_not_multiples_of_the_pooling():
    net = _random_network()
    pack = torch.randn(3, 2, 11, 13, 22)
    out = net.correction(pack)
    assert out.shape == (3, 1, 13, 22) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        net.correction(torch.randn(3, 2, 9, 16, 16))


def test_slab_equals_one_pack_per_slice():
    net = _random_network()
    slab = torch.randn(1, 2, 6 + 10, 20, 18)
    with torch.no_grad():
        from_slab = net.correction_slab(slab)
        from_packs = net.correction(torch.stack([slab[0, :, k:k + 11] for k in range(6)]))
    assert from_slab.shape == (6, 1, 20, 18)
    torch.testing.assert_close(from_slab, from_packs, rtol=1e-5, atol=1e-6)


def test_receptive_field_is_five_slices_each_side():
    """Changing input slice j changes the outputs of slices j-5..j+5 and no others (Li 2020's 11-slice packs)."""
    net = _random_network()
    torch.manual_seed(1)
    slab = torch.rand(1, 2, 30, 16, 16)
    j = 15
    changed = slab.clone()
    changed[0, :, j] += 1.0
    with torch.no_grad():
        a, b = net.correction_slab(slab), net.correction_slab(changed)  # output k is centred on input slice k + 5
    diff = (a - b).abs().flatten(1).amax(1)
    for k in range(a.shape[0]):
        centre = k + 5
        if abs(centre - j) <= 5:
            assert diff[k] > 1e-6, (centre, j)
        else:
            assert diff[k] == 0.0, (centre, j)
    assert {abs(k + 5 - j) for k in range(a.shape[0]) if diff[k] > 0} == set(range(6))


def test_untrained_network_reproduces_the_vdk_map():
    net = ResidualDoseNet(TINY).eval()  # the last layer starts at zero
    pack, vdk = torch.randn(2, 2, 11, 16, 16), torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(pack, vdk), vdk)
    air = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    air[:, :, :4] = True
    out = physical_dose(torch.randn(2, 1, 16, 16), air)
    assert (out >= 0).all() and (out[air] == 0).all()


def test_batch_norm_folding_keeps_the_outputs():
    net = _random_network()
    fused = fuse_batch_norm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    slab = torch.randn(1, 2, 14, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fused.correction_slab(slab), net.correction_slab(slab), rtol=1e-4, atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched


def test_network_without_batch_norm():
    net = ResidualDoseNet(DoseNetConfig(depth_channels=(2, 2, 2), base_filters=4, levels=1, batch_norm=False))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.correction(torch.randn(1, 2, 11, 8, 8)).shape == (1, 1, 8, 8)
