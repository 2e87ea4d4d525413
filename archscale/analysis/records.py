"""The run directory's ``trials.csv``: written a row at a time as trials end, read as a DataFrame.

Columns: ``trial_id``, ``stage`` (staged runs only: 1 or 2), ``status`` (completed |
pruned | failed | infeasible), one column per searched choice, then
:data:`METRIC_COLUMNS`, ``error``, ``arch`` (the architecture's text form) and ``source``
(``trained``: this run produced the row; ``store``: read from the results store, see
:mod:`archscale.search.configs.store`; absent in runs written before it existed).
``macs`` counts multiply-adds per image (fvcore); ``memory_source`` says whether
``memory_mb`` was measured (``cuda_peak``) or estimated (``cpu_estimate``);
``latency_ms`` is the median inference time of one image, ``latency_batch_ms`` of one
training-size batch, on the trial's device.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from archscale.files import FileError, decode, read_bytes, read_yaml_mapping

STATUSES = ("completed", "pruned", "failed", "infeasible")
METRIC_COLUMNS = ("params", "macs", "memory_mb", "memory_source", "latency_ms", "latency_batch_ms",
                  "val_accuracy", "test_accuracy", "train_seconds", "epochs")
TRIALS_FILE = "trials.csv"
TRIALS_DIR = "trials"  # trials/<trial_id>/{weights.pt,result.json}
STARTED_FILE = "started.jsonl"  # one line per trial started: {"trial_id", "config"}; --resume reruns the unfinished
REJECTED_SUFFIX = "_infeasible"  # trial ids of configurations rejected over budget before dispatch

if TYPE_CHECKING:
    import pandas as pd  # imported where a DataFrame is made: writing rows and checking a run directory need none


def proxy_columns(proxies: Iterable[str]) -> list[str]:
    """The columns of the proxies of ``search.proxies`` (the baselines params and macs are
    columns anyway): ``proxy_NAME`` (the value), ``proxy_NAME_s`` (its seconds), then
    ``proxy_errors`` (why a proxy has no value)."""
    names = [p for p in proxies if p not in ("params", "macs")]
    return [c for p in names for c in (f"proxy_{p}", f"proxy_{p}_s")] + (["proxy_errors"] if names else [])


def columns_for(choices: Iterable[str], staged: bool = False, extra: Iterable[str] = ()) -> list[str]:
    """The header of trials.csv; ``extra`` (:func:`proxy_columns`) follows the metrics."""
    return ["trial_id", *(["stage"] if staged else []), "status", *choices, *METRIC_COLUMNS, *extra, "error", "arch",
            "source"]


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

    def __init__(self, path: str | Path, choices: Iterable[str], staged: bool = False, extra: Iterable[str] = ()):
        self.path = Path(path)
        self.columns = columns_for(choices, staged, extra)
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


REQUIRED_COLUMNS = ("trial_id", "status", "arch")
_NUMERIC_COLUMNS = ("stage", *(c for c in METRIC_COLUMNS if c != "memory_source"))  # proxy_* columns: numbers too, not checked
DAMAGED_SUFFIX = ".damaged"  # trials.csv.damaged: lines --resume moved aside


@dataclass
class TrialsScan:
    """``trials.csv`` read line by line: the header, the intact rows (line number, text) and
    the damaged lines (line number, raw bytes, why)."""

    path: Path
    header: list[str]
    header_line: str
    rows: list[tuple[int, str]] = field(default_factory=list)
    damaged: list[tuple[int, bytes, str]] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """The intact rows as a DataFrame (``trial_id`` as str)."""
        import pandas as pd  # here: writing rows and checking a run directory (before Ray starts) need no pandas

        if not self.header:
            return pd.DataFrame(columns=["trial_id", "status"])
        text = self.header_line + "".join(line for _, line in self.rows)
        return pd.read_csv(io.StringIO(text), dtype={"trial_id": str, "error": str, "arch": str}, keep_default_na=True)

    def summary(self) -> str:
        """How many lines are damaged, which, and why the first is: "2 damaged lines (3, 7;
        line 3: ...)"."""
        numbers = [n for n, _, _ in self.damaged]
        if len(numbers) == 1:
            return f"1 damaged line (line {numbers[0]}: {self.damaged[0][2]})"
        shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
        return f"{len(numbers)} damaged lines ({shown}; line {numbers[0]}: {self.damaged[0][2]})"


def _row_problem(fields: list[str], header: list[str], seen: dict[str, int]) -> str | None:
    """Why a parsed row is not an intact trial row, or None."""
    if len(fields) != len(header):
        return f"{len(fields)} fields; expected {len(header)}, as in the header"
    row = dict(zip(header, fields))
    if not row["trial_id"]:
        return "no trial_id"
    if row["trial_id"] in seen:
        return f"trial {row['trial_id']} again (first on line {seen[row['trial_id']]})"
    if row["status"] not in STATUSES:
        return f"status {row['status'][:40]!r}; expected one of {', '.join(STATUSES)}"
    for column in _NUMERIC_COLUMNS:
        value = row.get(column, "")
        if value:
            try:
                float(value)
            except ValueError:
                return f"{column} {value[:40]!r} is not a number"
    return None


