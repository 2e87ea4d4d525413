"""Where a run stands, read from its directory alone (``archscale status RUN_DIR``, from
another terminal): trials finished, running and left, the best so far and the front, the time
spent and an estimate of what is left, and whether the run is still alive.

Liveness: an invocation of ``archscale run`` with trials to run writes ``RUN/process.json``
when it starts (:func:`mark_running`: its pid, host, start time and how far the run was then)
and writes its end into it when it returns or raises (:func:`mark_ended`; both through
:func:`running`). A run whose file has no end is
alive when its pid exists on this host (``os.kill(pid, 0)``), killed when it does not; on
another host it cannot be told from here, and says so. A run written before this file existed
is ``unknown``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from archscale.analysis.records import REJECTED_SUFFIX, STARTED_FILE, TRIALS_FILE

if TYPE_CHECKING:
    import pandas as pd

    from archscale.spec import Spec

PROCESS_FILE = "process.json"  # {"pid", "host", "started", "finished_before", "started_before", "ended", "how"}
STATES = ("running", "finished", "stopped", "killed", "elsewhere", "unknown")


# --------------------------------------------------------------------------- written by a run


def _lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_bytes().splitlines() if line.strip())
    except OSError:
        return 0


def mark_running(run_dir: str | Path) -> float:
    """``RUN/process.json`` for this process, now (the folder created when missing); returns
    its start time, which :func:`mark_ended` takes."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "finished_before": max(0, _lines(run_dir / TRIALS_FILE) - 1),
            "started_before": _lines(run_dir / STARTED_FILE), "ended": None, "how": None}
    _write(run_dir, info)
    return info["started"]


def mark_ended(run_dir: str | Path, how: str, started: float) -> None:
    """Write the end (``how``: finished, stopped, interrupted, failed) of the invocation that
    :func:`mark_running` marked at ``started`` into ``RUN/process.json``, unless another has
    marked it since (or the folder is gone)."""
    info = read_process(run_dir)
    if info is None or info.get("pid") != os.getpid() or info.get("started") != started:
        return
    _write(Path(run_dir), {**info, "ended": time.time(), "how": how})


@contextmanager
def running(run_dir: str | Path, spec: Spec) -> Iterator[None]:
    """``RUN/process.json`` names this process while the block runs, and says how it ended
    (:func:`ended_how`, ``interrupted`` on Ctrl-C, ``failed`` on an error)."""
    started = mark_running(run_dir)
    how = "failed"
    try:
        yield
        how = ended_how(run_dir, spec)
    except KeyboardInterrupt:
        how = "interrupted"
        raise
    finally:
        mark_ended(run_dir, how, started)


def ended_how(run_dir: str | Path, spec: Spec) -> str:
    """``finished`` when the run recorded every trial it plans (a two-stage run: when it
    returned), else ``stopped`` (its time budget)."""
    total = planned(spec)
    try:
        with open(Path(run_dir) / TRIALS_FILE, newline="") as f:
            done = sum(1 for row in csv.DictReader(f) if not str(row.get("trial_id") or "").endswith(REJECTED_SUFFIX))
    except (OSError, csv.Error, UnicodeDecodeError):
        done = 0
    return "finished" if total is None or done >= total else "stopped"


def _write(run_dir: Path, info: dict) -> None:
    tmp = run_dir / f".{PROCESS_FILE}.tmp"
    tmp.write_text(json.dumps(info))
    tmp.replace(run_dir / PROCESS_FILE)


