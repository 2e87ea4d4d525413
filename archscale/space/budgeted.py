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
:func:`space.layouts.stage_plan`; the network itself is :mod:`space.nets.budgeted`, imported
when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from archscale.space import source
from archscale.space.arch import Arch, Scalar
from archscale.space.choices import ACTIVATION_LAYERS, NORMS
from archscale.space.layouts import BLOCKS, spatial_sizes, stage_plan
from archscale.space.registry import Param, SearchSpace, SpaceError, register_space

if TYPE_CHECKING:
    from torch import nn

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


def _unit_source(a: dict) -> str:
    """``conv_unit(<conv>, cout[, blur=True])`` of one ``unit`` of :func:`stage_plan`."""
    extra = {k: a[k] for k in ("stride", "dilation") if a[k] != 1}
    if a["conv"] == "depthwise":
        padding = {} if a["padding"] is None else {"padding": a["padding"]}
        conv = source.call("SeparableConv2d", a["cin"], a["cout"], **extra, **padding)
    else:
        padding = a["dilation"] if a["padding"] is None else a["padding"]
        stride = {"stride": a["stride"]} if a["stride"] != 1 else {}
        dilation = {"dilation": a["dilation"]} if a["dilation"] != 1 else {}
        conv = source.call("nn.Conv2d", a["cin"], a["cout"], 3, **stride, padding=padding, **dilation, bias=False)
    return source.call("conv_unit", conv, a["cout"], **({"blur": True} if a["blur"] else {})).text


def model_source(p: Mapping[str, Scalar]) -> source.ModelSource:
    """``BudgetedNet(p)`` as plain PyTorch: a ``conv_unit`` helper and one line per unit."""
    from archscale.space.blocks import BlurPool2d, GlobalPoolHead, SeparableConv2d, SqueezeExcite, binomial
    from archscale.space.nets.budgeted import BudgetedNet

    plan = stage_plan(p)
    units = [a for stage in plan for kind, a in stage if kind == "unit"]
    kinds = {kind for stage in plan for kind, _ in stage}
    norm, act = source.norm(str(p["norm"]), "cout", int(p["norm_groups"]), int(p["ghost_batch"])), source.act(str(p["activation"]))
    dropout = f", nn.Dropout({float(p['dropout'])!r})" if float(p["dropout"]) > 0 else ""
    blur = source.call("BlurPool2d", source.Code("cout"), int(p["blur_size"]), stride=2).text
    doc = f"conv -> {norm.text.split('(')[0].removeprefix('nn.')} -> {act.text[3:-2]}"
    if any(a["blur"] for a in units):
        helper = (f"def conv_unit(conv: nn.Module, cout: int, blur: bool = False) -> nn.Sequential:\n"
                  f"    \"\"\"{doc} [-> {blur}]{dropout and ' -> dropout'}.\"\"\"\n"
                  f"    layers = [conv, {norm.text}, {act.text}] + ([{blur}] if blur else [])\n"
                  f"    return nn.Sequential(*layers{dropout})\n")
    else:
        helper = (f"def conv_unit(conv: nn.Module, cout: int) -> nn.Sequential:\n"
                  f"    \"\"\"{doc}{dropout and ' -> dropout'}.\"\"\"\n"
                  f"    return nn.Sequential(conv, {norm.text}, {act.text}{dropout})\n")
    sizes, stages, notes = spatial_sizes(p), [], []
    for i, stage in enumerate(plan):
        items = []
        for kind, a in stage:
            if kind == "maxpool":
                items.append(source.call("nn.MaxPool2d", 2, **({"stride": 1} if a["stride"] == 1 else {})).text)
            elif kind == "blur":
                items.append(source.call("BlurPool2d", a["channels"], int(p["blur_size"]), stride=2).text)
            elif kind == "unit":
                items.append(_unit_source(a))
            else:
                items.append(source.call("SqueezeExcite", a["channels"], a["ratio"]).text)
        stages.append(source.sequential(items))
        notes.append(f"C{i + 1}: {sizes[i]}x{sizes[i]}")
    needed = [*source.norm_classes(str(p["norm"]))]
    if "depthwise" in {a["conv"] for a in units}:
        needed.append(SeparableConv2d)
    if "se" in kinds:
        needed += [source.ACTIVATIONS_SOURCE, SqueezeExcite]
    if "blur" in kinds or any(a["blur"] for a in units):
        needed += [binomial, BlurPool2d]
    init = [f"self.blocks = {source.sequential(stages, notes)}",
            f"self.head = GlobalPoolHead({int(p[f'c{BLOCKS}_width'])}, num_classes)"]
    net = source.net_class("Blocks C1..C4, then global average pooling and a 1x1 conv to the classes.",
                           init, BudgetedNet.forward, int(p["num_classes"]))
    return source.ModelSource(source.definitions(*needed, GlobalPoolHead, helper, net), "head.classifier")


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

    def build_model(self, arch: Arch) -> nn.Module:
        from archscale.space.nets.budgeted import BudgetedNet

        return BudgetedNet(arch.params)

    def model_source(self, arch: Arch) -> source.ModelSource:
        return model_source(arch.params)
