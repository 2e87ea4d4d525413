"""The run directory's ``trials.csv``: written a row at a time as trials end, read as a DataFrame.

Columns: ``trial_id``, ``stage`` (staged runs only: 1 or 2), ``status`` (completed |
pruned | failed | infeasible), one column per searched choice, then
:data:`METRIC_COLUMNS`, ``error`` and ``arch`` (the architecture's text form).
``macs`` counts multiply-adds per image (fvcore); ``memory_source`` says whether
``memory_mb`` was measured (``cuda_peak``) or estimated (``cpu_estimate``).

A file written with other columns (an older version, say) keeps its own header when
rows are appended to it, and reads back whatever columns it has.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

STATUSES = ("completed", "pruned", "failed", "infeasible")
METRIC_COLUMNS = ("params", "macs", "memory_mb", "memory_source", "val_accuracy", "test_accuracy", "train_seconds", "epochs")
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


class TrialsCSV:
    """Append-only writer of ``trials.csv``; a trial id already present is never written twice."""

    def __init__(self, path: str | Path, choices: Iterable[str], staged: bool = False):
        self.path = Path(path)
        self.columns = self._header() or columns_for(choices, staged)
        self._seen = set(self.trial_ids())

    def _header(self) -> list[str]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return next(csv.reader(f), [])

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
        new = not self.path.is_file()
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
    return pd.read_csv(path, dtype={"trial_id": str, "error": str, "arch": str}, keep_default_na=True)
