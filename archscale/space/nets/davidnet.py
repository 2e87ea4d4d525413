"""The network of family ``davidnet`` (declared in :mod:`space.davidnet`): a graph of named
nodes, prep -> layer1..3 (each with its placement) -> pool -> linear -> x head_scale."""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

from torch import nn

from archscale.space.arch import Scalar
from archscale.space.blocks import activation, norm2d
from archscale.space.layouts import LAYERS, widths


def _norm(p: Mapping[str, Scalar], channels: int) -> nn.Module:
    norm = norm2d(str(p["norm"]), channels, ghost_batch=int(p["ghost_batch"]))
    if p["bn_weight"] == "frozen" and getattr(norm, "weight", None) is not None:
        norm.weight.requires_grad_(False)  # scale fixed at 1; the bias still learns
    return norm


def conv_bn(cin: int, cout: int, p: Mapping[str, Scalar]) -> nn.Sequential:
    """conv 3x3 -> norm -> activation."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(cin, cout, 3, padding=1, bias=False), bn=_norm(p, cout), act=activation(str(p["activation"]))))


class Residual(nn.Module):
    """``x + res2(res1(x))``: two conv-bn-act units of constant width."""

    def __init__(self, res1: nn.Module, res2: nn.Module):
        super().__init__()
        self.res1 = res1
        self.res2 = res2

    def forward(self, x):
        return x + self.res2(self.res1(x))


def layer(cin: int, cout: int, add: str, p: Mapping[str, Scalar]) -> nn.Sequential:
    pool = nn.MaxPool2d(2) if p["pool"] == "max" else nn.AvgPool2d(2)
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    if p["order"] == "conv-pool-bn":
        nodes = OrderedDict(conv=conv, pool=pool, bn=_norm(p, cout), act=activation(str(p["activation"])))
    else:
        nodes = OrderedDict(conv=conv, bn=_norm(p, cout), act=activation(str(p["activation"])), pool=pool)
    if add in ("extra", "extra+residual"):
        nodes["extra"] = conv_bn(cout, cout, p)
    if add in ("residual", "extra+residual"):
        nodes["residual"] = Residual(conv_bn(cout, cout, p), conv_bn(cout, cout, p))
    return nn.Sequential(nodes)


class DavidNet(nn.Module):
    def __init__(self, p: Mapping[str, Scalar]):
        super().__init__()
        width = widths(p)
        k = int(p["prep_kernel"])
        prep = OrderedDict(conv=nn.Conv2d(int(p["in_channels"]), width["prep"], k, padding=k // 2 if k % 2 else 0,
                                          bias=not p["prep_norm"]))
        if p["prep_norm"]:
            prep["bn"] = _norm(p, width["prep"])
        prep["act"] = activation(str(p["activation"]))
        nodes = OrderedDict(prep=nn.Sequential(prep))
        cin = width["prep"]
        for name in LAYERS:
            nodes[name] = layer(cin, width[name], str(p[f"{name}_add"]), p)
            cin = width[name]
        self.body = nn.Sequential(nodes)
        self.pool = nn.AdaptiveMaxPool2d(1) if p["final_pool"] == "max" else nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, int(p["num_classes"]), bias=False)
        self.head_scale = float(p["head_scale"])

    def forward(self, x):  # (B, C, H, W) -> (B, classes)
        x = self.pool(self.body(x)).flatten(1)  # (B, layer3 width)
        return self.linear(x) * self.head_scale
