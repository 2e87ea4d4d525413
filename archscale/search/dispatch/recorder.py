"""Driver side of a running search: the Ray Tune callback that writes ``trials.csv`` and the
trials' files, the progress lines, and the stopper for Ctrl-C and the time budget.

The callback runs in the driver process, whichever node a trial ran on, so everything a
run leaves lands on the driver: rows, weights and results (sent with a trial's last report).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal, TextIO

from ray.tune import Callback, Stopper
from ray.util.queue import Empty

from archscale.analysis.export import trial_dir, write_trial_files
from archscale.analysis.records import TRIALS_FILE, TrialsCSV
from archscale.search.configs.context import TrialContext, resolve_arch
from archscale.search.jobs.profile import PROFILE, TIMES
from archscale.search.jobs.rundir import STARTED_FILE
from archscale.search.dispatch.trial import ARTIFACTS
from archscale.space import SpaceError

Verbosity = Literal["quiet", "normal", "verbose"]
EPOCH_METRICS = ("epochs", "train_loss", "train_accuracy", "val_accuracy", "lr", "train_seconds", "epoch_seconds")


# --------------------------------------------------------------------------- progress lines


def fmt_metric(name: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{name}=-"
    if name in ("params", "macs"):
        return f"{name}={human(value)}"
    if isinstance(value, float):
        return f"{name}={value:.4f}"
    return f"{name}={value}"


def human(n: float) -> str:
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """One plain line per finished trial (no carriage returns or colours: fit for a log file):
    ``[n/N] trial ID STATUS: metrics | best so far | elapsed, ETA``. ``verbose`` adds a line
    per trial start, per epoch and per retry; ``quiet`` prints none of these."""

    def __init__(self, total: int, objectives: list[tuple[str, str]], already: int = 0,
                 verbosity: Verbosity = "normal", out: TextIO | None = None, epochs: int | None = None,
                 time_budget_s: float | None = None, best: float | None = None):
        self.total, self.objectives, self.verbosity = total, objectives, verbosity
        self.out = out or sys.stdout
        self.epochs, self.time_budget_s = epochs, time_budget_s
        self.done = self.started_with = already
        self.best = best
        self.start = time.monotonic()

    def __getstate__(self) -> dict:  # Ray Tune pickles its callbacks into its experiment state
        return {**self.__dict__, "out": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.out = self.out or sys.stdout

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def finished(self, row: dict) -> str:
        """Count a finished trial; print (unless quiet) and return its line."""
        self.done += 1
        metric, mode = self.objectives[0]
        value = row.get(metric)
        if row["status"] == "completed" and value is not None and not (isinstance(value, float) and math.isnan(value)):
            if self.best is None or (value > self.best if mode == "max" else value < self.best):
                self.best = value
        elapsed = time.monotonic() - self.start
        new = self.done - self.started_with
        eta = elapsed / new * max(0, self.total - self.done) if new else 0.0
        if self.time_budget_s is not None:
            eta = min(eta, max(0.0, self.time_budget_s - elapsed))
        shown = [m for m, _ in self.objectives] + [k for k in ("params", "macs", "test_accuracy") if k not in dict(self.objectives)]
        metrics = " ".join(fmt_metric(k, row.get(k)) for k in shown)
        extra = ""
        if row["status"] in ("failed", "infeasible") and row.get("error"):
            extra = f" ({row['error']})"
        elif row["status"] == "pruned":
            extra = f" (stopped after {row.get('epochs')} of {self.epochs} epochs)"
        if row.get("source") == "store":
            extra += " (from the store)"
        best = f" | best {metric}={fmt_metric(metric, self.best).split('=', 1)[1]}" if self.best is not None else ""
        line = (f"[{self.done}/{self.total}] trial {row['trial_id']} {row['status']}: {metrics}{extra}{best} "
                f"| {duration(elapsed)} elapsed, ~{duration(eta)} left")
        if self.verbosity != "quiet":
            self._print(line)
        return line

    def started(self, trial_id: str, config: dict, gpu: float = 0.0) -> None:
        if self.verbosity == "verbose":
            share = f" on {gpu:g} GPU" if gpu else ""
            self._print(f"  trial {trial_id} started{share}: " + ", ".join(f"{k}={v}" for k, v in config.items()))

    def epoch(self, trial_id: str, result: dict) -> None:
        if self.verbosity == "verbose":
            keys = ("train_loss", "train_accuracy", "val_accuracy")
            self._print(f"  trial {trial_id} epoch {result.get('epochs')}/{self.epochs}: "
                        + " ".join(fmt_metric(k, result.get(k)) for k in keys))

    def retried(self, trial_id: str, attempt: int, error: str) -> None:
        if self.verbosity != "quiet":
            self._print(f"  trial {trial_id} lost its worker ({error}); retry {attempt}")

    def note(self, line: str) -> None:
        if self.verbosity != "quiet":
            self._print(line)


# --------------------------------------------------------------------------- stopping


class Interrupted(KeyboardInterrupt):
    """The search was stopped by Ctrl-C or SIGTERM, once what finished was written;
    ``signum``: which signal (the CLI exits with 128 plus it, as a shell reports a signal)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class SearchStopper(Stopper):
    """A Ray Tune Stopper that ends the whole search on Ctrl-C or SIGTERM (:meth:`interrupt`) or when
    ``time_budget_s`` seconds have passed since it was made. Trials it stops are not recorded:
    they are unfinished, and ``--resume`` runs them again. ``flag`` (a ``ray.util.queue.Queue``)
    carries a Ctrl-C to a copy of the stopper running on a Ray Client's cluster."""

    def __init__(self, time_budget_s: float | None = None, flag=None):
        self.start = time.monotonic()
        self.time_budget_s = time_budget_s
        self.reason: str | None = None
        self.signum = int(signal.SIGINT)  # the signal that interrupted the search (Ctrl-C unless SIGTERM)
        self.flag = flag
        self._polled = 0.0

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        if self.reason is None:
            self.reason, self.signum = "interrupted", int(signum)
        if self.flag is not None:  # a remote call: not from inside the signal handler
            threading.Thread(target=self.flag.put, args=("interrupted",), daemon=True).start()

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        if self.reason is None and self.time_budget_s is not None and time.monotonic() - self.start >= self.time_budget_s:
            self.reason = f"time budget of {self.time_budget_s:g} s reached"
        if self.reason is None and self.flag is not None and time.monotonic() - self._polled >= 1.0:
            self._polled = time.monotonic()  # a remote call: at most once a second
            if self.flag.qsize() > 0:
                self.reason = "interrupted"
        return self.reason is not None


