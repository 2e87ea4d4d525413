"""What a search costs beyond its trials' training: workers reused with the dataset kept in
them, the winner exported once, and ``--profile``'s account of where the time went."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archscale.analysis.records import read_trials
from archscale.cli import main
from archscale.search.jobs import finish
from archscale.search.jobs.profile import Profile, format_table
from archscale.search.dispatch.shared import SharedSplits, data_key, local_splits, loads
from archscale.spec import parse_spec

TRIALS, AT_ONCE = 6, 2


@pytest.mark.slow
def test_workers_are_reused_and_each_loads_the_data_once(tmp_path, tiny_spec, write_spec, ray_session,
                                                          monkeypatch, capsys):
    exports = []
    real_export = finish.export_trial
    monkeypatch.setattr(finish, "export_trial", lambda *a, **k: exports.append(a[1]) or real_export(*a, **k))
    tiny_spec["space"].pop("max_params")  # every sampled configuration trains
    tiny_spec["search"].update(num_trials=TRIALS, max_concurrent=AT_ONCE)
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir), "--quiet", "--profile"]) == 0

    trials = read_trials(run_dir)
    assert len(trials) == TRIALS and (trials["status"] == "completed").all()
    hosts = [json.loads((run_dir / "trials" / t / "result.json").read_text())["host"] for t in trials["trial_id"]]
    pids = {h["pid"] for h in hosts}
    assert len(pids) <= AT_ONCE < TRIALS  # Tune ran six trials in at most two reused worker processes
    for pid in pids:  # each process fetched the dataset for its first trial, and kept it
        assert sorted(h["data_loads"] for h in hosts if h["pid"] == pid)[-1] == 1
    winner = json.loads((run_dir / "best" / "metrics.json").read_text())["trial_id"]
    assert exports == [winner]  # the winner, exported once, after the front was known

    profile = json.loads((run_dir / "profile.json").read_text())
    assert profile["trials_timed"] == TRIALS
    assert {"data", "ray start", "search", "finish: export"} <= profile["phases"].keys()
    assert 0 < profile["time_to_first_trial"] < profile["total"]
    assert profile["per_trial"]["train"] > 0
    assert "time to first trial" in capsys.readouterr().out


def test_a_worker_fetches_a_dataset_once_and_keeps_it(monkeypatch, tiny_spec, tmp_path):
    import ray

    tiny_spec["data"]["root"] = str(tmp_path)  # a key no earlier test of this process has held
    spec = parse_spec(tiny_spec)
    fetched = []
    monkeypatch.setattr(ray, "get", lambda ref: fetched.append(ref) or f"splits of {ref}")
    first = SharedSplits(data_key(spec), "ref-1")
    before = loads()
    assert local_splits(first) == local_splits(first) == "splits of ref-1"
    assert fetched == ["ref-1"] and loads() == before + 1
    tiny_spec["seed"] = 1  # another split of the data: fetched, and the first one dropped
    other = SharedSplits(data_key(parse_spec(tiny_spec)), "ref-2")
    assert local_splits(other) == "splits of ref-2" and local_splits(first) == "splits of ref-1"
    assert fetched == ["ref-1", "ref-2", "ref-1"]


def test_a_later_search_of_the_same_data_is_fetched_anew(monkeypatch, tiny_spec, tmp_path):
    """Two searches in one Ray session (a notebook), same spec: the second one's workers must
    not be served the first one's copy (the files may have changed in between)."""
    import ray

    from archscale.search.dispatch.shared import share_splits

    class Ref(str):
        def hex(self) -> str:
            return str(self)

    tiny_spec["data"]["root"] = str(tmp_path)
    spec = parse_spec(tiny_spec)
    refs = iter([Ref("put-1"), Ref("put-2")])
    monkeypatch.setattr(ray, "put", lambda splits: next(refs))
    monkeypatch.setattr(ray, "get", lambda ref: f"splits of {ref}")
    first, second = share_splits(spec, "old splits"), share_splits(spec, "new splits")
    assert first.key != second.key and first.key[:-1] == second.key[:-1] == data_key(spec)
    assert local_splits(second) == "new splits"  # the driver's own copy: the newest
    assert local_splits(first) == "splits of put-1"  # a key no longer held: fetched


def test_the_profile_splits_each_trial_from_its_timestamps():
    profile = Profile()
    profile.add("data", 1.5)
    for n, t0 in enumerate([100.0, 100.0, 104.0]):
        profile.trial(f"t{n}", started=t0, entered=t0 + 0.5, train_start=t0 + 1.0, train_end=t0 + 3.0,
                      reported=t0 + 3.25, result=t0 + 3.5, ended=t0 + 3.5, recorder_s=0.01)
    profile.concurrency = 2
    summary = profile.summary()
    assert summary["per_trial"]["actor"] == pytest.approx(0.5)
    assert summary["per_trial"]["config"] == pytest.approx(0.5)
    assert summary["per_trial"]["train"] == pytest.approx(2.0)
    assert summary["per_trial"]["result transfer"] == pytest.approx(0.25)
    # two slots over 100 .. 107.5 s: 15 slot-seconds, 6 s of them training, for three trials
    assert summary["overhead_per_trial"] == pytest.approx((15 - 6) / 3)
    assert summary["time_to_first_trial"] == pytest.approx(101.0 - profile.start)
    assert "data" in format_table(summary)


