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
    ARCHSCALE_DATA=/root/data python benchmarks/dispatch_overhead.py --job airbench --device cuda

Jobs (``--job``):

- ``mnist`` (default): the ``budgeted`` network below on all of ``mnist-5k`` (3,600 training
  images), batch 64, 1 thread, 3 epochs (about 3 s on this project's CPU).
- ``airbench``: airbench94's network (the ``davidnet`` family's ``AIRBENCH94``) on CIFAR-10
  with seed 003's recipe (``train.recipe: davidnet``) for ``--epochs`` (default 10), the
  trials sharing one GPU (``--device cuda``: each asks for ``1/parallel`` of it); 3 to 5 s a
  trial on an H200, the airbench-class trials of a GPU search. ``--subset`` and
  ``--device cpu`` make a smoke run of it on a CPU.
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
AIRBENCH94 = {"prep_width": 24, "prep_kernel": 2, "prep_norm": False, "layer1_width": 64, "layer2_width": 256,
              "layer3_width": 256, "layer1_add": "extra", "layer2_add": "extra", "layer3_add": "extra",
              "activation": "gelu", "order": "conv-pool-bn", "bn_weight": "frozen", "head_scale": 0.1111}
JOBS = {  # name -> (dataset, family, architecture, train section less epochs, default epochs)
    "mnist": ("mnist-5k", "budgeted", ARCH, {"batch_size": 64, "lr": 0.1}, 3),
    "airbench": ("cifar10", "davidnet", AIRBENCH94, {"recipe": "davidnet"}, 10),
}


def spec(trials: int, parallel: int, epochs: int, job: str = "mnist", device: str = "cpu",
         subset: float = 1.0) -> dict:
    dataset, family, arch, train, _ = JOBS[job]
    gpu = round(1.0 / parallel, 4) if device == "cuda" else 0
    return {
        "name": "dispatch", "seed": 0,
        "data": {"dataset": dataset, "val_fraction": 0.1, "subset": subset},
        "space": {"family": family, "params": dict(arch)},
        "train": {**train, "epochs": epochs, "device": device},
        "search": {"sampler": "random", "num_trials": trials, "max_concurrent": parallel,
                   "resources_per_trial": {"cpu": 1, "gpu": gpu}},
    }


# --------------------------------------------------------------------------- the plain loop


_SPLITS = None  # per worker process: the data, loaded once (as archscale loads it once per run)


def _load(job_spec: dict) -> None:
    global _SPLITS
    import torch

    from archscale.trainer import load_dataset, split

    torch.set_num_threads(1)
    data = load_dataset(job_spec["data"]["dataset"])
    _SPLITS = (split(data, 0.1, job_spec["data"]["subset"], seed=0), data.context)


def _job(job_spec: dict) -> float:
    """One training job in a worker process, as the spec's trial trains; returns its wall seconds."""
    import torch

    from archscale.space import build, get_space
    from archscale.trainer import RECIPES, TrainConfig, train

    splits, context = _SPLITS
    start = time.perf_counter()
    torch.manual_seed(0)
    fields = dict(job_spec["train"])
    device = fields.pop("device")
    recipe = RECIPES[fields.pop("recipe")] if "recipe" in fields else {}
    model = build(get_space(job_spec["space"]["family"]).resolve(job_spec["space"]["params"], context))
    train(model, splits, TrainConfig(**{**recipe, **fields}, seed=0), device=device)
    return time.perf_counter() - start


def plain_loop(job_spec: dict) -> None:
    """The spec's trials as plain jobs: ``max_concurrent`` processes, each loading the data once
    (forked; spawned for CUDA, which a forked child cannot start)."""
    import multiprocessing

    search = job_spec["search"]
    how = "spawn" if job_spec["train"]["device"] == "cuda" else "fork"
    with ProcessPoolExecutor(search["max_concurrent"], mp_context=multiprocessing.get_context(how),
                             initializer=_load, initargs=(job_spec,)) as pool:
        seconds = list(pool.map(_job, [job_spec] * search["num_trials"]))
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
    parser.add_argument("--epochs", type=int, help="epochs per trial (default: the job's, 3 or 10)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--job", choices=sorted(JOBS), default="mnist")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--subset", type=float, default=1.0, help="fraction of the training split (smoke runs)")
    parser.add_argument("--plain", metavar="SPEC", help=argparse.SUPPRESS)  # the plain side, as a command
    args = parser.parse_args()
    if args.plain:
        plain_loop(yaml.safe_load(Path(args.plain).read_text()))
        return
    epochs = args.epochs if args.epochs is not None else JOBS[args.job][4]

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows, profiles = [], []
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "dispatch.yaml"
        spec_file.write_text(yaml.safe_dump(spec(args.trials, args.parallel, epochs, args.job, args.device,
                                                 args.subset)))
        for rep in range(args.reps):
            before = load()
            wall, out = timed([sys.executable, __file__, "--plain", str(spec_file)], env)
            rows.append(("plain loop", rep, wall, before, out.strip().splitlines()[-1]))
            before = load()
            wall, out = timed([sys.executable, "-m", "archscale", "run", str(spec_file), "--quiet", "--profile",
                               "--out", str(Path(tmp) / f"run{rep}")], env)
            trials = (Path(tmp) / f"run{rep}" / "trials.csv").read_text().strip().splitlines()[1:]
            rows.append(("archscale run", rep, wall, before, f"{len(trials)} trials recorded"))
            profile = json.loads((Path(tmp) / f"run{rep}" / "profile.json").read_text())
            profiles.append({**profile, "exit": wall - profile["total"]})

    print(f"job {args.job} on {args.device}: {args.trials} trials x {epochs} epochs, {args.parallel} at once, "
          f"1 thread each; load average (1/5 min) before each command shown")
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