# --------------------------------------------------------------------------- the callback


def _error_line(trial) -> str:
    try:
        err = trial.get_error()
    except Exception:  # Ray's error files may be missing after a crash
        err = None
    text = str(err) if err is not None else "trial failed"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "trial failed"


class RunFiles:
    """What a search leaves in its run directory, applied where the driver runs: rows of
    ``trials.csv`` (each trial once), the trials' files, ``started.jsonl``, and the progress
    lines. The recorder calls it directly, or through a :class:`Relay` from a cluster.
    ``stage`` (two-stage runs) is written into every row and ``started.jsonl`` line; ``store``
    (:class:`~archscale.search.configs.runstore.RunStore`) receives every row recorded, and
    ``watchers`` (:class:`~archscale.search.track.writer.Watchers`: study.db and the trackers)
    every epoch relayed while a trial runs and every row with its validation accuracy per epoch."""

    def __init__(self, run_dir: Path, choices: list[str], progress: Progress, stage: int | None = None,
                 store=None, watchers=None, extra: tuple[str, ...] = ()):
        self.run_dir, self.choices, self.progress, self.stage = Path(run_dir), choices, progress, stage
        self.store = store  # a runstore.RunStore: every finished trial also goes in there
        self.watchers = watchers  # a track.writer.Watchers: study.db and the trackers as trials run
        self.curves: dict[str, dict[int, float]] = {}  # trial id -> epoch -> val_accuracy, until recorded
        self.csv = TrialsCSV(self.run_dir / TRIALS_FILE, choices, staged=stage is not None, extra=extra)

    def started(self, trial_id: str, config: dict, gpu: float) -> None:
        item = {"trial_id": trial_id, "config": config, **({"stage": self.stage} if self.stage is not None else {})}
        with (self.run_dir / STARTED_FILE).open("a") as f:
            f.write(json.dumps(item, default=str) + "\n")
        self.progress.started(trial_id, config, gpu)

    def files(self, trial_id: str, files: dict[str, bytes]) -> None:
        write_trial_files(trial_dir(self.run_dir, trial_id), files)

    def epoch(self, trial_id: str, result: dict) -> None:
        epoch, value = result.get("epochs"), result.get("val_accuracy")
        if isinstance(epoch, int) and isinstance(value, (int, float)):
            self.curves.setdefault(trial_id, {})[epoch] = float(value)
        if self.watchers is not None:
            self.watchers.epoch(trial_id, result)
        self.progress.epoch(trial_id, result)

    def retried(self, trial_id: str, attempt: int, error: str) -> None:
        self.progress.retried(trial_id, attempt, error)

    def record(self, row: dict) -> None:
        if self.stage is not None:
            row = {**row, "stage": self.stage}  # two-stage runs (search.stages)
        curve = self.curves.pop(str(row["trial_id"]), None)
        if self.csv.append(row):
            self.progress.finished(row)
            if self.store is not None:
                self.store.record(row, {k: row.get(k) for k in self.choices}, self.run_dir)
            if self.watchers is not None:
                self.watchers.add(row, curve)


