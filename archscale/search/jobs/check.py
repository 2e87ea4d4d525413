"""What a spec's space holds before anything trains: its size, sampled configurations built
and measured by the :class:`~archscale.search.configs.evaluate.Evaluator`, and how many of them fit
the budgets. ``archscale check`` prints it; ``archscale run`` refuses a space where none fits.
Imports neither ray nor optuna."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from archscale.search.configs.context import trial_context
from archscale.search.configs.evaluate import Evaluator
from archscale.spec import Dimension, Spec, SpecError
from archscale.trainer import dataset_context


@dataclass
class Feasibility:
    size: float  # number of distinct configurations (inf with continuous ranges)
    sampled: int
    feasible: int
    smallest: dict  # params/macs of the cheapest sampled configuration
    rows: list[dict] = field(default_factory=list)

    @property
    def unbuildable(self) -> list[dict]:
        """The rows of configurations that could not be built or measured (``why`` says why)."""
        return [r for r in self.rows if not r.get("buildable", True)]

    def cause(self) -> str:
        """Why nothing is feasible, for an error message: that nothing could be built (the first
        reason), or the smallest configuration and the budget it misses."""
        if self.sampled and len(self.unbuildable) == self.sampled:
            return (f"none of the {self.sampled} sampled configurations can be built; the first: "
                    f"{self.unbuildable[0]['why']}")
        small = self.smallest
        return (f"the smallest of {self.sampled} has params={small.get('params')}, macs={small.get('macs')}"
                + (f": {small['why']}" if small.get("why") else ""))


def grid_configs(dims: list[Dimension]) -> list[dict]:
    """Every configuration of a finite space, in the order of its dimensions."""
    configs: list[dict] = [{}]
    for d in dims:
        configs = [{**c, d.name: v} for c in configs for v in d.grid()]
    return configs


def sample_configs(dims: list[Dimension], n: int, seed: int) -> list[dict]:
    """The low corner of the space, then ``n - 1`` uniform random configurations."""
    rng = np.random.default_rng(seed)

    def low(d: Dimension):
        return d.values[0] if d.kind in ("choice", "fixed") else d.low

    def draw(d: Dimension):
        if d.kind in ("choice", "fixed"):
            return d.values[rng.integers(len(d.values))]
        if d.kind == "int" or d.step:
            grid = d.grid()
            return grid[rng.integers(len(grid))]
        if d.log:
            return float(np.exp(rng.uniform(np.log(d.low), np.log(d.high))))
        return float(rng.uniform(d.low, d.high))

    configs = [{d.name: low(d) for d in dims}]
    configs += [{d.name: draw(d) for d in dims} for _ in range(max(0, n - 1))]
    return configs


def driver_evaluator(spec: Spec, latency: bool = False) -> Evaluator:
    """An evaluator of ``spec``'s configurations in this process, on the spec's training device."""
    ctx = trial_context(spec, Path("."), dataset_context(spec.data.dataset, spec.data.root, spec.data.image_size))
    return Evaluator(ctx, device=spec.train.device, latency=latency)


def feasibility(spec: Spec, samples: int = 64, until_feasible: bool = False,
                evaluator: Evaluator | None = None) -> Feasibility:
    """Build sampled configurations (no training) and count those within the budgets;
    ``until_feasible``: stop at the first one that fits (all a run needs to know)."""
    evaluator = evaluator or driver_evaluator(spec, latency=spec.space.max_latency_ms is not None)
    dims = spec.searched()
    size = math.prod(d.size for d in dims) if dims else 1
    n = int(min(samples, size)) if size != math.inf else samples
    configs = grid_configs(dims) if size <= samples else sample_configs(dims, n, spec.seed)
    rows = []
    for config in configs:
        verdict = evaluator(config, full=True)  # a configuration that cannot be built: its reason, not an error
        rows.append({**config, "params": verdict.params, "macs": verdict.macs, "latency_ms": verdict.latency_ms,
                     "feasible": verdict.feasible, "buildable": verdict.buildable, "why": verdict.why})
        if until_feasible and verdict.feasible:
            break
    measured = [r for r in rows if r["params"] is not None]
    smallest = min(measured, key=lambda r: (r["params"], r["macs"])) if measured else {}
    return Feasibility(size, len(rows), sum(r["feasible"] for r in rows), smallest, rows)


def require_feasible(spec: Spec, evaluator: Evaluator) -> None:
    """Raise SpecError when no sampled configuration fits the budgets (a run would train nothing)."""
    check = feasibility(spec, samples=32, until_feasible=True, evaluator=evaluator)
    if check.feasible == 0:
        budgets = ", ".join(f"{k}={v:g}" for k in ("max_params", "max_macs", "max_memory_mb", "max_latency_ms")
                            if (v := getattr(spec.space, k)) is not None) or "the family's constraint"
        if check.sampled and len(check.unbuildable) == check.sampled:
            raise SpecError(f"space: {check.cause()}")
        raise SpecError(f"space: no sampled configuration meets the budgets ({budgets}); {check.cause()}")
