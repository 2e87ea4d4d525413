"""Family ``davidnet``: the ResNet-9 of "How to train your ResNet" (seed 003) and its
placement search.

The network is a small graph of named nodes, as in cifar10-fast::

    prep -> layer1 -> layer2 -> layer3 -> pool -> linear -> x head_scale

Each ``layerN`` is ``conv 3x3 -> [pool, bn, act]`` in the order ``order`` (``conv-bn-pool``:
conv, bn, act, pool as in DavidNet; ``conv-pool-bn``: conv, pool, bn, act as in the bag of
tricks and airbench), then its placement ``layerN_add``:

- ``none``;
- ``extra``: one more conv-bn-act ("Class A");
- ``residual``: ``x + (conv-bn-act -> conv-bn-act)(x)`` ("Class B");
- ``extra+residual``: both, extra first.

Seed 003's winner — residual blocks on layer1 and layer3 — is the default point, with
6.57M parameters. airbench94's network is another point: ``prep_width=24, prep_kernel=2,
prep_norm=false, layer*_add=extra, widths 64/256/256, activation=gelu, order=conv-pool-bn,
bn_weight=frozen, head_scale=0.1111`` (its whitening initialisation of the first conv is
not reproduced: the first conv trains from a random start). The widths are
:func:`space.layouts.widths`; the network itself is :mod:`space.nets.davidnet`, imported when
a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from archscale.space import source
from archscale.space.arch import Arch, Scalar
from archscale.space.choices import ACTIVATION_LAYERS
from archscale.space.layouts import DAVIDNET_WIDTHS, LAYERS, widths
from archscale.space.registry import Param, SearchSpace, register_space

if TYPE_CHECKING:
    from torch import nn

PLACEMENTS = ("none", "extra", "residual", "extra+residual")
ORDERS = ("conv-bn-pool", "conv-pool-bn")


def model_source(p: Mapping[str, Scalar]) -> source.ModelSource:
    """``DavidNet(p)`` as plain PyTorch: ``conv_bn`` and ``layer`` helpers, one line per node."""
    from archscale.space.nets.davidnet import DavidNet, Residual

    width, k = widths(p), int(p["prep_kernel"])
    norm, act = source.norm(str(p["norm"]), "cout", ghost_batch=int(p["ghost_batch"])).text, source.act(str(p["activation"])).text
    pool = "nn.MaxPool2d(2)" if p["pool"] == "max" else "nn.AvgPool2d(2)"
    names = norm.split("(")[0].removeprefix("nn."), act[3:-2]
    steps = ([("conv", "nn.Conv2d(cin, cout, 3, padding=1, bias=False)"), ("pool", pool), ("bn", norm), ("act", act)]
             if p["order"] == "conv-pool-bn" else
             [("conv", "nn.Conv2d(cin, cout, 3, padding=1, bias=False)"), ("bn", norm), ("act", act), ("pool", pool)])
    helpers = (
        f"def conv_bn(cin: int, cout: int) -> nn.Sequential:\n"
        f"    \"\"\"conv 3x3 -> {names[0]} -> {names[1]}.\"\"\"\n"
        f"    return nn.Sequential(OrderedDict(conv=nn.Conv2d(cin, cout, 3, padding=1, bias=False), bn={norm}, act={act}))\n\n\n"
        f"def layer(cin: int, cout: int, **after: nn.Module) -> nn.Sequential:\n"
        f"    \"\"\"{' -> '.join(n for n, _ in steps)}, then what follows it (extra, residual).\"\"\"\n"
        f"    return nn.Sequential(OrderedDict(\n"
        f"        {', '.join(f'{n}={src}' for n, src in steps)}, **after))\n")
    prep = [f"conv={source.call('nn.Conv2d', int(p['in_channels']), width['prep'], k, padding=k // 2 if k % 2 else 0, bias=not p['prep_norm']).text}"]
    if p["prep_norm"]:
        prep.append(f"bn={norm.replace('cout', str(width['prep']))}")
    prep.append(f"act={act}")
    nodes = [f"prep=nn.Sequential(OrderedDict({', '.join(prep)})),"]
    cin = width["prep"]
    for name in LAYERS:
        add, c = str(p[f"{name}_add"]), width[name]
        after = ([f"extra=conv_bn({c}, {c})"] if add in ("extra", "extra+residual") else []) + \
                ([f"residual=Residual(conv_bn({c}, {c}), conv_bn({c}, {c}))"] if add in ("residual", "extra+residual") else [])
        nodes.append(f"{name}=layer({', '.join([str(cin), str(c), *after])}),")
        cin = c
    final = "nn.AdaptiveMaxPool2d(1)" if p["final_pool"] == "max" else "nn.AdaptiveAvgPool2d(1)"
    init = ["self.body = nn.Sequential(OrderedDict(", *("    " + n for n in nodes), "))",
            f"self.pool = {final}",
            f"self.linear = nn.Linear({cin}, num_classes, bias=False)",
            f"self.head_scale = {float(p['head_scale'])!r}  # multiplier of the logits"]
    if p["bn_weight"] == "frozen":
        init += ["for m in self.modules():  # BatchNorm scales frozen at 1; the biases still learn",
                 "    if isinstance(m, nn.BatchNorm2d):",
                 "        m.weight.requires_grad_(False)"]
    net = source.net_class("prep, layer1..3, global pooling, a linear classifier, scaled logits.", init,
                           DavidNet.forward, int(p["num_classes"]))
    needed = [*source.norm_classes(str(p["norm"])), helpers]
    if any(str(p[f"{n}_add"]).endswith("residual") for n in LAYERS):
        needed.append(Residual)
    return source.ModelSource(source.definitions(*needed, net), "linear")


@register_space
class DavidNetSpace(SearchSpace):
    name = "davidnet"
    description = "ResNet-9 of 'How to train your ResNet' (seed 003): residual/extra layer placements, widths, pooling"
    params = (
        *(Param(f"{n}_add", "residual" if n in ("layer1", "layer3") else "none", f"what follows {n}", choices=PLACEMENTS)
          for n in LAYERS),
        *(Param(f"{n}_width", w, f"output channels of {n} before width_mult", low=1, high=8192)
          for n, w in DAVIDNET_WIDTHS.items()),
        Param("width_mult", 1.0, "multiplier of every width (rounded to a multiple of 8)", low=0.05, high=16.0),
        Param("prep_kernel", 3, "kernel of the prep conv (2: no padding, as airbench's whitening conv)", choices=(2, 3)),
        Param("prep_norm", True, "normalisation after the prep conv", choices=(False, True)),
        Param("order", "conv-bn-pool", "where each layer pools", choices=ORDERS),
        Param("pool", "max", "pooling of each layer", choices=("max", "avg")),
        Param("final_pool", "max", "global pooling before the classifier", choices=("max", "avg")),
        Param("activation", "relu", "activation", choices=tuple(ACTIVATION_LAYERS)),
        Param("norm", "batch", "normalisation", choices=("batch", "ghost")),
        Param("ghost_batch", 32, "images per ghost batch when norm is 'ghost'", low=2, high=4096),
        Param("bn_weight", "learned", "BatchNorm scale: learned, or frozen at 1", choices=("learned", "frozen")),
        Param("head_scale", 0.125, "multiplier of the logits", low=0.0, high=10.0),
    )

    def build_model(self, arch: Arch) -> nn.Module:
        from archscale.space.nets.davidnet import DavidNet

        return DavidNet(arch.params)

    def model_source(self, arch: Arch) -> source.ModelSource:
        return model_source(arch.params)


AIRBENCH94 = {
    "prep_width": 24, "prep_kernel": 2, "prep_norm": False, "layer1_width": 64, "layer2_width": 256,
    "layer3_width": 256, "layer1_add": "extra", "layer2_add": "extra", "layer3_add": "extra", "activation": "gelu",
    "order": "conv-pool-bn", "bn_weight": "frozen", "head_scale": 0.1111,
}
