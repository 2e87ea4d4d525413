"""How does ``archscale run`` end after a SIGTERM sent while Ray starts?

A batch scheduler (Slurm at a job's time limit, systemd) sends SIGTERM to the whole process
group, Ray's local processes included, then SIGKILL after a grace (Slurm's KillWait: 30 s by
default). Each repeat here starts ``archscale run`` on a tiny spec (3 trials of 1 epoch on 15%
of mnist-5k) in a process group of its own, waits until Ray's raylet has appeared in that group
(or, with ``--at data``, only until ``process.json`` exists), sleeps a random 0 to ``--spread``
seconds (seeded), and sends SIGTERM to the group (``--to driver``: to the driver alone). It
prints one row a repeat: when the signal was sent, how long the process took to end, its exit
status, and whether it said "interrupted by SIGTERM" or its deadline's "did not end within",
printed Ray's stack dump ("SIGTERM received"), and left ``process.json`` marked ``interrupted``.

The last line is ``sigterm_slowest_exit_s: X``: the longest time from the signal to the end of
the process over the repeats (a repeat that did not end within 120 s counts 120 and is killed).

    python benchmarks/sigterm_exit.py                # 24 repeats, group, 0 to 6 s after the raylet
    python benchmarks/sigterm_exit.py --repeats 25 --to driver --at data --spread 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SPEC = {
    "name": "sigterm",
    "seed": 0,
    "data": {"dataset": "mnist-5k", "val_fraction": 0.1, "subset": 0.15},
    "space": {"family": "budgeted",
              "params": {"c1_width": [4, 8], "c2_width": [8], "c3_width": [8, 12], "c4_width": [8, 16],
                         "c1_convs": 1, "c2_convs": 1, "c3_convs": 1, "c4_convs": 1,
                         "c3_conv": ["regular", "depthwise"], "downsample": "maxpool"},
              "max_params": 5000},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.1},
    "search": {"sampler": "random", "num_trials": 3, "objectives": ["val_accuracy:max", "macs:min"],
               "max_concurrent": 2, "resources_per_trial": {"cpu": 1}},
}
LIMIT_S = 120.0  # a repeat still running this long after the signal is killed and counted as this


def _raylet_in(group: int) -> bool:
    """Whether a raylet runs in process group ``group`` (pgrep reads /proc; it signals nothing)."""
    return subprocess.run(["pgrep", "-g", str(group), "raylet"], capture_output=True).returncode == 0


def repeat(spec: Path, run_dir: Path, delay: float, to: str, at: str) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-m", "archscale", "run", str(spec), "--out", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ready = (lambda: _raylet_in(proc.pid)) if at == "raylet" else (lambda: (run_dir / "process.json").is_file())
    while proc.poll() is None and not ready():
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is not None:
        return {"delay": delay, "ended_before": True}
    sent = time.monotonic()
    (os.killpg if to == "group" else os.kill)(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=LIMIT_S)
        took = time.monotonic() - sent
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        took = LIMIT_S
    try:
        how = json.loads((run_dir / "process.json").read_text()).get("how")
    except (OSError, ValueError):
        how = "(no folder)" if not run_dir.exists() else None
    return {"delay": delay, "took": took, "rc": proc.returncode, "said": "interrupted by SIGTERM" in out,
            "deadline": "did not end within" in out, "dump": "SIGTERM received" in out, "how": how,
            "trials": (run_dir / "trials.csv").is_file(), "tail": out.strip().splitlines()[-3:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=24)
    parser.add_argument("--to", choices=("group", "driver"), default="group")
    parser.add_argument("--at", choices=("raylet", "data"), default="raylet",
                        help="count the delay from Ray's raylet appearing, or from process.json")
    parser.add_argument("--spread", type=float, default=6.0, help="the delay is uniform in 0 to this, seconds")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "sigterm.yaml"
        spec.write_text(yaml.safe_dump(SPEC))
        print(f"SIGTERM to the {args.to}, {args.at} + U(0, {args.spread:g}) s; load {os.getloadavg()[0]:.2f}")
        print(f"{'#':>3} {'delay s':>8} {'exit after s':>12} {'status':>6}  said / deadline / dump  process.json  trials")
        for i in range(args.repeats):
            row = repeat(spec, Path(tmp) / "run", rng.uniform(0, args.spread), args.to, args.at)
            rows.append(row)
            if row.get("ended_before"):
                print(f"{i:>3} {row['delay']:>8.2f} (the run ended before the signal)", flush=True)
                continue
            flags = "/".join(name for name in ("said", "deadline", "dump") if row[name]) or "-"
            print(f"{i:>3} {row['delay']:>8.2f} {row['took']:>12.1f} {row['rc']:>6}  {flags:<22} {row['how']!s:<13} "
                  f"{'yes' if row['trials'] else 'no'}", flush=True)
            if row["rc"] != 128 + signal.SIGTERM:
                for line in row["tail"]:
                    print(f"      | {line[:160]}", flush=True)
    sent = [r for r in rows if not r.get("ended_before")]
    clean = [r for r in sent if r["rc"] == 128 + signal.SIGTERM and r["how"] in ("interrupted", "(no folder)")]
    print(f"{len(clean)} of {len(sent)} ended with status 143 and marked interrupted (or their empty folder "
          f"removed); load {os.getloadavg()[0]:.2f}")
    print(f"sigterm_slowest_exit_s: {max((r['took'] for r in sent), default=0.0):.1f}")


if __name__ == "__main__":
    main()
