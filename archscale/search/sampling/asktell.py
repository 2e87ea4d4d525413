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
- with a results store (``serve``), a configuration the store already holds is recorded
  from it (``source`` = ``store``), told as the trial would have reported it, and the
  sampler is asked anew: it costs no Ray trial, no actor and no model build. It counts
  toward ``trials``, the number of trials this search may still give; :attr:`served`
  counts them.

The grid is Optuna's ``enqueue_trial`` of every point in a seeded order, so a resumed grid
runs exactly the points not yet recorded. On ``--resume`` the recorded trials are added to
the study (``add_trial``) and those that started but never finished are enqueued first.
Imports optuna, not ray: :mod:`.searcher` adapts :class:`AskTell` to Ray Tune.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from archscale.search.configs.context import native
from archscale.search.configs.evaluate import Evaluator, Verdict
from archscale.search.sampling.prescreen import AUTO, Check, Choice, Outcome, Scorer, config_key, prescreen
from archscale.spec import Dimension, Spec

logger = logging.getLogger(__name__)

MAX_TWIN_DRAWS = 20  # after this many already-trained draws in a row, the next one trains
MAX_REDRAWS = 100  # after this many infeasible draws in a row, the next one goes through as a trial
RERUN = "archscale_rerun"  # user attribute of a configuration enqueued to run again (never a twin)
Reject = Callable[[str, dict, Verdict], None]  # (row id, config, verdict): record an infeasible draw
Serve = Callable[[str, dict], "dict | None"]  # (row id, config): record a stored result, return it as reported


def optuna_space(dims: Sequence[Dimension]) -> dict:
    """Optuna distributions of the searched dimensions."""
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


