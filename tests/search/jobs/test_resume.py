"""Interrupted searches resume with ``--resume``: killed with SIGKILL in the middle of a
trial, stopped with Ctrl-C, or out of time. Finished trials are kept once, unfinished ones
run again, and the run ends with exactly ``num_trials`` trials."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

import archscale
from archscale.analysis.records import read_trials
from archscale.cli import main


def _archscale(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "archscale", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


def _rows(path) -> int:
    return len(path.read_text().strip().splitlines()) - 1 if path.is_file() else 0


def _wait(proc, ready, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.05)
    out = proc.stdout.read() if proc.poll() is not None else ""
    pytest.fail(f"the search {'ended' if proc.poll() is not None else 'timed out'} before {what}:\n{out}")


def _started(run_dir) -> dict:
    path = run_dir / "started.jsonl"
    if not path.is_file():
        return {}
    items = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return {item["trial_id"]: item["config"] for item in items}


@pytest.mark.slow  # three real runs, each starting Ray: about 70 s, a quarter of the fast tier
def test_sigkill_mid_trial_then_ctrl_c_then_resume(tmp_path, write_spec, tiny_spec):
    tiny_spec["search"].update(num_trials=4, sampler="tpe", max_concurrent=1)
    tiny_spec["data"]["subset"] = 0.3
    tiny_spec["train"]["epochs"] = 2
    spec = write_spec(tiny_spec)
    run_dir = tmp_path / "run"
    csv = run_dir / "trials.csv"

    # 1. SIGKILL while the first trial trains: the driver and every Ray process it started.
    proc = _archscale("run", spec, "--out", run_dir)
    _wait(proc, lambda: _started(run_dir), "its first trial started")
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_trials(run_dir) if csv.is_file() else None
    done = set(first["trial_id"]) if first is not None else set()
    unfinished = [config for trial_id, config in _started(run_dir).items() if trial_id not in done]
    assert unfinished, "the first trial finished before the kill"
    status = archscale.status(run_dir)  # as `archscale status` reads it from another terminal
    assert status.state == "killed" and set(status.running) == {t for t in _started(run_dir) if t not in done}

    # 2. Resume, then Ctrl-C (SIGINT to the whole process group, as a terminal sends it)
    #    once a trial has finished: it stops cleanly, exit status 130, what finished is kept.
    proc = _archscale("run", spec, "--out", run_dir, "--resume")
    _wait(proc, lambda: _rows(csv) >= len(done) + 1, "a resumed trial finished")
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "1 unfinished to rerun" in out and "stopped (interrupted)" in out, out
    assert archscale.status(run_dir).process["how"] == "interrupted"
    second = read_trials(run_dir)
    assert second["trial_id"].is_unique and 1 <= len(second) < 4
    assert set(second["status"]) <= {"completed", "infeasible"}  # nothing recorded failed by the interruption
    rerun = second[~second["trial_id"].isin(done)].iloc[0]  # the first trial of the resumed run ...
    assert {k: rerun[k] for k in unfinished[0]} == unfinished[0]  # ... is the one the kill cut short

    # 3. Resume to the end: exactly num_trials trials, each once, the earlier ones unchanged.
    proc = _archscale("run", spec, "--out", run_dir, "--resume")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"resuming ({len(second)} trials told to the sampler" in out
    after = read_trials(run_dir)
    assert len(after) == 4 and after["trial_id"].is_unique, out
    kept = after.set_index("trial_id").loc[second["trial_id"]]
    assert (kept["val_accuracy"].fillna(-1).values == second["val_accuracy"].fillna(-1).values).all()
    assert (run_dir / "best" / "weights.pt").is_file()
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")
    assert [t.user_attrs["trial_id"] for t in study.trials] == list(after["trial_id"])  # each once, as recorded
    assert archscale.status(run_dir).state == "finished"

    assert main(["run", str(spec), "--out", str(run_dir), "--resume"]) == 0  # finished: changes nothing
    assert read_trials(run_dir).equals(after)


@pytest.mark.usefixtures("ray_session")
def test_time_budget_stops_and_resume_finishes(tmp_path, write_spec, tiny_spec, capsys):
    tiny_spec["search"].update(num_trials=2, sampler="random")
    spec = write_spec(tiny_spec)
    run_dir = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(run_dir), "--set", "search.time_budget_s=1"]) == 0
    out = capsys.readouterr().out
    assert "stopped (time budget of 1 s reached)" in out
    recorded = len(read_trials(run_dir)) if (run_dir / "trials.csv").is_file() else 0
    assert recorded < 2
    # the budget is how this invocation runs, not what it searches: --resume may drop it
    assert main(["run", str(spec), "--out", str(run_dir), "--resume"]) == 0
    trials = read_trials(run_dir)
    assert len(trials) == 2 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "infeasible"}


def test_a_quick_look_tells_a_complete_one_stage_run_before_ray_starts(tmp_path, tiny_spec):
    """``--resume`` starts Ray early unless trials.csv already holds every planned trial
    (rows rejected before dispatch do not count); a two-stage run, or a file that cannot be
    read, is never taken as complete."""
    from archscale.search.jobs.rundir import looks_complete, planned_total
    from archscale.spec import parse_spec

    tiny_spec["search"].update(num_trials=3, sampler="random")
    spec = parse_spec(tiny_spec)
    assert planned_total(spec) == 3
    assert not looks_complete(spec, tmp_path)  # nothing recorded yet
    rows = ["trial_id,status,val_accuracy", "a,completed,0.9", "b_infeasible,infeasible,", "c,failed,"]
    (tmp_path / "trials.csv").write_text("\n".join(rows) + "\n")
    assert not looks_complete(spec, tmp_path)  # 2 of 3: the rejected row does not count
    (tmp_path / "trials.csv").write_text("\n".join(rows + ["d,completed,0.8"]) + "\n")
    assert looks_complete(spec, tmp_path)
    (tmp_path / "trials.csv").write_bytes(b"trial_id\n\xff\xfe\n")
    assert not looks_complete(spec, tmp_path)

    grid = parse_spec({**tiny_spec, "search": {**tiny_spec["search"], "sampler": "grid", "num_trials": 100},
                       "space": {**tiny_spec["space"], "params": {"c1_width": [4, 8]}}})
    assert planned_total(grid) == 2  # the grid is smaller than num_trials


@pytest.mark.slow  # two real runs, each starting Ray and stopped within it: about 20 s
def test_sigterm_before_the_first_trial_interrupts_and_leaves_nothing(tmp_path, write_spec, tiny_spec):
    """``kill PID`` as soon as the run has begun (reading the data, judging the space, starting
    Ray: before this, the default SIGTERM ended the process silently, or Ray's exited with
    status 15): exit 143, "interrupted by SIGTERM", no traceback or stack dump, and the run
    folder, which holds no trial, removed, so that the same command starts it again."""
    spec = write_spec(tiny_spec)
    run_dir = tmp_path / "run"
    for delay in (0.0, 3.0):  # at once; and a few seconds on, in or after Ray's start
        proc = _archscale("run", spec, "--out", run_dir)
        _wait(proc, lambda: (run_dir / "process.json").is_file(), "the run began")
        time.sleep(delay)
        if (run_dir / "trials.csv").is_file():
            proc.kill()
            pytest.fail("a trial finished before the signal; the test needs a slower start")
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM, out
        assert "interrupted by SIGTERM" in out and "SIGTERM received" not in out and "Traceback" not in out, out
        assert not run_dir.exists(), out


@pytest.mark.slow  # two real runs, each starting Ray: about 60 s
def test_sigterm_stops_cleanly_whether_sent_to_the_driver_or_its_whole_process_group(tmp_path, write_spec, tiny_spec):
    """``kill PID`` (SIGTERM) stops a search as Ctrl-C does: exit 143, what finished kept and
    the run marked interrupted, Ray's stack dump not printed. A batch scheduler (Slurm) or
    systemd signals the whole process group, Ray's local processes included: the driver
    then cannot stop through Tune and exits STOP_GRACE_S seconds later, marked interrupted."""
    from archscale.search.dispatch.launch import STOP_GRACE_S

    tiny_spec["search"].update(num_trials=6, sampler="random", max_concurrent=1)
    tiny_spec["data"]["subset"] = 0.3
    spec = write_spec(tiny_spec)
    run_dir = tmp_path / "run"
    csv = run_dir / "trials.csv"

    proc = _archscale("run", spec, "--out", run_dir)
    _wait(proc, lambda: _rows(csv) >= 1, "a trial finished")
    os.kill(proc.pid, signal.SIGTERM)  # the driver alone
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopping after SIGTERM" in out and "stopped (interrupted)" in out and "interrupted by SIGTERM" in out, out
    assert "SIGTERM received" not in out and "Traceback" not in out, out
    assert archscale.status(run_dir).process["how"] == "interrupted"
    first = read_trials(run_dir)
    assert 1 <= len(first) < 6 and set(first["status"]) <= {"completed", "infeasible"}

    proc = _archscale("run", spec, "--out", run_dir, "--resume")
    _wait(proc, lambda: _rows(csv) >= len(first) + 1, "a resumed trial finished")
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)  # the driver and Ray's processes, as Slurm sends it
    out, _ = proc.communicate(timeout=120)
    assert time.monotonic() - sent < STOP_GRACE_S + 20, out
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert archscale.status(run_dir).process["how"] == "interrupted", out
    second = read_trials(run_dir)
    assert second["trial_id"].is_unique and len(first) < len(second) < 6
    assert second.set_index("trial_id").loc[first["trial_id"]]["val_accuracy"].tolist() == first["val_accuracy"].tolist()
