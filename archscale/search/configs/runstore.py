"""A run's use of the results store (:mod:`.store`): the run's context fixes the dataset,
split, seed, recipe and code, so a sampled configuration alone names its key; finished trials
are recorded, and stored ones served instead of trained."""

from __future__ import annotations

import inspect
import json
import math
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Mapping

from archscale.search.configs.context import TrialContext, resolve_arch, train_values
from archscale.search.configs.evaluate import budget_violation
from archscale.search.configs.store import FILES, STATUSES, STORED_METRICS, Store, _number, _warn, code_hash, trial_key
from archscale.space import SpaceError, get_space
from archscale.spec import SpecError


def family_code_hash(family: str) -> str:
    """:func:`code_hash` for a family (its module file joins space/ and trainer/)."""
    source = inspect.getsourcefile(type(get_space(family)))
    return code_hash(source)



class RunStore:
    """A store as one run uses it: the run's context fixes the dataset, split, seed, recipe and
    code, so a sampled configuration alone names its key."""

    def __init__(self, store: Store, ctx: TrialContext):
        self.store, self.ctx = store, ctx
        self.code = family_code_hash(ctx.family)

    @classmethod
    def open(cls, path: str | Path, ctx: TrialContext) -> "RunStore":
        try:
            return cls(Store.open(path), ctx)
        except SpecError as err:
            raise SpecError(f"search.store: {err}") from None

    def key(self, config: Mapping[str, Any], arch: str) -> str:
        return trial_key(arch, train_values(self.ctx, config), self.ctx.data_info, self.seed(config), self.code)

    def seed(self, config: Mapping[str, Any]) -> int:
        """The seed the trial trains with (as :func:`~archscale.search.dispatch.trial.train_trial` takes it)."""
        return int(config.get("seed", self.ctx.seed))

    def record(self, row: Mapping[str, Any], config: Mapping[str, Any], run_dir: Path) -> int | None:
        """Store a finished trial of this run (its ``trials.csv`` row; a completed one with the
        files the trial left in ``run_dir/trials/<id>/``). Rows served from the store are not
        stored again."""
        if row.get("source") == "store" or row.get("status") not in STATUSES:
            return None
        arch = row.get("arch") if isinstance(row.get("arch"), str) and row.get("arch") else None
        recipe = train_values(self.ctx, config)
        folder = Path(run_dir) / "trials" / str(row["trial_id"])
        files = {name: folder / name for name in FILES} if row["status"] == "completed" else None
        if files and not all(p.is_file() for p in files.values()):
            files = None
        history = []
        if files:
            history = json.loads(files["result.json"].read_text()).get("history", [])
        metrics = {k: _number(row.get(k)) for k in STORED_METRICS if _number(row.get(k)) is not None}
        record = {
            "key": self.key(config, arch or json.dumps(dict(config), sort_keys=True, default=str)),
            "status": row["status"], "family": self.ctx.family, "dataset": self.ctx.data_info["dataset"],
            "arch": arch, "config": dict(config), "recipe": recipe, "seed": self.seed(config),
            "epochs": int(recipe["epochs"]), "code": self.code, "val_accuracy": metrics.get("val_accuracy"),
            "test_accuracy": metrics.get("test_accuracy"), "params": metrics.get("params"),
            "macs": metrics.get("macs"), "metrics": metrics, "history": history,
            "run": str(Path(run_dir).resolve()), "trial_id": str(row["trial_id"])}
        try:
            return self.store.put(record, files)
        except (sqlite3.Error, OSError) as err:  # the search goes on; the row is in trials.csv
            _warn(f"trial {row['trial_id']} not written to the results store {self.store.path}: {err}")
            return None

    def lookup(self, config: Mapping[str, Any]) -> dict | None:
        """What the store says of ``config`` under this run's budgets: a stored row (as in
        :meth:`Store.rows`) whose ``status`` is ``completed``, or ``infeasible`` with this
        run's reason in ``metrics["error"]``; None when it must be trained."""
        try:
            arch = resolve_arch(self.ctx, config)
        except SpaceError:
            return None
        try:
            stored = self.store.lookup(self.key(config, arch.text))
        except sqlite3.Error as err:  # then it trains
            _warn(f"the results store {self.store.path} could not be read: {err}")
            return None
        for row in stored:
            if row["status"] not in ("completed", "infeasible"):
                continue
            m = row["metrics"]
            why = budget_violation(self.ctx, m.get("params"), m.get("macs"), m.get("latency_ms"),
                                   memory_mb=m.get("memory_mb"), memory_source=m.get("memory_source", "cpu_estimate"),
                                   arch=arch)
            if why:
                return {**row, "status": "infeasible", "metrics": {**m, "error": why}}
            if row["status"] == "completed" and self.store.files(row) is not None:
                return row
        return None

    def serve(self, row: Mapping[str, Any], config: Mapping[str, Any], trial_id: str,
              run_dir: Path) -> tuple[dict, dict]:
        """Write a looked-up row into the run as trial ``trial_id``: its files into
        ``trials/<id>/`` (``result.json`` marked ``"source": "store"``). Returns (the
        trials.csv row, the result the trial would have reported)."""
        m = dict(row["metrics"])
        status = row["status"]
        if status == "completed":
            target = Path(run_dir) / "trials" / trial_id
            target.mkdir(parents=True, exist_ok=True)
            source = self.store.files(row)
            result = json.loads((source / "result.json").read_text())
            result.update(source="store", store={"path": str(self.store.path.resolve()), "id": row["id"]})
            tmp = target / ".result.json.tmp"
            tmp.write_text(json.dumps(result, indent=1, default=str))
            shutil.copyfile(source / "weights.pt", target / ".weights.pt.tmp")
            (target / ".weights.pt.tmp").replace(target / "weights.pt")
            tmp.replace(target / "result.json")
            reported = {**m, "status": "completed"}
        else:  # infeasible under this run's budgets: as a trial reports it
            for k in ("val_accuracy", "test_accuracy", "train_seconds"):
                m.pop(k, None)
            m["epochs"] = 0
            reported = {**m, "status": "infeasible", "val_accuracy": 0.0, "train_seconds": math.inf}
        csv_row = {"trial_id": trial_id, "status": status, **dict(config), **m, "arch": row["arch"],
                   "source": "store"}
        return csv_row, reported


