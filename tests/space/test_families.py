"""The same checks over every registered family: smallest and largest settings build,
run forward on CPU without NaNs, and their text form round-trips."""

import math

import pytest
import torch

from archscale.space import Arch, build, get_space, list_spaces

CONTEXTS = [
    {"in_channels": 1, "num_classes": 10, "image_size": 28},
    {"in_channels": 3, "num_classes": 10, "image_size": 32},
]


def corner(family, which: str) -> dict:
    """Every parameter at its smallest (or largest) allowed value, widths capped for speed."""
    values = {}
    for p in family.params:
        if p.choices is not None:
            values[p.name] = p.choices[0] if which == "low" else p.choices[-1]
        elif p.kind in (int, float) and p.low is not None:
            hi = min(p.high, 24 if "width" in p.name and p.kind is int else 3 if p.kind is int else max(p.low, 0.5))
            values[p.name] = p.kind(p.low if which == "low" else hi)
    return values


@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize("context", CONTEXTS, ids=["mnist", "cifar"])
@pytest.mark.parametrize("which", ["low", "high", "default"])
def test_family_builds_runs_and_round_trips(name, context, which):
    family = get_space(name)
    values = {} if which == "default" else corner(family, which)
    if name == "budgeted" and which == "high":
        values["downsample"] = "stride"  # 'dilation' with dilation 8 legitimately does not fit 28px
    if name == "efficientnet" and which != "default":
        values["base_width"] = 0.25  # the full-width tables are covered by tests/space/test_scaling.py
    arch = family.resolve(values, context)
    assert Arch.from_text(arch.text) == arch
    model = build(arch.text)
    x = torch.randn(2, context["in_channels"], context["image_size"], context["image_size"])
    out = model(x)
    assert out.shape == (2, context["num_classes"])
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    assert not math.isnan(sum(p.sum().item() for p in model.parameters()))