def scan_trials(path: str | Path) -> TrialsScan:
    """Read ``trials.csv`` line by line. Each line must be one row with the header's fields,
    a trial id not seen before, a known status and numbers where numbers go; the others are
    damaged. A file that cannot be read, or whose header is not a trials.csv header, raises
    FileError (nothing in it can be recovered)."""
    path = Path(path)
    expected = "a trials.csv written by archscale (a header, then one row per trial)"
    data = read_bytes(path, expected)
    if not data:  # killed before its header was written
        return TrialsScan(path, [], "")
    lines = data.splitlines(keepends=True)
    header_line = decode(lines[0], path, expected, line=1)
    header = next(csv.reader([header_line]), [])
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise FileError(f"{path} line 1: the header has no column {missing[0]!r}; expected {expected}, "
                        f"its header naming {', '.join(REQUIRED_COLUMNS)} among the columns")
    if not header_line.endswith("\n"):
        header_line += "\n"
    scan = TrialsScan(path, header, header_line)
    seen: dict[str, int] = {}
    i = 1
    while i < len(lines):
        number, raw = i + 1, lines[i]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            scan.damaged.append((number, raw, "not UTF-8 text"))
            i += 1
            continue
        end = i + 1
        while text.count('"') % 2 and end < len(lines):  # a quoted cell that holds a newline
            try:
                text += lines[end].decode("utf-8")
            except UnicodeDecodeError:
                break
            end += 1
        problem = "a NUL byte" if "\x00" in text else None
        if problem is None and text.count('"') % 2:
            problem = "an unclosed quote"
        if problem is None:
            try:
                fields = next(csv.reader(io.StringIO(text), strict=True), [])
            except csv.Error as err:
                fields, problem = [], f"not a CSV row ({err})"
            if problem is None and not text.strip():
                problem = "an empty line"
            problem = problem or _row_problem(fields, header, seen)
        if problem is None:
            if not text.endswith("\n"):
                text += "\n"
            scan.rows.append((number, text))
            seen[dict(zip(header, fields))["trial_id"]] = number
            i = end
        else:
            scan.damaged.append((number, raw, problem))
            i += 1
    return scan


_warned: set[tuple] = set()


def read_trials(run_dir: str | Path, warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """``trials.csv`` of a run directory as a DataFrame (``trial_id`` as str): its intact rows.
    Damaged lines are left out and said in one warning line (once per file and state).
    Raises FileError when the file is missing or unusable as a whole."""
    path = Path(run_dir) / TRIALS_FILE
    scan = scan_trials(path)
    if scan.damaged:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _warned:
            _warned.add(key)
            them = "it" if len(scan.damaged) == 1 else "them"
            (warn or warn_line)(f"{path}: {scan.summary()}; read the {len(scan.rows)} intact rows without {them} "
                                f"(`archscale run SPEC --out RUN --resume` moves {them} aside)")
    return scan.frame()


def repair_trials(run_dir: str | Path) -> str | None:
    """Move the damaged lines of ``trials.csv`` to ``trials.csv.damaged`` beside it (appended,
    as they were) and keep the intact rows; a sentence saying what moved, or None."""
    path = Path(run_dir) / TRIALS_FILE
    if not path.is_file():
        return None
    scan = scan_trials(path)
    if not scan.damaged:
        return None
    aside = path.with_name(path.name + DAMAGED_SUFFIX)
    with aside.open("ab") as f:  # first the damaged lines, safe, then the file without them
        for _, raw, _ in scan.damaged:
            f.write(raw if raw.endswith(b"\n") else raw + b"\n")
        f.flush()
        os.fsync(f.fileno())
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(scan.header_line + "".join(line for _, line in scan.rows))
    tmp.replace(path)
    return f"{path}: moved {scan.summary()} to {aside}; kept the {len(scan.rows)} intact rows"


def warn_line(message: str) -> None:
    """One warning line on stderr."""
    print(f"archscale: warning: {message}", file=sys.stderr, flush=True)


def read_spec(run_dir: str | Path) -> dict:
    """The run's resolved ``spec.yaml`` as a plain dict (validated by ``search.spec`` when run).
    A run's file holds every field, so one without ``search.prescreen`` was written before it
    existed, when it was off: it reads as ``null``, not as today's default."""
    raw = read_yaml_mapping(Path(run_dir) / "spec.yaml", "the run's spec.yaml (a spec written by archscale)")
    if isinstance(raw.get("search"), dict) and "prescreen" not in raw["search"]:
        raw["search"]["prescreen"] = None
    return raw

