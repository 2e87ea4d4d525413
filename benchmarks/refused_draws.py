"""What would charging the driver's refused draws add to ``benchmarks/sampler_quality.py``'s costs?

A run's driver judges every draw before it becomes a trial (it builds the network and counts it
against the budgets; ``benchmarks/evaluation_cost.py`` times that). The replays charge this once
per trial handed out and once per candidate a prescreen scores, but not for the draws refused
as over a budget, nor for a prescreen's pool draws that are not scored: counting them in the
replays would change the replayed code and with it every cached replay. This script measures
how much they would add: the default strategy replayed on the fresh seeds of every space, as
``sampler_quality``'s replays run, counting the refused draws of the whole replay (an upper
bound: the cost table stops counting where the front reaches its target) and the prescreen's
unscored draws, each charged the driver's mean seconds a candidate (``evaluations.json`` in the
benchmark's store, measured by ``sampler_quality.evaluation_charges``) over a full trial's time.

The last line is ``refused_draws_in_full_trials: X``: the largest, over the spaces and seeds.

    python benchmarks/refused_draws.py
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import sampler_quality as sq  # noqa: E402

TRAIN_SEEDS = (0, 1, 2)


def _job(args: tuple) -> tuple[str, int, int, int]:
    """One replay of ``sampler_quality``'s (space, training seed, grid folder, store, strategy,
    seed) -> (space, trials handed out, draws refused, prescreen draws not scored)."""
    from archscale.search.sampling.replay import replay_search

    name, train_seed, run_dir, store, strategy, seed = args
    if (name, train_seed) not in sq._GRIDS:
        sq._GRIDS[(name, train_seed)] = sq.Grid(name, train_seed, Path(run_dir), Path(store))
    grid = sq._GRIDS[(name, train_seed)]
    rows, ask_tell = replay_search(sq.spec_for(grid.spec, seed, strategy), grid.table, grid.dims, constraints=False)
    pre = ask_tell.prescreened
    return (name, int((rows["suggested"] >= 0).sum()), int((rows["suggested"] < 0).sum()),
            pre.drawn - pre.scored if pre is not None else 0)


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # GP's torch: one thread per process, as sampler_quality
    strategy = sq.default_strategy()
    names = [n for n in sq.SPACES if all((sq.published(n, t) / "grid.json").is_file() for t in TRAIN_SEEDS)]
    charges = sq.evaluation_charges(names, sq.STORE)
    todo = [(n, TRAIN_SEEDS[s % len(TRAIN_SEEDS)], str(sq.published(n, TRAIN_SEEDS[s % len(TRAIN_SEEDS)])),
             str(sq.STORE), strategy, s) for n in names for s in sq.FRESH_SEEDS]
    start = time.perf_counter()
    counts: dict[str, list[tuple[int, int, int]]] = {}
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for name, *count in pool.imap_unordered(_job, todo):
            counts.setdefault(name, []).append(tuple(count))
    print(f"{len(todo)} replays of {strategy} on seeds {sq.FRESH_SEEDS[0]}-{sq.FRESH_SEEDS[-1]} in "
          f"{time.perf_counter() - start:.0f}s, load average {sq.load()}")
    print("| space | trials handed out (median) | refused draws a replay: median [max] | prescreen draws not scored "
          "(median) | driver s a candidate | a full trial s | both, in full trials: median [max] |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for name in names:
        c = np.array(counts[name], dtype=float)
        trial = sq.Space(name, {t: sq.published(name, t) for t in TRAIN_SEEDS}).trial_seconds
        extra = (c[:, 1] + c[:, 2]) * charges[name] / trial
        worst = max(worst, float(extra.max()))
        print(f"| {name} | {np.median(c[:, 0]):.0f} | {np.median(c[:, 1]):.0f} [{c[:, 1].max():.0f}] | "
              f"{np.median(c[:, 2]):.0f} | {charges[name]:.4f} | {trial:.2f} | {np.median(extra):.3f} "
              f"[{extra.max():.3f}] |")
    print(f"refused_draws_in_full_trials: {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
