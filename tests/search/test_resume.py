"""A search killed with SIGKILL mid-run resumes with ``--resume``: finished trials are
kept once, the rest run, and the run ends with exactly ``num_trials`` trials."""

import os
import signal
import subprocess
import sys
import time

from analysis.records import read_trials


def _archscale(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "search.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


def test_sigkill_then_resume(tmp_path, write_spec, tiny_spec):
    tiny_spec["search"].update(num_trials=5, sampler="tpe", max_concurrent=1)
    tiny_spec["data"]["subset"] = 0.3
    tiny_spec["train"]["epochs"] = 2
    spec = write_spec(tiny_spec)
    run_dir = tmp_path / "run"
    proc = _archscale("run", spec, "--out", run_dir)
    csv = run_dir / "trials.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if csv.is_file() and len(csv.read_text().strip().splitlines()) >= 3:  # header + 2 trials
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the search finished before it could be killed:\n" + proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
    proc.wait()
    before = read_trials(run_dir)
    assert 2 <= len(before) < 5

    resumed = _archscale("run", spec, "--out", run_dir, "--resume")
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out
    after = read_trials(run_dir)
    assert len(after) == 5 and after["trial_id"].is_unique, out
    # what finished before the kill is kept, unchanged
    kept = after.set_index("trial_id").loc[before["trial_id"]]
    assert (kept["val_accuracy"].values == before["val_accuracy"].values).all()
    assert (run_dir / "best" / "weights.pt").is_file()

    again = _archscale("run", spec, "--out", run_dir, "--resume")
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "nothing to resume" in out
