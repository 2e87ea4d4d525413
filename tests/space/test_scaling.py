"""Compound scaling: the rounding helpers, the pure ``scale``, the text form of scaled
networks, the alpha*beta^2*gamma^2 constraint, MACs growing as (alpha*beta^2*gamma^2)^phi,
and the 224 px bases against torchvision's own models (parameters, B1-B3 scaling, fvcore MACs)."""

import itertools
from dataclasses import replace

import pytest
import torch

from archscale.analysis.cost import count_macs
from archscale.space import Arch, build, get_space
from archscale.space.efficientnet import net_config
from archscale.space.nets.efficientnet import CompoundNet, Resize
from archscale.space.scaling import (BASES, EFFNET_B0, EFFNET_B0_224, RESNET18, RESNET18_224, NetConfig, ScalingError,
                                     compound, design_side, flops_factor, make_divisible, scale, scale_depth,
                                     scale_resolution)

CIFAR = {"in_channels": 3, "num_classes": 10, "image_size": 32}
IMAGENET = {"in_channels": 3, "num_classes": 1000, "image_size": 224}
MNIST = {"in_channels": 1, "num_classes": 10, "image_size": 28}
PAPER = (1.2, 1.1, 1.15)  # EfficientNet-B0's alpha, beta, gamma
FAMILY = get_space("efficientnet")


# --------------------------------------------------------------------------- rounding


def test_make_divisible_rounds_to_the_nearest_multiple():
    assert make_divisible(70.4) == 72  # ResNet-18's 64 channels x 1.1
    assert make_divisible(17.6) == 16  # 16 is 9% below 17.6: kept
    assert make_divisible(35.2) == 32
    assert make_divisible(36.0) == 40  # a tie rounds up
    assert make_divisible(3.0) == 8  # never below the divisor
    assert make_divisible(3.0, min_value=4) == 4
    assert make_divisible(40.0, 16) == 48


def test_make_divisible_never_loses_more_than_ten_percent():
    # 16 is the nearest multiple of 8 to 19.36 (16 x 1.21) but 17% below it: one step up.
    assert make_divisible(19.36) == 24
    assert make_divisible(19.36, round_limit=0.0) == 16  # the rule switched off
    for tenths in range(10, 4000):
        value = tenths / 10
        for divisor in (4, 8):
            out = make_divisible(value, divisor)
            assert out % divisor == 0 and out >= 0.9 * value


def test_make_divisible_matches_torchvision():
    from torchvision.models._utils import _make_divisible

    for tenths, divisor in itertools.product(range(10, 3000, 7), (4, 8, 16)):
        assert make_divisible(tenths / 10, divisor) == _make_divisible(tenths / 10, divisor)


def test_depth_rounding():
    b0 = [s.repeats for s in EFFNET_B0.stages]  # 1, 2, 2, 3, 3, 4, 1
    assert scale_depth(b0, 1.0) == tuple(b0)
    # total: ceil(16 x 1.2) = 20 blocks, the extra ones where the remainders are largest
    assert scale_depth(b0, 1.2) == (1, 2, 3, 4, 4, 5, 1) and sum(scale_depth(b0, 1.2)) == 20
    assert scale_depth([2, 2, 2, 2], 1.2) == (2, 2, 3, 3)  # ceil(9.6) = 10, ties go to later stages
    assert scale_depth([2, 2, 2, 2], 1.5) == (3, 3, 3, 3)
    # stage: ceil per stage, torchvision's adjust_depth (EfficientNet-B1 has 23 blocks)
    assert scale_depth(b0, 1.1, "stage") == (2, 3, 3, 4, 4, 5, 2)
    assert all(n >= 1 for n in scale_depth(b0, 0.1))
    with pytest.raises(ScalingError, match="depth rounding 'nearest'"):
        scale_depth(b0, 1.2, "nearest")


def test_resolution_rounding():
    assert scale_resolution(32, 1.0) == 32 and scale_resolution(28, 1.0) == 28
    assert scale_resolution(32, 1.15) == 36  # 36.8: the multiple of 4 below
    assert scale_resolution(32, 1.15 ** 2) == 40  # 42.3
    assert scale_resolution(32, 1.15, multiple=8) == 32 and scale_resolution(32, 1.3, multiple=8) == 40
    assert scale_resolution(28, 1.15) == 32
    assert scale_resolution(30, 1.02) == 30  # never below the base


def test_resolution_rounds_to_the_bases_stride_where_the_mac_law_allows():
    assert (EFFNET_B0.stride, RESNET18.stride, EFFNET_B0_224.stride, RESNET18_224.stride) == (8, 8, 32, 32)
    # the step is the stride, halved while it is more than 1/8 of the side being scaled
    assert (EFFNET_B0.side_step, RESNET18_224.side_step) == (4, 16)
    assert replace(EFFNET_B0, resolution=64).side_step == 8 and replace(RESNET18_224, resolution=512).side_step == 32
    assert scale(EFFNET_B0, resolution=1.15).resolution == 36  # 36.8: step 4, as resolution_multiple 4
    assert scale(EFFNET_B0_224, resolution=1.15).resolution == 256  # 257.6 -> 256 = 16 x 16
    assert scale(EFFNET_B0_224, resolution=1.15 ** 2).resolution == 288  # 296.2 -> 288, not 296 (not / 16)
    assert scale(RESNET18_224, resolution=1.15, multiple=8).resolution == 256  # lcm(8, 16)


