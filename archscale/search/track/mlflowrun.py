"""MLflow runs of a search: one parent run for the search, and under it (``mlflow.parentRunId``)
one run per trial, named by its trial id. A trial's params are its searched choices; its
metrics, each epoch's ``train_loss``, ``train_accuracy``, ``val_accuracy``, ``lr`` and
``epoch_seconds`` (step: the epoch) written while it runs, then its final figures (accuracies,
params, MACs, memory, latency, training time); its ``result.json`` is an artifact. The store
is ``search.mlflow_uri``, by default ``sqlite:///RUN/mlflow.db`` with artifacts in
``RUN/mlartifacts``. Written with MLflow's own client (``pip install "archscale[track]"``).

A resumed run keeps its parent run (``RUN/mlflow.json``) and adds only the trials it lacks."""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from archscale.analysis.export import trial_dir
from archscale.analysis.records import TRIALS_FILE, read_trials, warn_line
from archscale.search.track.options import default_mlflow_uri
from archscale.search.track.writer import EPOCH_SCALARS as SCALARS, Curve, QueuedWriter, epochs_of, finite
from archscale.spec import Dimension, Spec, SpecError

MLFLOW_FILE = "mlflow.json"  # the store, experiment and parent run of this run directory
FINAL = ("val_accuracy", "test_accuracy", "params", "macs", "memory_mb", "latency_ms", "train_seconds", "epochs")
STATUS = {"completed": "FINISHED", "pruned": "KILLED", "infeasible": "FINISHED", "failed": "FAILED"}
TRIAL_TAG = "archscale.trial_id"


@contextmanager
def _no_retries() -> Iterator[None]:
    """An unreachable server answers in seconds, not after MLflow's minutes of retries."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class MLflowTracker(QueuedWriter):
    """The search's runs on ``spec.search.mlflow_uri`` (resolved: see
    :func:`archscale.search.track.watch.resolve_tracking`). Connects, finds or makes the
    experiment (named after the spec) and the parent run at once, on the caller's thread:
    a store that cannot be reached or written raises SpecError naming it."""

    def __init__(self, run_dir: str | Path, spec: Spec, dims: Sequence[Dimension],
                 warn: Callable[[str], None] = warn_line):
        run_dir = Path(run_dir)
        self.uri = spec.search.mlflow_uri or default_mlflow_uri(run_dir)
        self.where = f"MLflow at {self.uri}"
        self.choices = [d.name for d in dims if d.kind != "fixed"]
        self.children: dict[str, str] = {}  # trial id -> its MLflow run id
        for name in ("mlflow", "alembic"):  # its INFO lines (database migrations) are not the search's
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            with _no_retries():
                self.client = MlflowClient(tracking_uri=self.uri)
                self.experiment_id = self._experiment(spec.name, run_dir)
                self.parent = self._parent(spec, run_dir)
        except Exception as err:  # noqa: BLE001: any failure of the store is the user's input
            raise SpecError(f"search.mlflow_uri: the MLflow tracking store {self.uri} cannot be reached or written "
                            f"({type(err).__name__}: {_first_line(err)}); allowed: a store archscale can write, e.g. "
                            "sqlite:///PATH/mlflow.db, a local folder or the http(s):// address of a running "
                            "MLflow server (null: RUN/mlflow.db)") from None
        (run_dir / MLFLOW_FILE).write_text(json.dumps({"uri": self.uri, "experiment_id": self.experiment_id,
                                                       "run_id": self.parent}, indent=1) + "\n")
        super().__init__(run_dir, warn)

    def _experiment(self, name: str, run_dir: Path) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        url = urlparse(self.uri)
        if url.scheme == "sqlite":  # artifacts beside the database, not in the current folder
            location = (Path(url.path).parent / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def _parent(self, spec: Spec, run_dir: Path) -> str:
        try:
            saved = json.loads((run_dir / MLFLOW_FILE).read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("uri") == self.uri and saved.get("run_id"):  # --resume: the same parent run
            self.client.update_run(saved["run_id"], status="RUNNING")
            recorded = set(read_trials(run_dir, warn=lambda m: None)["trial_id"].astype(str)) if (
                run_dir / TRIALS_FILE).is_file() else set()
            for child in self.client.search_runs([self.experiment_id], max_results=50000,
                                                 filter_string=f"tags.mlflow.parentRunId = '{saved['run_id']}'"):
                trial_id = child.data.tags.get(TRIAL_TAG)
                if trial_id in recorded:
                    self.children[trial_id] = child.info.run_id
                elif child.info.status == "RUNNING":  # killed with the run before it was recorded
                    self.client.set_terminated(child.info.run_id, status="KILLED")
            return saved["run_id"]
        run = self.client.create_run(self.experiment_id, run_name=run_dir.name,
                                     tags={"archscale.run_dir": str(run_dir.resolve()), "archscale.spec": spec.name})
        s = spec.search
        params = {"sampler": s.sampler, "num_trials": s.num_trials, "objectives": ",".join(s.objectives),
                  "family": spec.space.family, "dataset": spec.data.dataset, "epochs": spec.train.epochs}
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def open(self) -> None:
        if (self.run_dir / TRIALS_FILE).is_file():  # a resumed run: the recorded trials the store lacks
            for _, row in read_trials(self.run_dir, warn=lambda message: None).iterrows():
                if str(row["trial_id"]) not in self.children:
                    self.on_add(row.to_dict(), {})

    def on_epoch(self, trial_id: str, metrics: dict) -> None:
        epoch = metrics.get("epochs")
        if isinstance(epoch, int):
            self.client.log_batch(self._child(trial_id), metrics=_metrics(metrics, SCALARS, epoch))

    def on_add(self, row: dict, curve: Curve) -> None:
        trial_id = str(row["trial_id"])
        fresh = trial_id not in self.children
        run_id = self._child(trial_id)
        history = epochs_of(self.run_dir, row, curve)
        metrics = [m for epoch, values in history.items() for m in _metrics(values, SCALARS, epoch)]
        if not fresh:  # the epochs logged while it ran are there already; MLflow keeps each (key, step) given
            logged = {(m.key, m.step) for key in SCALARS for m in self.client.get_metric_history(run_id, key)}
            metrics = [m for m in metrics if (m.key, m.step) not in logged]
        last = max(history, default=0)
        metrics += _metrics(row, FINAL, last, prefix="final/")
        params = [Param(k, str(_plain(row.get(k)))) for k in self.choices]
        tags = [RunTag("archscale.status", str(row.get("status")))] + (
            [RunTag("archscale.error", str(row["error"])[:5000])] if row.get("error") else [])
        self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        result = trial_dir(self.run_dir, trial_id) / "result.json"
        if result.is_file():
            self.client.log_artifact(run_id, str(result))
        self.client.set_terminated(run_id, status=STATUS.get(str(row.get("status")), "FINISHED"))
        self.written += 1

    def shut(self) -> None:
        self.client.set_terminated(self.parent, status="FINISHED")

    def _child(self, trial_id: str) -> str:
        if trial_id not in self.children:
            run = self.client.create_run(self.experiment_id, run_name=f"trial {trial_id}",
                                         tags={"mlflow.parentRunId": self.parent, TRIAL_TAG: trial_id})
            self.children[trial_id] = run.info.run_id
        return self.children[trial_id]


def _metrics(values: dict, keys: Sequence[str], step: int, prefix: str = "") -> list[Metric]:
    stamp = int(time.time() * 1000)
    return [Metric(prefix + k, float(values[k]), stamp, int(step)) for k in keys if finite(values.get(k))]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value




def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else "no message"
