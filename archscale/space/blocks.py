"""Building blocks shared by the families: convs, normalisation, SE, BlurPool.

Network code (torch): the families' declarations name these layers through :mod:`space.choices`."""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from archscale.space.choices import ACTIVATION_LAYERS, NORMS

ACTIVATIONS: dict[str, type[nn.Module]] = {name: getattr(nn, layer) for name, layer in ACTIVATION_LAYERS.items()}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class GhostBatchNorm2d(nn.BatchNorm2d):
    """Ghost BatchNorm (Hoffer et al. 2017; seed 003's bag of tricks): in training, each
    chunk of ``ghost_batch`` images is normalised with its own statistics; running
    statistics average the chunks'. In eval it is a plain BatchNorm2d (same state dict)."""

    def __init__(self, channels: int, ghost_batch: int = 32, **kwargs):
        super().__init__(channels, **kwargs)
        self.ghost_batch = ghost_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        splits = n // self.ghost_batch
        if not self.training or splits <= 1 or n % splits:
            return super().forward(x)
        b, c, h, w = x.shape
        xs = x.view(splits, b // splits, c, h, w)
        mean = xs.mean((1, 3, 4), keepdim=True)  # (splits, 1, C, 1, 1)
        var = xs.var((1, 3, 4), unbiased=False, keepdim=True)
        y = ((xs - mean) * torch.rsqrt(var + self.eps)).view(b, c, h, w)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                count = (b // splits) * h * w
                self.running_mean.mul_(1 - m).add_(mean.flatten(1).mean(0).to(self.running_mean.dtype), alpha=m)
                unbiased = var.flatten(1).mean(0) * count / max(1, count - 1)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def norm2d(kind: str, channels: int, groups: int = 2, ghost_batch: int = 32) -> nn.Module:
    """``batch``: BatchNorm2d; ``ghost``: GhostBatchNorm2d over chunks of ``ghost_batch``;
    ``group``: GroupNorm with ``groups`` groups (reduced to a divisor of ``channels``);
    ``layer``: GroupNorm(1, C), i.e. LayerNorm over (C, H, W)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "ghost":
        return GhostBatchNorm2d(channels, ghost_batch)
    if kind == "group":
        return nn.GroupNorm(math.gcd(groups, channels), channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; known: {', '.join(NORMS)}")


class SeparableConv2d(nn.Sequential):
    """Depthwise k x k conv (one filter per input channel) then a pointwise 1x1 conv."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1, padding: int | None = None):
        pad = dilation * (kernel // 2) if padding is None else padding
        super().__init__(
            nn.Conv2d(cin, cin, kernel, stride, pad, dilation=dilation, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        )


class SqueezeExcite(nn.Module):
    """Channel attention: global pool -> FC(C -> hidden) -> act -> FC -> sigmoid -> scale.

    ``hidden`` defaults to ``round(channels * ratio)``; MBConv passes its own (a fraction
    of the block's input channels) and ``act="silu"``."""

    def __init__(self, channels: int, ratio: float, hidden: int | None = None, act: str = "relu"):
        super().__init__()
        hidden = max(1, round(channels * ratio)) if hidden is None else max(1, hidden)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        s = torch.sigmoid(self.expand(self.act(self.reduce(s))))
        return x * s


def binomial(size: int) -> torch.Tensor:
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float32)
    kernel = row[:, None] * row[None, :]
    return kernel / kernel.sum()


class BlurPool2d(nn.Module):
    """Anti-aliased downsampling (Zhang 2019): a fixed binomial low-pass filter applied
    per channel, then subsampling by ``stride``. No learned parameters."""

    def __init__(self, channels: int, size: int = 3, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.size = size
        self.register_buffer("kernel", binomial(size)[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = (self.size - 1) // 2
        right = self.size - 1 - left
        x = F.pad(x, (left, right, left, right), mode="reflect" if min(x.shape[-2:]) > right else "replicate")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=self.stride, groups=x.shape[1])


class GlobalPoolHead(nn.Module):
    """Global average pooling then a 1x1 conv to the classes: (B, C, H, W) -> (B, classes)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return self.classifier(x).flatten(1)  # (B, classes)