# --------------------------------------------------------------------------- scale is pure


def test_scale_returns_new_tables_and_leaves_the_base_alone():
    before = EFFNET_B0.text
    scaled = scale(EFFNET_B0, 1.44, 1.21, 1.3225)
    assert EFFNET_B0.text == before and scaled is not EFFNET_B0
    assert scaled.resolution == 40 and scaled.stem == 40 and scaled.stages[1].out == 32  # 24 x 1.21 = 29 -> 32
    assert [s.repeats for s in scaled.stages] == list(scale_depth([1, 2, 2, 3, 3, 4, 1], 1.44))
    assert scale(EFFNET_B0) == EFFNET_B0 and scale(RESNET18) == RESNET18
    with pytest.raises(Exception):
        EFFNET_B0.stem = 8  # frozen


def test_scaled_text_forms_round_trip():
    for name, phi, (a, b, g) in itertools.product(BASES, (0, 1, 2, 3), [PAPER, (1.4, 1.2, 1.0), (1.0, 1.0, 1.4)]):
        arch = FAMILY.resolve({"base": name, "alpha": a, "beta": b, "gamma": g, "phi": float(phi), "tolerance": 0.5}, CIFAR)
        assert Arch.from_text(arch.text) == arch
        net = net_config(arch.params)
        assert NetConfig.from_text(net.text) == net
        assert FAMILY.describe(arch) == net.text


@pytest.mark.parametrize("text,match", [
    ("res32 stem_k3_s1_c32 zz_r1_k3_s1_c16 head_c0 act_relu", "does not start with one of mb, bb"),
    ("res32 stem_k3_s1 bb_r1_k3_s1_c16 head_c0 act_relu", r"lacks \['c'\]"),
    ("res32 stem_k3_s1_c32 bb_r1_k3_s1_c16 head_c0 act_tanh", "act_<relu|silu>"),
    ("32 stem_k3_s1_c32 bb_r1_k3_s1_c16 head_c0 act_relu", "is not resN"),
])
def test_bad_network_text(text, match):
    with pytest.raises(ScalingError, match=match):
        NetConfig.from_text(text)


# --------------------------------------------------------------------------- the constraint


def test_every_grid_point_outside_the_tolerance_is_infeasible():
    values = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    inside = 0
    for a, b, g in itertools.product(values, repeat=3):
        arch = FAMILY.resolve({"alpha": a, "beta": b, "gamma": g, "target": 2.0, "tolerance": 0.1}, CIFAR)
        why = FAMILY.constraint_violation(arch.params)
        assert (why is None) == (1.8 - 1e-9 <= a * b * b * g * g <= 2.2 + 1e-9), (a, b, g, why)
        inside += why is None
    assert 0 < inside < len(values) ** 3
    why = FAMILY.constraint_violation(FAMILY.resolve({"alpha": 1.5, "beta": 1.5, "gamma": 1.5}, CIFAR).params)
    assert why == "alpha*beta^2*gamma^2 = 7.594 is outside target 2 +- 10% [1.800, 2.200]"


# --------------------------------------------------------------------------- models and MACs


def model_of(base: str, phi: float, coefficients=PAPER, context=CIFAR, **extra) -> torch.nn.Module:
    a, b, g = coefficients
    return build(FAMILY.resolve({"base": base, "alpha": a, "beta": b, "gamma": g, "phi": phi, **extra}, context))


BASES_32 = sorted(b for b in BASES if design_side(b) == 32)  # the 224 px ones: against torchvision below


