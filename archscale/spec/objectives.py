"""The metrics of trials.csv a front can be taken over, and objectives written ``METRIC:max``."""

from __future__ import annotations

from typing import Sequence

Objective = tuple[str, str]  # (metric, "max" | "min")

# Metrics of trials.csv a front can be taken over (``macs``: multiply-adds per image, fvcore;
# ``latency_ms``: batch-1 inference; ``latency_batch_ms``: one training-size batch).
METRICS = ("val_accuracy", "test_accuracy", "params", "macs", "memory_mb", "latency_ms", "latency_batch_ms",
           "train_seconds")
UNITS = {"macs": "multiply-adds per image, fvcore", "params": "trainable", "memory_mb": "MiB",
         "latency_ms": "ms, batch 1", "latency_batch_ms": "ms, one training batch", "train_seconds": "s"}
# The metrics measured before a trial trains (its costs): every report of the trial carries them.
COSTS = ("params", "macs", "memory_mb", "latency_ms", "latency_batch_ms")
PICKS = ("accuracy", "macs", "knee")
# Training-free proxies a spec may ask for (``search.proxies``): the baselines params and macs
# (measured anyway), and those of :mod:`archscale.analysis.proxies`.
PROXY_NAMES = ("params", "macs", "synflow", "naswot", "grad_norm", "zico")


def parse_objectives(text: str | Sequence[str]) -> list[Objective]:
    """``"val_accuracy:max,macs:min"`` (or a list of such items) -> [("val_accuracy", "max"), ...]."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        metric, _, mode = item.strip().partition(":")
        if not metric or mode not in ("max", "min"):
            raise ValueError(f"objective {item!r} must be METRIC:max or METRIC:min")
        out.append((metric, mode))
    return out
