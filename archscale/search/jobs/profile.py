"""Where the wall time of ``archscale run`` goes: ``archscale run --profile`` prints this
table and writes it as ``RUN_DIR/profile.json``.

The driver marks its phases (:func:`phase`); each trial sends, with its last result, the
wall-clock times at which its worker entered the trial, started and ended training and
reported (:data:`TIMES`); the recorder adds when the driver saw the trial start, its last
result and its end, and how long the recorder itself took. Times are ``time.time()`` of one
machine's clock: on a cluster, a worker on another node compares its clock with the
driver's (the per-trial split is then only as good as the clocks agree).

    interpreter            process start -> archscale's command line runs
    imports and spec       the command's modules, the spec read and checked
    data                   the dataset read and split
    feasibility            the configuration checked against the budgets (one model built)
    ray start              Ray started (or joined)
    tune setup             the trainable, its data in Ray's object store
    first trial            from the start of the search to the first trial training: when the
                           worker process that ran it started, when it had imported torch and
                           archscale (preloaded: before the trial came), when the trial entered it
    search                 Tune's run, first trial to last result
    finish                 front, plots, export and the printed front

Nothing here imports torch, ray or optuna.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PROFILE_FILE = "profile.json"
TIMES = "times"  # key of a trial's last result: its worker-side timestamps (popped by the recorder)
FIRST_TRIAL = ("worker_start", "imported", "entered", "train_start")  # a trial's stamps on its way to training


def process_start() -> float:
    """When this process started (``time.time()`` seconds): from ``/proc`` on Linux, else now."""
    try:
        ticks = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        since_boot = ticks / os.sysconf("SC_CLK_TCK")
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + since_boot
    except (OSError, ValueError, IndexError):
        return time.time()


class Profile:
    """Phases of the driver (name -> seconds, in order) and the timestamps of each trial."""

    def __init__(self) -> None:
        self.start = process_start()
        self.phases: dict[str, float] = {}
        self.trials: dict[str, dict[str, float]] = {}
        self.concurrency = 1
        self.marks: dict[str, float] = {}  # name -> time.time() of a moment of the driver

    def reset(self) -> None:
        """Forget the phases and trials of an earlier command in this process."""
        self.phases.clear()
        self.trials.clear()
        self.marks.clear()

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def trial(self, trial_id: str, **stamps: float) -> None:
        """Record timestamps (``time.time()``) or durations (keys ending ``_s``, added up) of one trial."""
        row = self.trials.setdefault(str(trial_id), {})
        for key, value in stamps.items():
            row[key] = row.get(key, 0.0) + value if key.endswith("_s") else value

    def summary(self) -> dict[str, Any]:
        """The phases, time to the first trial and the mean per-trial split, as plain numbers."""
        complete = [t for t in self.trials.values() if {"started", "entered", "train_start", "train_end",
                                                        "reported", "result", "ended"} <= t.keys()]
        per_trial: dict[str, float] = {}
        if complete:
            def mean(f) -> float:
                return statistics.fmean(f(t) for t in complete)

            per_trial = {
                "actor": mean(lambda t: t["entered"] - t["started"]),  # Tune's start -> the worker runs the trial
                "config": mean(lambda t: t["train_start"] - t["entered"]),  # data, model built, MACs and latency
                "train": mean(lambda t: t["train_end"] - t["train_start"]),
                "report": mean(lambda t: t["reported"] - t["train_end"]),  # weights and result.json packed
                "result transfer": mean(lambda t: t["result"] - t["reported"]),  # worker -> driver's callback
                "recorder": mean(lambda t: t.get("recorder_s", 0.0)),  # the driver's callbacks, this trial
                "end": mean(lambda t: t["ended"] - t["result"]),  # last result -> Tune ends the trial
            }
        first = min((t["train_start"] for t in self.trials.values() if "train_start" in t), default=None)
        earliest = min((t for t in self.trials.values() if "train_start" in t), key=lambda t: t["train_start"],
                       default={})
        # the first trial's way, in seconds since the process started
        first_trial = {name: at - self.start for name, at in [("search begins", self.marks.get("search")),
                                                              *((k, earliest.get(k)) for k in FIRST_TRIAL)]
                       if at is not None}
        starts = [t["started"] for t in self.trials.values() if "started" in t]
        ends = [t["ended"] for t in self.trials.values() if "ended" in t]
        busy = sum(t["ended"] - t["started"] for t in self.trials.values() if {"started", "ended"} <= t.keys())
        train = sum(t["train_end"] - t["train_start"] for t in complete)
        out: dict[str, Any] = {
            "phases": dict(self.phases),
            "time_to_first_trial": first - self.start if first is not None else None,
            "first_trial": first_trial,
            "trials": len(self.trials),
            "trials_timed": len(complete),
            "per_trial": per_trial,
        }
        if starts and ends:
            span = max(ends) - min(starts)
            # slot time not spent inside a trial: Tune between one trial's end and the next one's start
            out["idle_slot_per_trial"] = max(0.0, span * self.concurrency - busy) / len(ends)
            out["overhead_per_trial"] = (span * self.concurrency - train) / max(1, len(complete))
        out["total"] = time.time() - self.start
        return out

    def write(self, run_dir: Path) -> Path:
        path = Path(run_dir) / PROFILE_FILE
        path.write_text(json.dumps({**self.summary(), "raw_trials": self.trials}, indent=1))
        return path


PROFILE = Profile()  # this process's; `archscale run --profile` prints and writes it


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the time spent inside the ``with`` block to the phase ``name``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        PROFILE.add(name, time.perf_counter() - start)


def format_table(summary: dict[str, Any]) -> str:
    """The summary of :meth:`Profile.summary` as the table ``--profile`` prints."""
    lines = [f"{'phase':<28} {'seconds':>8}"]
    for name, seconds in summary["phases"].items():
        lines.append(f"{name:<28} {seconds:>8.2f}")
    if summary.get("time_to_first_trial") is not None:
        lines.append(f"{'time to first trial':<28} {summary['time_to_first_trial']:>8.2f}  (process start -> training)")
    if summary.get("first_trial"):
        lines.append("the first trial, seconds after the process started:")
        for name, at in summary["first_trial"].items():
            lines.append(f"  {name.replace('_', ' '):<26} {at:>8.2f}")
    if summary["per_trial"]:
        lines.append(f"per trial, mean of {summary['trials_timed']}:")
        for name, seconds in summary["per_trial"].items():
            lines.append(f"  {name:<26} {seconds:>8.3f}")
    if "idle_slot_per_trial" in summary:
        lines.append(f"  {'idle slot between trials':<26} {summary['idle_slot_per_trial']:>8.3f}")
        lines.append(f"  {'overhead (slot - training)':<26} {summary['overhead_per_trial']:>8.3f}")
    lines.append(f"{'total so far':<28} {summary['total']:>8.2f}")
    return "\n".join(lines)