def _startup(n: int) -> int:
    """Random trials before a model-based sampler models: a third of the budget, 2 to 10."""
    return max(2, min(10, n // 3))


# name -> (seed, num_trials) -> Optuna sampler. The spec names tpe, nsga2, random (and grid,
# which is enqueued: its sampler is never asked); the others are variants that
# benchmarks/sampler_quality.py compares, reachable through AskTell's ``sampler`` argument.
SAMPLERS: dict[str, Callable[[int, int], Any]] = {
    "random": lambda seed, n: _optuna().samplers.RandomSampler(seed=seed),
    "grid": lambda seed, n: _optuna().samplers.RandomSampler(seed=seed),
    "tpe": lambda seed, n: _optuna().samplers.TPESampler(seed=seed, n_startup_trials=_startup(n), multivariate=True),
    "tpe_independent": lambda seed, n: _optuna().samplers.TPESampler(seed=seed, n_startup_trials=_startup(n),
                                                                    multivariate=False),
    "tpe_optuna": lambda seed, n: _optuna().samplers.TPESampler(seed=seed),  # Optuna's defaults: 10 startup
    "nsga2": lambda seed, n: _optuna().samplers.NSGAIISampler(seed=seed, population_size=max(2, min(50, n // 3))),
    "gp": lambda seed, n: _optuna().samplers.GPSampler(seed=seed, n_startup_trials=_startup(n)),
}
SAMPLERS["auto"] = lambda seed, n: AutoSampler(SAMPLERS["gp"](seed, n), SAMPLERS["tpe"](seed, n))
AUTO_SHARE = 0.05  # auto: gp while its seconds per suggestion stay within this share of a trial's median train_seconds


class AutoSampler(optuna.samplers.BaseSampler):
    """``sampler: auto``: Optuna's ``BaseSampler`` interface over two samplers, asking ``first``
    (gp) until :meth:`hand_over`, then ``then`` (multivariate TPE), which learns from every trial
    the study holds. :class:`AskTell` decides when, from the time each suggestion takes."""

    def __init__(self, first, then):
        self.first, self.then = first, then
        self.current = first

    def hand_over(self) -> None:
        self.current = self.then

    @property
    def handed_over(self) -> bool:
        return self.current is self.then

    def infer_relative_search_space(self, study, trial):
        return self.current.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.current.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.current.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.current.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.current.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.first.reseed_rng()
        self.then.reseed_rng()


def _optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_sampler(spec: Spec, told: int = 0, sampler: str | None = None):
    """The spec's Optuna sampler (or ``sampler``, a name of :data:`SAMPLERS`). ``told``: trials
    already told to the study (a resume); it moves the seed on, so a resumed random or
    TPE-startup sampler does not replay the first run's draws. The grid is enqueued
    (:func:`make_searcher`): its sampler is never asked."""
    name = sampler or spec.search.sampler
    seed = spec.seed if not told else int(np.random.SeedSequence([spec.seed, told]).generate_state(1)[0])
    return SAMPLERS[name](seed, spec.search.num_trials)


def budget_excess(spec: Spec, measured: dict) -> float:
    """How far measured costs pass the spec's budgets, as Optuna reads a constraint: the
    largest ``value / budget - 1`` (<= 0: within every budget; 0.0 when nothing is measured)."""
    budgets = {"params": spec.space.max_params, "macs": spec.space.max_macs,
               "memory_mb": spec.space.max_memory_mb, "latency_ms": spec.space.max_latency_ms}
    excess = [float(measured[m]) / limit - 1 for m, limit in budgets.items()
              if limit is not None and measured.get(m) is not None and not _nan(measured[m])]
    return max(excess, default=0.0)


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


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


def _accuracy(result: dict | None) -> float | None:
    """A completed trial's validation accuracy (None for any other ending)."""
    value = (result or {}).get("val_accuracy")
    if (result or {}).get("status") != "completed" or not isinstance(value, (int, float)):
        return None
    return float(value)


def recorded_trial(row: pd.Series, distributions: dict, metrics: Sequence[str], user_attrs: dict | None = None,
                   intermediate: dict[int, float] | None = None):
    """A row of trials.csv as the Optuna trial the sampler was told (an ``infeasible`` row as
    it was reported live: 0 accuracy, infinite train_seconds; see :func:`outcome`), with
    ``intermediate`` (step -> value) as its intermediate values. Raises ValueError for a value
    outside ``distributions``."""
    params = {name: native(row[name]) for name in distributions}
    result = {k: native(v) for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
    if row["status"] == "infeasible":  # as the trial reported it live
        result.update(val_accuracy=0.0, train_seconds=math.inf, status="completed")
    state, values = outcome(result, False, metrics)
    intermediate = dict(intermediate or {})
    if state == "PRUNED" and len(metrics) == 1 and "epochs" in result and metrics[0] in result:
        intermediate.setdefault(int(result["epochs"]), float(result[metrics[0]]))
    return optuna.trial.create_trial(state=TrialState[state], params=params, distributions=distributions,
                                     values=values, intermediate_values=intermediate, user_attrs=user_attrs)


class AskTell:
    """The search's side of an Optuna study, by ask-and-tell only: what to try next, and what
    each trial turned out to be. Knows nothing of Ray (:func:`make_searcher` adapts it to Tune).

    ``evaluator`` and ``reject``: skip configurations that may not train (budget-aware
    sampling); ``serve``: read configurations from the results store instead of training
    them, ``trials`` (required with it) being how many trials this search may still give;
    ``sampler`` overrides ``spec.search.sampler`` (a name of :data:`SAMPLERS`);
    ``constraints`` overrides ``spec.search.constraints``: every completed trial also carries
    its :func:`budget_excess` as an Optuna constraint (``Trial.set_constraint``), which TPE,
    NSGA-II and GP use to rank over-budget points apart from the feasible ones."""
    def __init__(self, spec: Spec, dims: Sequence[Dimension], objectives: Sequence[tuple[str, str]], *,
                 recorded: pd.DataFrame | None = None, unfinished: Sequence[dict] = (),
                 evaluator: Evaluator | None = None, reject: Reject | None = None, sampler: str | None = None,
                 serve: Serve | None = None, trials: int | None = None, constraints: bool | None = None,
                 scorer: Scorer | None = None, note: Callable[[str], None] | None = None):
        self.spec, self.dims, self.objectives = spec, list(dims), list(objectives)
        self.metrics = [m for m, _ in objectives]
        self.recorded = recorded if recorded is not None else pd.DataFrame()
        self.sampler_name = sampler or spec.search.sampler
        self.evaluator, self.reject = evaluator, reject
        self.constraints = spec.search.constraints if constraints is None else constraints
        self.distributions = optuna_space(dims)
        directions = ["maximize" if d == "max" else "minimize" for _, d in objectives]
        sampler_ = make_sampler(spec, len(self.recorded), self.sampler_name)
        self.auto = sampler_ if isinstance(sampler_, AutoSampler) else None
        self.study = optuna.create_study(directions=directions, sampler=sampler_)
        self.live: dict[str, Any] = {}  # Tune trial id -> Optuna trial
        self.serve, self.left = serve, trials  # left: trials still to give (None: Tune's num_samples decides)
        self.twins = self.rejected = self.served = 0
        self.grid_left: int | None = None  # grid points not yet asked (None: not a grid)
        self.scorer, self.note = scorer, note or (lambda text: logger.info("%s", text))
        self.prescreened: Outcome | None = None  # what search.prescreen did, once it has
        self.check: Check | Choice | None = None  # search.prescreen.check: the proxy's test (auto: its choice)
        self.ask_seconds: list[float] = []  # the sampler's own time (its asks), per suggestion
        self._asking = 0.0
        self.trial_seconds: list[float] = []  # train_seconds of the trials told, for sampler: auto
        self.told = self._tell_history(unfinished)

    def suggest(self, trial_id: str) -> dict | None:
        """The next configuration to train as ``trial_id``, or None when the grid is done."""
        if (self.grid_left is not None and self.grid_left <= 0) or (self.left is not None and self.left <= 0):
            return None
        if self.scorer is not None and self.spec.search.prescreen is not None and self.prescreened is None:
            self._prescreen()
        if self.check is not None and self.check.ready:
            self._checked()
        self._asking = 0.0
        try:
            return self._suggest(trial_id)
        finally:
            self._timed(self._asking)

    def _suggest(self, trial_id: str) -> dict | None:
        twins = infeasible = 0
        while True:
            asked = time.perf_counter()
            trial = self.study.ask(self.distributions)
            self._asking += time.perf_counter() - asked
            if self.grid_left is not None:
                self.grid_left -= 1
            rerun = bool(trial.user_attrs.get(RERUN))
            if not rerun and self.grid_left is None and twins < MAX_TWIN_DRAWS - 1 and self._told_twin(trial):
                twins += 1
                continue
            if not rerun and self.evaluator is not None and infeasible < MAX_REDRAWS - 1:
                verdict = self.evaluator(dict(trial.params))
                if not verdict.feasible:
                    self._reject(trial, trial_id if infeasible == 0 else f"{trial_id}_x{infeasible}", verdict)
                    infeasible += 1
                    if self.grid_left is not None and self.grid_left <= 0:
                        return None
                    continue
            if self.serve is not None and self._served(trial, f"{trial_id}_s{self.served}"):
                if (self.grid_left is not None and self.grid_left <= 0) or self.left <= 0:
                    return None
                continue
            if self.left is not None:
                self.left -= 1
            self.live[trial_id] = trial
            return dict(trial.params)

    def result(self, trial_id: str, result: dict) -> None:
        """A running trial's epoch: its accuracy as an intermediate value (one objective only:
        Optuna keeps none for several)."""
        trial = self.live.get(trial_id)
        if trial is None or len(self.metrics) > 1 or result.get("status") != "running":
            return
        value, step = result.get(self.metrics[0]), result.get("epochs")
        if value is not None and step is not None:
            trial.report(float(value), int(step))

    def complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell the study how ``trial_id`` ended (see the module docstring)."""
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        state, values = outcome(result, error, self.metrics)
        if self.check is not None:
            self.check.record(trial.params, _accuracy(result) if state == "COMPLETE" else None)
            if self.check.ready:  # decided as soon as it can be, said even when nothing is left to suggest
                self._checked()
        if state == "COMPLETE":
            self._constrain(trial, result or {}, feasible=(result or {}).get("status") != "infeasible")
        self._trial_time(result)
        try:
            self.study.tell(trial, values, state=TrialState[state])
        except (ValueError, RuntimeError) as err:  # a value Optuna refuses: lost to the sampler, not the search
            logger.warning("optuna refused the result of trial %s: %s", trial_id, err)

    # ------------------------------------------------------------------ internals

    def _prescreen(self) -> None:
        """search.prescreen: rank a random pool by the proxy and enqueue the best (see
        :mod:`.prescreen`); configurations already recorded are not enqueued again."""
        pre = self.spec.search.prescreen
        names = [d.name for d in self.dims]
        skip = {config_key({n: native(r[n]) for n in names}) for _, r in self.recorded.iterrows()
                if all(n in r for n in names)}
        self.prescreened = prescreen(self.distributions, self.objectives, self.scorer, proxy=pre.proxy,
                                     pool=pre.pool, keep=pre.keep, seed=self.spec.seed, skip=skip)
        self.note(self.prescreened.describe(pre.proxy))
        if pre.check:
            self.check, first = (Choice.draw(self.prescreened, pre.check, self.spec.seed, self.objectives, skip)
                                 if pre.proxy == AUTO else Check.draw(self.prescreened, pre.check, skip))
            self.prescreened.kept = first
            for _, r in self.recorded.iterrows():  # a resumed search: the check's recorded results
                if all(n in r for n in names):
                    accuracy = r.get("val_accuracy") if r.get("status") == "completed" else None
                    self.check.record({n: native(r[n]) for n in names}, None if pd.isna(accuracy) else accuracy)
            self.note(f"prescreen: {len(self.check.values)} candidates drawn at random from the pool train first, to "
                      "choose the proxy whose ranking agrees best with their accuracy" if pre.proxy == AUTO else
                      f"prescreen: {len(self.check.values)} candidates spread over the ranking train first, "
                      f"to check {pre.proxy}'s ranking against their accuracy")
        for config in self.prescreened.kept:
            self.study.enqueue_trial(config)
        if self.check is not None and self.check.ready:
            self._checked()

    def _checked(self) -> None:
        """search.prescreen.check decided: enqueue the proxy's best if it agreed."""
        pre = self.spec.search.prescreen
        names = [d.name for d in self.dims]
        if self.check.decide():
            skip = {config_key({n: native(r[n]) for n in names}) for _, r in self.recorded.iterrows()
                    if all(n in r for n in names)}
            best = self.check.kept(self.prescreened, pre.keep, skip)
            self.prescreened.kept = self.prescreened.kept + best
            for config in best:
                self.study.enqueue_trial(config)
        self.note(self.check.describe(pre.proxy, pre.keep))

    @property
    def handed_over(self) -> bool:
        """Sampler auto: gp gave way to tpe."""
        return self.auto is not None and self.auto.handed_over

    def _timed(self, seconds: float) -> None:
        """Keep one suggestion's sampler time (every ``ask`` it took: a repeated or over-budget
        draw is asked anew); with sampler auto, hand gp over to tpe once a suggestion costs more
        than :data:`AUTO_SHARE` of a trial's median training time (gp's random start-up and
        enqueued trials cost next to nothing)."""
        self.ask_seconds.append(seconds)
        if self.auto is None or self.auto.handed_over or not self.trial_seconds:
            return
        budget = AUTO_SHARE * statistics.median(self.trial_seconds)
        if seconds > budget:
            self.auto.hand_over()
            self.note(f"sampler auto: gp took {seconds:.2f}s for a suggestion, more than {100 * AUTO_SHARE:g}% of a "
                      f"trial's median training time ({statistics.median(self.trial_seconds):.2f}s); tpe proposes "
                      "the rest")

    def _trial_time(self, result: dict | None) -> None:
        seconds = (result or {}).get("train_seconds")
        if isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0:
            self.trial_seconds.append(float(seconds))

    def _told_twin(self, trial) -> bool:
        """Tell ``trial`` the outcome of an earlier trial with the same parameters, if there is one."""
        for done in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if done.params == trial.params:
                for key, value in done.constraints.items():
                    trial.set_constraint(key, value)
                self.study.tell(trial, done.values if done.state == TrialState.COMPLETE else None, state=done.state)
                self.twins += 1
                return True
        return False

    def _served(self, trial, row_id: str) -> bool:
        """Record ``trial`` from the results store as ``row_id`` and tell its result, if the
        store holds it."""
        reported = self.serve(row_id, dict(trial.params))
        if reported is None:
            return False
        self.served += 1
        self.left -= 1
        self._trial_time(reported)
        state, values = outcome(reported, False, self.metrics)
        if state == "COMPLETE":
            self._constrain(trial, reported, feasible=reported.get("status") != "infeasible")
        if self.check is not None:
            self.check.record(trial.params, _accuracy(reported) if state == "COMPLETE" else None)
        self.study.tell(trial, values, state=TrialState[state])
        return True

    def _constrain(self, trial, measured: dict, feasible: bool) -> None:
        """With constraints on, set ``trial``'s budget constraint (> 0: over budget; a
        configuration refused for another reason, e.g. the family's own rule, counts 1.0)."""
        if not self.constraints:
            return
        excess = budget_excess(self.spec, measured)
        trial.set_constraint("budget", excess if feasible or excess > 0 else 1.0)

    def _reject(self, trial, row_id: str, verdict: Verdict) -> None:
        """Record a draw that may not train and tell it as the worst accuracy (measured costs kept)."""
        self.rejected += 1
        measured = verdict.metrics()
        values = [float(measured[m]) if m in measured else (0.0 if d == "max" else math.inf)
                  for m, d in self.objectives]
        self._constrain(trial, measured, feasible=False)
        self.study.tell(trial, values)
        if self.reject is not None:
            self.reject(row_id, dict(trial.params), verdict)

    def _tell_history(self, unfinished: Sequence[dict]) -> int:
        """Add the recorded trials to the study, enqueue the unfinished (or, for a grid, every
        point not yet recorded); return how many trials were added."""
        told = 0
        for _, row in self.recorded.iterrows():
            try:
                frozen = recorded_trial(row, self.distributions, self.metrics)
            except ValueError as err:  # a recorded value outside today's distributions
                logger.warning("trial %s not told to the sampler: %s", row["trial_id"], err)
                continue
            if frozen.state.name == "COMPLETE":
                self._constrain(frozen, dict(row), feasible=row["status"] != "infeasible")
            if row["status"] == "completed":
                self._trial_time(dict(row))
            self.study.add_trial(frozen)
            told += 1
        if self.sampler_name == "grid":
            def key(params: dict) -> str:
                return json.dumps(params, sort_keys=True, default=str)

            seen = {key({d.name: native(r[d.name]) for d in self.dims}) for _, r in self.recorded.iterrows()}
            unfinished = [p for p in grid_points(self.dims, self.spec.seed) if key(p) not in seen]
            self.grid_left = len(unfinished)
        for params in unfinished:
            self.study.enqueue_trial(params, user_attrs={RERUN: True})
        return told
