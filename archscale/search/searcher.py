"""The Optuna side of a search: distributions, samplers, and a Ray Tune ``Searcher`` that
talks to an Optuna study through its documented ask-and-tell API only (``Study.ask``,
``tell``, ``add_trial``, ``enqueue_trial``).

What the study is told, trial by trial:

- ``completed``, and ``infeasible`` (over a budget: it scores 0 accuracy): COMPLETE with the
  final objectives;
- ``pruned`` (stopped early by ASHA): PRUNED, never COMPLETE with its partial accuracy
  (Optuna's TPE ranks PRUNED trials below every COMPLETE one; with one objective it keeps
  the last reported accuracy as the trial's value);
- ``failed``: FAIL.

Before a suggestion becomes a trial (:meth:`suggest`):

- a configuration the study already saw finish (every trial trains alike, so it would only
  repeat a known result) is told that result again and the sampler is asked anew, up to
  :data:`MAX_TWIN_DRAWS` times in a row; :attr:`twins` counts them;
- with an evaluator, a configuration over a budget or outside the family's constraint is
  recorded ``infeasible`` (through ``reject``), told as a worst-accuracy point, and the
  sampler is asked anew, up to :data:`MAX_REDRAWS` times in a row.

The grid is Optuna's ``enqueue_trial`` of every point in a seeded order, so a resumed grid
runs exactly the points not yet recorded. On ``--resume`` the recorded trials are added to
the study (``add_trial``) and those that started but never finished are enqueued first.
Imported only when a search runs.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from archscale.search.context import native
from archscale.search.evaluate import Evaluator, Verdict
from archscale.search.spec import Dimension, Spec

logger = logging.getLogger(__name__)

MAX_TWIN_DRAWS = 20  # after this many already-trained draws in a row, the next one trains
MAX_REDRAWS = 100  # after this many infeasible draws in a row, the next one goes through as a trial
RERUN = "archscale_rerun"  # user attribute of a configuration enqueued to run again (never a twin)
Reject = Callable[[str, dict, Verdict], None]  # (row id, config, verdict): record an infeasible draw


def optuna_space(dims: Sequence[Dimension]) -> dict:
    """Optuna distributions of the searched dimensions."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = {}
    for d in dims:
        if d.kind in ("choice", "fixed"):
            space[d.name] = CategoricalDistribution(list(d.values))
        elif d.kind == "int":
            space[d.name] = IntDistribution(int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        else:
            space[d.name] = FloatDistribution(float(d.low), float(d.high), step=d.step, log=d.log)
    return space


def grid_points(dims: Sequence[Dimension], seed: int) -> list[dict]:
    """Every point of a finite space, in an order shuffled by ``seed`` (the same on every resume)."""
    points: list[dict] = [{}]
    for d in dims:
        points = [{**p, d.name: v} for p in points for v in d.grid()]
    order = np.random.default_rng(seed).permutation(len(points))
    return [points[i] for i in order]


def make_sampler(spec: Spec, told: int = 0, sampler: str | None = None):
    """The spec's Optuna sampler. ``told``: trials already told to the study (a resume); it
    moves the seed on, so a resumed random or TPE-startup sampler does not replay the first
    run's draws. The grid is enqueued (:func:`make_searcher`): its sampler is never asked."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = sampler or spec.search.sampler
    n = spec.search.num_trials
    seed = spec.seed if not told else int(np.random.SeedSequence([spec.seed, told]).generate_state(1)[0])
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, n // 3)), multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, min(50, n // 3)))
    return optuna.samplers.RandomSampler(seed=seed)


def outcome(result: dict | None, error: bool, metrics: Sequence[str]) -> tuple[str, list[float] | None]:
    """(state name, values) the study is told for a trial's last result."""
    result = result or {}
    status = result.get("status")
    if error or status == "failed" or not result:
        return "FAIL", None
    if status in ("pruned", "running"):
        return "PRUNED", None
    values = []
    for m in metrics:
        v = result.get(m)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "FAIL", None
        values.append(float(v))
    return "COMPLETE", values


def make_searcher(spec: Spec, dims: Sequence[Dimension], objectives: Sequence[tuple[str, str]], *,
                  recorded: pd.DataFrame | None = None, unfinished: Sequence[dict] = (),
                  evaluator: Evaluator | None = None, reject: Reject | None = None, sampler: str | None = None):
    """A Ray Tune ``Searcher`` over ``dims`` backed by a fresh Optuna study, told the
    ``recorded`` trials of an interrupted run, with its ``unfinished`` configurations
    enqueued first. ``evaluator`` and ``reject``: skip configurations that may not train
    (budget-aware sampling); ``sampler`` overrides ``spec.search.sampler``."""
    import optuna
    from optuna.trial import TrialState
    from ray.tune.search import Searcher

    recorded = recorded if recorded is not None else pd.DataFrame()
    name = sampler or spec.search.sampler
    metrics = [m for m, _ in objectives]
    directions = ["maximize" if d == "max" else "minimize" for _, d in objectives]
    distributions = optuna_space(dims)

    class OptunaSearcher(Searcher):
        def __init__(self):
            super().__init__(metric=metrics if len(metrics) > 1 else metrics[0],
                             mode=[d for _, d in objectives] if len(metrics) > 1 else objectives[0][1])
            self.study = optuna.create_study(directions=directions, sampler=make_sampler(spec, len(recorded), name))
            self.live: dict[str, Any] = {}  # Tune trial id -> Optuna trial
            self.twins = self.rejected = 0
            self.grid_left: int | None = None

        # -------------------------------------------------------------- Tune's interface

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True  # metric and mode are the spec's, set above

        def suggest(self, trial_id: str):
            if self.grid_left is not None and self.grid_left <= 0:
                return Searcher.FINISHED
            twins = infeasible = 0
            while True:
                trial = self.study.ask(distributions)
                params = dict(trial.params)
                if self.grid_left is not None:
                    self.grid_left -= 1
                rerun = bool(trial.user_attrs.get(RERUN))
                if not rerun and self.grid_left is None and twins < MAX_TWIN_DRAWS - 1 and self._told_twin(trial):
                    twins += 1
                    continue
                if not rerun and evaluator is not None and infeasible < MAX_REDRAWS - 1:
                    verdict = evaluator(params)
                    if not verdict.feasible:
                        self._reject(trial, trial_id if infeasible == 0 else f"{trial_id}_x{infeasible}", verdict)
                        infeasible += 1
                        if self.grid_left is not None and self.grid_left <= 0:
                            return Searcher.FINISHED
                        continue
                self.live[trial_id] = trial
                return params

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            trial = self.live.get(trial_id)
            if trial is None or len(metrics) > 1 or result.get("status") != "running":
                return  # Optuna keeps intermediate values for one objective only
            value, step = result.get(metrics[0]), result.get("epochs")
            if value is not None and step is not None:
                trial.report(float(value), int(step))

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            trial = self.live.pop(trial_id, None)
            if trial is None:
                return
            state, values = outcome(result, error, metrics)
            try:
                self.study.tell(trial, values, state=TrialState[state])
            except (ValueError, RuntimeError) as err:  # a value Optuna refuses: lost to the sampler, not the search
                logger.warning("optuna refused the result of trial %s: %s", trial_id, err)

        def save(self, checkpoint_path: str) -> None:
            # The run directory's trials.csv is what --resume tells a new study; this is a summary.
            with open(checkpoint_path, "w") as f:
                json.dump({"trials": len(self.study.trials), "twins": self.twins, "rejected": self.rejected}, f)

        def restore(self, checkpoint_path: str) -> None:
            pass

        # -------------------------------------------------------------- ours

        def _told_twin(self, trial) -> bool:
            """Tell ``trial`` the outcome of an earlier trial with the same parameters, if there is one."""
            for done in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
                if done.params == trial.params:
                    self.study.tell(trial, done.values if done.state == TrialState.COMPLETE else None,
                                    state=done.state)
                    self.twins += 1
                    return True
            return False

        def _reject(self, trial, row_id: str, verdict: Verdict) -> None:
            self.rejected += 1
            values = [0.0 if d == "max" else math.inf for _, d in objectives]
            measured = verdict.metrics()
            values = [float(measured[m]) if m in measured and m != "val_accuracy" else v
                      for m, v in zip(metrics, values)]
            self.study.tell(trial, values)
            if reject is not None:
                reject(row_id, dict(trial.params), verdict)

        def tell_history(self) -> int:
            """Add the recorded trials to the study, enqueue the unfinished (or, for a grid,
            every point not yet recorded); return how many trials were added."""
            told = 0
            for _, row in recorded.iterrows():
                params = {d.name: native(row[d.name]) for d in dims}
                result = {k: native(v) for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
                if row["status"] == "infeasible":  # as the trial reported it live
                    result.update(val_accuracy=0.0, train_seconds=math.inf, status="completed")
                state, values = outcome(result, False, metrics)
                intermediate = None
                if state == "PRUNED" and len(metrics) == 1 and "epochs" in result and metrics[0] in result:
                    intermediate = {int(result["epochs"]): float(result[metrics[0]])}
                try:
                    frozen = optuna.trial.create_trial(state=TrialState[state], params=params,
                                                       distributions=distributions, values=values,
                                                       intermediate_values=intermediate)
                except ValueError as err:  # a recorded value outside today's distributions
                    logger.warning("trial %s not told to the sampler: %s", row["trial_id"], err)
                    continue
                self.study.add_trial(frozen)
                told += 1
            if name == "grid":
                seen = {json.dumps(p, sort_keys=True, default=str) for p in
                        ({d.name: native(r[d.name]) for d in dims} for _, r in recorded.iterrows())}
                todo = [p for p in grid_points(dims, spec.seed) if json.dumps(p, sort_keys=True, default=str) not in seen]
                for params in todo:
                    self.study.enqueue_trial(params, user_attrs={RERUN: True})
                self.grid_left = len(todo)
            else:
                for params in unfinished:
                    self.study.enqueue_trial(params, user_attrs={RERUN: True})
            return told

    searcher = OptunaSearcher()
    searcher.tell_history()
    return searcher