def _session_members(sid: int) -> list[str]:
    """The processes of session ``sid``, as ``pid command`` (read from Linux's /proc)."""
    found = []
    for entry in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid:  # field 6: the session id
            found.append(f"{entry} {name}")
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_the_command_s_own_ray_leaves_nothing_behind(tmp_path, tiny_spec, write_spec):
    """``archscale run`` as a user runs it, in a session of its own: once the command exits
    (Ray shut down by its own exit hook), no process it started is left."""
    tiny_spec["space"].pop("max_params")
    tiny_spec["search"].update(num_trials=4, max_concurrent=2)
    run_dir = tmp_path / "run"
    command = subprocess.Popen([sys.executable, "-m", "archscale", "run", str(write_spec(tiny_spec)), "--out",
                                str(run_dir), "--quiet", "--profile"], cwd=tmp_path, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = command.communicate(timeout=600)
    assert command.returncode == 0, output[-3000:]
    deadline = time.monotonic() + 15  # Ray's shutdown ends its processes; the kernel reaps them
    while _session_members(command.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_members(command.pid) == []
    profile = json.loads((run_dir / "profile.json").read_text())
    assert len(profile["raw_trials"]) == 4 and len(read_trials(run_dir)) == 4


def test_ray_is_started_through_its_public_arguments_only(monkeypatch):
    """A local instance: ``ray.init(address="local", ...)`` with documented arguments, no
    ``_system_config``; the job's runtime_env is given as it is."""
    import ray

    from archscale.search.dispatch import session

    given = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: given.append(kw))
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what init_ray sets for Tune stays in this test
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    session.init_ray(None, {"py_modules": ["/somewhere/pkg"]})
    assert len(given) == 1
    assert set(given[0]) == {"address", "include_dashboard", "logging_level", "log_to_driver", "runtime_env"}
    assert given[0]["address"] == "local" and given[0]["runtime_env"] == {"py_modules": ["/somewhere/pkg"]}
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0" and os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"


def test_sigterm_outside_the_search_interrupts_as_ctrl_c_does(monkeypatch):
    """Around a whole run (reading data, starting Ray, writing the front): SIGTERM raises
    Interrupted with its number in the main thread, where Python's default would end the
    process with nothing marked; the handler before is put back after, and the deadline the
    signal started ends with the block: a caller that catches the interrupt (this test) goes on."""
    import signal
    import threading

    from archscale.search.dispatch import launch
    from archscale.search.dispatch.recorder import Interrupted

    given_up = threading.Event()
    monkeypatch.setattr(launch, "STOP_GRACE_S", 0.5)
    monkeypatch.setattr(launch, "_give_up", lambda run_dir, out: given_up.set())
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stopped, launch.sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler runs between bytecodes
    assert stopped.value.signum == signal.SIGTERM and isinstance(stopped.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before
    assert not given_up.wait(1.0)  # past the grace: the deadline was called off with the block


def test_stop_signals_stop_cleanly_then_at_once_and_sigterm_has_a_deadline(monkeypatch, tmp_path):
    """In the driver, without Ray: the first Ctrl-C or SIGTERM asks the search to stop (what
    finished is kept); the next signal, or one while the time budget is stopping it, stops at
    once with the first signal's number; after SIGTERM a deadline ends the process (here: its
    stand-in is called) unless the search stopped first."""
    import io
    import signal
    import threading

    from archscale.search.dispatch import launch
    from archscale.search.dispatch.recorder import Interrupted, SearchStopper

    given_up = threading.Event()
    monkeypatch.setattr(launch, "STOP_GRACE_S", 0.2)
    monkeypatch.setattr(launch, "_give_up", lambda run_dir, out: given_up.set())
    before = signal.getsignal(signal.SIGTERM)
    out, stopper = io.StringIO(), SearchStopper()
    with pytest.raises(Interrupted) as stopped, launch.stop_signals(stopper, out, tmp_path):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs between bytecodes
        assert stopper.reason == "interrupted" and stopper.signum == signal.SIGTERM
        assert out.getvalue() == ("archscale: stopping after SIGTERM; finished trials are kept (SIGTERM again to "
                                  "stop at once)\n")
        assert given_up.wait(5)  # the search did not end within the grace: the process would exit
        os.kill(os.getpid(), signal.SIGINT)  # another signal: at once, as the first one
        time.sleep(1)
    assert stopped.value.signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is before

    given_up.clear()
    stopper = SearchStopper()
    with launch.stop_signals(stopper, io.StringIO(), tmp_path):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    time.sleep(0.4)
    assert stopper.reason == "interrupted" and not given_up.is_set()  # stopped in time: no deadline

    stopper = SearchStopper(time_budget_s=0)
    assert stopper.stop_all()  # the time budget is stopping the search
    with pytest.raises(Interrupted) as stopped, launch.stop_signals(stopper, io.StringIO()):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert stopped.value.signum == signal.SIGINT