def read_process(run_dir: str | Path) -> dict | None:
    """``RUN/process.json`` as written, or None (none, or not readable as one)."""
    try:
        info = json.loads((Path(run_dir) / PROCESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def liveness(info: dict | None) -> str:
    """One of :data:`STATES` for a run's process.json."""
    if info is None:
        return "unknown"
    if info.get("ended") is not None:
        return "finished" if info.get("how") == "finished" else "stopped"
    if info.get("host") != socket.gethostname():
        return "elsewhere"
    return "running" if alive(info["pid"]) else "killed"


# --------------------------------------------------------------------------- read by status


@dataclass
class Status:
    """A run's standing (:func:`run_status`); ``str()`` is what ``archscale status`` prints."""

    path: Path
    state: str  # one of STATES
    finished: int  # trials recorded that count toward the total (over-budget draws not)
    counts: dict[str, int]  # recorded rows by status
    running: list[str]  # trial ids started by this invocation with no row yet (unfinished when not alive)
    total: int | None  # trials the run plans (None: a two-stage run)
    elapsed_s: float | None  # this invocation's time (to its end, or its last record when killed)
    eta_s: float | None  # what is left at this invocation's pace, while it runs
    best: dict | None  # the best completed row under the first objective
    front: pd.DataFrame | None = None
    objectives: Sequence[tuple[str, str]] = ()
    process: dict = field(default_factory=dict)

    @property
    def left(self) -> int | None:
        return None if self.total is None else max(0, self.total - self.finished - len(self.running))

    def __str__(self) -> str:
        return format_status(self)


def planned(spec: Spec) -> int | None:
    """The trials a one-stage run plans: ``num_trials``, or a smaller grid's size; None for two stages."""
    if spec.search.stages is not None:
        return None
    total = spec.search.num_trials
    if spec.search.sampler == "grid":
        total = min(total, int(math.prod(d.size for d in spec.searched())))
    return total


def _started_ids(run_dir: Path, skip: int) -> list[str]:
    """Trial ids of ``started.jsonl`` after its first ``skip`` lines (damaged lines passed over)."""
    try:
        lines = [line for line in (run_dir / STARTED_FILE).read_bytes().splitlines() if line.strip()]
    except OSError:
        return []
    ids = []
    for raw in lines[skip:]:
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if isinstance(item, dict) and "trial_id" in item:
            ids.append(str(item["trial_id"]))
    return ids


def _last_activity(run_dir: Path) -> float | None:
    times = [p.stat().st_mtime for p in (run_dir / TRIALS_FILE, run_dir / STARTED_FILE) if p.is_file()]
    return max(times, default=None)


def run_status(run_dir: str | Path, spec: Spec, trials: pd.DataFrame, front: pd.DataFrame | None,
               best: Any = None) -> Status:
    """The :class:`Status` of the run in ``run_dir`` from its spec, its trials (trials.csv), its
    front and best row, ``process.json`` and ``started.jsonl``."""
    run_dir = Path(run_dir)
    info = read_process(run_dir)
    state = liveness(info)
    ids = set(trials["trial_id"].astype(str)) if len(trials) else set()
    finished = sum(1 for i in ids if not i.endswith(REJECTED_SUFFIX))
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    running = [i for i in dict.fromkeys(_started_ids(run_dir, int((info or {}).get("started_before", 0))))
               if i not in ids]
    elapsed = eta = None
    if info is not None:
        end = {"running": time.time(), "elsewhere": time.time(), "killed": _last_activity(run_dir)}.get(
            state, info.get("ended"))
        elapsed = max(0.0, (end or info["started"]) - info["started"])
        new = finished - int(info.get("finished_before", 0))
        total = planned(spec)
        if state in ("running", "elsewhere") and new > 0 and total is not None:
            eta = elapsed / new * max(0, total - finished)
            if spec.search.time_budget_s is not None:
                eta = min(eta, max(0.0, spec.search.time_budget_s - elapsed))
    best_row = None if best is None else {k: _plain(v) for k, v in dict(best).items()}
    return Status(run_dir, state, finished, {str(k): int(v) for k, v in counts.items()}, running, planned(spec),
                  elapsed, eta, best_row, front, list(spec.search.objective_pairs()), info or {})


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------- printed


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _alive_line(s: Status) -> str:
    p = s.process
    where = f"pid {p.get('pid')} on {p.get('host')}"
    return {"running": f"alive ({where})",
            "finished": "finished",
            "stopped": f"not running: it ended {p.get('how')} ({where}); `archscale run SPEC --out RUN --resume` "
                       "runs the rest",
            "killed": f"not running: {where} is gone without ending the run (killed?); `archscale run SPEC "
                      "--out RUN --resume` runs the rest",
            "elsewhere": f"cannot tell from this host ({where})",
            "unknown": "unknown (no process.json: a run from before archscale wrote one)"}[s.state]


def _metric(name: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{name}=-"
    if isinstance(value, float):
        return f"{name}={value:.4f}"
    return f"{name}={value}"


def format_status(s: Status) -> str:
    """The lines ``archscale status`` prints."""
    by_status = ", ".join(f"{n} {k}" for k, n in s.counts.items())
    of = f" of {s.total}" if s.total is not None else ""
    busy = "running" if s.state in ("running", "elsewhere") else "unfinished"
    lines = [f"run {s.path}: {_alive_line(s)}",
             f"trials: {s.finished}{of} finished" + (f" ({by_status})" if by_status else "")
             + f", {len(s.running)} {busy}" + (f" ({', '.join(s.running)})" if s.running else "")
             + (f", {s.left} left" if s.left is not None else "")]
    if s.elapsed_s is not None:
        eta = f", ~{_duration(s.eta_s)} left" if s.eta_s is not None else ""
        lines.append(f"time: {_duration(s.elapsed_s)} elapsed{eta}")
    if s.best is None:
        lines.append("best: none yet (no completed trial)")
    else:
        shown = dict.fromkeys([m for m, _ in s.objectives] + ["params", "macs", "test_accuracy"])
        lines.append(f"best: trial {s.best['trial_id']} " + " ".join(_metric(k, s.best.get(k)) for k in shown))
    if s.front is not None and len(s.front):
        cols = ["trial_id", *dict.fromkeys([m for m, _ in s.objectives] + ["params"])]
        table = s.front[[c for c in cols if c in s.front.columns]]
        lines.append(f"front under {', '.join(f'{m}:{d}' for m, d in s.objectives)} ({len(s.front)} trials):\n"
                     + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return "\n".join(lines)
