"""The run directory as ``--resume`` sees it: whether a command may write there, what was
recorded, and what started but never finished."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO

from archscale.files import read_bytes
from archscale.analysis.records import (REJECTED_SUFFIX, STARTED_FILE, TRIALS_FILE, drop_partial_row, read_spec,
                                        read_trials, repair_trials, warn_line)
from archscale.spec import Spec, SpecError, parse_spec
from archscale.spec.model import section_of

if TYPE_CHECKING:
    import pandas as pd  # imported by the functions that make a DataFrame: checking a run directory needs none


# How a search runs, not what it searches: these may change on --resume (a new time budget,
# another cluster, more trials at once, a results store).
EXECUTION_FIELDS = ("time_budget_s", "address", "resource_wait_s", "max_concurrent", "resources_per_trial",
                    "max_failures", "store")
DATA_EXECUTION_FIELDS = ("root",)  # where data is downloaded and cached: may change on --resume too


def planned_total(spec: Spec) -> int:
    """The trials a one-stage search runs: ``num_trials``, or the grid's size when that is smaller."""
    total = spec.search.num_trials
    if spec.search.sampler == "grid":
        total = min(total, int(math.prod(d.size for d in spec.searched())))
    return total


def looks_complete(spec: Spec, run_dir: str | Path) -> bool:
    """A quick look, before pandas or Ray is loaded, at whether the one-stage run being resumed
    in ``run_dir`` has recorded all its trials: rows of ``trials.csv`` (those rejected before
    dispatch not counted) against :func:`planned_total`. ``--resume`` starts Ray early unless
    this says so; the search itself decides from the checked records. False for a two-stage
    run, and for a file it cannot read."""
    if spec.search.stages is not None:
        return False
    try:
        with open(Path(run_dir) / TRIALS_FILE, newline="") as f:
            done = sum(1 for row in csv.DictReader(f) if not str(row.get("trial_id") or "").endswith(REJECTED_SUFFIX))
    except (OSError, csv.Error, UnicodeDecodeError):
        return False
    return done >= planned_total(spec)


def default_run_dir(spec: Spec) -> Path:
    return Path("runs") / spec.name


def as_run_began(spec: Spec, out: str | Path | None) -> tuple[Spec, str]:
    """The spec a resumed run goes on with, and a line saying what it kept (empty if nothing):
    a setting that ``spec`` leaves to a default chosen from the rest of it (``search.prescreen``)
    is taken from the run's ``spec.yaml`` where the two differ, so that the same spec file resumes
    a run that began before the default changed, as it began. What the spec sets is left alone."""
    run_dir = Path(out) if out else default_run_dir(spec)
    spec_file = run_dir / "spec.yaml"
    if not spec._defaulted or not spec_file.is_file():
        return spec, ""
    old, new = resolved(read_spec(run_dir), spec_file), spec.to_dict()
    kept = []
    for key in spec._defaulted:
        (was, leaf), (now, _) = section_of(old, key), section_of(new, key)
        if was[leaf] != now[leaf]:
            now[leaf] = was[leaf]
            kept.append(f"{key}: {json.dumps(was[leaf])}")
    if not kept:
        return spec, ""
    return parse_spec(new), (f"resuming as the run began with {', '.join(kept)} (the spec leaves it to the default, "
                             "which has changed since); set it in the spec to change it")


def prepare_run_dir(spec: Spec, out: str | Path | None, resume: bool) -> Path:
    """The run directory of ``spec``, checked against ``--resume`` before anything is written."""
    run_dir = Path(out) if out else default_run_dir(spec)
    spec_file = run_dir / "spec.yaml"
    if resume:
        if not spec_file.is_file():
            raise SpecError(f"--resume: {run_dir} holds no run (no spec.yaml); start one without --resume")
        old = _without_execution(resolved(read_spec(run_dir), spec_file))
        new = _without_execution(spec.model_dump(mode="json"))
        if old != new:
            key = first_difference(old, new)
            raise SpecError(f"--resume: the spec differs from the run's spec.yaml at {key}; "
                            f"resume with the same spec, or use --out DIR for a new run")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SpecError(f"{run_dir} already holds a run; use --resume to continue it, or --out DIR for a new run")
    return run_dir


