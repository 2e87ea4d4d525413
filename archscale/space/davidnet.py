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
:func:`space.layouts.widths`; the network itself, and its plain-PyTorch source for an export,
are :mod:`space.nets.davidnet`, imported when a model is built or exported.
"""

from __future__ import annotations

from archscale.space.arch import Arch
from archscale.space.choices import ACTIVATION_LAYERS
from archscale.space.layouts import DAVIDNET_WIDTHS, LAYERS
from archscale.space.registry import Network, Param, SearchSpace, register_space

PLACEMENTS = ("none", "extra", "residual", "extra+residual")
ORDERS = ("conv-bn-pool", "conv-pool-bn")


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

    def network(self, arch: Arch) -> Network:
        from archscale.space.nets.davidnet import DavidNet  # torch: only when a model is built

        return Network(DavidNet, {"p": dict(arch.params)})


AIRBENCH94 = {
    "prep_width": 24, "prep_kernel": 2, "prep_norm": False, "layer1_width": 64, "layer2_width": 256,
    "layer3_width": 256, "layer1_add": "extra", "layer2_add": "extra", "layer3_add": "extra", "activation": "gelu",
    "order": "conv-pool-bn", "bn_weight": "frozen", "head_scale": 0.1111,
}
