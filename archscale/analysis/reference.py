"""The hypervolume reference point a spec implies: the same for every run of one spec, so
that ``archscale compare`` of its runs needs no ``--reference``.

Per objective, the first that applies:

- the spec's ``search.reference_point`` value;
- ``val_accuracy``: chance, ``1 / classes`` of the spec's dataset;
- a cost with a budget in the spec (``params``: ``space.max_params``, ``macs``: ``max_macs``,
  ``latency_ms``: ``max_latency_ms``, ``memory_mb``: ``max_memory_mb``): the budget;
- ``params`` and ``macs`` without one: the largest in the space, measured on the network at the
  space's high corner (the largest value of every numeric parameter; each non-numeric choice
  tried, up to 16 combinations), built once on the CPU;
- otherwise (``train_seconds``, a latency or memory without a budget, a family whose corner
  cannot be built): none, and :func:`~archscale.analysis.hypervolume.bounds` takes the worst
  completed value, saying so.

Each value comes with where it came from, which every printed hypervolume states.
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

from archscale.spec import Spec

BUDGETS = {"params": "max_params", "macs": "max_macs", "latency_ms": "max_latency_ms", "memory_mb": "max_memory_mb"}
CORNER_COMBINATIONS = 16  # non-numeric choice combinations measured at most for the largest cost


def reference_point(spec: Spec, objectives: Sequence[tuple[str, str]]) -> dict[str, tuple[float, str]]:
    """metric -> (reference value, where it comes from) for the ``objectives`` the spec implies
    one for (see the module docstring); objectives left out fall back to the worst completed."""
    given = spec.search.reference_point or {}
    out: dict[str, tuple[float, str]] = {}
    for metric, _ in objectives:
        if metric in given:
            out[metric] = (float(given[metric]), "search.reference_point")
        elif metric == "val_accuracy":
            classes = _classes(spec)
            if classes:
                out[metric] = (1.0 / classes, f"chance, 1/{classes} classes")
        elif metric in BUDGETS and getattr(spec.space, BUDGETS[metric]) is not None:
            out[metric] = (float(getattr(spec.space, BUDGETS[metric])), f"space.{BUDGETS[metric]}")
        elif metric in ("params", "macs"):
            largest = _largest(spec.to_yaml())
            if largest is not None:
                out[metric] = (float(largest[metric]), "largest in the space")
    return out


def _context(spec: Spec) -> dict | None:
    try:
        return spec.data.context()
    except (ValueError, OSError):  # DataError: the dataset is gone; no chance level, no corner
        return None


def _classes(spec: Spec) -> int | None:
    context = _context(spec)
    return int(context["num_classes"]) if context else None


@functools.lru_cache(maxsize=8)
def _largest(spec_yaml: str) -> dict[str, int] | None:
    """params and macs of the space's high corner (the larger of each over its non-numeric
    choices), or None when it cannot be built."""
    import yaml

    from archscale.analysis.cost import count_macs, count_params
    from archscale.space import get_space
    from archscale.spec import parse_spec

    spec = parse_spec(yaml.safe_load(spec_yaml))
    context = _context(spec)
    if context is None:
        return None
    family = get_space(spec.space.family)
    fixed, options = dict(spec.space.fixed()), {}
    for d in spec.space.searched():
        values = list(d.values) if d.kind == "choice" else [d.high]
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numeric) == len(values):
            fixed[d.name] = max(numeric)
        else:
            options[d.name] = values
    best: dict[str, int] | None = None
    combos = itertools.islice(itertools.product(*options.values()), CORNER_COMBINATIONS)
    for combo in combos:
        try:
            arch = family.resolve({**fixed, **dict(zip(options, combo))}, context)
            model = family.build_model(arch)
            cost = {"params": count_params(model),
                    "macs": count_macs(model, (1, context["in_channels"], context["image_size"], context["image_size"]))}
        except Exception:  # noqa: BLE001 - a corner the family refuses: that combination says nothing
            continue
        best = cost if best is None else {k: max(best[k], cost[k]) for k in cost}
    return best
