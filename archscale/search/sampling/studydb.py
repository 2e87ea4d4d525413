"""The run's Optuna study in Optuna's own storage: ``RUN/study.db``, an
``optuna.storages.RDBStorage`` on SQLite that ``optuna-dashboard sqlite:///RUN/study.db``
opens, or ``optuna.load_study(study_name=None, storage="sqlite:///RUN/study.db")``, while
the search runs and after.

:class:`LiveStudy` writes it as trials are recorded: every row of ``trials.csv`` (trained,
pruned, infeasible, failed, served from the results store) is queued by the driver and added
by one writer thread, so no trial waits on SQLite. One study named after the spec; each trial
once, keyed by its ``trial_id`` user attribute, so a resumed run appends only the rows it has
not written (and first the rows of ``trials.csv`` that a kill, or an older archscale that wrote
the study only at the end, left out). Each trial as the sampler was told it
(:func:`~archscale.search.sampling.asktell.recorded_trial`: ``completed`` COMPLETE with the
objectives' values, ``infeasible`` COMPLETE with 0 accuracy, ``pruned`` PRUNED, ``failed``
FAIL), with its validation accuracy per epoch as intermediate values (``result.json``'s
history, else the epochs the recorder saw) and the user attributes of :data:`USER_ATTRS`.

Why not the sampler's own study on this storage: every ``ask`` and ``tell`` would then be a
SQLite transaction on the search's critical path, the study would also hold the twins the
sampler is told again and a grid's enqueued points, and a resumed run would have to reconcile
two records.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
import pandas as pd

from archscale.analysis.records import TRIALS_FILE, read_trials, warn_line
from archscale.search.configs.context import native
from archscale.search.sampling.asktell import optuna_space, recorded_trial
from archscale.search.track.writer import Curve, QueuedWriter, trial_history
from archscale.spec import Dimension, Spec

STUDY_FILE = "study.db"
USER_ATTRS = ("trial_id", "status", "params", "macs", "memory_mb", "latency_ms", "val_accuracy", "test_accuracy",
              "train_seconds", "epochs", "arch", "error", "source", "stage")
CURVE = "val_accuracy"  # the metric drawn per epoch (Optuna's intermediate values)



def study_storage(run_dir: str | Path) -> str:
    """The storage URL of a run's study (what optuna-dashboard and ``optuna.load_study`` take)."""
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"


def open_study(storage: optuna.storages.BaseStorage, spec: Spec) -> optuna.Study:
    """The run's study (named after the spec) on ``storage``, created when missing."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pairs = spec.search.objective_pairs()
    study = optuna.create_study(storage=storage, study_name=spec.name, load_if_exists=True,
                                directions=["maximize" if d == "max" else "minimize" for _, d in pairs])
    if study.metric_names is None:  # the dashboard's axes named val_accuracy, macs, not 0, 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([m for m, _ in pairs])
    return study


def written_ids(study: optuna.Study) -> set[str]:
    """The ``trial_id`` user attributes of the trials a study holds."""
    return {str(t.user_attrs["trial_id"]) for t in study.get_trials(deepcopy=False) if "trial_id" in t.user_attrs}


def result_curve(run_dir: str | Path, trial_id: str) -> Curve:
    """``val_accuracy`` by epoch from ``trials/<id>/result.json``'s history (empty without one)."""
    return {h["epoch"]: float(h[CURVE]) for h in trial_history(run_dir, trial_id) if _number(h.get(CURVE))}


def study_trial(row: Mapping[str, Any], distributions: dict, metrics: Sequence[str], curve: Curve | None = None):
    """The FrozenTrial of one row of trials.csv: its state and values as the sampler was told,
    ``curve`` as intermediate values, :data:`USER_ATTRS` as user attributes. Raises ValueError
    for a value outside ``distributions``."""
    attrs = {k: native(row[k]) for k in USER_ATTRS if k in row and not _missing(row[k])}
    attrs = {k: (str(v) if k == "trial_id" else v) for k, v in attrs.items()}
    return recorded_trial(pd.Series(dict(row)), distributions, metrics, user_attrs=attrs,
                          intermediate={int(e): float(v) for e, v in (curve or {}).items()})


class LiveStudy(QueuedWriter):
    """``RUN/study.db`` written as trials are recorded: :meth:`add` queues a row of trials.csv
    (and the epochs' accuracies the recorder relayed) and returns at once; the writer thread
    adds each to the study; :meth:`close` writes what is queued and ends it. A write that
    fails is a warning (``warn``), never the end of the search. ``dims``: the sampled
    dimensions (a staged run's alpha, beta, gamma and phi with every value they may take)."""

    def __init__(self, run_dir: str | Path, spec: Spec, dims: Sequence[Dimension],
                 warn: Callable[[str], None] = warn_line):
        self.where = str(Path(run_dir) / STUDY_FILE)
        self.spec = spec
        self.distributions = optuna_space(dims)
        self.metrics = [m for m, _ in spec.search.objective_pairs()]
        self.storage = self.study = self._failed = None
        self.seen: set[str] = set()
        try:  # made before the search starts, so a dashboard opened at once finds it made
            self.storage, self.study = _made(run_dir, spec)
        except Exception as err:  # noqa: BLE001: said by the writer thread, which then writes nothing
            self._failed = err
        super().__init__(run_dir, warn)

    def open(self) -> None:
        if self._failed is not None:
            raise self._failed
        self.seen = written_ids(self.study)
        if (self.run_dir / TRIALS_FILE).is_file():  # the rows a resumed run's study lacks (an older archscale's)
            for _, row in read_trials(self.run_dir, warn=lambda message: None).iterrows():
                self.on_add(row.to_dict(), {})

    def on_add(self, row: dict, curve: Curve) -> None:
        trial_id = str(row["trial_id"])
        if trial_id in self.seen:
            return
        self.study.add_trial(study_trial(row, self.distributions, self.metrics,
                                         {**curve, **result_curve(self.run_dir, trial_id)}))
        self.seen.add(trial_id)
        self.written += 1

    def shut(self) -> None:
        if self.storage is not None:
            self.storage.engine.dispose()  # the file closed before the run ends


def _made(run_dir: str | Path, spec: Spec) -> tuple[optuna.storages.RDBStorage, optuna.Study]:
    """The run's storage and study. A new ``study.db`` is made whole under another name and
    then renamed into place, so that a reader (optuna-dashboard started with the run) never
    meets a half-made file: a reader that opened one would make its tables too, and one of
    the two would fail."""
    path = Path(run_dir) / STUDY_FILE
    if not path.exists():
        partial = path.with_name(f".{STUDY_FILE}.{os.getpid()}.partial")
        partial.unlink(missing_ok=True)
        storage = optuna.storages.RDBStorage(f"sqlite:///{partial.resolve()}")
        open_study(storage, spec)
        storage.engine.dispose()
        os.replace(partial, path)
    storage = optuna.storages.RDBStorage(study_storage(run_dir))
    return storage, open_study(storage, spec)


def write_study(run_dir: str | Path, spec: Spec, dims: Sequence[Dimension]) -> Path:
    """Bring ``RUN/study.db`` up to date with trials.csv (the rows it lacks, each once); returns its path."""
    with LiveStudy(run_dir, spec, dims):
        pass
    return Path(run_dir) / STUDY_FILE


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
