import itertools

import pytest
import torch
from torch import nn

from archscale.analysis.cost import count_params
from archscale.space import Arch, build, get_space
from archscale.space.davidnet import AIRBENCH94, PLACEMENTS
from archscale.space.nets.davidnet import Residual

CIFAR = {"in_channels": 3, "num_classes": 10, "image_size": 32}


def test_all_64_placements_build_and_run():
    family = get_space("davidnet")
    counts = {}
    x = torch.randn(1, 3, 32, 32)
    for adds in itertools.product(PLACEMENTS, repeat=3):
        arch = family.resolve({f"layer{i + 1}_add": a for i, a in enumerate(adds)}, CIFAR)
        model = build(arch).eval()
        with torch.no_grad():
            assert model(x).shape == (1, 10)
        counts[adds] = count_params(model)
        assert Arch.from_text(arch.text) == arch
    assert len(counts) == 64 and len(set(counts.values())) == 64  # every placement is a different network
    base = counts[("none", "none", "none")]
    # a residual block adds two w x w x 3 x 3 convs (+ 2 BN), an extra layer one
    assert counts[("residual", "none", "none")] - base == 2 * (128 * 128 * 9 + 2 * 128)
    assert counts[("extra", "none", "none")] - base == 128 * 128 * 9 + 2 * 128


def test_seed_winner_is_the_published_resnet9():
    model = build(get_space("davidnet").resolve({}, CIFAR))  # defaults: residual on layer1 and layer3
    assert count_params(model) == 6_573_120  # "about 6.57M"
    assert isinstance(model.body.layer1.residual, Residual) and isinstance(model.body.layer3.residual, Residual)
    assert not hasattr(model.body.layer2, "residual")
    assert model.head_scale == 0.125


def test_airbench94_is_one_point():
    model = build(get_space("davidnet").resolve(AIRBENCH94, CIFAR))
    assert count_params(model) == 1_971_640  # BN scales frozen: not trained
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [24, 64, 64, 256, 256, 256, 256]
    assert isinstance(model.body.layer1[1], nn.MaxPool2d)  # conv -> pool -> bn -> act
    assert isinstance(model.body.layer1.act, nn.GELU)
    assert all(not bn.weight.requires_grad for bn in model.modules() if isinstance(bn, nn.BatchNorm2d))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("mult,expected", [(0.5, [32, 64, 128, 256]), (0.25, [16, 32, 64, 128])])
def test_width_multiplier(mult, expected):
    model = build(get_space("davidnet").resolve({"width_mult": mult}, CIFAR))
    convs = [m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and name.endswith(".conv") and "res" not in name and "extra" not in name]
    assert [c.out_channels for c in convs] == expected


def test_ghost_bn_celu_and_avg_pooling():
    model = build(get_space("davidnet").resolve({"norm": "ghost", "activation": "celu", "pool": "avg",
                                                   "final_pool": "avg", "width_mult": 0.125}, CIFAR))
    from archscale.space.blocks import GhostBatchNorm2d

    assert any(isinstance(m, GhostBatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.CELU) for m in model.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in model.modules())
    assert model(torch.randn(64, 3, 32, 32)).shape == (64, 10)