def resolved(raw: Any, source: Path) -> dict:
    """A run's spec.yaml validated by today's spec model: fields added since the run was
    written take their defaults, as they would in a fresh spec (but see :func:`read_spec`)."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: not a spec (a mapping of keys)")
    try:
        return parse_spec(raw).model_dump(mode="json")
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None


def _without_execution(raw: Any) -> Any:
    if not isinstance(raw, dict) or not isinstance(raw.get("search"), dict):
        return raw
    data = {k: v for k, v in raw["data"].items() if k not in DATA_EXECUTION_FIELDS} if isinstance(
        raw.get("data"), dict) else raw.get("data")
    return {**raw, "data": data, "search": {k: v for k, v in raw["search"].items() if k not in EXECUTION_FIELDS}}


def first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """The dotted key where two spec dicts first differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
    return f"{prefix or 'spec'} ({a!r} in the run, {b!r} now)"


def recorded_trials(run_dir: Path) -> pd.DataFrame:
    """The intact rows of ``trials.csv`` (empty when there is none). Damaged lines are left
    out, with a warning; :func:`repair_records` moves them aside before the search appends."""
    import pandas as pd

    path = Path(run_dir) / TRIALS_FILE
    if not path.exists():
        return pd.DataFrame()
    return read_trials(run_dir)


def repair_records(run_dir: Path, out: TextIO) -> None:
    """Before a resumed search appends to ``trials.csv``: move its damaged lines aside
    (``trials.csv.damaged``) and say which; a last row cut by a kill is dropped."""
    drop_partial_row(Path(run_dir) / TRIALS_FILE)
    moved = repair_trials(run_dir)
    if moved:
        print(f"archscale: {moved}", file=out, flush=True)


def started_trials(run_dir: Path, warn: Callable[[str], None] = warn_line) -> list[dict]:
    """The lines of ``started.jsonl`` (each ``{"trial_id", "config"[, "stage"]}``), in order.
    A last line cut by a kill is skipped silently; other damaged lines with one warning."""
    path = Path(run_dir) / STARTED_FILE
    if not path.exists():
        return []
    data = read_bytes(path, "started.jsonl written by archscale (one JSON object a line)")
    lines = data.splitlines(keepends=True)
    items, damaged = [], []
    for number, raw in enumerate(lines, start=1):
        try:
            item = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            item = None
        if (isinstance(item, dict) and isinstance(item.get("trial_id"), (str, int))
                and isinstance(item.get("config"), dict)):
            items.append(item)
        elif raw.strip() and (raw.endswith(b"\n") or number < len(lines)):
            damaged.append(number)
    if damaged:
        shown = ", ".join(map(str, damaged[:10])) + (", ..." if len(damaged) > 10 else "")
        warn(f"{path}: skipped {len(damaged)} damaged line{'s' if len(damaged) != 1 else ''} ({shown}); expected "
             "one JSON object a line with trial_id and config: those trials, if unfinished, cannot be rerun")
    return items


def unfinished(run_dir: Path, recorded: pd.DataFrame, stage: int | None = None) -> list[dict]:
    """Configurations of trials that started (``started.jsonl``) but were never recorded
    (with ``stage``: those of that stage of a two-stage run), each once."""
    done = set(recorded["trial_id"].astype(str)) if not recorded.empty else set()
    pending: dict[str, dict] = {}
    for item in started_trials(run_dir):
        if str(item["trial_id"]) not in done and (stage is None or item.get("stage") == stage):
            pending[str(item["trial_id"])] = item["config"]
    # once each: a configuration rerun by an earlier --resume and cut short again is there twice
    unique = {json.dumps(config, sort_keys=True, default=str): config for config in pending.values()}
    return list(unique.values())


def best_recorded(recorded: pd.DataFrame, objective: tuple[str, str]) -> float | None:
    """The best recorded value of a completed trial under ``objective``, or None."""
    metric, mode = objective
    if recorded.empty or metric not in recorded:
        return None
    values = recorded.loc[recorded["status"] == "completed", metric].dropna()
    if values.empty:
        return None
    return float(values.max() if mode == "max" else values.min())


def undo_unstarted(run_dir: Path, existed: bool) -> None:
    """After a new run failed before any trial started (no ``trials.csv``, no ``started.jsonl``):
    remove what it wrote (``spec.yaml``, Tune's state), so that a plain rerun is not refused
    as "already holds a run". ``existed``: the folder was there (empty) before the run."""
    if (run_dir / "trials.csv").exists() or (run_dir / STARTED_FILE).exists() or not run_dir.is_dir():
        return
    if not existed:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for entry in run_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
