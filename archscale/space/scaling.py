"""Compound scaling (EfficientNet, Tan & Le 2019) of base networks written as data.

A base network is a :class:`NetConfig`: a stem, a table of frozen :class:`StageConfig`
rows (one per stage, as in the paper's Table 1) and a head. Scaling is a pure function::

    scale(base, depth=d, width=w, resolution=r) -> NetConfig   # base is unchanged

with one rounding rule per dimension:

- width: every channel count ``c`` becomes ``make_divisible(c * w, divisor)``
  (nearest multiple of ``divisor``, never more than 10% below ``c * w``);
- depth (``depth_rounding="total"``, the default): the network's block count ``N``
  becomes ``ceil(N * d)``, shared out over the stages by largest remainder of
  ``n_i * d`` (ties: the later stage), every stage keeping at least ``floor(n_i * d)``
  blocks. ``"stage"`` rounds each stage up on its own, ``ceil(n_i * d)`` (torchvision's
  ``adjust_depth``); with stages of 1 to 4 blocks that adds up to +30% MACs at ``d = 1.2``;
- resolution: the input side ``s`` becomes the largest multiple of ``multiple`` not above
  ``s * r`` (never below ``s``); ``r == 1`` keeps ``s`` exactly. Rounding down offsets
  the ceil of strided convs on odd sizes (44 -> 22 -> 11 -> 6). :func:`scale` rounds to a
  multiple of the base's own step as well (:attr:`NetConfig.side_step`): its total stride,
  so that every stage's feature map divides exactly, halved while one step would be more
  than 1/8 of the side being scaled (a coarser step breaks the MAC law: at 224 px a table
  of stride 32 rounds to 16; at 32 px one of stride 8 rounds to 4).

With these rules the measured MACs of every base stay within 10% of
``(alpha * beta**2 * gamma**2) ** phi`` for the paper's (1.2, 1.1, 1.15) at phi <= 2
(``tests/space/test_scaling.py``; ``benchmarks/compound_macs.py`` for a whole grid).

Every scaled network has a lossless one-line text form, timm style::

    res36 stem_k3_s1_c72 bb_r3_k3_s1_c72 bb_r3_k3_s2_c144 ... head_c0 act_relu

(``m3`` in the stem, when present, is a 3x3 max-pool of stride 2 after the stem conv, as
in ImageNet ResNets; ``mb`` rows are MBConv blocks: ``e`` expansion, ``se`` squeeze-excite ratio of the
block's input channels; ``bb`` rows are ResNet basic blocks.) ``NetConfig.from_text(n.text) == n``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

BLOCKS = ("mb", "bb")  # MBConv (inverted residual) | ResNet basic block
ACTS = ("relu", "silu")


class ScalingError(ValueError):
    """A network table or text form that is not valid."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``,
    default ``divisor``), going up one step when rounding would lose more than 10%
    (``round_limit``) of ``value``. The rule of the TF/torchvision/timm EfficientNets."""
    if divisor < 1:
        raise ScalingError(f"divisor must be >= 1, got {divisor}")
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < round_limit * value:
        new += divisor
    return new


DEPTH_ROUNDING = ("total", "stage")
_EPS = 1e-9  # 2 * 1.0000000001 is still 2 blocks


def scale_depth(repeats: Sequence[int], depth: float, rounding: str = "total") -> tuple[int, ...]:
    """Blocks per stage after depth scaling (rules in the module docstring)."""
    exact = [n * depth for n in repeats]
    if rounding == "stage":
        return tuple(max(1, math.ceil(e - _EPS)) for e in exact)
    if rounding != "total":
        raise ScalingError(f"depth rounding {rounding!r} is not one of {', '.join(DEPTH_ROUNDING)}")
    out = [max(1, math.floor(e + _EPS)) for e in exact]
    total = max(sum(out), math.ceil(sum(exact) - _EPS))
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - math.floor(exact[i] + _EPS)), -i))
    for k in range(total - sum(out)):
        out[order[k % len(order)]] += 1
    return tuple(out)


def scale_resolution(size: int, resolution: float, multiple: int = 4) -> int:
    """Input side after resolution scaling: the largest multiple of ``multiple`` not above
    ``size * resolution``, never below ``size``; ``resolution == 1`` keeps ``size``."""
    if resolution == 1:
        return size
    scaled = math.floor(size * resolution / multiple + _EPS) * multiple
    return max(size if resolution > 1 else multiple, scaled)


@dataclass(frozen=True)
class StageConfig:
    """One stage: ``repeats`` blocks of one kind; the first has ``stride``."""

    block: str  # "mb" (MBConv) | "bb" (ResNet basic block)
    repeats: int  # blocks in the stage
    kernel: int  # depthwise (mb) or both convs' (bb) kernel size
    stride: int  # stride of the stage's first block
    out: int  # output channels
    expand: int = 1  # mb: expansion ratio of the inverted bottleneck
    se: float = 0.0  # mb: squeeze-excite hidden units as a fraction of the block's input channels; 0 = off

    @property
    def text(self) -> str:
        parts = [self.block, f"r{self.repeats}", f"k{self.kernel}", f"s{self.stride}"]
        if self.block == "mb":
            parts.append(f"e{self.expand}")
        parts.append(f"c{self.out}")
        if self.se:
            parts.append(f"se{self.se!r}")
        return "_".join(parts)


@dataclass(frozen=True)
class NetConfig:
    """A whole network as data: input side, stem, stage table, head, activation."""

    resolution: int  # the input side the model resizes its input to, pixels
    stem: int  # stem conv output channels
    stem_kernel: int
    stem_stride: int
    stages: tuple[StageConfig, ...]
    head: int  # 1x1 conv channels before pooling; 0 = no head conv (ResNet)
    act: str = "relu"
    stem_pool: int = 0  # kernel of a max-pool of stride 2 after the stem conv (ImageNet ResNets: 3); 0 = none

    @property
    def text(self) -> str:
        stem = f"stem_k{self.stem_kernel}_s{self.stem_stride}_c{self.stem}" + (f"_m{self.stem_pool}" if self.stem_pool else "")
        return " ".join([f"res{self.resolution}", stem, *(s.text for s in self.stages), f"head_c{self.head}",
                         f"act_{self.act}"])

    def __str__(self) -> str:
        return self.text

    @property
    def blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    @property
    def stride(self) -> int:
        """Total stride: input side over the side of the last feature map (for sides it divides)."""
        return math.prod([self.stem_stride, 2 if self.stem_pool else 1, *(s.stride for s in self.stages)])

    @property
    def side_step(self) -> int:
        """The step resolution scaling rounds this table's input side to: the total stride,
        halved while it is more than 1/8 of :attr:`resolution` (see the module docstring)."""
        step = self.stride
        while step > 1 and step * 8 > self.resolution:
            step //= 2
        return step

    @classmethod
    def from_text(cls, text: str) -> "NetConfig":
        """Parse the one-line text form (inverse of :attr:`text`)."""
        tokens = text.split()
        if len(tokens) < 5:
            raise ScalingError(f"network text {text!r} needs res, stem, stages, head and act tokens")
        res, stem, *rows, head, act = tokens
        if not re.fullmatch(r"res\d+", res):
            raise ScalingError(f"first token {res!r} of {text!r} is not resN")
        s = _fields(stem, "stem", {"k", "s", "c"}, {"m"})
        h = _fields(head, "head", {"c"})
        if not act.startswith("act_") or act[4:] not in ACTS:
            raise ScalingError(f"last token {act!r} of {text!r} is not act_<{'|'.join(ACTS)}>")
        stages = []
        for row in rows:
            block = row.split("_", 1)[0]
            if block not in BLOCKS:
                raise ScalingError(f"stage {row!r} does not start with one of {', '.join(BLOCKS)}")
            f = _fields(row, block, {"r", "k", "s", "c"} | ({"e"} if block == "mb" else set()), {"se"})
            stages.append(StageConfig(block, int(f["r"]), int(f["k"]), int(f["s"]), int(f["c"]),
                                      int(f.get("e", 1)), float(f.get("se", 0.0))))
        return cls(int(res[3:]), int(s["c"]), int(s["k"]), int(s["s"]), tuple(stages), int(h["c"]), act[4:],
                   int(s.get("m", 0)))


def _fields(token: str, prefix: str, required: set[str], optional: Iterable[str] = ()) -> dict[str, str]:
    head, *items = token.split("_")
    if head != prefix:
        raise ScalingError(f"token {token!r} does not start with {prefix!r}")
    out: dict[str, str] = {}
    for item in items:
        m = re.fullmatch(r"(se|[a-z])(\d+(?:\.\d+)?(?:e-?\d+)?)", item)
        if not m or m.group(1) not in required | set(optional) or m.group(1) in out:
            raise ScalingError(f"item {item!r} of {token!r} is not one of {sorted(required | set(optional))} followed by a number")
        out[m.group(1)] = m.group(2)
    if missing := required - set(out):
        raise ScalingError(f"token {token!r} lacks {sorted(missing)}")
    return out


def scale(base: NetConfig, depth: float = 1.0, width: float = 1.0, resolution: float = 1.0,
          divisor: int = 8, multiple: int = 4, depth_rounding: str = "total") -> NetConfig:
    """The network ``base`` scaled by ``depth``, ``width`` and ``resolution`` multipliers
    (rounding rules in the module docstring; the side is a multiple of ``multiple`` and of
    ``base.side_step``). Returns a new config; ``base`` is unchanged."""
    if min(depth, width, resolution) <= 0:
        raise ScalingError(f"scaling multipliers must be > 0, got depth={depth}, width={width}, resolution={resolution}")

    def channels(c: int) -> int:
        return c if width == 1 else make_divisible(c * width, divisor)

    repeats = scale_depth([s.repeats for s in base.stages], depth, depth_rounding)
    stages = tuple(replace(s, repeats=n, out=channels(s.out)) for s, n in zip(base.stages, repeats))
    step = math.lcm(multiple, base.side_step)
    return replace(base, resolution=scale_resolution(base.resolution, resolution, step), stem=channels(base.stem),
                   stages=stages, head=channels(base.head) if base.head else 0)


def compound(alpha: float, beta: float, gamma: float, phi: float) -> tuple[float, float, float]:
    """EfficientNet's compound rule: depth ``alpha**phi``, width ``beta**phi``, resolution ``gamma**phi``."""
    return alpha ** phi, beta ** phi, gamma ** phi


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """``alpha * beta**2 * gamma**2``: how much one step of phi multiplies the MACs."""
    return alpha * beta ** 2 * gamma ** 2


