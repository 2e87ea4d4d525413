"""How good is each sampler? Two real spaces trained exhaustively once, then every sampler
replayed many times against the known results.

1. Exhaustive runs (``archscale run SPEC`` with ``sampler: grid``), once, into the git-ignored
   ``benchmarks/.store/``; a later invocation reuses them (an interrupted one resumes):
   - ``quickstart``: a 288-point sub-grid of the quickstart's budgeted space on mnist-5k
     (``benchmarks/sampler_spaces/quickstart_grid.yaml``; 1 epoch, ``max_params`` 8,000);
   - ``davidnet``: the 64 DavidNet layer placements x 2 widths on mnist-5k
     (``benchmarks/sampler_spaces/davidnet_grid.yaml``; 1 epoch, ``max_macs`` 5M).
2. Replays (:func:`archscale.search.sampling.replay.replay`): archscale's own ask-and-tell searcher,
   with the spec's ``max_concurrent`` trials in flight, over-budget draws refused and redrawn,
   repeated draws told their known result, and each trial's result looked up instead of
   trained. Per space, sampler, way of telling over-budget points (``0acc``: as 0 accuracy,
   today's way; ``constr``: also as an Optuna constraint) and budget (10, 20, 40 trials):
   ``--seeds`` seeds (30).
3. Per cell: the mean over seeds of the hypervolume found divided by the true front's (one
   fixed reference point per space: the worst completed value of each objective over the
   whole grid), with a 95% t-interval, and the share of seeds whose trials include the
   configuration of the best validation accuracy.

The last line is ``default_vs_random_hypervolume_gain: X``: the spec's default sampler (with
its default constraints setting) minus random, mean at 20 trials on the quickstart space.

    python benchmarks/sampler_quality.py                 # everything (exhaustive runs once)
    python benchmarks/sampler_quality.py --samplers random,tpe --seeds 10

Replays of samplers whose settings do not depend on ``num_trials`` (random, tpe_optuna) run
once at 40 trials and are read at 10 and 20 as prefixes (a sampler does not know the budget;
``tests/search/test_replay.py`` checks that the prefix equals a shorter replay). The others
(tpe, tpe_independent, nsga2, gp: startup trials or population are a third of the budget) are
replayed at each budget. Replay results are cached in ``benchmarks/.store/replays_<hash>.jsonl``,
keyed by the code a replay depends on (searcher.py, replay.py); delete the file after changing
how a replay is scored here (the key also hashes the grid results). Optuna's GPSampler costs
more per trial than the others (its cost grows with the trials told): it is replayed with
over-budget points told as 0 accuracy only (``LIMITED``); its 180 replays took 741 s + 805 s
wall on 2 processes (load average 1.8 to 4.0).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archscale.analysis.hypervolume import Bounds, bounds, front_hypervolume  # noqa: E402
from archscale.analysis.records import read_trials  # noqa: E402
from archscale.spec import SearchSpec, load_spec  # noqa: E402

STORE = ROOT / "benchmarks" / ".store"
SPACES = {"quickstart": ROOT / "benchmarks" / "sampler_spaces" / "quickstart_grid.yaml",
          "davidnet": ROOT / "benchmarks" / "sampler_spaces" / "davidnet_grid.yaml",
          "efficientnet": ROOT / "benchmarks" / "sampler_spaces" / "efficientnet_grid.yaml"}
TRAIN_SEEDS = (0, 1, 2)  # each grid is trained once per training seed (the spec's ``seed``)
SAMPLERS = ("random", "tpe", "tpe_independent", "tpe_optuna", "nsga2", "gp")
PREFIX = {"random", "tpe_optuna"}  # settings independent of num_trials: shorter budgets are prefixes
UNCONSTRAINED = {"random"}  # ignores Optuna constraints
BUDGETS = (10, 20, 40)
# GPSampler's cost grows with the trials told (one quickstart replay: 16.7 s wall at 20 trials,
# 40.2 s at 40, load average 3.3 to 4.3): over-budget points are told as 0 accuracy only.
LIMITED = {"gp": ((10, 20, 40), (False,))}  # sampler -> (budgets, constraints settings)
CODE = ("archscale/search/sampling/searcher.py", "archscale/search/sampling/replay.py")  # what a replay's outcome depends on


# ----------------------------------------------------------------------------- exhaustive runs

def grid_key(name: str) -> str:
    """What decides a grid run's results: the grid spec's text and the code hash the results
    store keys its trials by (archscale's ``space/`` and ``trainer/`` and the family's module)."""
    from archscale.search.configs.runstore import family_code_hash

    spec = load_spec(SPACES[name])
    text = SPACES[name].read_bytes() + family_code_hash(spec.space.family).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def run_dir_of(name: str, seed: int, store: Path) -> Path:
    return store / f"sq_{name}_s{seed}"


def exhaustive(name: str, seed: int, store: Path = STORE, out=sys.stdout) -> Path:
    """The grid run of space ``name`` under training seed ``seed``, through the results store
    ``store/store.db``. A run directory whose ``grid_done.json`` holds this grid's
    :func:`grid_key` is reused as it is; otherwise a fresh run directory is made, configurations
    already in the store are served from it (``source`` = ``store`` in trials.csv) and the others
    trained (so an interrupted invocation resumes from the last stored trial)."""
    spec = load_spec(SPACES[name])
    run_dir = run_dir_of(name, seed, store)
    key = grid_key(name)
    done = run_dir / "grid_done.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return run_dir
    size = int(np.prod([d.size for d in spec.searched()]))
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "archscale", "run", str(SPACES[name]), "--out", str(run_dir), "--quiet",
           "--set", f"search.store={store / 'store.db'}", "--set", f"seed={seed}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    print(f"{name} seed {seed}: all {size} configurations, {spec.train.epochs} epochs: {' '.join(cmd[1:])} "
          f"(load average {load()})", file=out, flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    trials = read_trials(run_dir)
    sources = trials["source"].value_counts().to_dict() if "source" in trials else {}
    wall = time.perf_counter() - start
    print(f"{name} seed {seed}: {len(trials)} rows ({sources}), {wall:.0f}s wall, load average {load()}",
          file=out, flush=True)
    done.write_text(json.dumps({"key": key, "wall_s": round(wall, 1), "load": load(), "rows": len(trials),
                                "sources": sources}))
    return run_dir


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------- scoring

class Space:
    """A space's grid results, its true front's hypervolume and its best accuracy."""

    def __init__(self, name: str, run_dir: Path):
        from archscale.search.sampling.replay import Table

        self.name, self.spec = name, load_spec(run_dir / "spec.yaml")
        self.dims = self.spec.searched()
        self.trials = read_trials(run_dir)
        self.table = Table(self.trials, self.dims)
        self.objectives = self.spec.search.objective_pairs()
        self.bounds: Bounds = bounds(self.trials, self.objectives)
        self.true_hv = front_hypervolume(self.trials, self.objectives, self.bounds)[0]
        done = self.trials[self.trials["status"] == "completed"]
        self.best_accuracy = float(done["val_accuracy"].max())

    def score(self, rows: pd.DataFrame, budget: int) -> tuple[float, bool]:
        """(hypervolume / the true front's, whether the best accuracy was found) of the first
        ``budget`` trials handed out."""
        rows = rows[rows["suggested"] < budget]
        hv = front_hypervolume(rows, self.objectives, self.bounds)[0] / self.true_hv
        done = rows[rows["status"] == "completed"]
        return hv, bool((done["val_accuracy"] >= self.best_accuracy).any())

    def spec_for(self, seed: int, num_trials: int):
        return self.spec.model_copy(update={"seed": seed, "search": self.spec.search.model_copy(
            update={"num_trials": num_trials, "sampler": "tpe"})})


_SPACES: dict[str, Space] = {}


def _job(args: tuple) -> list[dict]:
    """One replay: (space, run dir, sampler, constraints, budgets, seed) -> a row per budget."""
    from archscale.search.sampling.replay import replay

    name, run_dir, sampler, constrained, budgets, seed = args
    if name not in _SPACES:
        _SPACES[name] = Space(name, Path(run_dir))
    space = _SPACES[name]
    rows = replay(space.spec_for(seed, max(budgets)), space.table, space.dims, sampler=sampler,
                  constraints=constrained)
    out = []
    for budget in budgets:
        hv, best = space.score(rows, budget)
        out.append({"space": name, "sampler": sampler, "mode": "constr" if constrained else "0acc",
                    "budget": budget, "seed": seed, "hv": hv, "best": best})
    return out


def jobs(spaces: dict[str, Path], samplers, seeds: int) -> list[tuple]:
    out = []
    for name, run_dir in spaces.items():
        for sampler in samplers:
            own, modes = LIMITED.get(sampler, (BUDGETS, (False,) if sampler in UNCONSTRAINED else (False, True)))
            for constrained in modes:
                groups = [own] if sampler in PREFIX else [(b,) for b in own]
                for budgets in groups:
                    out += [(name, str(run_dir), sampler, constrained, budgets, s) for s in range(seeds)]
    return out


def interval(values: np.ndarray) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))


def summary(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (space, sampler, mode, budget), g in results.groupby(["space", "sampler", "mode", "budget"], sort=False):
        mean, half = interval(g["hv"].to_numpy())
        rows.append({"space": space, "sampler": sampler, "mode": mode, "budget": budget, "seeds": len(g),
                     "hv": mean, "hv_ci": half, "best_share": g["best"].mean()})
    return pd.DataFrame(rows)


def print_tables(table: pd.DataFrame, spaces: dict[str, Space], out=sys.stdout) -> None:
    for name, g in table.groupby("space", sort=False):
        s = spaces[name]
        ok = int((s.trials["status"] == "completed").sum())
        print(f"\n{name}: {len(s.trials)} configurations ({ok} trained, the rest over budget); true front "
              f"hypervolume {s.true_hv:.6g}; reference {dict(zip([m for m, _ in s.objectives], s.bounds.reference))}; "
              f"best val_accuracy {s.best_accuracy:.4f}", file=out)
        print("| sampler | over budget | " + " | ".join(f"HV/true @{b} | best found @{b}" for b in BUDGETS) + " |",
              file=out)
        print("|---|---|" + "---:|---:|" * len(BUDGETS), file=out)
        for (sampler, mode), h in g.groupby(["sampler", "mode"], sort=False):
            cells = []
            for b in BUDGETS:
                r = h[h["budget"] == b]
                cells += ([f"{r.hv.iloc[0]:.3f} ± {r.hv_ci.iloc[0]:.3f}", f"{r.best_share.iloc[0]:.0%}"]
                          if len(r) else ["—", "—"])
            print(f"| {sampler} | {mode} | " + " | ".join(cells) + " |", file=out)


def default_name() -> tuple[str, str]:
    fields = SearchSpec.model_fields
    return fields["sampler"].default, "constr" if fields["constraints"].default else "0acc"


def cache_key(spaces: dict[str, "Space"]) -> str:
    """A hash of the code a replay depends on and of the grid results it looks up."""
    h = hashlib.sha256(b"".join((ROOT / p).read_bytes() for p in CODE))
    for name, s in sorted(spaces.items()):
        cols = [d.name for d in s.dims] + ["status"] + [m for m, _ in s.objectives]
        h.update(name.encode() + s.trials[cols].sort_values(cols[:len(s.dims)]).to_csv(index=False).encode())
    return h.hexdigest()[:12]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--train-seeds", default=",".join(map(str, TRAIN_SEEDS)),
                        help="training seeds of the exhaustive grids (comma-separated)")
    parser.add_argument("--store", type=Path, default=STORE, help="folder of the grid runs, store.db and caches")
    parser.add_argument("--train-only", action="store_true", help="train (or check) the grids, then stop")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    args.store.mkdir(parents=True, exist_ok=True)
    names = args.spaces.split(",")
    train_seeds = [int(x) for x in args.train_seeds.split(",")]
    grids = {}
    for seed in train_seeds:  # seed-major: every space has its first seed before any has its second
        for name in names:
            grids[(name, seed)] = exhaustive(name, seed, args.store)
    if args.train_only:
        print(f"grids: {len(grids)} runs ready in {args.store}, {time.perf_counter() - start:.0f}s wall, "
              f"load average {load()}")
        return 0
    run_dirs = {name: grids[(name, train_seeds[0])] for name in names}
    spaces = {name: Space(name, d) for name, d in run_dirs.items()}
    cache = args.store / f"replays_{cache_key(spaces)}.jsonl"
    known = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            known[(r["space"], r["sampler"], r["mode"], r["budget"], r["seed"])] = r
    todo = [j for j in jobs(run_dirs, args.samplers.split(","), args.seeds)
            if any((j[0], j[2], "constr" if j[3] else "0acc", b, j[5]) not in known for b in j[4])]
    print(f"replays: {len(todo)} to run ({len(known)} results cached in {cache.name}) on {args.processes} "
          f"processes", flush=True)
    t0 = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # GP's torch: one thread per process
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool, cache.open("a") as f:
        for i, rows in enumerate(pool.imap_unordered(_job, todo, chunksize=1), start=1):
            for r in rows:
                known[(r["space"], r["sampler"], r["mode"], r["budget"], r["seed"])] = r
                f.write(json.dumps(r) + "\n")
            f.flush()  # an interrupted invocation keeps what it replayed
            if i % 50 == 0:
                print(f"  {i}/{len(todo)} replays, {time.perf_counter() - t0:.0f}s, load average {load()}", flush=True)
    wanted = {(j[0], j[2], "constr" if j[3] else "0acc", b, j[5]) for j in jobs(run_dirs, args.samplers.split(","),
                                                                              args.seeds) for b in j[4]}
    results = pd.DataFrame([known[k] for k in known if k in wanted])
    table = summary(results)
    print_tables(table, spaces)
    sampler, mode = default_name()
    print(f"\ndefault: {sampler} ({mode}); at 20 trials, mean HV/true minus random's (95% intervals):")
    gain = float("nan")
    for name in names:
        t = table[(table["space"] == name) & (table["budget"] == 20)]
        d = t[(t["sampler"] == sampler) & (t["mode"] == mode)]
        r = t[t["sampler"] == "random"]
        if d.empty or r.empty:
            continue
        d, r = d.iloc[0], r.iloc[0]
        apart = d.hv - d.hv_ci > r.hv + r.hv_ci
        print(f"  {name}: {d.hv - r.hv:+.4f} ({d.hv:.3f} ± {d.hv_ci:.3f} vs {r.hv:.3f} ± {r.hv_ci:.3f}; "
              f"intervals {'apart' if apart else 'overlap'})")
        if name == "quickstart":
            gain = d.hv - r.hv
    print(f"replays {time.perf_counter() - t0:.0f}s, total {time.perf_counter() - start:.0f}s wall, "
          f"load average {load()}")
    print(f"default_vs_random_hypervolume_gain: {gain:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
