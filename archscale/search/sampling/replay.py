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
- the outcome is told exactly as a trial's last result would be;
- ``search.prescreen``: the same :func:`~archscale.search.sampling.prescreen.prescreen` as a run,
  each proxy value and its seconds looked up (:class:`TableScorer`: the table's ``proxy_NAME``
  and ``proxy_NAME_s`` columns, or its params and macs);
- ``search.scheduler: asha``: the run's own scheduler (Ray Tune's ``ASHAScheduler``, or
  :class:`~archscale.search.dispatch.asha.FrontASHA` with several objectives, as
  :func:`~archscale.search.dispatch.asha.make_scheduler` makes it) is told each trial's per-epoch
  validation accuracy (the table's ``history`` column: one value per epoch of a full run)
  through its public hooks when the trial finishes, in finishing order; a trial it stops is
  ``pruned`` after the epochs it reached, and told as a run tells a pruned trial.

What comes back is what the run's ``trials.csv`` would hold, in finishing order, plus
``suggested`` (0-based order in which the trials were handed out; -1 for refused draws) and
``cost`` (the epochs trained over ``train.epochs``: 1 for a full trial, less for a pruned one,
0 for a refused draw); :func:`replay_search` also gives the
:class:`~archscale.search.sampling.asktell.AskTell` that ran it (its prescreen outcome, its
sampler's seconds per suggestion).
Used by ``benchmarks/sampler_quality.py``; imported only there and in tests.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Sequence

import pandas as pd

from ray.tune.schedulers import TrialScheduler

from archscale.search.configs.context import native
from archscale.search.dispatch.asha import METRIC, TIME_ATTR, make_scheduler
from archscale.search.sampling.asktell import AskTell
from archscale.search.sampling.prescreen import SEVERAL, Scored, config_key
from archscale.spec import Dimension, Spec
from archscale.spec.objectives import COSTS

def key_of(config: dict, names: Sequence[str]) -> str:
    """The :func:`~archscale.search.sampling.prescreen.config_key` of ``config``'s searched values."""
    return config_key({n: config[n] for n in names})


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
            self.rows[key_of(clean, self.names)] = clean
        missing = [k for k in (key_of(p, self.names) for p in _points(dims)) if k not in self.rows]
        if missing:
            raise ValueError(f"the table lacks {len(missing)} configuration(s) of the space, e.g. {missing[0]}")

    def __call__(self, config: dict, **_) -> Looked:
        return Looked(self.rows[key_of(config, self.names)])

    def result(self, config: dict) -> dict:
        """What the trial of ``config`` reports at its end (as a run's trial does: an over-budget
        trial reports 0 accuracy, status ``infeasible``)."""
        row = dict(self.rows[key_of(config, self.names)])
        if row["status"] == "infeasible":
            row["val_accuracy"] = 0.0
        return row


@dataclass(frozen=True)
class TableScorer:
    """search.prescreen's scorer over a table: a row's ``proxy_<proxy>`` (or its params or
    macs) and ``proxy_<proxy>_s``; None for an infeasible row."""

    table: Table
    proxy: str

    def __call__(self, config: dict) -> Scored | None:
        row = self.table.rows[key_of(config, self.table.names)]
        if row["status"] == "infeasible":
            return None
        costs = {k: float(row[k]) for k in COSTS if row.get(k) is not None}
        if self.proxy in SEVERAL:
            names = SEVERAL[self.proxy]
            values = {p: self._value(row, p) for p in names}
            return Scored(dict(config), float("nan"), sum(self._seconds(row, p) for p in names), costs, values)
        return Scored(dict(config), self._value(row, self.proxy), self._seconds(row, self.proxy), costs)

    @staticmethod
    def _value(row: dict, proxy: str) -> float:
        value = row.get(proxy if proxy in ("params", "macs") else f"proxy_{proxy}")
        return float(value) if value is not None else float("nan")

    @staticmethod
    def _seconds(row: dict, proxy: str) -> float:
        return float(row.get(f"proxy_{proxy}_s", 0.0) or 0.0)


def _points(dims: Sequence[Dimension]) -> list[dict]:
    points: list[dict] = [{}]
    for d in dims:
        points = [{**p, d.name: v} for p in points for v in d.grid()]
    return points


def replay(spec: Spec, table: Table, dims: Sequence[Dimension], *, sampler: str | None = None,
           constraints: bool | None = None) -> pd.DataFrame:
    """Replay ``spec``'s search (its seed, ``num_trials``, ``max_concurrent``, ``prescreen``
    and ``scheduler``) with results from ``table``; ``sampler`` and ``constraints`` as
    :class:`~archscale.search.sampling.asktell.AskTell`'s."""
    return replay_search(spec, table, dims, sampler=sampler, constraints=constraints)[0]


def replay_search(spec: Spec, table: Table, dims: Sequence[Dimension], *, sampler: str | None = None,
                  constraints: bool | None = None, scheduler: TrialScheduler | None = None
                  ) -> tuple[pd.DataFrame, AskTell]:
    """:func:`replay`'s rows and the :class:`~archscale.search.sampling.asktell.AskTell` that ran
    it; ``scheduler``: a Ray Tune scheduler to replay instead of the spec's (with
    ``search.scheduler: asha``), told each trial's epochs as the spec's would be."""

    rows: list[dict] = []

    def reject(row_id: str, config: dict, verdict: Looked) -> None:
        rows.append({**verdict.row, **config, "trial_id": f"{row_id}_infeasible", "status": "infeasible",
                     "suggested": -1, "cost": 0.0})

    pre = spec.search.prescreen
    ask_tell = AskTell(spec, dims, spec.search.objective_pairs(), evaluator=table, reject=reject,
                       sampler=sampler, constraints=constraints,
                       scorer=TableScorer(table, pre.proxy) if pre is not None else None, note=lambda _: None)
    if scheduler is None or spec.search.scheduler != "asha":
        scheduler = make_scheduler(spec)
    flight: deque[tuple[str, dict]] = deque()
    suggested = 0
    epochs = spec.train.epochs

    def finish() -> None:
        trial_id, config = flight.popleft()
        result = table.result(config)
        if scheduler is not None and result.get("status") == "completed":
            result = _scheduled(scheduler, trial_id, result, epochs)
        ask_tell.complete(trial_id, result)
        cost = 1.0 if result.get("status") != "pruned" else int(result["epochs"]) / epochs
        rows.append({**result, **config, "trial_id": trial_id, "suggested": int(trial_id), "cost": cost})

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
    return pd.DataFrame(rows), ask_tell


def _scheduled(scheduler, trial_id: str, result: dict, epochs: int) -> dict:
    """``result`` (a completed row) as ASHA lets it end: each epoch of its ``history`` told to
    ``scheduler``; stopped before the last epoch, it ends ``pruned`` at that epoch's accuracy."""
    history = result.get("history")
    if isinstance(history, str):
        history = json.loads(history)
    if not history:
        raise ValueError(f"trial {trial_id}: the table has no per-epoch history for ASHA to replay")
    trial = SimpleNamespace(trial_id=trial_id)
    scheduler.on_trial_add(None, trial)
    costs = {k: result[k] for k in COSTS if result.get(k) is not None}  # a run's reports carry them
    for epoch, value in enumerate(history[:epochs], start=1):
        report = {**costs, TIME_ATTR: epoch, METRIC: float(value)}
        if epoch == epochs:
            scheduler.on_trial_complete(None, trial, report)
            return result
        if scheduler.on_trial_result(None, trial, report) == TrialScheduler.STOP:
            scheduler.on_trial_remove(None, trial)
            return {**result, "status": "pruned", "val_accuracy": float(value), "epochs": epoch}
    return result
