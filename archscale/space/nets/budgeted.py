"""The network of family ``budgeted`` (declared in :mod:`space.budgeted`): blocks C1..C4 as
:func:`space.layouts.stage_plan` lays them out, then a GAP head."""

from __future__ import annotations

from typing import Mapping

from torch import nn

from archscale.space.arch import Scalar
from archscale.space.blocks import BlurPool2d, GlobalPoolHead, SeparableConv2d, SqueezeExcite, activation, norm2d
from archscale.space.layouts import BLOCKS, stage_plan


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
