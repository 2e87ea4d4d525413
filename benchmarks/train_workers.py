"""One trial with 1 worker against 2 data-parallel workers (one CPU each), and what the
per-step all-reduce of the gradients costs.

    python benchmarks/train_workers.py [--repeats 3] [--epochs 4] [--steps 60]

1. The quickstart's space fixed at one configuration (its largest: a grid of one point,
   ``--epochs`` epochs), run by ``python -m archscale run`` with ``resources_per_trial``
   ``{cpu: 1, workers: 1}`` and ``{cpu: 1, workers: 2}``, the two alternating, ``--repeats``
   times each. Per run: the command's wall time, and the trial's own ``train_seconds`` (the
   training steps) and ``wall_seconds`` (its ``train()`` call) from ``result.json``, and its
   validation accuracy.
2. The same network in two gloo processes of one thread each (as Ray Train starts them),
   ``batch_size / 2`` images a rank: ``--steps`` training steps under DDP, and the same
   steps under DDP's ``no_sync()`` (no gradient all-reduce), alternating in blocks of ten;
   the difference per step is the communication cost. Also a bare ``all_reduce`` of a tensor
   of the network's parameter count.

The load average (``os.getloadavg``) is printed before and after each part: on a shared
machine the figures are only as good as the load they were taken at.
Last line: ``train_workers_speedup: X`` (median trial train_seconds with 1 worker over with 2).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel

from archscale.space import build
from archscale.search.configs.context import resolve_arch, trial_context
from archscale.spec import parse_spec
from archscale.trainer import dataset_context, load_dataset, split
from archscale.trainer.batches import channel_stats, normalise

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def spec_for(workers: int, epochs: int) -> dict:
    spec = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec["space"]["params"] = {k: v[-1] if isinstance(v, list) else v for k, v in spec["space"]["params"].items()}
    spec["train"]["epochs"] = epochs
    spec["search"].update(sampler="grid", num_trials=1, max_concurrent=1,
                          resources_per_trial={"cpu": 1, "gpu": 0, "workers": workers})
    spec["name"] = f"train_workers_{workers}"
    return spec


def one_trial(workers: int, epochs: int, folder: Path) -> dict:
    path = folder / f"w{workers}.yaml"
    path.write_text(yaml.safe_dump(spec_for(workers, epochs)))
    run_dir = folder / f"run-{workers}-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "archscale", "run", str(path), "--out", str(run_dir), "--quiet"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"archscale run failed ({workers} workers):\n{done.stdout}\n{done.stderr}")
    result = json.loads(next((run_dir / "trials").glob("*/result.json")).read_text())
    m = result["metrics"]
    return {"workers": workers, "command_s": wall, "train_s": m["train_seconds"], "trial_s": m["wall_seconds"],
            "val_accuracy": m["val_accuracy"], "host_workers": result["host"]["workers"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    spec = parse_spec(spec_for(2, 1))
    ctx = trial_context(spec, Path("."), dataset_context("mnist-5k", "data"))
    torch.manual_seed(0)
    model = build(resolve_arch(ctx, {}))
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    splits = split(load_dataset("mnist-5k"), 0.1, seed=0)
    mean, std = channel_stats(splits.x_train)
    local = spec.train.batch_size // 2
    x = normalise(splits.x_train[rank * local:(rank + 1) * local], mean, std, torch.device("cpu"))
    y = splits.y_train[rank * local:(rank + 1) * local]

    def step(sync: bool) -> None:
        opt.zero_grad(set_to_none=True)
        if sync:
            F.cross_entropy(ddp(x), y).backward()
        else:
            with ddp.no_sync():
                F.cross_entropy(ddp(x), y).backward()
        opt.step()

    for _ in range(5):
        step(True)
        step(False)
    times = {True: [], False: []}
    for block in range(steps // 10):
        for sync in ((True, False) if block % 2 == 0 else (False, True)):
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(10):
                step(sync)
            dist.barrier()
            times[sync].append((time.perf_counter() - t0) / 10)
    flat = torch.zeros(sum(p.numel() for p in model.parameters()))
    reduce_s = []
    for _ in range(200):
        t0 = time.perf_counter()
        dist.all_reduce(flat)
        reduce_s.append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(json.dumps({"ddp": times[True], "no_sync": times[False], "all_reduce": reduce_s,
                                         "params": flat.numel(), "local_batch": local}))
    dist.destroy_process_group()


def comm_cost(steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "comm.json")
        mp.spawn(_rank, args=(_free_port(), steps, out), nprocs=2, join=True)
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; load average before: {load()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):  # alternating sides
                row = one_trial(workers, args.epochs, Path(tmp))
                row["load"] = load()
                rows.append(row)
                print(f"  rep {rep + 1} workers {workers}: command {row['command_s']:.1f} s, trial "
                      f"{row['trial_s']:.1f} s, training steps {row['train_s']:.1f} s, val_accuracy "
                      f"{row['val_accuracy']:.4f}, load {row['load']}", flush=True)
    print(f"\none trial ({args.epochs} epochs, quickstart's largest point), median of {args.repeats}:")
    print(f"{'workers':>8} {'command s':>10} {'trial s':>8} {'train s':>8} {'val_acc':>8}")
    med = {}
    for workers in (1, 2):
        mine = [r for r in rows if r["workers"] == workers]
        med[workers] = {k: statistics.median(r[k] for r in mine) for k in ("command_s", "trial_s", "train_s",
                                                                           "val_accuracy")}
        m = med[workers]
        print(f"{workers:>8} {m['command_s']:>10.1f} {m['trial_s']:>8.1f} {m['train_s']:>8.1f} "
              f"{m['val_accuracy']:>8.4f}")
    print(f"load average after the trials: {load()}")
    comm = comm_cost(args.steps)
    ddp, bare = statistics.median(comm["ddp"]), statistics.median(comm["no_sync"])
    reduce_ms = statistics.median(comm["all_reduce"]) * 1e3
    print(f"\nper step, 2 gloo ranks of 1 thread, {comm['local_batch']} images a rank, {comm['params']:,} parameters "
          f"(median of {len(comm['ddp'])} blocks of 10 steps):")
    print(f"  DDP step {ddp * 1e3:.2f} ms, no_sync step {bare * 1e3:.2f} ms, communication {1e3 * (ddp - bare):.2f} ms "
          f"({100 * (ddp - bare) / ddp:.1f}% of a step); bare all_reduce of the gradients {reduce_ms:.3f} ms")
    print(f"load average after: {load()}")
    print(f"train_workers_speedup: {med[1]['train_s'] / med[2]['train_s']:.3f}")


if __name__ == "__main__":
    main()
