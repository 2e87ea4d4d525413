"""The Optuna side of a search: distributions, samplers, and what the study is told.

Imported only when a search runs (it loads optuna and Ray Tune's OptunaSearch).

What the study is told, trial by trial (:class:`ArchscaleSearch`):

- ``completed`` and ``infeasible`` (over a budget: it scores 0 accuracy): COMPLETE with
  the final objectives;
- ``pruned`` (stopped early by ASHA): PRUNED, never COMPLETE with its partial accuracy.
  Ray's OptunaSearch would tell such a trial COMPLETE in a multi-objective search, as if
  the accuracy it had after a grace period were its final one, and drops intermediate
  results there (Optuna takes none for several objectives). Optuna's TPE ranks PRUNED
  trials below every COMPLETE one (single objective: by how far they got and their last
  accuracy); NSGA-II learns only from COMPLETE trials;
- ``failed``: FAIL (no values).

On ``--resume`` the recorded trials (``trials.csv``) are told the same way before the
first new suggestion, and trials that had started but not finished are enqueued first,
so they run again with the same configuration.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from archscale.search.spec import Dimension, Spec

logger = logging.getLogger(__name__)


def optuna_space(dims: list[Dimension]) -> dict:
    """Optuna distributions of the searched dimensions."""
    space = {}
    for d in dims:
        if d.kind == "choice":
            space[d.name] = CategoricalDistribution(list(d.values))
        elif d.kind == "int":
            space[d.name] = IntDistribution(int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        else:
            space[d.name] = FloatDistribution(float(d.low), float(d.high), step=d.step, log=d.log)
    return space


class GridInOrder(optuna.samplers.GridSampler):
    """Optuna's GridSampler, taking always the first unvisited point of its seeded, shuffled
    grid. Optuna's own picks ``grid_id = trial.number`` for the first trials, which collides
    with points a resumed study was told; and it calls ``study.stop()`` when the grid is
    done, which raises outside ``study.optimize`` (Ray Tune asks and tells)."""

    def before_trial(self, study, trial) -> None:
        if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:
            return
        unvisited = self._get_unvisited_grid_ids(study)
        grid_id = min(unvisited) if unvisited else 0
        study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
        study._storage.set_trial_system_attr(trial._trial_id, "grid_id", grid_id)

    def after_trial(self, study, trial, state, values) -> None:
        pass

    def grid_attrs(self, params: dict) -> dict:
        """The system attributes that mark ``params`` as a visited point of this grid."""
        point = tuple(params[name] for name in self._param_names)
        for grid_id, candidate in enumerate(self._all_grids):
            if all(self._grid_value_equal(a, b) for a, b in zip(candidate, point)):
                return {"search_space": self._search_space, "grid_id": grid_id}
        return {}


def make_sampler(spec: Spec, dims: list[Dimension], told: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler. ``told``: trials already told to the study (a resume); it moves the
    seed on, so a resumed random or TPE-startup sampler does not replay the first run's draws."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = spec.search.num_trials
    seed = spec.seed if not told else int(np.random.SeedSequence([spec.seed, told]).generate_state(1)[0])
    if spec.search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, n // 3)), multivariate=True)
    if spec.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, min(50, n // 3)))
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return GridInOrder({d.name: d.grid() for d in dims}, seed=spec.seed)  # the grid's order stays the first run's


def _native(value: Any) -> Any:
    """numpy scalars from a DataFrame back to Python ones (Optuna compares choices by value)."""
    return value.item() if hasattr(value, "item") else value


MAX_TWIN_DRAWS = 20  # after this many already-trained draws in a row, let the next one through


class ArchscaleSearch(OptunaSearch):
    """Ray Tune's OptunaSearch, telling the study each trial's real outcome (see the module
    docstring) and able to start from the trials of an interrupted run.

    A trial is deterministic (same seed, data order and augmentation for every
    configuration), so a configuration the study already saw completed (or pruned) would
    only train to the same result again. When the sampler proposes one (TPE does, in small
    discrete spaces), the study is told that known outcome for the new draw and asked
    again, up to :data:`MAX_TWIN_DRAWS` times (after that the space is taken as spent and
    the draw goes through). :attr:`twins` counts the draws answered so.
    """

    twins = 0

    def suggest(self, trial_id: str):
        for draw in range(MAX_TWIN_DRAWS):
            draw_id = trial_id if draw == 0 else f"{trial_id}_twin{draw}"
            config = super().suggest(draw_id)
            if not isinstance(config, dict) or draw == MAX_TWIN_DRAWS - 1:
                break
            twin = self._twin(self._ot_trials[draw_id])
            if twin is None:
                break
            self._ot_study.tell(self._ot_trials.pop(draw_id), twin.values if twin.state == TrialState.COMPLETE
                                else None, state=twin.state)
            self.twins += 1
        if draw:  # the draw kept was asked under another id: move it to this trial's
            self._ot_trials[trial_id] = self._ot_trials.pop(draw_id)
        return config

    def _twin(self, ot_trial) -> optuna.trial.FrozenTrial | None:
        """A finished trial of the study with the same parameters (completed or pruned), or None."""
        if "fixed_params" in self._ot_study._storage.get_trial_system_attrs(ot_trial._trial_id):
            return None  # enqueued on purpose (an unfinished trial rerun by --resume)
        for done in self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if done.params == ot_trial.params:
                return done
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get("status") == "running":  # per-epoch reports only; Optuna keeps none for several objectives
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        state, values = self._outcome(result or {}, error)
        try:
            self._ot_study.tell(self._ot_trials[trial_id], values, state=state)
        except Exception as err:  # a value Optuna refuses: the trial is lost to the sampler, not the search
            logger.warning("optuna refused the result of trial %s: %s", trial_id, err)
        self._completed_trials.add(trial_id)

    def _outcome(self, result: dict, error: bool) -> tuple[TrialState, Any]:
        status = result.get("status")
        if error or status == "failed" or not result:
            return TrialState.FAIL, None
        if status in ("pruned", "running"):
            return TrialState.PRUNED, None
        values = self._values(result)
        if values is None:
            return TrialState.FAIL, None
        return TrialState.COMPLETE, values

    def _values(self, source: Any) -> Any:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = []
        for m in metrics:
            v = source.get(m) if hasattr(source, "get") else None
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return None
            values.append(float(v))
        return values if isinstance(self.metric, list) else values[0]

    # ------------------------------------------------------------------ resume

    def tell_history(self, recorded: pd.DataFrame, unfinished: Sequence[dict], dims: Sequence[Dimension]) -> int:
        """Tell the study the trials of ``trials.csv`` and enqueue the ``unfinished`` configs;
        return how many were told."""
        grid = self._ot_study.sampler if isinstance(self._ot_study.sampler, GridInOrder) else None
        told = 0
        for _, row in recorded.iterrows():
            params = {d.name: _native(row[d.name]) for d in dims}
            status = row["status"]
            row = row.copy()
            if status == "infeasible":  # as the trial reported it live
                row["val_accuracy"], row["train_seconds"] = 0.0, 0.0
            if status in ("completed", "infeasible"):
                values = self._values(row)
                state = TrialState.COMPLETE if values is not None else TrialState.FAIL
            elif status == "pruned":
                state, values = TrialState.PRUNED, None
            else:
                state, values = TrialState.FAIL, None
            intermediate = None
            if (state == TrialState.PRUNED and not isinstance(self.metric, list) and self.metric == "val_accuracy"
                    and not pd.isna(row.get("val_accuracy")) and not pd.isna(row.get("epochs"))):
                intermediate = {int(row["epochs"]): float(row["val_accuracy"])}
            try:
                trial = optuna.trial.create_trial(
                    state=state, params=params, distributions=self._space,
                    values=None if values is None else (values if isinstance(values, list) else [values]),
                    intermediate_values=intermediate, system_attrs=grid.grid_attrs(params) if grid else None)
            except ValueError as err:  # a recorded value outside today's distributions
                logger.warning("trial %s not told to the sampler: %s", row["trial_id"], err)
                continue
            self._ot_study.add_trial(trial)
            told += 1
        if not grid:  # the grid sampler revisits unfinished points by itself
            for params in unfinished:
                self._ot_study.enqueue_trial(params, skip_if_exists=False)
        return told
