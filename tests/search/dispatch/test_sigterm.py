"""SIGTERM while the main thread cannot run Python: Ray starting, or a call inside Ray's C++
client. Each case runs in a process of its own, whose main thread blocks in C code that runs
no signal handler (``hashlib.pbkdf2_hmac`` with many iterations) as Ray's client does."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# A child process: STOP_GRACE_S of 1 s; a run folder marked running; then CASE's code.
PRELUDE = """
import hashlib, sys, time
from pathlib import Path
from archscale.analysis.status import mark_running
from archscale.search.dispatch import launch
launch.STOP_GRACE_S = 1.0
run_dir = Path(sys.argv[1])
mark_running(run_dir)

def blocked_in_c(seconds_at_least=60):
    hashlib.pbkdf2_hmac("sha256", b"x", b"y", 20_000_000 * seconds_at_least // 10)
"""


def _start(tmp_path, case: str) -> subprocess.Popen:
    script = tmp_path / "case.py"
    script.write_text(PRELUDE + textwrap.dedent(case))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready", proc.communicate(timeout=60)[0]
    return proc


def _how(tmp_path) -> str | None:
    return json.loads((tmp_path / "run" / "process.json").read_text())["how"]


def test_a_sigterm_ends_the_run_in_time_while_the_main_thread_is_inside_c_code(tmp_path):
    """A SIGTERM to the whole process group ends Ray's own processes, and the driver's main
    thread then waits a minute inside Ray's C++ client, where no Python handler runs: the
    run still ends STOP_GRACE_S later, exit 143, marked interrupted, and says why."""
    proc = _start(tmp_path, """
        with launch.sigterm_interrupts(run_dir, sys.stdout):
            print("ready", flush=True)
            blocked_in_c()
            print("the C call returned")
    """)
    time.sleep(0.5)  # into the C call
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    took = time.monotonic() - sent
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert 1.0 <= took < 10, (took, out)
    assert "did not end within 1 s of SIGTERM" in out and "--resume" in out and "returned" not in out, out
    assert _how(tmp_path) == "interrupted"


def test_a_sigterm_while_ray_starts_interrupts_at_once(tmp_path):
    """``ray.init`` runs off the main thread (session.init_off_main): a SIGTERM while it is
    busy (here a stand-in that takes a minute in C code) interrupts the run at once, as a
    KeyboardInterrupt carrying the signal, and Ray's own SIGTERM handler is not installed."""
    proc = _start(tmp_path, """
        import signal
        import ray
        from archscale.search.dispatch.session import init_off_main
        ray.init = lambda **kwargs: blocked_in_c()
        with launch.sigterm_interrupts(run_dir, sys.stdout):
            print("ready", flush=True)
            began = time.monotonic()
            try:
                init_off_main(address="local")
            except KeyboardInterrupt as err:
                print(f"interrupted by {signal.Signals(err.signum).name} after {time.monotonic() - began:.1f} s")
    """)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "interrupted by SIGTERM after" in out, out
    assert float(out.split("after ")[1].split(" s")[0]) < 5, out
    assert proc.returncode == 0, out  # no deadline hit: the process ended on its own


def test_a_search_stopped_in_time_is_not_cut_short_by_the_deadline(tmp_path):
    """After SIGTERM the search stops cleanly (stop_signals); once it has, the front and the
    winner's files are written whatever they take: the deadline is off."""
    proc = _start(tmp_path, """
        import os, signal
        from archscale.search.dispatch.recorder import SearchStopper
        stopper = SearchStopper()
        with launch.sigterm_interrupts(run_dir, sys.stdout):
            with launch.stop_signals(stopper, sys.stdout, run_dir):
                print("ready", flush=True)
                while stopper.reason is None:
                    time.sleep(0.05)
            time.sleep(3)  # three deadlines' worth of writing the front
            print("wrote the front", flush=True)
    """)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopping after SIGTERM" in out and "wrote the front" in out, out
    assert "did not end within" not in out, out


@pytest.mark.slow  # starts Ray: about 10 s
def test_ray_started_here_leaves_sigterm_to_python(tmp_path):
    """Ray's C++ failure-signal handler, put in as ray.init builds the driver's core worker,
    took SIGTERM behind Python's back (a stack dump, status -6, the run not marked): with Ray
    imported by session.import_ray the driver has none, a SIGTERM reaches the Python handler,
    and the switch does not stay in the environment that Ray's own processes inherit."""
    script = tmp_path / "case.py"
    script.write_text(textwrap.dedent("""
        import os, signal, time
        from archscale.search.dispatch.session import FAILURE_HANDLER_OFF, import_ray, init_ray
        import_ray()
        got = []
        signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
        init_ray()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
        print("python handled", got, "switch left:", FAILURE_HANDLER_OFF in os.environ)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "SIGTERM received" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "python handled [15] switch left: False" in proc.stdout, proc.stdout + proc.stderr
