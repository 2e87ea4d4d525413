"""Dispatch overhead: N trials of one fixed small training job through ``archscale run``
(Ray Tune, the recorder, the trials' files, the front and the export) against the same N
jobs in a plain loop of worker processes, with the same parallelism and threads per job.

Both sides are timed as whole commands from a fresh interpreter (imports, data loading and,
for archscale, starting Ray included), alternately, ``--reps`` times each; the ratio is of
the medians. ``archscale run`` runs with ``--profile``: a second table splits its time
(median over the reps) into start-up, time to the first trial, each trial's dispatch and
finishing, and ``exit`` (the command's wall time after its own last figure: Ray's shutdown
and the interpreter's). A third gives each side's CPU seconds by process (the command, Ray's
own processes, the workers; read from ``/proc`` while it runs) before its first trial trains
and after, and what the start-up's extra CPU alone makes of the ratio where every core is
busy. Prints the tables and ends with ``dispatch_overhead_ratio: VALUE``.

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
import threading
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


# --------------------------------------------------------------------------- the CPU of each process

FIRST_JOB = "first job began at"  # the plain side's line: when its first job began (time.time())
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")  # Ray's own, though named like its workers
RAY_WORKER = "default_worker.py"  # the script a Ray worker process runs


class CpuSampler:
    """CPU seconds (user and system, all threads) of a command and of every process under it,
    read from ``/proc`` every ``interval`` seconds while it runs, by role: the command itself,
    its workers (every process under a plain loop; under a command that starts Ray (``ray``),
    Ray's ``ray::`` worker processes) and Ray's own processes (GCS, raylet, agents,
    monitors). A process's CPU after its last sample is not seen (at most ``interval`` of
    it). Without ``/proc`` it records nothing."""

    def __init__(self, root: int, ray: bool, interval: float = 0.2):
        self.root, self.ray, self.interval = root, ray, interval
        self.samples: list[tuple[float, dict[int, float]]] = []  # (time.time(), pid -> CPU seconds)
        self.args: dict[int, list[str]] = {}  # pid -> its command line when last seen (a process renames itself)
        self._tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            at, table = time.time(), {}
            for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
                if entry.name.isdigit():
                    try:
                        fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()  # after the name
                        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / self._tick)
                    except (OSError, IndexError, ValueError):  # gone since the folder was listed
                        continue
            tree, grew = {self.root}, True
            while grew:
                below = {pid for pid, (parent, _) in table.items() if parent in tree} - tree
                tree |= below
                grew = bool(below)
            for pid in tree - {self.root}:
                try:
                    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                except OSError:
                    continue
                if args != [""]:  # empty once a process has exited
                    self.args[pid] = args
            if self.root in table:
                self.samples.append((at, {pid: table[pid][1] for pid in tree if pid in table}))
            self._stop.wait(self.interval)

    def role(self, pid: int) -> str:
        """``command``, ``workers`` or ``Ray``, by the process's last command line seen (a
        process forked by the raylet holds the raylet's until it runs its own program)."""
        if pid == self.root:
            return "command"
        args = self.args.get(pid, [""])
        if not self.ray or args[0].startswith("ray::") and not args[0].startswith(RAY_AGENTS):
            return "workers"
        # a Ray worker runs default_worker.py until it names itself ray::IDLE
        return "workers" if any(arg.endswith(RAY_WORKER) for arg in args) else "Ray"

    def by_role(self, split: float) -> dict[str, tuple[float, float]]:
        """CPU seconds of each role before ``split`` (``time.time()``) and after it."""
        last: dict[int, float] = {}  # pid -> its CPU at its last sample
        before: dict[int, float] = {}
        for at, cpu in self.samples:
            last.update(cpu)
            if at <= split:
                before.update(cpu)
        out: dict[str, list[float]] = {}
        for pid, total in last.items():
            row = out.setdefault(self.role(pid), [0.0, 0.0])
            row[0] += before.get(pid, 0.0)
            row[1] += total - before.get(pid, 0.0)
        return {role: (b, a) for role, (b, a) in out.items()}


