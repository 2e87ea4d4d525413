import itertools

import pytest
import torch
from torch import nn

from archscale.space import SpaceError, build, get_space
from archscale.space.blocks import BlurPool2d, SeparableConv2d, SqueezeExcite

MNIST = {"in_channels": 1, "num_classes": 10, "image_size": 28}
CIFAR = {"in_channels": 3, "num_classes": 10, "image_size": 32}


@pytest.mark.parametrize("downsample,blurpool,conv", itertools.product(
    ["stride", "maxpool", "dilation"], [False, True], ["regular", "depthwise", "dilated"]))
def test_every_downsampling_and_conv_type_runs(downsample, blurpool, conv):
    arch = get_space("budgeted").resolve(
        {"downsample": downsample, "blurpool": blurpool, "c2_conv": conv, "c3_conv": conv, "c4_conv": conv,
         "c1_width": 4, "c2_width": 8, "c3_width": 8, "c4_width": 8, "norm": "group", "se_ratio": 0.5}, MNIST)
    model = build(arch)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_conv_types_build_what_they_say():
    family = get_space("budgeted")
    dw = build(family.resolve({"c2_conv": "depthwise"}, CIFAR))
    assert any(isinstance(m, SeparableConv2d) for m in dw.blocks[1].modules())
    dil = build(family.resolve({"c3_conv": "dilated", "c3_dilation": 4}, CIFAR))
    convs = [m for m in dil.blocks[2].modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.dilation == (4, 4) for c in convs)
    se = build(family.resolve({"se_ratio": 0.25, "blurpool": True}, CIFAR))
    assert any(isinstance(m, SqueezeExcite) for m in se.modules())
    assert any(isinstance(m, BlurPool2d) for m in se.modules())


def test_depthwise_separable_has_fewer_params_than_regular():
    family = get_space("budgeted")
    count = lambda conv: sum(p.numel() for p in build(family.resolve({f"c{i}_conv": conv for i in (2, 3, 4)}, CIFAR)).parameters())
    assert count("depthwise") < count("regular") / 3


def test_norm_choices():
    family = get_space("budgeted")
    for norm, cls in (("batch", nn.BatchNorm2d), ("group", nn.GroupNorm), ("layer", nn.GroupNorm)):
        model = build(family.resolve({"norm": norm}, MNIST))
        assert any(isinstance(m, cls) for m in model.modules())
    layer = build(family.resolve({"norm": "layer"}, MNIST))
    assert all(m.num_groups == 1 for m in layer.modules() if isinstance(m, nn.GroupNorm))


def test_blurpool_is_a_fixed_low_pass_filter():
    pool = BlurPool2d(2, size=3, stride=2)
    x = torch.ones(1, 2, 8, 8)
    y = pool(x)
    assert y.shape == (1, 2, 4, 4)
    assert torch.allclose(y, torch.ones_like(y))  # a normalised filter keeps a constant image
    assert not list(pool.parameters())


def test_dilation_downsampling_that_does_not_fit_is_a_clear_error():
    with pytest.raises(SpaceError, match="downsample: 'dilation' shrinks a 28px input"):
        get_space("budgeted").resolve({"downsample": "dilation", **{f"c{i}_conv": "dilated" for i in (2, 3, 4)},
                                       **{f"c{i}_dilation": 8 for i in (2, 3, 4)}}, MNIST)


def test_ghost_batchnorm_normalises_each_chunk_on_its_own():
    from archscale.space.blocks import GhostBatchNorm2d

    bn = GhostBatchNorm2d(2, ghost_batch=4)
    x = torch.cat([torch.randn(4, 2, 3, 3) * 5 + 10, torch.randn(4, 2, 3, 3)])  # two very different chunks
    y = bn(x)
    for chunk in y.split(4):
        assert torch.allclose(chunk.mean((0, 2, 3)), torch.zeros(2), atol=1e-5)
        assert torch.allclose(chunk.var((0, 2, 3), unbiased=False), torch.ones(2), atol=1e-3)
    plain = nn.BatchNorm2d(2)(x)
    assert not torch.allclose(plain[:4].mean((0, 2, 3)), torch.zeros(2), atol=1e-2)
    # running statistics: the average of the chunks' (momentum 0.1 from 0 / 1)
    assert torch.allclose(bn.running_mean, 0.1 * x.view(2, 4, 2, 3, 3).mean((1, 3, 4)).mean(0), atol=1e-5)
    bn.eval()
    assert torch.allclose(bn(x), nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias), atol=1e-6)
    model = build(get_space("budgeted").resolve({"norm": "ghost", "ghost_batch": 8}, MNIST))
    assert any(isinstance(m, GhostBatchNorm2d) for m in model.modules())
    model(torch.randn(16, 1, 28, 28))
