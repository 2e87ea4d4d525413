"""Dispatch overhead: N trials of one fixed small training job through ``archscale run``
(Ray Tune, the recorder, the trials' files, the front and the export) against the same N
jobs in a plain loop of worker processes, with the same parallelism and threads per job.

Both sides are timed as whole commands from a fresh interpreter (imports, data loading and,
for archscale, starting Ray included), alternately, ``--reps`` times each; the ratio is of
the medians. ``archscale run`` runs with ``--profile``: a second table splits its time
(median over the reps) into start-up, time to the first trial, each trial's dispatch and
finishing, and ``exit`` (the command's wall time after its own last figure: Ray's shutdown
and the interpreter's). Prints both tables and ends with ``dispatch_overhead_ratio: VALUE``.

    python benchmarks/dispatch_overhead.py [--trials 12] [--parallel 2] [--epochs 3] [--reps 2]

The job: the ``budgeted`` network below on all of ``mnist-5k`` (3,600 training images),
batch 64, 1 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ARCH = {"c1_width": 8, "c2_width": 16, "c3_width": 16, "c4_width": 32,
        "c1_convs": 1, "c2_convs": 1, "c3_convs": 1, "c4_convs": 1, "downsample": "maxpool"}


def spec(trials: int, parallel: int, epochs: int) -> dict:
    return {
        "name": "dispatch", "seed": 0,
        "data": {"dataset": "mnist-5k", "val_fraction": 0.1, "subset": 1.0},
        "space": {"family": "budgeted", "params": dict(ARCH)},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 0.1},
        "search": {"sampler": "random", "num_trials": trials, "max_concurrent": parallel,
                   "resources_per_trial": {"cpu": 1, "gpu": 0}},
    }


# --------------------------------------------------------------------------- the plain loop


_SPLITS = None  # per worker process: the data, loaded once (as archscale loads it once per run)


def _load() -> None:
    global _SPLITS
    import torch

    from archscale.trainer import load_dataset, split

    torch.set_num_threads(1)
    data = load_dataset("mnist-5k")
    _SPLITS = (split(data, 0.1, 1.0, seed=0), data.context)


def _job(epochs: int) -> float:
    """One training job in a worker process; returns its wall seconds."""
    import torch

    from archscale.space import build, get_space
    from archscale.trainer import TrainConfig, train

    splits, context = _SPLITS
    start = time.perf_counter()
    torch.manual_seed(0)
    model = build(get_space("budgeted").resolve(ARCH, context))
    train(model, splits, TrainConfig(epochs=epochs, batch_size=64, lr=0.1, seed=0))
    return time.perf_counter() - start


def plain_loop(trials: int, parallel: int, epochs: int) -> None:
    with ProcessPoolExecutor(parallel, initializer=_load) as pool:
        seconds = list(pool.map(_job, [epochs] * trials))
    print(f"job seconds: mean {statistics.mean(seconds):.1f}, min {min(seconds):.1f}, max {max(seconds):.1f}")


# --------------------------------------------------------------------------- timing both


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return wall, done.stdout


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def print_breakdown(profiles: list[dict]) -> None:
    """Where ``archscale run`` spent its time: the median over the reps of each figure of its
    ``profile.json``."""
    def median(get) -> float:
        values = [v for v in (get(p) for p in profiles) if v is not None]
        return statistics.median(values) if values else float("nan")

    phases = list(dict.fromkeys(name for p in profiles for name in p["phases"]))
    print(f"archscale run --profile, median of {len(profiles)} (seconds):")
    for name in phases:
        print(f"  {name:<30} {median(lambda p: p['phases'].get(name)):>8.2f}")
    print(f"  {'exit (Ray shutdown)':<30} {median(lambda p: p['exit']):>8.2f}")
    print(f"  {'time to first trial':<30} {median(lambda p: p['time_to_first_trial']):>8.2f}")
    print("  the first trial, seconds after the process started:")
    for name in dict.fromkeys(k for p in profiles for k in p.get("first_trial", {})):
        print(f"    {name.replace('_', ' '):<28} {median(lambda p: p.get('first_trial', {}).get(name)):>8.2f}")
    print("  per trial (mean over the run's trials):")
    for name in dict.fromkeys(k for p in profiles for k in p["per_trial"]):
        print(f"    {name:<28} {median(lambda p: p['per_trial'].get(name)):>8.3f}")
    print(f"    {'idle slot between trials':<28} {median(lambda p: p.get('idle_slot_per_trial')):>8.3f}")
    print(f"    {'overhead (slot - training)':<28} {median(lambda p: p.get('overhead_per_trial')):>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)  # the plain side, as a command
    args = parser.parse_args()
    if args.plain:
        plain_loop(args.trials, args.parallel, args.epochs)
        return

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows, profiles = [], []
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "dispatch.yaml"
        spec_file.write_text(yaml.safe_dump(spec(args.trials, args.parallel, args.epochs)))
        for rep in range(args.reps):
            before = load()
            wall, out = timed([sys.executable, __file__, "--plain", "--trials", str(args.trials),
                               "--parallel", str(args.parallel), "--epochs", str(args.epochs)], env)
            rows.append(("plain loop", rep, wall, before, out.strip().splitlines()[-1]))
            before = load()
            wall, out = timed([sys.executable, "-m", "archscale", "run", str(spec_file), "--quiet", "--profile",
                               "--out", str(Path(tmp) / f"run{rep}")], env)
            trials = (Path(tmp) / f"run{rep}" / "trials.csv").read_text().strip().splitlines()[1:]
            rows.append(("archscale run", rep, wall, before, f"{len(trials)} trials recorded"))
            profile = json.loads((Path(tmp) / f"run{rep}" / "profile.json").read_text())
            profiles.append({**profile, "exit": wall - profile["total"]})

    print(f"{args.trials} trials x {args.epochs} epochs, {args.parallel} at once, 1 thread each; "
          f"load average (1/5 min) before each command shown")
    print(f"{'command':<14} {'rep':>3} {'wall s':>8} {'load':>10}  note")
    for name, rep, wall, before, note in rows:
        print(f"{name:<14} {rep:>3} {wall:>8.1f} {before:>10}  {note}")
    print_breakdown(profiles)
    plain = statistics.median(w for n, _, w, _, _ in rows if n == "plain loop")
    ours = statistics.median(w for n, _, w, _, _ in rows if n == "archscale run")
    print(f"median wall: plain loop {plain:.1f} s, archscale run {ours:.1f} s")
    print(f"dispatch_overhead_ratio: {ours / plain:.3f}")


if __name__ == "__main__":
    main()
