"""Early stopping by asynchronous successive halving, and its memory across ``--resume``.

With one objective (``val_accuracy``) it is Ray Tune's own ASHAScheduler. With several, a
trial is judged on all of them: :class:`FrontASHA`. Ray's ASHA ranks by accuracy alone,
so in a search for accuracy *and* a small network it stops the small networks first (they
learn slower) although they are the cheap end of the front: replayed on the benchmark's
quickstart grid with random search, it reached random search's own 40-trial front in 10% of
the replays, :class:`FrontASHA` in 63% (docs: benchmarks, Search cost).

Ray Tune offers no public way to give a new ASHAScheduler the rung values of an interrupted
run. :func:`replay` gives them through the scheduler's public interface instead
(``on_trial_add``, ``on_trial_result``, ``on_trial_complete``: the hooks Tune itself calls),
feeding each recorded trial's per-epoch validation accuracy as if it were running, so the
cutoffs come out as ASHA computes them. The one assumption about Ray is that ASHA reads
nothing of a trial but its ``trial_id``; ``tests/search/test_asha.py`` checks the outcome
(a resumed scheduler stops what the interrupted one would have), and ``pyproject.toml``
bounds ray to the versions that test ran on.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import pandas as pd
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from archscale.analysis.export import read_history
from archscale.analysis.pareto import crowding, pareto_levels
from archscale.spec import Spec
from archscale.spec.objectives import COSTS

METRIC, TIME_ATTR = "val_accuracy", "epochs"


def make_scheduler(spec: Spec):
    """The early-stopping scheduler of ``spec`` (``search.scheduler: asha``), or None (every
    trial runs its epochs): Ray Tune's ASHA on validation accuracy when that is the one
    objective, :class:`FrontASHA` on all of them otherwise."""
    if spec.search.scheduler != "asha":
        return None
    objectives = spec.search.objective_pairs()
    if len(objectives) > 1:
        return FrontASHA(objectives, max_t=spec.train.epochs, grace_period=spec.search.asha.grace_period,
                         reduction_factor=spec.search.asha.reduction_factor)
    return accuracy_asha(spec)


def accuracy_asha(spec: Spec) -> ASHAScheduler:
    """Ray Tune's ASHAScheduler on validation accuracy per epoch, with ``spec``'s settings."""
    return ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=spec.train.epochs,
                         grace_period=spec.search.asha.grace_period,
                         reduction_factor=spec.search.asha.reduction_factor, brackets=1)


def milestones(grace_period: int, reduction_factor: float, max_t: int) -> list[float]:
    """The epochs at which trials are judged: grace_period x reduction_factor^k below max_t
    (Ray's ASHA also judges at max_t, where a trial is ending anyway)."""
    out, m = [], float(grace_period)
    while m < max_t:
        out.append(m)
        m *= reduction_factor
    return out


class FrontASHA(FIFOScheduler):
    """Asynchronous successive halving on several objectives, after MO-ASHA (Schmucker,
    Donini, Zafar, Salinas and Archambeau, "Multi-objective multi-fidelity hyperparameter
    optimization with application to fairness", 2021, arXiv:2106.12639), through Ray Tune's
    public scheduler interface.

    As in ASHA, a trial is judged once at each rung (``grace_period`` x ``reduction_factor``^k
    epochs) against the trials that reached that rung before it. There each trial is a point:
    its ``val_accuracy`` at that epoch and its other objectives as its report gives them (params,
    MACs, memory and latency are measured before training, so every report carries them; a
    missing or NaN value counts as the worst). The points are ordered as NSGA-II orders them
    (Deb et al. 2002): by non-dominated level, then by crowding distance within a level, the
    extremes of a level first. The trial goes on while fewer than ``n / reduction_factor`` of
    the rung's n points (itself included) come strictly before it: the best of each level's
    ends, the most accurate and the cheapest, always go on, so a small network on the front is
    not stopped for learning slower than a large one.
    """

    def __init__(self, objectives: Sequence[tuple[str, str]], max_t: int, grace_period: int = 1,
                 reduction_factor: float = 2.0, time_attr: str = TIME_ATTR):
        super().__init__()
        if not objectives:
            raise ValueError("FrontASHA needs at least one objective")
        self.objectives = list(objectives)
        self.time_attr, self.max_t, self.reduction_factor = time_attr, max_t, reduction_factor
        self.rungs: dict[float, dict[str, np.ndarray]] = {
            m: {} for m in milestones(grace_period, reduction_factor, max_t)}

    def _point(self, result: dict) -> np.ndarray:
        """The trial's objectives at this report, each to be maximised (-inf when missing)."""
        out = []
        for metric, mode in self.objectives:
            value = result.get(metric)
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = math.nan
            out.append(-math.inf if math.isnan(value) else (value if mode == "max" else -value))
        return np.array(out)

    def _ahead(self, rung: dict[str, np.ndarray], trial_id: str) -> int:
        """How many of the rung's points come strictly before ``trial_id``'s."""
        ids = list(rung)
        points = np.array([rung[i] for i in ids])
        finite = np.where(np.isfinite(points), points, np.finfo(float).min)
        levels = pareto_levels(finite)
        mine = ids.index(trial_id)
        same = np.flatnonzero(levels == levels[mine])
        crowd = dict(zip(same, crowding(finite[same])))
        return int((levels < levels[mine]).sum() + sum(crowd[j] > crowd[mine] for j in same))

    def _judge(self, trial_id: str, result: dict, decide: bool) -> str:
        epoch = result.get(self.time_attr)
        if epoch is None:
            return TrialScheduler.CONTINUE
        for milestone, rung in self.rungs.items():
            if epoch < milestone or trial_id in rung:
                continue
            rung[trial_id] = self._point(result)
            if decide and self._ahead(rung, trial_id) >= len(rung) / self.reduction_factor:
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._judge(trial.trial_id, result, decide=True)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result:  # a trial's last result counts at the rungs it passed unjudged (a replayed one)
            self._judge(trial.trial_id, result, decide=False)

    def debug_string(self) -> str:
        return (f"Using FrontASHA: rungs at {', '.join(f'{m:g}' for m in self.rungs)} of {self.max_t} "
                f"{self.time_attr}, on {', '.join(m for m, _ in self.objectives)}.")


def recorded_histories(run_dir: Path, recorded: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    """Per recorded trial, the (epoch, val_accuracy) it reported: a completed trial's history
    from ``trials/<id>/result.json``; a pruned one, the accuracy it was stopped with."""

    out: dict[str, list[tuple[int, float]]] = {}
    for row in recorded.itertuples():
        if row.status == "completed":
            path = Path(run_dir) / "trials" / str(row.trial_id) / "result.json"
            if path.is_file():
                history = read_history(path, keys=("epoch", METRIC))
                out[str(row.trial_id)] = [(int(h["epoch"]), float(h[METRIC])) for h in history]
        elif row.status == "pruned" and not pd.isna(row.val_accuracy) and not pd.isna(row.epochs):
            out[str(row.trial_id)] = [(int(row.epochs), float(row.val_accuracy))]
    return out


def replay(scheduler, run_dir: Path, recorded: pd.DataFrame) -> int:
    """Tell a fresh scheduler the recorded trials' results, epoch by epoch, through its public
    hooks (each report with the trial's recorded costs, as its reports had them); return how
    many results were told."""
    told = 0
    rows = {str(r["trial_id"]): r for r in recorded.to_dict("records")}
    for trial_id, history in recorded_histories(run_dir, recorded).items():
        if not history:
            continue
        costs = {k: v for k, v in rows[trial_id].items() if k in COSTS and v is not None and not pd.isna(v)}
        trial = SimpleNamespace(trial_id=trial_id)
        scheduler.on_trial_add(None, trial)
        for epoch, value in history[:-1]:
            scheduler.on_trial_result(None, trial, {**costs, TIME_ATTR: epoch, METRIC: value})
            told += 1
        epoch, value = history[-1]
        scheduler.on_trial_complete(None, trial, {**costs, TIME_ATTR: epoch, METRIC: value})  # records, forgets it
        told += 1
    return told