class Relay:
    """Stands in for :class:`RunFiles` where the recorder runs away from the driver (Ray
    Client: Tune's loop runs on the cluster): each call goes into a Ray queue, and the
    driver's :func:`drain` applies it to the run directory."""

    def __init__(self, queue):
        self.queue = queue

    def __getattr__(self, name: str):
        if name not in ("started", "files", "epoch", "retried", "record"):
            raise AttributeError(name)
        return lambda *args: self.queue.put((name, args))


def drain(queue, target: RunFiles, done) -> None:
    """Apply the relayed calls to ``target`` until ``done`` (a threading.Event) is set and
    the queue is empty."""

    while True:
        try:
            name, args = queue.get(timeout=0.5)
        except Empty:
            if done.is_set():
                return
            continue
        getattr(target, name)(*args)


def _timed(callback):
    """``callback`` with the seconds it takes added to its trial's ``recorder_s`` (``--profile``)."""
    def timed(self, iteration, trials, trial, *args, **info):
        start = time.perf_counter()
        try:
            return callback(self, iteration, trials, trial, *args, **info)
        finally:
            PROFILE.trial(trial.trial_id, recorder_s=time.perf_counter() - start)

    return timed


class TrialRecorder(Callback):
    """A Ray Tune callback that turns Tune's events into rows of trials.csv, the trials'
    files and progress lines, applied by ``sink``. Each event's time goes to ``--profile``."""

    def __init__(self, sink: RunFiles | Relay, ctx: TrialContext, choices: list[str], stopper: SearchStopper | None = None,
                 resources=None):
        self.sink, self.ctx, self.choices, self.stopper, self.resources = sink, ctx, choices, stopper, resources

    def _row(self, trial, status: str, error: str = "") -> dict:
        result = dict(trial.last_result or {})
        config = {k: trial.config.get(k) for k in self.choices}
        error = error or result.get("error", "")
        if "arch" not in result:
            try:
                result["arch"] = resolve_arch(self.ctx, config).text
            except SpaceError as err:
                error = error or str(err)
        row = {"trial_id": trial.trial_id, **config, **result, "status": status, "error": error,
               "source": "trained"}
        if status == "infeasible":
            row["val_accuracy"] = row["test_accuracy"] = None
            row["train_seconds"] = None
        return row

    @_timed
    def on_trial_start(self, iteration, trials, trial, **info):
        PROFILE.trial(trial.trial_id, started=time.time())
        config = {k: trial.config.get(k) for k in self.choices}
        self.sink.started(trial.trial_id, config, self.resources.gpu_for(config) if self.resources else 0.0)

    @_timed
    def on_trial_result(self, iteration, trials, trial, result, **info):
        files = result.pop(ARTIFACTS, None)  # Tune keeps the result we leave: no bytes in its state
        times = result.pop(TIMES, None)
        if times:
            PROFILE.trial(trial.trial_id, **times, result=time.time())
        if files:
            self.sink.files(trial.trial_id, files)
        if result.get("status") == "running":
            self.sink.epoch(trial.trial_id, {k: result.get(k) for k in EPOCH_METRICS})
            if result.get("done"):
                result["status"] = "pruned"  # the scheduler stopped it before its last epoch

    @_timed
    def on_trial_complete(self, iteration, trials, trial, **info):
        PROFILE.trial(trial.trial_id, ended=time.time())
        status = (trial.last_result or {}).get("status", "failed")
        self.sink.record(self._row(trial, "pruned" if status == "running" else status))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.sink.retried(trial.trial_id, trial.run_metadata.num_failures, _error_line(trial))

    @_timed
    def on_trial_error(self, iteration, trials, trial, **info):
        if self.stopper is not None and self.stopper.reason == "interrupted":
            return  # killed by the Ctrl-C: unfinished, --resume runs it again
        self.sink.record(self._row(trial, "failed", _error_line(trial)))
