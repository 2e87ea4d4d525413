"""The run's Optuna study in Optuna's own storage: ``RUN/study.db``, an
``optuna.storages.RDBStorage`` on SQLite that ``optuna-dashboard sqlite:///RUN/study.db``
opens, or ``optuna.load_study(study_name=None, storage="sqlite:///RUN/study.db")``.

It is written from ``trials.csv`` (the run's record, which ``--resume`` reads) when a run
ends, and written anew by every invocation, a resumed one included: one study named after
the spec, one trial per row of ``trials.csv``, in its order, as the sampler was told it
(:func:`~archscale.search.sampling.searcher.recorded_trial`: ``completed`` COMPLETE with the
objectives' values, ``infeasible`` COMPLETE with 0 accuracy, ``pruned`` PRUNED, ``failed``
FAIL), with user attributes ``trial_id``, ``status``, ``params`` and ``macs`` (and
``source``, ``stage`` where recorded).

Why not the sampler's own study on this storage: every ``ask`` and ``tell`` would then be a
SQLite transaction on the search's critical path, the study would also hold the twins the
sampler is told again and a grid's enqueued points, and a resumed run would have to reconcile
two records. Writing it once at the end costs one transaction per trial, off that path.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution

from archscale.search.configs.context import native
from archscale.search.sampling.asktell import optuna_space, recorded_trial
from archscale.spec import Spec

STUDY_FILE = "study.db"
USER_ATTRS = ("trial_id", "status", "params", "macs", "source", "stage")

logger = logging.getLogger(__name__)


def study_storage(run_dir: str | Path) -> str:
    """The storage URL of a run's study (what optuna-dashboard and ``optuna.load_study`` take)."""
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"


def write_study(run_dir: str | Path, spec: Spec, trials: pd.DataFrame, choices: list[str]) -> Path:
    """Write ``RUN/study.db`` anew from ``trials`` (trials.csv); ``choices``: the sampled
    columns. Returns its path."""

    path = Path(run_dir) / STUDY_FILE
    tmp = path.with_name(f".{STUDY_FILE}.tmp")
    tmp.unlink(missing_ok=True)
    searched = {d.name: d for d in spec.searched()}
    distributions = optuna_space([searched[c] for c in choices if c in searched])
    for c in choices:  # a staged run's alpha, beta, gamma and phi: the values it ran
        if c not in distributions and c in trials:
            distributions[c] = CategoricalDistribution(sorted({native(v) for v in trials[c].dropna()}, key=repr))
    metrics = [m for m, _ in spec.search.objective_pairs()]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp.resolve()}")
    study = optuna.create_study(storage=storage, study_name=spec.name, directions=[
        "maximize" if d == "max" else "minimize" for _, d in spec.search.objective_pairs()])
    frozen = []
    for _, row in trials.iterrows():
        attrs = {k: native(row[k]) for k in USER_ATTRS if k in row and not _missing(row[k])}
        try:
            frozen.append(recorded_trial(row, distributions, metrics, user_attrs=attrs))
        except ValueError as err:
            logger.warning("trial %s not written to %s: %s", row["trial_id"], path, err)
    study.add_trials(frozen)
    storage.engine.dispose()  # the file is whole and closed before it takes the name
    tmp.replace(path)
    return path


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
