"""The network of family ``efficientnet`` (declared in :mod:`space.efficientnet`): a scaled
:class:`~archscale.space.scaling.NetConfig` as MBConv or ResNet basic blocks, after a resize."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archscale.space.blocks import SqueezeExcite, activation
from archscale.space.scaling import NetConfig


class Resize(nn.Module):
    """Bilinear resize of (B, C, H, W) to (B, C, size, size): resolution scaling on the device."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class StochasticDepth(nn.Module):
    """Drop a residual branch for a whole sample with probability ``p`` while training
    (Huang et al. 2016), rescaling the kept ones by ``1 / (1 - p)``; identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)  # (B, 1, 1, 1)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = None) -> nn.Sequential:
    """kxk conv (padding k // 2, no bias) -> BatchNorm [-> activation]."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(activation(act))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> squeeze-excite -> 1x1 project,
    with an identity shortcut (and stochastic depth) when shape allows."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, se: float, act: str, drop: float):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1, act=act))
        layers.append(_conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se > 0:
            layers.append(SqueezeExcite(hidden, 0.0, hidden=int(cin * se), act=act))
        layers.append(_conv_bn(hidden, cout, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.drop = StochasticDepth(drop) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + self.drop(out) if self.residual else out


class BasicBlock(nn.Module):
    """ResNet basic block: two kxk conv-BN, a (projected when needed) shortcut, stochastic depth."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, act: str, drop: float):
        super().__init__()
        self.block = nn.Sequential(_conv_bn(cin, cout, kernel, stride, act=act), _conv_bn(cout, cout, kernel))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else _conv_bn(cin, cout, 1, stride)
        self.drop = StochasticDepth(drop)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.drop(self.block(x)))


def block_plan(net: NetConfig, stochastic_depth: float) -> list[tuple[int, type[nn.Module], dict]]:
    """Every block of ``net`` as ``(stage index, class, constructor arguments)``; the drop
    probability of stochastic depth grows linearly with depth, as in EfficientNet."""
    plan: list[tuple[int, type[nn.Module], dict]] = []
    cin, index, total = net.stem, 0, net.blocks
    for s, stage in enumerate(net.stages):
        for i in range(stage.repeats):
            stride = stage.stride if i == 0 else 1
            drop = stochastic_depth * index / total
            if stage.block == "mb":
                args = {"cin": cin, "cout": stage.out, "kernel": stage.kernel, "stride": stride, "expand": stage.expand,
                        "se": stage.se, "act": net.act, "drop": drop}
                plan.append((s, MBConv, args))
            else:
                args = {"cin": cin, "cout": stage.out, "kernel": stage.kernel, "stride": stride, "act": net.act, "drop": drop}
                plan.append((s, BasicBlock, args))
            cin, index = stage.out, index + 1
    return plan


class CompoundNet(nn.Module):
    """A :class:`NetConfig` as a model: (B, in_channels, input_size, input_size) -> (B, num_classes)."""

    def __init__(self, net: NetConfig, in_channels: int, num_classes: int, input_size: int,
                 stochastic_depth: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.net = net
        self.resize = Resize(net.resolution) if net.resolution != input_size else nn.Identity()
        self.stem = _conv_bn(in_channels, net.stem, net.stem_kernel, net.stem_stride, act=net.act)
        self.pool = nn.MaxPool2d(net.stem_pool, 2, net.stem_pool // 2) if net.stem_pool else nn.Identity()
        self.blocks = nn.Sequential(*(block(**args) for _, block, args in block_plan(net, stochastic_depth)))
        cin = net.stages[-1].out
        self.head = _conv_bn(cin, net.head, 1, act=net.act) if net.head else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(net.head or cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resize(x)  # (B, C, r, r)
        x = self.head(self.blocks(self.pool(self.stem(x))))  # (B, C', r/s, r/s)
        x = x.mean((2, 3))  # (B, C')
        return self.classifier(self.dropout(x))  # (B, num_classes)
