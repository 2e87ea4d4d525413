"""What does the driver spend judging one candidate? The part of a search's cost that the replays of
``benchmarks/sampler_quality.py`` look up instead of paying; its cost tables charge it from the
same measurement (:func:`sampler_quality.evaluation_charges`).

Before a configuration trains, a run's driver builds its network and counts its parameters and
MACs to check the budgets (:func:`archscale.search.jobs.check.driver_evaluator`, as a search
with budgets does for every draw). ``search.prescreen`` does this for each of its ``pool``
candidates before the first trial, then computes the proxy. The replays look the costs up in the
grid's table, so ``sampler_quality.py`` adds, per space, this mean once per trial handed out and
once per candidate of a prescreen's pool (a plain search also pays for its refused draws, which
are not counted: ``benchmarks/refused_draws.py`` measures what they would add; a prescreened
candidate's costs are cached when the sampler proposes it later).

For every configuration of each sampler space (``benchmarks/sampler_spaces/``), in a fresh
process per space, as a run's driver starts (the costs are cached by architecture for the
process's life, and quickstart and depthwise share some architectures), this times the verdict
and the counts on one thread, and prints per space the median and mean seconds, a full trial's
training time (:attr:`sampler_quality.Space.trial_seconds`, what the replays charge the
sampler's time against) and what :data:`POOL` evaluations cost in full trials.

The last line is ``prescreen_evaluations_in_full_trials: X``: the largest, over the spaces, of
:data:`POOL` mean evaluations over a full trial's time.

    python benchmarks/evaluation_cost.py
    python benchmarks/evaluation_cost.py --spaces quickstart,davidnet
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import sampler_quality  # noqa: E402
from sampler_quality import evaluation_seconds  # noqa: E402  (it charges the same measurement)

POOL = sampler_quality.POOL  # a prescreen's candidates


def full_trial_seconds(name: str) -> float:
    """A full trial's training time in space ``name``, as ``sampler_quality.py`` charges the
    sampler's time against (:attr:`sampler_quality.Space.trial_seconds`)."""
    runs = {seed: sampler_quality.published(name, seed) for seed in sampler_quality.TRAIN_SEEDS}
    return sampler_quality.Space(name, runs, proxies=False).trial_seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", default=",".join(sampler_quality.SPACES))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print(f"| space | configurations | seconds per evaluation (median) | (mean) | a full trial (s) | "
          f"{POOL} evaluations in full trials |")
    print("|---|---:|---:|---:|---:|---:|")
    worst = 0.0
    for name in args.spaces.split(","):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
            seconds = fresh.submit(evaluation_seconds, name).result()
        trial = full_trial_seconds(name)
        share = POOL * float(seconds.mean()) / trial
        worst = max(worst, share)
        print(f"| {name} | {len(seconds)} | {np.median(seconds):.3f} | {seconds.mean():.3f} | {trial:.2f} | "
              f"{share:.2f} |", flush=True)
    print(f"{time.perf_counter() - start:.0f}s wall, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"prescreen_evaluations_in_full_trials: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
