"""The writer thread every tracker shares, and the set of them a search feeds."""

from __future__ import annotations

import json
import math
import numbers
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from archscale.analysis.export import trial_dir
from archscale.analysis.records import warn_line

Curve = dict[int, float]  # epoch -> validation accuracy
EPOCH_SCALARS = ("train_loss", "train_accuracy", "val_accuracy", "lr", "epoch_seconds")  # what a tracker plots per epoch


class QueuedWriter:
    """A tracker fed from the driver: :meth:`epoch` (one epoch's metrics while a trial runs)
    and :meth:`add` (a row of trials.csv once the trial is recorded) queue and return at
    once; one thread calls :meth:`open`, then :meth:`on_epoch` / :meth:`on_add` for each item,
    then :meth:`shut`. A write that fails is a warning (``warn``) naming :attr:`where`, never
    the end of the search; when :meth:`open` fails, the writer drops what it is given.
    ``seconds``: the writer thread's time spent writing (not the search's)."""

    where = "the tracker"  # named in warnings

    def __init__(self, run_dir: str | Path, warn: Callable[[str], None] = warn_line):
        self.run_dir, self.warn = Path(run_dir), warn
        self.written = 0  # trials written by this writer
        self.seconds = 0.0
        self._queue: queue.Queue | None = queue.Queue()
        self._thread: threading.Thread | None = threading.Thread(target=self._loop, name=f"archscale {self.where}",
                                                                 daemon=True)
        self._thread.start()

    # what the driver calls

    def epoch(self, trial_id: str, metrics: Mapping[str, Any]) -> None:
        """Queue one epoch's metrics of a running trial (``epochs`` is the epoch)."""
        if self._queue is not None:
            self._queue.put(("on_epoch", (str(trial_id), dict(metrics))))

    def add(self, row: Mapping[str, Any], curve: Curve | None = None) -> None:
        """Queue one recorded row (``curve``: epoch -> val_accuracy seen while it ran)."""
        if self._queue is not None:
            self._queue.put(("on_add", (dict(row), dict(curve or {}))))

    def close(self) -> None:
        """Write every queued item, then end the writer thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def __getstate__(self) -> dict:  # Ray Tune pickles its callbacks and searcher into its experiment state
        return {**self.__dict__, "_queue": None, "_thread": None}  # a copy that writes nothing

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # what a tracker defines (run on the writer thread)

    def open(self) -> None:
        """Make ready to write (and write what a resumed run lacks)."""

    def on_epoch(self, trial_id: str, metrics: dict) -> None:
        """Write one epoch of a running trial."""

    def on_add(self, row: dict, curve: Curve) -> None:
        """Write one recorded trial."""

    def shut(self) -> None:
        """Release what :meth:`open` took."""

    # the thread

    def _loop(self) -> None:
        try:
            self.open()
            ready = True
        except Exception as err:  # noqa: BLE001: a tracker is a view of the run, never a reason to stop it
            self._warn(f"{self.where} cannot be written ({type(err).__name__}: {err}); the search goes on without it")
            ready = False
        while (item := self._queue.get()) is not None:
            if not ready:
                continue
            name, args = item
            start = time.perf_counter()
            try:
                getattr(self, name)(*args)
            except Exception as err:  # noqa: BLE001: one trial left out, said once each
                trial_id = args[0] if name == "on_epoch" else args[0].get("trial_id")
                self._warn(f"trial {trial_id} not written to {self.where}: {type(err).__name__}: {err}")
            self.seconds += time.perf_counter() - start
        try:
            self.shut()
        except Exception as err:  # noqa: BLE001
            self._warn(f"{self.where} not closed cleanly: {type(err).__name__}: {err}")

    def _warn(self, message: str) -> None:
        try:
            self.warn(message)
        except Exception:  # noqa: BLE001: a closed stream must not end the writer
            pass


class Watchers:
    """The writers a search feeds, called as one (what the recorder holds)."""

    def __init__(self, writers: Iterable[QueuedWriter]):
        self.writers = list(writers)

    def epoch(self, trial_id: str, metrics: Mapping[str, Any]) -> None:
        for w in self.writers:
            w.epoch(trial_id, metrics)

    def add(self, row: Mapping[str, Any], curve: Curve | None = None) -> None:
        for w in self.writers:
            w.add(row, curve)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def trial_history(run_dir: str | Path, trial_id: str) -> list[dict]:
    """The per-epoch metrics of ``trials/<id>/result.json`` (``epoch`` set on each; empty without one)."""
    path = trial_dir(run_dir, trial_id) / "result.json"
    try:
        history = json.loads(path.read_text()).get("history") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [{**h, "epoch": int(h.get("epoch", i))} for i, h in enumerate(history, start=1) if isinstance(h, dict)]


def epochs_of(run_dir: str | Path, row: Mapping[str, Any], curve: Curve) -> dict[int, dict]:
    """Epoch -> metrics of a recorded trial: its result.json's history, else the accuracies the
    recorder saw (``curve``), else its final validation accuracy at its last epoch (a row from
    the results store, without a history)."""
    epochs = {h["epoch"]: h for h in trial_history(run_dir, str(row["trial_id"]))}
    for epoch, value in curve.items():
        epochs.setdefault(int(epoch), {"val_accuracy": value})
    if not epochs and row.get("status") == "completed" and finite(row.get("val_accuracy")):
        last = row.get("epochs")
        epochs[int(last) if finite(last) and last >= 1 else 1] = {"val_accuracy": float(row["val_accuracy"])}
    return dict(sorted(epochs.items()))


def finite(value: Any) -> bool:
    """A finite number (not a bool, None or NaN): a figure a tracker can write."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
