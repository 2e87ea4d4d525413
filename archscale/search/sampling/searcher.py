"""The Ray Tune side of the sampler: :class:`OptunaSearcher`, a Tune ``Searcher`` that asks an
Optuna study for configurations through :class:`~archscale.search.sampling.asktell.AskTell`
and tells it what each trial turned out to be.
"""

from __future__ import annotations

import json
from typing import Sequence

from ray.tune.search import Searcher

from archscale.search.sampling.asktell import AskTell
from archscale.spec import Dimension, Spec


class OptunaSearcher(Searcher):
    """A Ray Tune ``Searcher`` over ``dims``: an :class:`AskTell` (``kwargs`` are its own)
    behind Tune's interface. The study is ``searcher.study``.

    Tune pickles its searcher with the experiment's state when the ``Tuner`` is built (and
    ships it to the cluster on a Ray Client); some samplers hold a lock (Optuna 5.1's NSGA-II
    sampler), so a searcher pickles as what built it and is built anew when unpickled. Nothing
    has been told to it by then; ``--resume`` tells a new one the trials in ``trials.csv``."""

    def __init__(self, spec: Spec, dims: Sequence[Dimension], objectives: Sequence[tuple[str, str]], **kwargs):
        metrics = [m for m, _ in objectives]
        modes = [d for _, d in objectives]
        super().__init__(metric=metrics if len(metrics) > 1 else metrics[0],
                         mode=modes if len(modes) > 1 else modes[0])
        self._built_from = (spec, list(dims), list(objectives), kwargs)
        self.ask_tell = AskTell(spec, dims, objectives, **kwargs)

    def __reduce__(self):
        spec, dims, objectives, kwargs = self._built_from
        return _rebuild, (spec, dims, objectives, kwargs)

    def __getattr__(self, name: str):  # study, live, twins, rejected, served: the AskTell's
        if name in ("ask_tell", "_built_from"):
            raise AttributeError(name)
        return getattr(self.ask_tell, name)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and mode are the spec's, set above

    def suggest(self, trial_id: str):
        config = self.ask_tell.suggest(trial_id)
        return Searcher.FINISHED if config is None else config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.ask_tell.result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.ask_tell.complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        # trials.csv is what --resume tells a new study; this is a summary for Tune's state.
        with open(checkpoint_path, "w") as f:
            json.dump({"trials": len(self.study.trials), "twins": self.twins, "rejected": self.rejected}, f)

    def restore(self, checkpoint_path: str) -> None:
        pass


def _rebuild(spec: Spec, dims: Sequence[Dimension], objectives: Sequence[tuple[str, str]], kwargs: dict) -> OptunaSearcher:
    return OptunaSearcher(spec, dims, objectives, **kwargs)


def make_searcher(spec: Spec, dims: Sequence[Dimension], objectives: Sequence[tuple[str, str]], **kwargs) -> OptunaSearcher:
    """A Ray Tune ``Searcher`` over ``dims`` (:class:`OptunaSearcher`)."""
    return OptunaSearcher(spec, dims, objectives, **kwargs)