# --------------------------------------------------------------------------- timing both


def timed(cmd: list[str], env: dict, ray: bool) -> tuple[float, str, CpuSampler]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = CpuSampler(proc.pid, ray)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.stop()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}\n{err}")
    return wall, out, sampler


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


def print_cpu(cpu: dict[str, list[dict]], plain_wall: float) -> None:
    """CPU seconds of each side's processes before its first trial (job) trained and after,
    median over the reps, and what the start-up's extra CPU alone costs where every core is
    busy (as on a machine with no more cores than trials at once)."""
    if not all(cpu.values()) or not any(r for side in cpu.values() for r in side):
        print("CPU by process: not measured (no /proc)")
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def median(side: str, role: str | None, when: int) -> float:
        return statistics.median(sum(v[when] for r, v in rep.items() if role in (None, r)) for rep in cpu[side])

    print("CPU seconds by process (all threads, /proc every 0.2 s), median: before the first trial trains | after")
    print(f"  {'':<22} {'plain loop':>17} {'archscale run':>17}")
    for role, name in (("command", "the command itself"), ("Ray", "Ray's own processes"),
                       ("workers", "workers"), (None, "all")):
        cells = [f"{median(side, role, 0):>7.1f} | {median(side, role, 1):>5.1f}" for side in cpu]
        print(f"  {name:<22} {cells[0]:>17} {cells[1]:>17}")
    extra = median("archscale run", None, 0) - median("plain loop", None, 0)
    print(f"start-up: {extra:.1f} CPU-s more than the plain loop's before the first trial trains, "
          f"{extra / cores:.1f} s of wall with all {cores} cores busy; that alone would make the ratio "
          f"{(plain_wall + extra / cores) / plain_wall:.2f}")


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
    rows, profiles, cpu = [], [], {"plain loop": [], "archscale run": []}
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "dispatch.yaml"
        spec_file.write_text(yaml.safe_dump(spec(args.trials, args.parallel, epochs, args.job, args.device,
                                                 args.subset)))
        for rep in range(args.reps):
            before = load()
            wall, out, sampler = timed([sys.executable, __file__, "--plain", str(spec_file)], env, ray=False)
            rows.append(("plain loop", rep, wall, before, out.strip().splitlines()[-1]))
            first = float(next(line for line in out.splitlines() if line.startswith(FIRST_JOB)).split()[-1])
            cpu["plain loop"].append(sampler.by_role(first))
            before = load()
            wall, out, sampler = timed([sys.executable, "-m", "archscale", "run", str(spec_file), "--quiet",
                                        "--profile", "--out", str(Path(tmp) / f"run{rep}")], env, ray=True)
            trials = (Path(tmp) / f"run{rep}" / "trials.csv").read_text().strip().splitlines()[1:]
            rows.append(("archscale run", rep, wall, before, f"{len(trials)} trials recorded"))
            profile = json.loads((Path(tmp) / f"run{rep}" / "profile.json").read_text())
            profiles.append({**profile, "exit": wall - profile["total"]})
            first = min(t["train_start"] for t in profile["raw_trials"].values() if "train_start" in t)
            cpu["archscale run"].append(sampler.by_role(first))

    print(f"job {args.job} on {args.device}: {args.trials} trials x {epochs} epochs, {args.parallel} at once, "
          f"1 thread each; load average (1/5 min) before each command shown")
    print(f"{'command':<14} {'rep':>3} {'wall s':>8} {'load':>10}  note")
    for name, rep, wall, before, note in rows:
        print(f"{name:<14} {rep:>3} {wall:>8.1f} {before:>10}  {note}")
    print_breakdown(profiles)
    plain = statistics.median(w for n, _, w, _, _ in rows if n == "plain loop")
    ours = statistics.median(w for n, _, w, _, _ in rows if n == "archscale run")
    print_cpu(cpu, plain)
    print(f"median wall: plain loop {plain:.1f} s, archscale run {ours:.1f} s")
    print(f"dispatch_overhead_ratio: {ours / plain:.3f}")


if __name__ == "__main__":
    main()