@pytest.mark.parametrize("base", BASES_32)
def test_phi_zero_is_the_base_network_exactly(base):
    torch.manual_seed(0)
    scaled = model_of(base, 0.0, coefficients=(1.4, 1.2, 1.0), tolerance=0.5)
    torch.manual_seed(0)
    plain = CompoundNet(replace(BASES[base], resolution=32), 3, 10, 32, 0.2, 0.2)
    assert scaled.net == BASES[base]  # the table itself (bases are written at 32x32)
    assert str(scaled) == str(plain) and isinstance(scaled.resize, torch.nn.Identity)
    for (ka, va), (kb, vb) in zip(scaled.state_dict().items(), plain.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert count_macs(scaled, (1, 3, 32, 32)) == count_macs(plain, (1, 3, 32, 32))


@pytest.mark.parametrize("base", sorted(BASES))
def test_macs_grow_as_the_compound_factor(base):
    """Measured (fvcore) MACs within 15% of base_macs * (alpha*beta^2*gamma^2)^phi, phi in {0, 1, 2},
    each base at its design side (the 224 px ones at a quarter width, channels multiples of 2,
    not 8: the law is about shapes, and 8 would be most of a quarter-width channel count)."""
    side = design_side(base)
    narrow = {} if side == 32 else {"base_width": 0.25, "divisor": 2}
    context, shape = {**CIFAR, "image_size": side}, (1, 3, side, side)
    base_macs = count_macs(model_of(base, 0.0, context=context, **narrow), shape)
    for phi in (1.0, 2.0):
        macs = count_macs(model_of(base, phi, context=context, **narrow), shape)
        expected = base_macs * flops_factor(*PAPER) ** phi
        assert abs(macs / expected - 1) <= 0.15, (base, phi, macs / base_macs, expected / base_macs)


def test_resolution_is_the_models_first_op():
    model = model_of("resnet18", 1.0, context=MNIST, base_width=0.125)
    assert isinstance(model.resize, Resize) and model.resize.size == 32  # 28 x 1.15 = 32.2 -> 32
    seen = []
    model.stem.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    model.eval()(torch.zeros(2, 1, 28, 28))
    assert seen == [(2, 1, 32, 32)]
    d, w, r = compound(*PAPER, 1.0)
    assert (d, r) == pytest.approx((1.2, 1.15))


# --------------------------------------------------------------------------- the 224 px bases


def test_224_bases_are_written_like_torchvisions():
    assert RESNET18_224.text == ("res224 stem_k7_s2_c64_m3 bb_r2_k3_s1_c64 bb_r2_k3_s2_c128 bb_r2_k3_s2_c256 "
                                 "bb_r2_k3_s2_c512 head_c0 act_relu")
    assert NetConfig.from_text(RESNET18_224.text) == RESNET18_224 and NetConfig.from_text(EFFNET_B0_224.text) == EFFNET_B0_224
    assert "_m" not in RESNET18.text  # a table without a stem pool keeps its old text
    assert [s.stride for s in EFFNET_B0_224.stages] == [1, 2, 2, 2, 1, 2, 1] and EFFNET_B0_224.stem_stride == 2


def parameter_shapes(model: torch.nn.Module) -> list[tuple[int, ...]]:
    return sorted(tuple(p.shape) for p in model.parameters())


@pytest.mark.parametrize("base,reference", [("effnet_b0_224", "efficientnet_b0"), ("resnet18_224", "resnet18")])
def test_224_bases_are_torchvisions_models(base, reference):
    """At 224 px and 1000 classes: torchvision's parameters, tensor by tensor shape, and its
    fvcore MACs within 1%."""
    import torchvision

    ours = model_of(base, 0.0, context=IMAGENET)
    theirs = torchvision.models.get_model(reference, weights=None)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert parameter_shapes(ours) == parameter_shapes(theirs)
    ratio = count_macs(ours, (1, 3, 224, 224)) / count_macs(theirs, (1, 3, 224, 224))
    assert abs(ratio - 1) <= 0.01, ratio


@pytest.mark.parametrize("name,width,depth", [("efficientnet_b1", 1.0, 1.1), ("efficientnet_b2", 1.1, 1.2),
                                              ("efficientnet_b3", 1.2, 1.4)])
def test_scaling_b0_224_gives_torchvisions_b1_to_b3(name, width, depth):
    """The paper's width and depth multipliers of B1..B3 (torchvision's), depth_rounding stage."""
    import torchvision

    arch = FAMILY.resolve({"base": "effnet_b0_224", "alpha": depth, "beta": width, "gamma": 1.0, "phi": 1.0,
                           "depth_rounding": "stage"}, IMAGENET)
    ours, theirs = build(arch), torchvision.models.get_model(name, weights=None)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert parameter_shapes(ours) == parameter_shapes(theirs)


@pytest.mark.parametrize("base,sides,suggest", [
    ("effnet_b0", {16: None, 28: None, 64: None, 15: "no base suits 15 px", 65: "no base suits 65 px",
                   224: "base effnet_b0_224 suits 224 px"}, None),
    ("resnet18_224", {112: None, 224: None, 448: None, 111: "no base suits 111 px", 449: "no base suits 449 px",
                      32: "base resnet18 suits 32 px"}, None),
])
def test_a_dataset_side_more_than_2x_from_the_bases_is_a_mismatch(base, sides, suggest):
    for side, advice in sides.items():
        why = FAMILY.input_mismatch({"base": base, "image_size": side})
        if advice is None:
            assert why is None, (side, why)
        else:
            assert why.field == "base" and advice in why.message, (side, why)
            assert f"base {base} is designed for {design_side(base)} px inputs" in why.message
            assert f"the dataset's images are {side} px" in why.message


def test_stochastic_depth_drops_whole_samples_only_while_training():
    from archscale.space.nets.efficientnet import StochasticDepth

    drop = StochasticDepth(0.5)
    x = torch.ones(1000, 2, 3, 3)
    torch.manual_seed(0)
    out = drop.train()(x)
    kept = out[:, 0, 0, 0] != 0
    assert 400 < kept.sum() < 600
    assert torch.all(out[kept] == 2.0) and torch.all(out[~kept] == 0.0)  # whole samples, rescaled by 1/(1-p)
    assert torch.equal(drop.eval()(x), x)
