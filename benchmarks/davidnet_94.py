"""Seed 003's claim: the DavidNet ResNet-9 (residual layer1 + layer3) reaches 94% test
accuracy on CIFAR-10 in 24 epochs. Trains it with the seed's recipe over N seeds and
prints mean/min/max test accuracy and seconds per run (CUDA-event timed training, data
loading and compilation excluded, as airbench times itself; wall time beside it).

    ARCHSCALE_DATA=../shared/data python benchmarks/davidnet_94.py --runs 5
    ARCHSCALE_DATA=../shared/data python benchmarks/davidnet_94.py --arch airbench94 --epochs 10 --runs 5

Meant for a GPU; on a CPU use --subset/--epochs for a smoke run (figures then mean little).
Last line: ``davidnet_94_mean_test_accuracy: X``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from archscale.space import build, get_space
from archscale.space.davidnet import AIRBENCH94
from archscale.trainer import RECIPES, TrainConfig, load_dataset, split, train

RECIPE = RECIPES["davidnet"]  # seed 003's recipe, as a spec's `train.recipe: davidnet` gives it
ARCHS = {"davidnet": {}, "airbench94": AIRBENCH94}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="davidnet")
    parser.add_argument("--subset", type=float, default=1.0, help="fraction of the training set (smoke runs)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compile time excluded)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_dataset("cifar10")
    # DavidNet trains on all 50,000 images: a token validation split keeps the API's contract.
    splits = split(data, val_fraction=0.0002, subset=args.subset, seed=0)
    arch = get_space("davidnet").resolve(ARCHS[args.arch], data.context)
    cfg = dict(RECIPE, epochs=args.epochs, compile=args.compile)
    rows = []
    for run in range(args.runs):
        torch.manual_seed(run)
        model = build(arch)
        t0 = time.perf_counter()
        result = train(model, splits, TrainConfig(**cfg, seed=run), device=device)
        rows.append((run, result.test_accuracy, result.train_seconds, time.perf_counter() - t0))
        print(f"run {run}: test {100 * result.test_accuracy:.2f}%  train {result.train_seconds:.1f}s  "
              f"wall {rows[-1][3]:.1f}s", flush=True)
    accs = [r[1] for r in rows]
    secs = [r[2] for r in rows]
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"\n{args.arch} ({arch.text}) on {name}, {args.epochs} epochs, {len(splits.y_train)} training images")
    print(f"{'runs':>5} {'mean':>8} {'min':>8} {'max':>8} {'s/run':>8}")
    print(f"{len(rows):>5} {100 * statistics.mean(accs):>7.2f}% {100 * min(accs):>7.2f}% {100 * max(accs):>7.2f}% "
          f"{statistics.mean(secs):>8.1f}")
    print(f"davidnet_94_mean_test_accuracy: {statistics.mean(accs):.4f}")


if __name__ == "__main__":
    main()