# --------------------------------------------------------------------------- the base networks
# Unscaled. Each table's ``resolution`` is the input side it was designed for (``design_side``);
# the family replaces it by the dataset's image size before scaling.


def _mb(expand: int, kernel: int, stride: int, out: int, repeats: int) -> StageConfig:
    return StageConfig("mb", repeats, kernel, stride, out, expand, 0.25)


def _b0(resolution: int, stem_stride: int, stage2_stride: int) -> NetConfig:
    """EfficientNet-B0, the paper's Table 1 (and torchvision's ``efficientnet_b0``) with the
    strides of the stem and of stage 2 given."""
    return NetConfig(
        resolution=resolution, stem=32, stem_kernel=3, stem_stride=stem_stride, head=1280, act="silu",
        stages=(
            _mb(1, 3, 1, 16, 1),
            _mb(6, 3, stage2_stride, 24, 2),
            _mb(6, 5, 2, 40, 2),
            _mb(6, 3, 2, 80, 3),
            _mb(6, 5, 1, 112, 3),
            _mb(6, 5, 2, 192, 4),
            _mb(6, 3, 1, 320, 1),
        ),
    )


def _resnet18(resolution: int, stem_kernel: int, stem_stride: int, stem_pool: int) -> NetConfig:
    """ResNet-18: a stem, then four stages of two basic blocks (64, 128, 256, 512 channels)."""
    return NetConfig(
        resolution=resolution, stem=64, stem_kernel=stem_kernel, stem_stride=stem_stride, head=0, act="relu",
        stem_pool=stem_pool,
        stages=(
            StageConfig("bb", 2, 3, 1, 64),
            StageConfig("bb", 2, 3, 2, 128),
            StageConfig("bb", 2, 3, 2, 256),
            StageConfig("bb", 2, 3, 2, 512),
        ),
    )


