"""What tracking costs a search, and whether a user can watch it: the quickstart run with and
without ``search.track: [tensorboard, mlflow]``, alternating, ``--reps`` times each.

Per run: the whole command's wall time, and the trials' own time (``train_seconds`` summed
over trials.csv; the same configurations each time: the sampler is seeded). In every tracked run,
while it runs: once its fourth trial line is printed, ``RUN/study.db`` is read with Optuna
(completed trials), and in the first tracked run a real ``optuna-dashboard`` is started on it
and asked for the study over its HTTP API. After a tracked run: every completed trial has
TensorBoard ``val_accuracy`` scalars (TensorBoard's own event reader), and the MLflow store that
``spec.yaml`` names holds a run with ``val_accuracy`` for every trial (MLflow's own client).

    python benchmarks/tracking_overhead.py [--trials 16] [--reps 3]

Last line: ``tracking_overhead_pct: X``, the median tracked wall time over the median untracked
one, minus 1, in percent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def completed_in_study(run_dir: Path) -> int:
    import optuna

    try:
        study = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")
    except Exception:  # noqa: BLE001: not there yet
        return 0
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def dashboard_trials(run_dir: Path) -> int:
    """Trials a real optuna-dashboard serves for the run's study (its HTTP API)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["optuna-dashboard", f"sqlite:///{run_dir / 'study.db'}", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
                study_id = studies[0]["study_id"]
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=5) as r:
                    return len(json.load(r)["trials"])
            except (OSError, ValueError, KeyError, IndexError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run(spec: Path, run_dir: Path, tracked: bool, watch: dict | None) -> dict:
    sets = ["--set", "search.track=[tensorboard,mlflow]"] if tracked else []
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "archscale", "run", str(spec), "--out", str(run_dir), *sets],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if watch is not None and line.startswith("[4/") and "study_db" not in watch:
            watch["study_db"] = completed_in_study(run_dir)  # read while the search runs
            if watch.get("dashboard"):
                watch["dashboard"] = dashboard_trials(run_dir)
            watch["alive"] = proc.poll() is None
    proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("".join(lines[-30:]))
    trials = pd.read_csv(run_dir / "trials.csv")
    return {"wall_s": wall, "train_s": float(trials["train_seconds"].sum()), "trials": len(trials),
            "completed": int((trials["status"] == "completed").sum())}


def check_trackers(run_dir: Path) -> dict:
    """Completed trials with TensorBoard val_accuracy; trials with an MLflow run holding val_accuracy."""
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trials = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    done = trials[trials["status"] == "completed"]["trial_id"]
    tb = 0
    for trial_id in done:
        acc = EventAccumulator(str(run_dir / "tensorboard" / trial_id))
        acc.Reload()
        tb += "val_accuracy" in acc.Tags()["scalars"] and len(acc.Scalars("val_accuracy")) > 0
    uri = yaml.safe_load((run_dir / "spec.yaml").read_text())["search"]["mlflow_uri"]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(yaml.safe_load((run_dir / "spec.yaml").read_text())["name"])
    runs = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    with_curve = {r.data.tags["archscale.trial_id"] for r in runs if client.get_metric_history(r.info.run_id, "val_accuracy")}
    return {"tensorboard": f"{tb}/{len(done)}", "mlflow": f"{len(with_curve & set(done))}/{len(done)}",
            "mlflow_uri": uri}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs (default: the quickstart's)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tracking-"))
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["search"]["num_trials"] = args.trials
    if args.epochs:
        raw["train"]["epochs"] = args.epochs
    spec = work / "quickstart.yaml"
    spec.write_text(yaml.safe_dump(raw))
    rows = []
    try:
        for rep in range(args.reps):
            for tracked in (False, True):
                run_dir = work / f"run-{rep}-{'on' if tracked else 'off'}"
                watch = {"dashboard": shutil.which("optuna-dashboard") is not None and rep == 0} if tracked else None
                before = load()
                result = run(spec, run_dir, tracked, watch)
                row = {"rep": rep, "track": "tensorboard,mlflow" if tracked else "-", **result, "load": f"{before} -> {load()}"}
                if tracked:
                    row.update(check_trackers(run_dir))
                    row["study.db@4th"] = watch.get("study_db")
                    row["dashboard@4th"] = watch.get("dashboard") if watch.get("dashboard") is not False else "-"
                rows.append(row)
                print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
                shutil.rmtree(run_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = pd.DataFrame(rows)
    print()
    print(table.drop(columns=["mlflow_uri"], errors="ignore").to_string(index=False))
    off, on = table[table["track"] == "-"], table[table["track"] != "-"]
    print(f"\nmedian wall: {off['wall_s'].median():.1f} s untracked, {on['wall_s'].median():.1f} s tracked; "
          f"median summed train_seconds: {off['train_s'].median():.1f} s untracked, {on['train_s'].median():.1f} s tracked")
    print(f"tracking_overhead_pct: {100 * (on['wall_s'].median() / off['wall_s'].median() - 1):.1f}")


if __name__ == "__main__":
    main()
