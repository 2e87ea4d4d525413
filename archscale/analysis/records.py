"""The run directory's ``trials.csv``: written a row at a time as trials end, read as a DataFrame.

Columns: ``trial_id``, ``stage`` (staged runs only: 1 or 2), ``status`` (completed |
pruned | failed | infeasible), one column per searched choice, then
:data:`METRIC_COLUMNS`, ``error`` and ``arch`` (the architecture's text form).
``macs`` counts multiply-adds per image (fvcore); ``memory_source`` says whether
``memory_mb`` was measured (``cuda_peak``) or estimated (``cpu_estimate``);
``latency_ms`` is the median inference time of one image, ``latency_batch_ms`` of one
training-size batch, on the trial's device.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

STATUSES = ("completed", "pruned", "failed", "infeasible")
METRIC_COLUMNS = ("params", "macs", "memory_mb", "memory_source", "latency_ms", "latency_batch_ms",
                  "val_accuracy", "test_accuracy", "train_seconds", "epochs")
TRIALS_FILE = "trials.csv"
TRIALS_DIR = "trials"  # trials/<trial_id>/{weights.pt,result.json}


def columns_for(choices: Iterable[str], staged: bool = False) -> list[str]:
    return ["trial_id", *(["stage"] if staged else []), "status", *choices, *METRIC_COLUMNS, "error", "arch"]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def drop_partial_row(path: str | Path) -> bool:
    """Cut a last row that a killed writer left without its newline; True if one was cut."""
    path = Path(path)
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    with path.open("r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)
    return True


class TrialsCSV:
    """Append-only writer of ``trials.csv``; a trial id already present is never written twice.
    A row cut short by a kill (no newline) is dropped when the file is opened again."""

    def __init__(self, path: str | Path, choices: Iterable[str], staged: bool = False):
        self.path = Path(path)
        self.columns = columns_for(choices, staged)
        drop_partial_row(self.path)
        if self.path.is_file():  # appending to an existing file: keep its header (an older run's columns)
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                self.columns = header
        self._seen = set(self.trial_ids())

    def trial_ids(self) -> list[str]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return [row["trial_id"] for row in csv.DictReader(f)]

    def append(self, row: Mapping) -> bool:
        """Write one row (flushed and synced to disk); return False if the id was already written."""
        trial_id = str(row["trial_id"])
        if trial_id in self._seen:
            return False
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.columns)
            writer.writerow([_cell(row.get(c)) for c in self.columns])
            f.flush()
            os.fsync(f.fileno())
        self._seen.add(trial_id)
        return True


def read_trials(run_dir: str | Path) -> pd.DataFrame:
    """``trials.csv`` of a run directory as a DataFrame (``trial_id`` as str)."""
    path = Path(run_dir) / TRIALS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    if path.stat().st_size == 0:  # killed before its header was written
        return pd.DataFrame(columns=["trial_id", "status"])
    return pd.read_csv(path, dtype={"trial_id": str, "error": str, "arch": str}, keep_default_na=True)


def read_spec(run_dir: str | Path) -> dict:
    """The run's resolved ``spec.yaml`` as a plain dict (validated by ``search.spec`` when run)."""
    import yaml

    path = Path(run_dir) / "spec.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    return yaml.safe_load(path.read_text()) or {}

