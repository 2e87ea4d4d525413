"""Family ``budgeted``: parameter-budgeted CNNs of seeds 000 (MNIST 1.5k / CIFAR 140k)
and 004 (CIFAR 200k with depthwise and dilated convs).

Skeleton::

    C1 -> [down] C2 -> [down] C3 -> [down] C4 -> GAP -> 1x1 conv -> logits

Each block Ci is ``ci_convs`` conv units (conv -> norm -> act -> dropout) of width
``ci_width`` whose convs are ``regular`` 3x3, ``depthwise`` (separable: depthwise
3x3 + pointwise 1x1) or ``dilated`` 3x3 (dilation ``ci_dilation``). Between blocks
the resolution drops by ``downsample``:

- ``stride``: the block's first conv has stride 2 (with ``blurpool``: stride 1, then
  a BlurPool of stride 2 after its activation);
- ``maxpool``: a 2x2 max-pool before the block (with ``blurpool``: max-pool of
  stride 1, then BlurPool of stride 2, i.e. MaxBlurPool);
- ``dilation``: the block's first conv has dilation 2 and no padding, so it shrinks
  the map by 4 pixels while growing the receptive field (seed 004's C2..C4).

Optional squeeze-excite (``se_ratio`` > 0) after each block. What each block holds is
:func:`space.layouts.stage_plan`; the network itself, and its plain-PyTorch source for an
export, are :mod:`space.nets.budgeted`, imported when a model is built or exported.
"""

from __future__ import annotations

from typing import Mapping

from archscale.space.arch import Arch, Scalar
from archscale.space.choices import ACTIVATION_LAYERS, NORMS
from archscale.space.layouts import BLOCKS, spatial_sizes
from archscale.space.registry import Network, Param, SearchSpace, SpaceError, register_space

CONV_TYPES = ("regular", "depthwise", "dilated")
DOWNSAMPLES = ("stride", "maxpool", "dilation")

# Per-block defaults: (width, convs). A small CIFAR-sized network.
_BLOCK_DEFAULTS = {1: (16, 2), 2: (32, 2), 3: (48, 2), 4: (64, 2)}


def _block_params(i: int) -> tuple[Param, ...]:
    width, convs = _BLOCK_DEFAULTS[i]
    return (
        Param(f"c{i}_width", width, f"output channels of block C{i}", low=1, high=4096),
        Param(f"c{i}_convs", convs, f"conv units in block C{i}", low=1, high=8),
        Param(f"c{i}_conv", "regular", f"conv type of block C{i}", choices=CONV_TYPES),
        Param(f"c{i}_dilation", 2, f"dilation of block C{i} when its conv type is 'dilated'", choices=(1, 2, 4, 8)),
    )


@register_space
class Budgeted(SearchSpace):
    name = "budgeted"
    description = "parameter-budgeted C1..C4 CNN with regular/depthwise/dilated convs and a GAP head (seeds 000, 004)"
    params = (
        *(q for i in range(1, BLOCKS + 1) for q in _block_params(i)),
        Param("downsample", "stride", "how the resolution drops between blocks", choices=DOWNSAMPLES),
        Param("norm", "batch", "normalisation after each conv", choices=NORMS),
        Param("norm_groups", 2, "groups of GroupNorm when norm is 'group'", low=1, high=64),
        Param("ghost_batch", 32, "images per ghost batch when norm is 'ghost'", low=2, high=4096),
        Param("activation", "relu", "activation after each norm", choices=tuple(ACTIVATION_LAYERS)),
        Param("se_ratio", 0.0, "squeeze-excite hidden ratio after each block; 0 = off", low=0.0, high=1.0),
        Param("blurpool", False, "anti-aliased downsampling (BlurPool) for stride and maxpool", choices=(False, True)),
        Param("blur_size", 3, "BlurPool binomial filter size", choices=(2, 3, 4, 5)),
        Param("dropout", 0.0, "dropout after each conv unit", low=0.0, high=0.9),
    )

    def check(self, params: Mapping[str, Scalar]) -> None:
        sizes = spatial_sizes(params)
        if min(sizes) < 1:
            raise SpaceError(
                "downsample",
                f"{params['downsample']!r} shrinks a {params['image_size']}px input to {min(sizes)}px "
                f"(sizes per block: {sizes}); use smaller dilations or another downsampling",
            )

    def network(self, arch: Arch) -> Network:
        from archscale.space.nets.budgeted import BudgetedNet  # torch: only when a model is built

        return Network(BudgetedNet, {"p": dict(arch.params)})
