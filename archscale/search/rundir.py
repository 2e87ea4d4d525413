"""The run directory as ``--resume`` sees it: whether a command may write there, what was
recorded, and what started but never finished."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from archscale.analysis.records import TRIALS_FILE, drop_partial_row, read_trials
from archscale.search.recorder import STARTED_FILE
from archscale.search.spec import Spec, SpecError, parse_spec

# How a search runs, not what it searches: these may change on --resume (a new time budget,
# another cluster, more trials at once).
EXECUTION_FIELDS = ("time_budget_s", "address", "max_concurrent", "resources_per_trial", "max_failures")


def default_run_dir(spec: Spec) -> Path:
    return Path("runs") / spec.name


def prepare_run_dir(spec: Spec, out: str | Path | None, resume: bool) -> Path:
    """The run directory of ``spec``, checked against ``--resume`` before anything is written."""
    run_dir = Path(out) if out else default_run_dir(spec)
    spec_file = run_dir / "spec.yaml"
    if resume:
        if not spec_file.is_file():
            raise SpecError(f"--resume: {run_dir} holds no run (no spec.yaml); start one without --resume")
        old = _without_execution(resolved(yaml.safe_load(spec_file.read_text()), spec_file))
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
    written take their defaults, as they would in a fresh spec."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: not a spec (a mapping of keys)")
    try:
        return parse_spec(raw).model_dump(mode="json")
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None


def _without_execution(raw: Any) -> Any:
    if not isinstance(raw, dict) or not isinstance(raw.get("search"), dict):
        return raw
    return {**raw, "search": {k: v for k, v in raw["search"].items() if k not in EXECUTION_FIELDS}}


def first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """The dotted key where two spec dicts first differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
    return f"{prefix or 'spec'} ({a!r} in the run, {b!r} now)"


def recorded_trials(run_dir: Path) -> pd.DataFrame:
    """The rows of ``trials.csv`` (empty when there is none); a row cut by a kill is dropped first."""
    path = Path(run_dir) / TRIALS_FILE
    if not path.is_file():
        return pd.DataFrame()
    drop_partial_row(path)
    return read_trials(run_dir)


def unfinished(run_dir: Path, recorded: pd.DataFrame, stage: int | None = None) -> list[dict]:
    """Configurations of trials that started (``started.jsonl``) but were never recorded
    (with ``stage``: those of that stage of a two-stage run), each once."""
    path = Path(run_dir) / STARTED_FILE
    if not path.is_file():
        return []
    done = set(recorded["trial_id"].astype(str)) if not recorded.empty else set()
    pending: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
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
