"""Faults: a trial that raises, runs out of memory or loses its worker; the search goes on."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from archscale.analysis.records import read_trials
from archscale.cli import main
from archscale.search.configs.evaluate import describe_error, is_out_of_memory


def test_memory_the_host_refuses_is_named_out_of_memory():
    with pytest.raises(RuntimeError) as refused:
        torch.empty(1 << 62, dtype=torch.uint8)  # 4 EiB: more than any address space, refused at once
    assert is_out_of_memory(refused.value)
    text = describe_error(refused.value)
    assert text.startswith("out of memory: RuntimeError:") and "can't allocate memory" in text and len(text) <= 500
    assert not is_out_of_memory(ValueError("loss became nan"))


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_a_raising_trial_is_recorded_failed_and_the_others_finish(tmp_path, write_spec, tiny_spec, capsys):
    # Dilated convs of dilation 8 in C3 and C4 shrink a 28 px input below 1 px: that
    # architecture raises when the trial builds it; the regular-C4 one trains.
    tiny_spec["space"]["params"].update(c1_width=4, c3_width=8, c4_width=8, downsample="dilation",
                                        c3_conv="dilated", c3_dilation=8, c4_conv=["dilated", "regular"], c4_dilation=8)
    tiny_spec["search"].update(sampler="grid", num_trials=2)
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir)]) == 0
    trials = read_trials(run_dir).set_index("c4_conv")
    assert trials.loc["regular", "status"] == "completed"
    assert trials.loc["dilated", "status"] == "failed"
    assert trials.loc["dilated", "error"].startswith("SpaceError: downsample:") and "px" in trials.loc["dilated", "error"]
    out = capsys.readouterr().out
    assert "[2/2]" in out and "failed:" in out and "(SpaceError: downsample" in out
    assert (run_dir / "best" / "weights.pt").is_file()


def _descendants(pid: int) -> list[int]:
    """Processes below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _trial_workers() -> list[int]:
    """This test process's Ray workers that are running a trial (titled ray::ImplicitFunc.train)."""
    pids = []
    for pid in _descendants(os.getpid()):
        try:
            if b"ImplicitFunc.train" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return pids


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_a_trial_whose_worker_is_killed_is_retried(tmp_path, write_spec, tiny_spec, capsys):
    tiny_spec["space"]["params"].update(c1_width=8, c3_width=8, c3_conv="depthwise", c4_width=16)  # one architecture
    tiny_spec["data"]["subset"] = 0.5
    tiny_spec["train"]["epochs"] = 3
    tiny_spec["search"].update(num_trials=1, max_failures=1)
    run_dir = tmp_path / "run"
    killed = []

    def kill_the_first_worker():  # like the kernel's OOM killer: SIGKILL, mid-training
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for pid in _trial_workers():
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_worker, daemon=True)
    killer.start()
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir)]) == 0
    killer.join(1)
    assert killed, "no trial worker was found to kill"
    trials = read_trials(run_dir)
    assert len(trials) == 1 and trials.loc[0, "status"] == "completed" and trials.loc[0, "epochs"] == 3
    assert "lost its worker" in capsys.readouterr().out
