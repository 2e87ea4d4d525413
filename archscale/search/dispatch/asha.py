"""Early stopping with Ray Tune's ASHA, and its memory across ``--resume``.

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

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from ray.tune.schedulers import ASHAScheduler

from archscale.analysis.export import read_history

from archscale.spec import Spec

METRIC, TIME_ATTR = "val_accuracy", "epochs"


def make_scheduler(spec: Spec):
    """Ray Tune's ASHA on validation accuracy per epoch, or None (every trial runs its epochs)."""
    if spec.search.scheduler != "asha":
        return None

    return ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=spec.train.epochs,
                         grace_period=spec.search.asha.grace_period,
                         reduction_factor=spec.search.asha.reduction_factor, brackets=1)


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
    """Tell a fresh ASHA the recorded trials' results, epoch by epoch, through its public
    hooks; return how many results were told."""
    told = 0
    for trial_id, history in recorded_histories(run_dir, recorded).items():
        if not history:
            continue
        trial = SimpleNamespace(trial_id=trial_id)
        scheduler.on_trial_add(None, trial)
        for epoch, value in history[:-1]:
            scheduler.on_trial_result(None, trial, {TIME_ATTR: epoch, METRIC: value})
            told += 1
        epoch, value = history[-1]
        scheduler.on_trial_complete(None, trial, {TIME_ATTR: epoch, METRIC: value})  # records, then forgets it
        told += 1
    return told
