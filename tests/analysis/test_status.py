"""``archscale status RUN_DIR``: where a run stands, read from its directory alone, for a
finished run, a killed one, a running one and one written before process.json existed."""

import json
import os
import socket
import subprocess
import time

import archscale
from archscale.analysis.status import PROCESS_FILE, mark_ended, mark_running, read_process
from archscale.cli import main


def process(run_dir, pid: int, started_ago: float, ended: bool = False, how: str | None = None, **extra) -> None:
    now = time.time()
    info = {"pid": pid, "host": socket.gethostname(), "started": now - started_ago, "finished_before": 0,
            "started_before": 0, "ended": now if ended else None, "how": how, **extra}
    (run_dir / PROCESS_FILE).write_text(json.dumps(info))


def started(run_dir, *ids: str) -> None:
    with (run_dir / "started.jsonl").open("a") as f:
        for trial_id in ids:
            f.write(json.dumps({"trial_id": trial_id, "config": {"c1_width": 4}}) + "\n")


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_running_run_names_its_running_trials_and_estimates_what_is_left(write_run):
    run_dir = write_run(num_trials=10)  # four trials recorded
    started(run_dir, "t0", "t1", "t2", "t3", "t4", "t5")
    process(run_dir, os.getpid(), started_ago=40)  # this test's process: alive
    status = archscale.status(run_dir)
    assert status.state == "running" and status.running == ["t4", "t5"]
    assert (status.finished, status.total, status.left) == (4, 10, 4)
    assert 39 <= status.elapsed_s <= 60 and 50 <= status.eta_s <= 100  # 10 s a trial, 6 to go
    assert status.best["trial_id"] == "t3" and list(status.front["trial_id"])[0] == "t3"
    text = str(status)
    assert f"alive (pid {os.getpid()}" in text and "4 of 10 finished (4 completed), 2 running (t4, t5), 4 left" in text
    assert "best: trial t3 val_accuracy=0.8000" in text and "front under val_accuracy:max, macs:min" in text


def test_a_killed_run_says_so_and_counts_its_unfinished_trials(write_run):
    run_dir = write_run(num_trials=10)
    started(run_dir, "t0", "t1", "t2", "t3", "t4")
    process(run_dir, dead_pid(), started_ago=100)
    status = archscale.status(run_dir)
    assert status.state == "killed" and status.running == ["t4"] and status.eta_s is None
    assert status.elapsed_s < 100  # to its last record, not to now
    text = str(status)
    assert "is gone without ending the run (killed?)" in text and "1 unfinished (t4)" in text and "--resume" in text


def test_a_finished_run_and_one_from_before_process_json(write_run):
    run_dir = write_run(num_trials=4)
    assert archscale.status(run_dir).state == "unknown" and archscale.status(run_dir).elapsed_s is None
    process(run_dir, dead_pid(), started_ago=65, ended=True, how="finished")
    status = archscale.status(run_dir)
    assert status.state == "finished" and status.left == 0 and status.eta_s is None
    assert str(status).splitlines()[0].endswith(": finished") and "time: 1m05s elapsed" in str(status)


def test_a_resumed_invocation_counts_only_its_own_starts_and_pace(write_run):
    run_dir = write_run(num_trials=10)
    started(run_dir, "t0", "t1", "t2", "t3", "lost")  # "lost": cut short by an earlier kill, rerun since
    process(run_dir, os.getpid(), started_ago=30, finished_before=3, started_before=5)
    started(run_dir, "t9")
    status = archscale.status(run_dir)
    assert status.running == ["t9"] and 150 <= status.eta_s <= 200  # 1 trial in 30 s, 6 to go


def test_mark_running_then_ended_in_the_run_directory(tmp_path):
    first = mark_running(tmp_path / "run")
    second = mark_running(tmp_path / "run")  # a later invocation of the same process (the API, twice)
    info = read_process(tmp_path / "run")
    assert info["pid"] == os.getpid() and info["ended"] is None and info["started"] == second
    mark_ended(tmp_path / "run", "finished", first)  # not the one marked now: left alone
    assert read_process(tmp_path / "run")["ended"] is None
    mark_ended(tmp_path / "run", "stopped", second)
    assert read_process(tmp_path / "run")["how"] == "stopped"


def test_the_command_prints_it_and_exits_2_for_what_is_no_run(write_run, tmp_path, capsys):
    run_dir = write_run(num_trials=4)
    assert main(["status", str(run_dir)]) == 0
    assert "trials: 4 of 4 finished" in capsys.readouterr().out
    for path in (tmp_path / "missing", tmp_path):
        assert main(["status", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0], err
