"""What a family's declaration and its network share, without torch: the layout of the
``budgeted`` blocks and the widths of ``davidnet``'s nodes (``efficientnet``'s is
:mod:`space.scaling`).

A family module (:mod:`space.budgeted`, :mod:`space.davidnet`) validates and describes an
architecture from these; its network (:mod:`space.nets`) is built from them; neither imports
the other.
"""

from __future__ import annotations

from typing import Mapping

from archscale.space.arch import Scalar

# --------------------------------------------------------------------------- budgeted

BLOCKS = 4  # C1..C4


def stage_plan(p: Mapping[str, Scalar]) -> list[list[tuple[str, dict]]]:
    """What each block C1..C4 holds, in order, as ``(kind, arguments)``: ``("maxpool", {stride})``,
    ``("blur", {channels})``, ``("unit", {cin, cout, conv, stride, dilation, padding, blur})``,
    ``("se", {channels, ratio})``. The model is built from it, and its source written from it."""
    down, blur = str(p["downsample"]), bool(p["blurpool"])
    cin = int(p["in_channels"])
    stages: list[list[tuple[str, dict]]] = []
    for i in range(1, BLOCKS + 1):
        conv, width = str(p[f"c{i}_conv"]), int(p[f"c{i}_width"])
        own_dilation = int(p[f"c{i}_dilation"]) if conv == "dilated" else 1
        layers: list[tuple[str, dict]] = []
        first: dict = {"dilation": own_dilation}
        if i > 1 and down == "maxpool":
            layers.append(("maxpool", {"stride": 1 if blur else 2}))
            if blur:
                layers.append(("blur", {"channels": cin}))
        elif i > 1 and down == "stride":
            first = {"dilation": own_dilation, "stride": 1, "blur": True} if blur else {"dilation": own_dilation, "stride": 2}
        elif i > 1 and down == "dilation":
            first = {"dilation": max(2, own_dilation), "padding": 0}
        for j in range(int(p[f"c{i}_convs"])):
            unit = {"cin": cin, "cout": width, "conv": conv, "stride": 1, "dilation": own_dilation, "padding": None,
                    "blur": False}
            layers.append(("unit", {**unit, **first} if j == 0 else unit))
            cin = width
        if float(p["se_ratio"]) > 0:
            layers.append(("se", {"channels": width, "ratio": float(p["se_ratio"])}))
        stages.append(layers)
    return stages


def spatial_sizes(p: Mapping[str, Scalar]) -> list[int]:
    """Side length of the feature map after each block."""
    size, sizes = int(p["image_size"]), []
    down = str(p["downsample"])
    for i in range(1, BLOCKS + 1):
        if i > 1:
            if down == "maxpool":
                size //= 2
            elif down == "stride":
                size = (size + 1) // 2
            else:
                dil = max(2, int(p[f"c{i}_dilation"]) if p[f"c{i}_conv"] == "dilated" else 2)
                size -= 2 * dil
        sizes.append(size)
    return sizes


# --------------------------------------------------------------------------- davidnet

LAYERS = ("layer1", "layer2", "layer3")
DAVIDNET_WIDTHS = {"prep": 64, "layer1": 128, "layer2": 256, "layer3": 512}  # seed 003's, before width_mult


def scaled_width(width: int, mult: float, divisor: int = 8) -> int:
    """``width * mult`` rounded to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(round(width * mult / divisor)) * divisor)


def widths(p: Mapping[str, Scalar]) -> dict[str, int]:
    """Output channels of DavidNet's prep and each layer, after ``width_mult``."""
    return {name: scaled_width(int(p[f"{name}_width"]), float(p["width_mult"])) for name in DAVIDNET_WIDTHS}
