"""The network of family ``budgeted`` (declared in :mod:`space.budgeted`): blocks C1..C4 as
:func:`space.layouts.stage_plan` lays them out, then a GAP head."""

from __future__ import annotations

from typing import Mapping

from torch import nn

from archscale.space import source
from archscale.space.arch import Scalar
from archscale.space.blocks import (BlurPool2d, GlobalPoolHead, SeparableConv2d, SqueezeExcite, activation, binomial,
                                    norm2d)
from archscale.space.layouts import BLOCKS, spatial_sizes, stage_plan


class _ConvUnit(nn.Sequential):
    """conv -> norm -> act [-> BlurPool] [-> dropout]."""

    def __init__(self, cin: int, cout: int, conv: str, p: Mapping[str, Scalar], *,
                 stride: int = 1, dilation: int = 1, padding: int | None = None, blur: bool = False):
        if conv == "depthwise":
            layer: nn.Module = SeparableConv2d(cin, cout, 3, stride, dilation, padding)
        else:
            pad = dilation if padding is None else padding
            layer = nn.Conv2d(cin, cout, 3, stride, pad, dilation=dilation, bias=False)
        parts = [layer, norm2d(str(p["norm"]), cout, int(p["norm_groups"]), int(p["ghost_batch"])),
                 activation(str(p["activation"]))]
        if blur:
            parts.append(BlurPool2d(cout, int(p["blur_size"]), stride=2))
        if float(p["dropout"]) > 0:
            parts.append(nn.Dropout(float(p["dropout"])))
        super().__init__(*parts)


class BudgetedNet(nn.Module):
    def __init__(self, p: Mapping[str, Scalar]):
        super().__init__()
        stages = []
        for plan in stage_plan(p):
            layers: list[nn.Module] = []
            for kind, a in plan:
                if kind == "maxpool":
                    layers.append(nn.MaxPool2d(2, stride=a["stride"]))
                elif kind == "blur":
                    layers.append(BlurPool2d(a["channels"], int(p["blur_size"]), stride=2))
                elif kind == "unit":
                    layers.append(_ConvUnit(a["cin"], a["cout"], a["conv"], p, stride=a["stride"], dilation=a["dilation"],
                                            padding=a["padding"], blur=a["blur"]))
                else:
                    layers.append(SqueezeExcite(a["channels"], a["ratio"]))
            stages.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*stages)
        self.head = GlobalPoolHead(int(p[f"c{BLOCKS}_width"]), int(p["num_classes"]))

    def forward(self, x):  # (B, in_channels, H, W) -> (B, num_classes)
        return self.head(self.blocks(x))


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
