"""A search replayed against known results: the same ask-and-tell path as a run, with each
configuration's result looked up in a table instead of trained.

The table is the ``trials.csv`` of an exhaustive (``sampler: grid``) run: one row per
configuration, ``completed``, ``failed`` or ``infeasible``. :func:`replay` drives an
:class:`~archscale.search.sampling.asktell.AskTell` as a run does:

- up to ``search.max_concurrent`` trials in flight; the oldest finishes first;
- a configuration the table records ``infeasible`` is refused before it becomes a trial
  (the run's budget-aware sampling: an evaluator says so, ``reject`` records the row), and the
  sampler is asked again, so ``num_trials`` counts trials that train;
- a configuration the study already saw finish is told that result again (a twin), as in a run;
- the outcome is told exactly as a trial's last result would be.

What comes back is what the run's ``trials.csv`` would hold, in finishing order, plus
``suggested`` (0-based order in which the trials were handed out; -1 for refused draws).
Used by ``benchmarks/sampler_quality.py``; imported only there and in tests.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

from archscale.search.configs.context import native
from archscale.search.sampling.asktell import AskTell
from archscale.spec import Dimension, Spec

COSTS = ("params", "macs", "memory_mb", "latency_ms")


def config_key(config: dict, names: Sequence[str]) -> str:
    """One configuration as a string: the value of each searched dimension, by name."""
    return json.dumps({n: native(config[n]) for n in names}, sort_keys=True, default=str)


@dataclass(frozen=True)
class Looked:
    """A table row as the searcher's evaluator answers (duck-typed :class:`~archscale.search.configs.evaluate.Verdict`)."""

    row: dict[str, Any]

    @property
    def feasible(self) -> bool:
        return self.row["status"] != "infeasible"

    @property
    def why(self) -> str:
        return str(self.row.get("error") or "infeasible")

    def metrics(self) -> dict[str, Any]:
        return {k: self.row[k] for k in (*COSTS, "arch") if k in self.row}


class Table:
    """Results by configuration, from an exhaustive run's ``trials.csv``."""

    def __init__(self, trials: pd.DataFrame, dims: Sequence[Dimension]):
        self.names = [d.name for d in dims]
        self.rows: dict[str, dict] = {}
        for _, row in trials.iterrows():
            clean = {k: native(v) for k, v in row.items() if not (isinstance(v, float) and pd.isna(v))}
            self.rows[config_key(clean, self.names)] = clean
        missing = [k for k in (config_key(p, self.names) for p in _points(dims)) if k not in self.rows]
        if missing:
            raise ValueError(f"the table lacks {len(missing)} configuration(s) of the space, e.g. {missing[0]}")

    def __call__(self, config: dict, **_) -> Looked:
        return Looked(self.rows[config_key(config, self.names)])

    def result(self, config: dict) -> dict:
        """What the trial of ``config`` reports at its end (as a run's trial does: an over-budget
        trial reports 0 accuracy, status ``infeasible``)."""
        row = dict(self.rows[config_key(config, self.names)])
        if row["status"] == "infeasible":
            row["val_accuracy"] = 0.0
        return row


def _points(dims: Sequence[Dimension]) -> list[dict]:
    points: list[dict] = [{}]
    for d in dims:
        points = [{**p, d.name: v} for p in points for v in d.grid()]
    return points


def replay(spec: Spec, table: Table, dims: Sequence[Dimension], *, sampler: str | None = None,
           constraints: bool | None = None) -> pd.DataFrame:
    """Replay ``spec``'s search (its seed, ``num_trials`` and ``max_concurrent``) with results
    from ``table``; ``sampler`` and ``constraints`` as :class:`~archscale.search.sampling.asktell.AskTell`'s."""

    rows: list[dict] = []

    def reject(row_id: str, config: dict, verdict: Looked) -> None:
        rows.append({**verdict.row, **config, "trial_id": f"{row_id}_infeasible", "status": "infeasible",
                     "suggested": -1})

    ask_tell = AskTell(spec, dims, spec.search.objective_pairs(), evaluator=table, reject=reject,
                       sampler=sampler, constraints=constraints)
    flight: deque[tuple[str, dict]] = deque()
    suggested = 0

    def finish() -> None:
        trial_id, config = flight.popleft()
        result = table.result(config)
        ask_tell.complete(trial_id, result)
        rows.append({**result, **config, "trial_id": trial_id, "suggested": int(trial_id)})

    while suggested < spec.search.num_trials:
        if len(flight) >= spec.search.max_concurrent:
            finish()
        config = ask_tell.suggest(str(suggested))
        if config is None:
            break
        flight.append((str(suggested), config))
        suggested += 1
    while flight:
        finish()
    return pd.DataFrame(rows)
