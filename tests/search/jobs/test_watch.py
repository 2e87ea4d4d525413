"""Watching a run from another process while it runs: ``RUN/study.db`` read by Optuna and
served by a real optuna-dashboard as trials finish, and ``archscale status``."""

import json
import shutil
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from optuna.trial import TrialState

import archscale
from archscale.analysis.records import read_trials
from tests.search.conftest import free_port

STATES = {"completed": TrialState.COMPLETE, "infeasible": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
          "failed": TrialState.FAIL}


def _archscale(*args):
    return subprocess.Popen([sys.executable, "-m", "archscale", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _study_trials(run_dir) -> list:
    """The trials Optuna reads in RUN/study.db now (none before the file is there)."""
    if not (run_dir / "study.db").is_file():
        return []
    try:
        return optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}").trials
    except (KeyError, ValueError):  # the study not created yet
        return []


class Dashboard:
    """A real ``optuna-dashboard`` on 127.0.0.1, read through its HTTP API."""

    def __init__(self, storage: str):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(["optuna-dashboard", storage, "--host", "127.0.0.1", "--port",
                                      self.url.rsplit(":", 1)[1], "--quiet"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as reply:
            return json.loads(reply.read())

    def trials(self, timeout: float = 60) -> list[dict]:
        """The trials of the storage's one study, as the dashboard's front end reads them."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                studies = self.get("/api/studies")["study_summaries"]
                return self.get(f"/api/studies/{studies[0]['study_id']}")["trials"]
            except (OSError, IndexError, KeyError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.mark.slow
def test_study_db_fills_as_trials_finish_and_optuna_dashboard_serves_it(tmp_path, write_spec, tiny_spec):
    # long enough to be read while it runs, on a loaded machine too: with 8 trials a run at load 2 to 4 had ended
    # (22 s) before `archscale status`, a fresh process, could say it was alive
    tiny_spec["search"].update(num_trials=16, max_concurrent=1)
    tiny_spec["data"]["subset"] = 0.3
    tiny_spec["train"]["epochs"] = 2
    run_dir = tmp_path / "run"
    proc = _archscale("run", write_spec(tiny_spec), "--out", run_dir)
    dashboard = None
    try:
        deadline = time.monotonic() + 300
        while len(_study_trials(run_dir)) < 2:  # Optuna reads finished trials while the search runs
            assert proc.poll() is None, f"the search ended before study.db held 2 trials:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "study.db held fewer than 2 trials after 300 s"
            time.sleep(0.2)
        now = _archscale("status", run_dir)  # from another terminal, while it runs
        said, _ = now.communicate(timeout=120)
        assert now.returncode == 0 and f"alive (pid {proc.pid}" in said and "running" in said, said
        if shutil.which("optuna-dashboard"):
            dashboard = Dashboard(f"sqlite:///{run_dir / 'study.db'}")
            served = dashboard.trials()
            assert len(served) >= 2 and proc.poll() is None  # served while it runs
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        rows = read_trials(run_dir)
        status = archscale.status(run_dir)
        assert status.state == "finished" and status.finished == 16 and status.left == 0 and not status.running
        trials = _study_trials(run_dir)
        assert [t.user_attrs["trial_id"] for t in trials] == list(rows["trial_id"])
        for t, (_, row) in zip(trials, rows.iterrows()):
            assert t.state == STATES[row["status"]] and t.user_attrs["arch"] == row["arch"]
            if row["status"] == "completed":
                assert sorted(t.intermediate_values) == [1, 2]  # the learning curve, per epoch
                assert t.intermediate_values[2] == pytest.approx(row["val_accuracy"])
                assert t.user_attrs["test_accuracy"] == pytest.approx(row["test_accuracy"])
        if dashboard is not None:
            served = {a["value"]: t for t in dashboard.trials() for a in t["user_attrs"] if a["key"] == "trial_id"}
            assert sorted(served) == sorted(rows["trial_id"])
            for _, row in rows[rows["status"] == "completed"].iterrows():  # the learning curves it draws
                assert [v["step"] for v in served[row["trial_id"]]["intermediate_values"]] == [1, 2]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if dashboard is not None:
            dashboard.stop()
