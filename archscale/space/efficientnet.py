"""Family ``efficientnet``: compound scaling of a base network (seed 002).

An architecture names a base table and the coefficients ``alpha``, ``beta``, ``gamma`` and
``phi``. The bases (:data:`space.scaling.BASES`), each designed for one input side:

- ``effnet_b0`` (32 px): MBConv EfficientNet-B0 adapted to 32x32 inputs (stride 8);
- ``resnet18`` (32 px): the CIFAR ResNet-18 of seed 002 (3x3 stem, no max-pool; stride 8);
- ``effnet_b0_224`` (224 px): torchvision's ``efficientnet_b0`` (stride 32);
- ``resnet18_224`` (224 px): torchvision's ``resnet18``: 7x7/2 stem, 3x3/2 max-pool (stride 32).

A dataset whose side is more than 2x away from the base's either way
(:func:`resolution_mismatch`) builds a network with feature maps of the wrong scale; the
search refuses such a spec unless it allows the mismatch. The network is::

    scale(base, depth=alpha**phi, width=base_width * beta**phi, resolution=gamma**phi)

(:mod:`space.scaling`). Resolution scaling is the model's first op: a bilinear resize
of the dataset's images to the scaled side, so MACs counted on the dataset's input
shape and the exported model both include it, and the trainer needs no knowledge of it.

``target`` and ``tolerance`` bound ``alpha * beta**2 * gamma**2`` (the MACs multiplier
of one step of phi): a configuration outside ``target * (1 +- tolerance)`` is valid
and can be built, but a search records it ``infeasible`` and never trains it
(:meth:`EfficientNet.constraint_violation`). The network itself is :mod:`space.nets.efficientnet`,
imported when a model is built.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping

from archscale.space.arch import Arch, Scalar
from archscale.space.registry import Network, Param, SearchSpace, SpaceError, register_space
from archscale.space.scaling import BASES, DEPTH_ROUNDING, NetConfig, compound, design_side, flops_factor, scale

MISMATCH_RATIO = 2.0  # a dataset side more than this factor from the base's design side is refused


def net_config(params: Mapping[str, Scalar]) -> NetConfig:
    """The scaled network table of a resolved ``efficientnet`` parameter set."""
    d, w, r = compound(float(params["alpha"]), float(params["beta"]), float(params["gamma"]), float(params["phi"]))
    base = replace(BASES[str(params["base"])], resolution=int(params["image_size"]))
    return scale(base, depth=d, width=float(params["base_width"]) * w, resolution=r,
                 divisor=int(params["divisor"]), multiple=int(params["resolution_multiple"]),
                 depth_rounding=str(params["depth_rounding"]))


def suits(base: str, side: int) -> bool:
    """Whether ``side`` is within :data:`MISMATCH_RATIO` (either way) of the side ``base`` was designed for."""
    return 1 / MISMATCH_RATIO <= side / design_side(base) <= MISMATCH_RATIO


def resolution_mismatch(params: Mapping[str, Scalar]) -> str | None:
    """Why the dataset's side (``image_size``) does not suit the base (:func:`suits`), naming
    the base of the same network that suits it; or None."""
    base, side = str(params["base"]), int(params["image_size"])
    if suits(base, side):
        return None
    kin = [name for name, net in BASES.items() if net.stages[0].block == BASES[base].stages[0].block]
    fits = [name for name in kin if suits(name, side)]
    ranges = ", ".join(f"{name} {math.ceil(design_side(name) / MISMATCH_RATIO)}-{int(design_side(name) * MISMATCH_RATIO)} px"
                       for name in kin)
    advice = f"base {fits[0]} suits {side} px" if fits else f"no base suits {side} px ({ranges}): resize the images"
    return (f"base {base} is designed for {design_side(base)} px inputs, but the dataset's images are {side} px "
            f"(more than {MISMATCH_RATIO:g}x away); {advice}")


@register_space
class EfficientNet(SearchSpace):
    name = "efficientnet"
    description = ("compound scaling of a base network (EfficientNet-B0 of MBConv blocks, or ResNet-18) by "
                   "depth alpha^phi, width beta^phi, resolution gamma^phi (seed 002)")
    params = (
        Param("base", "effnet_b0", "base network table (effnet_b0, resnet18: for 32 px inputs; "
              "effnet_b0_224, resnet18_224: torchvision's, for 224 px)", choices=tuple(BASES)),
        Param("alpha", 1.2, "depth coefficient: blocks x alpha^phi (see depth_rounding)", low=1.0, high=16.0),
        Param("beta", 1.1, "width coefficient: channels x beta^phi, make_divisible(divisor)", low=1.0, high=16.0),
        Param("gamma", 1.15, "resolution coefficient: input side x gamma^phi, by a resize", low=1.0, high=16.0),
        Param("phi", 0.0, "compound coefficient; 0 = the base network", low=0.0, high=8.0),
        Param("target", 2.0, "alpha*beta^2*gamma^2 should be target (MACs x per step of phi)", low=1.0, high=16.0),
        Param("tolerance", 0.1, "allowed relative deviation of alpha*beta^2*gamma^2 from target", low=0.0, high=1.0),
        Param("base_width", 1.0, "width multiplier of the base itself, before scaling (small CPU bases)", low=0.05, high=4.0),
        Param("divisor", 8, "channels are rounded to multiples of this (make_divisible)", choices=(1, 2, 4, 8, 16)),
        Param("resolution_multiple", 4, "the scaled input side is a multiple of this and of the base's step "
              "(its total stride, at most 1/8 of the side; rounded down)", choices=(4, 8)),
        Param("depth_rounding", "total", "total: ceil(blocks x d) shared out over stages; stage: ceil per stage",
              choices=DEPTH_ROUNDING),
        Param("stochastic_depth", 0.2, "drop probability of the last block's residual branch (linear in depth)", low=0.0, high=0.9),
        Param("dropout", 0.2, "dropout before the classifier", low=0.0, high=0.9),
    )

    def constraint_violation(self, params: Mapping[str, Scalar]) -> str | None:
        product = flops_factor(float(params["alpha"]), float(params["beta"]), float(params["gamma"]))
        target, tolerance = float(params["target"]), float(params["tolerance"])
        if abs(product - target) > tolerance * target + 1e-9:
            return (f"alpha*beta^2*gamma^2 = {product:.3f} is outside target {target:g} +- {tolerance:.0%} "
                    f"[{target * (1 - tolerance):.3f}, {target * (1 + tolerance):.3f}]")
        return None

    def input_mismatch(self, params: Mapping[str, Scalar]) -> SpaceError | None:
        why = resolution_mismatch(params)
        return SpaceError("base", why) if why else None

    def describe(self, arch: Arch) -> str:
        return net_config(arch.params).text

    def network(self, arch: Arch) -> Network:
        from archscale.space.nets.efficientnet import CompoundNet  # torch: only when a model is built

        p = arch.params
        return Network(CompoundNet, {"net": net_config(p), "in_channels": int(p["in_channels"]),
                                     "num_classes": int(p["num_classes"]), "input_size": int(p["image_size"]),
                                     "stochastic_depth": float(p["stochastic_depth"]),
                                     "dropout": float(p["dropout"])})
