"""Dispatch cost per trial: N trials of one fixed small training job through ``archscale run``
(Ray Tune, the recorder, the trials' files, the front and the export) against the same N
jobs in a plain loop of worker processes, with the same parallelism and threads per job.

Both sides are timed as whole commands from a fresh interpreter, alternately, ``--reps``
times each, at two numbers of trials (``--sizes``, default 12 and 36). From the medians:

- the marginal cost of a trial on each side, ``(wall(36) - wall(12)) / 24``: what one more
  trial costs once the command runs; their ratio is what a long search pays for archscale;
- the fixed cost, ``wall(12) - 12 x marginal``: imports, data, Ray's start, the finish.

``archscale run`` runs with ``--profile``; a second table splits its time (median over the
reps of the largest size) into phases and per-trial parts. Prints the tables and ends with
``dispatch_marginal_ratio: VALUE``.

    python benchmarks/dispatch_overhead.py [--sizes 12,36] [--parallel 2] [--epochs 3] [--reps 2]
    python benchmarks/dispatch_overhead.py --trials 12 --reps 2   # one size: the whole-command ratio only
    ARCHSCALE_DATA=/root/data python benchmarks/dispatch_overhead.py --job airbench --device cuda --trials 8

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


def _job(job_spec: dict) -> tuple[float, float]:
    """One training job in a worker process, as the spec's trial trains; returns when it began
    (``time.time()``) and its wall seconds."""
    import torch

    from archscale.space import build, get_space
    from archscale.trainer import RECIPES, TrainConfig, train

    splits, context = _SPLITS
    began, start = time.time(), time.perf_counter()
    torch.manual_seed(0)
    fields = dict(job_spec["train"])
    device = fields.pop("device")
    recipe = RECIPES[fields.pop("recipe")] if "recipe" in fields else {}
    model = build(get_space(job_spec["space"]["family"]).resolve(job_spec["space"]["params"], context))
    train(model, splits, TrainConfig(**{**recipe, **fields}, seed=0), device=device)
    return began, time.perf_counter() - start


def plain_loop(job_spec: dict) -> None:
    """The spec's trials as plain jobs: ``max_concurrent`` processes, each loading the data once
    (forked; spawned for CUDA, which a forked child cannot start)."""
    import multiprocessing

    search = job_spec["search"]
    how = "spawn" if job_spec["train"]["device"] == "cuda" else "fork"
    with ProcessPoolExecutor(search["max_concurrent"], mp_context=multiprocessing.get_context(how),
                             initializer=_load, initargs=(job_spec,)) as pool:
        began, seconds = zip(*pool.map(_job, [job_spec] * search["num_trials"]))
    print(f"{FIRST_JOB} {min(began)!r}")
    print(f"job seconds: mean {statistics.mean(seconds):.1f}, min {min(seconds):.1f}, max {max(seconds):.1f}")


FIRST_JOB = "first job began at"  # the plain side's line: when its first job began (time.time())


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
    parser.add_argument("--sizes", default="12,36", help="two numbers of trials (default 12,36)")
    parser.add_argument("--trials", type=int, help="one number of trials instead of --sizes")
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
    sizes = [args.trials] if args.trials else sorted({int(n) for n in args.sizes.split(",")})

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows, profiles = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for n in sizes:
                spec_file = Path(tmp) / f"dispatch{n}.yaml"
                spec_file.write_text(yaml.safe_dump(spec(n, args.parallel, epochs, args.job, args.device,
                                                         args.subset)))
                before = load()
                wall, out = timed([sys.executable, __file__, "--plain", str(spec_file)], env)
                rows.append(("plain loop", n, rep, wall, before, out.strip().splitlines()[-1]))
                before = load()
                run_dir = Path(tmp) / f"run{n}-{rep}"
                wall, out = timed([sys.executable, "-m", "archscale", "run", str(spec_file), "--quiet", "--profile",
                                   "--out", str(run_dir)], env)
                trials = (run_dir / "trials.csv").read_text().strip().splitlines()[1:]
                rows.append(("archscale run", n, rep, wall, before, f"{len(trials)} trials recorded"))
                if n == sizes[-1]:
                    profile = json.loads((run_dir / "profile.json").read_text())
                    profiles.append({**profile, "exit": wall - profile["total"]})

    print(f"job {args.job} on {args.device}: {' and '.join(map(str, sizes))} trials x {epochs} epochs, "
          f"{args.parallel} at once, 1 thread each; load average (1/5 min) before each command shown")
    print(f"{'command':<14} {'trials':>6} {'rep':>3} {'wall s':>8} {'load':>10}  note")
    for name, n, rep, wall, before, note in rows:
        print(f"{name:<14} {n:>6} {rep:>3} {wall:>8.1f} {before:>10}  {note}")
    print_breakdown(profiles)

    def median(side: str, n: int) -> float:
        return statistics.median(w for name, m, _, w, _, _ in rows if name == side and m == n)

    big = sizes[-1]
    plain, ours = median("plain loop", big), median("archscale run", big)
    print(f"median wall: plain loop {plain:.1f} s, archscale run {ours:.1f} s ({big} trials)")
    if len(sizes) == 1:
        print(f"dispatch_overhead_ratio: {ours / plain:.3f}")
        return
    small = sizes[0]
    marginal = {side: (median(side, big) - median(side, small)) / (big - small)
                for side in ("plain loop", "archscale run")}
    fixed = {side: median(side, small) - small * marginal[side] for side in marginal}
    print(f"{'':<14} {'per trial s':>12} {'fixed s':>9}   (marginal from {small} to {big} trials; "
          f"{args.parallel} trials at once)")
    for side in marginal:
        print(f"{side:<14} {marginal[side]:>12.3f} {fixed[side]:>9.1f}")
    print(f"dispatch_marginal_ratio: {marginal['archscale run'] / marginal['plain loop']:.3f}")


if __name__ == "__main__":
    main()