# EfficientNet-B0 adapted to 32x32 inputs: the stem and stage 2 keep stride 1 (224px B0: both
# stride 2), so a 32px input ends at 4x4 as a 224px one ends at 7x7. Total stride 8.
EFFNET_B0 = _b0(32, stem_stride=1, stage2_stride=1)

# EfficientNet-B0 as torchvision builds it for 224x224 ImageNet: stride-2 stem and stage 2.
# Total stride 32 (224 -> 7).
EFFNET_B0_224 = _b0(224, stem_stride=2, stage2_stride=2)

# ResNet-18 for 32x32 inputs as scaled in seed 002 (the usual CIFAR variant: a 3x3 stem of
# stride 1 and no max-pool, then four stages of two basic blocks). Total stride 8.
RESNET18 = _resnet18(32, stem_kernel=3, stem_stride=1, stem_pool=0)

# ResNet-18 as torchvision builds it for 224x224 ImageNet: a 7x7 stem of stride 2 and a 3x3
# max-pool of stride 2. Total stride 32 (224 -> 7).
RESNET18_224 = _resnet18(224, stem_kernel=7, stem_stride=2, stem_pool=3)

BASES: dict[str, NetConfig] = {"effnet_b0": EFFNET_B0, "resnet18": RESNET18,
                               "effnet_b0_224": EFFNET_B0_224, "resnet18_224": RESNET18_224}


def design_side(base: str) -> int:
    """The input side, in pixels, that the base table ``base`` was designed for."""
    return BASES[base].resolution

