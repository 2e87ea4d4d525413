"""How good is each sampler, and what does it cost to reach a good front? Three real spaces
trained exhaustively once per training seed, then every sampler replayed many times against the
known results.

1. Exhaustive runs (``archscale run SPEC --set seed=S`` with ``sampler: grid``), once per
   training seed S in 0, 1, 2, 4 epochs each (the quickstart's own), into the git-ignored
   ``benchmarks/.store/`` through its results store (``store.db``: every trial's per-epoch
   history is kept, for replays of partial training). A run whose ``grid_done.json`` holds the
   grid's key (the spec file and the code hash the store keys trials by) is reused as it is;
   an interrupted one resumes from the store:
   - ``quickstart``: a 288-point sub-grid of the quickstart's budgeted space on mnist-5k
     (``benchmarks/sampler_spaces/quickstart_grid.yaml``; ``max_params`` 8,000);
   - ``davidnet``: the 64 DavidNet layer placements x 2 widths on mnist-5k
     (``benchmarks/sampler_spaces/davidnet_grid.yaml``; ``max_macs`` 5M);
   - ``efficientnet`` (held out: no default is chosen on it): compound scaling of a 1/8-width
     ResNet-18, 27 (alpha, beta, gamma) x phi 0.5, 1 (``efficientnet_grid.yaml``; ``max_macs`` 20M).
2. Replays (:func:`archscale.search.sampling.replay.replay`): archscale's own ask-and-tell
   searcher, the spec's ``max_concurrent`` trials in flight, over-budget draws refused and
   redrawn (told as 0 accuracy), repeated draws told their known result, each trial's result
   looked up instead of trained. Every replay is a 40-trial search; replay seed s draws the
   table of training seed ``s % 3``, so training noise enters the intervals. Each keeps its
   per-trial trace (HV/true after trials 1..40) and the sampler's own seconds per suggestion.
   Seeds 0-29 (``choice``: what defaults were chosen on) and 100-129 (``fresh``: the headline).
3. Per space and sampler: HV/true at 10, 20, 40 trials (the hypervolume found over the true
   front's of the same table, one reference point per space: the worst completed value of
   each objective over every seed's grid), mean and 95% t-interval; the paired difference from
   random at 20 trials (same seeds); and the cost to a front: the median over seeds of the
   full-training equivalents (trials, each plus the sampler's time as a fraction of a full
   trial's median ``train_seconds``) spent until HV/true first reaches random's median at 40
   trials (``inf``: not within 40 trials).

The last line is ``search_cost_to_random40: X``: the spec's default sampler's median cost on
its worst space, over the fresh seeds.

    python benchmarks/sampler_quality.py                          # everything
    python benchmarks/sampler_quality.py --train-only             # the grids only
    python benchmarks/sampler_quality.py --samplers random,tpe --seeds 10

Replay results are cached in ``benchmarks/.store/replays_<hash>.jsonl``, keyed by the code a
replay runs (:data:`CODE`), this file, Optuna's version and every grid table it looks up.
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

sys.path.insert(0, str(ROOT / "benchmarks"))
import proxy_correlation  # noqa: E402

STORE = ROOT / "benchmarks" / ".store"
SPACES = {"quickstart": ROOT / "benchmarks" / "sampler_spaces" / "quickstart_grid.yaml",
          "davidnet": ROOT / "benchmarks" / "sampler_spaces" / "davidnet_grid.yaml",
          "efficientnet": ROOT / "benchmarks" / "sampler_spaces" / "efficientnet_grid.yaml"}
TRAIN_SEEDS = (0, 1, 2)  # each grid is trained once per training seed (the spec's ``seed``)
SAMPLERS = ("random", "tpe", "gp")
BUDGET = 40  # every replay is a 40-trial search; 10 and 20 are read off its trace
READ_AT = (10, 20, 40)
CHOICE_SEEDS = tuple(range(0, 30))  # the seeds defaults are chosen on
FRESH_SEEDS = tuple(range(100, 130))  # the seeds the headline is reported on
HELD_OUT = ("efficientnet",)  # spaces no default was chosen on
PRESCREEN = "prescreen:"  # strategy prescreen:PROXY: a random pool of POOL feasible points, the best KEEP trained
POOL, KEEP = 80, BUDGET
# What a replay's outcome depends on (with the grid tables, Optuna's version and this file).
CODE = ("archscale/search/sampling/searcher.py", "archscale/search/sampling/replay.py",
        "archscale/search/sampling/asktell.py", "archscale/analysis/hypervolume.py")


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
    """A space's grid results, one table per training seed: the true front's hypervolume of each,
    one reference point for all (the worst completed value of each objective over every seed's
    grid) and the median training time of a full trial."""

    def __init__(self, name: str, run_dirs: dict[int, Path]):
        from archscale.search.sampling.replay import Table

        self.name, self.run_dirs = name, dict(sorted(run_dirs.items()))
        self.spec = load_spec(next(iter(self.run_dirs.values())) / "spec.yaml")
        self.dims = self.spec.searched()
        self.objectives = self.spec.search.objective_pairs()
        self.trials = {seed: read_trials(d) for seed, d in self.run_dirs.items()}
        self.tables = {seed: Table(t, self.dims) for seed, t in self.trials.items()}
        every = pd.concat(list(self.trials.values()))
        self.bounds: Bounds = bounds(every, self.objectives)
        self.true_hv = {seed: front_hypervolume(t, self.objectives, self.bounds)[0] for seed, t in self.trials.items()}
        done = every[every["status"] == "completed"]
        self.trial_seconds = float(done["train_seconds"].median()) if "train_seconds" in done else float("nan")
        self._proxies: dict[int, pd.DataFrame] = {}

    def proxied(self, train_seed: int) -> pd.DataFrame:
        """The trained rows of ``train_seed``'s grid with a column per proxy and its seconds
        (``benchmarks/proxy_correlation.py``'s values, computed there once and cached)."""
        if train_seed not in self._proxies:
            _, _, frames = proxy_correlation.compute([(self.name, train_seed, self.run_dirs[train_seed])])
            frame = frames[self.name][0]
            self._proxies[train_seed] = frame[frame["status"] == "completed"].reset_index(drop=True)
        return self._proxies[train_seed]

    @property
    def seeds(self) -> list[int]:
        return list(self.run_dirs)

    def train_seed(self, seed: int) -> int:
        """The training seed whose table replay ``seed`` draws (so training noise enters the intervals)."""
        return self.seeds[seed % len(self.seeds)]

    def score(self, rows: pd.DataFrame, budget: int, train_seed: int | None = None) -> float:
        """Hypervolume of the first ``budget`` trials handed out over the true front's (of ``train_seed``'s table)."""
        seed = self.seeds[0] if train_seed is None else train_seed
        rows = rows[(rows["suggested"] >= 0) & (rows["suggested"] < budget)]
        return front_hypervolume(rows, self.objectives, self.bounds)[0] / self.true_hv[seed]

    def trace(self, rows: pd.DataFrame, train_seed: int) -> list[float]:
        """HV/true after each of the first :data:`BUDGET` trials."""
        return [round(self.score(rows, b, train_seed), 6) for b in range(1, BUDGET + 1)]

    def spec_for(self, seed: int, num_trials: int):
        return self.spec.model_copy(update={"seed": seed, "search": self.spec.search.model_copy(
            update={"num_trials": num_trials, "sampler": "tpe"})})


_SPACES: dict[str, Space] = {}


def _job(args: tuple) -> dict:
    """One replay: (space, {training seed: run dir}, sampler, seed) -> its trace and the sampler's
    own time per suggestion (the replay's wall time over the trials handed out: the table
    lookups it also includes are microseconds)."""
    from archscale.search.sampling.replay import replay

    name, run_dirs, sampler, seed = args
    if name not in _SPACES:
        _SPACES[name] = Space(name, {int(k): Path(v) for k, v in run_dirs})
    space = _SPACES[name]
    train_seed = space.train_seed(seed)
    if sampler.startswith(PRESCREEN):
        return prescreen(space, sampler[len(PRESCREEN):], seed)
    start = time.perf_counter()
    rows = replay(space.spec_for(seed, BUDGET), space.tables[train_seed], space.dims, sampler=sampler,
                  constraints=False)
    wall = time.perf_counter() - start
    handed = max(1, int((rows["suggested"] >= 0).sum()))
    return {"space": name, "sampler": sampler, "seed": seed, "train_seed": train_seed,
            "sampler_s": round(wall / handed, 5), "trace": space.trace(rows, train_seed)}


def pareto_levels(points: np.ndarray) -> np.ndarray:
    """Non-dominated sorting of ``points`` (every column to be maximised): 0 for the front, 1 for
    the front of the rest, and so on."""
    level = np.full(len(points), -1)
    rank = 0
    while (level < 0).any():
        left = np.flatnonzero(level < 0)
        for i in left:
            others = points[left]
            dominated = ((others >= points[i]).all(axis=1) & (others > points[i]).any(axis=1)).any()
            if not dominated:
                level[i] = rank
        rank += 1
    return level


def prescreen(space: Space, proxy: str, seed: int) -> dict:
    """A prescreened search replayed: :data:`POOL` feasible configurations drawn at random
    (without replacement; over-budget ones are refused before any cost, as a run's budget check
    does), ranked by non-dominated sorting of (the proxy, every cost objective), the proxy
    breaking ties within a level, and the best :data:`KEEP` trained in that order. The proxies'
    time for the whole pool is charged up front (``upfront_s``); params and macs cost nothing
    extra (measured for the budget check anyway)."""
    train_seed = space.train_seed(seed)
    frame = space.proxied(train_seed)
    rng = np.random.default_rng(seed)
    pool = frame.iloc[rng.permutation(len(frame))[:POOL]].reset_index(drop=True)
    score = pool[proxy].to_numpy(dtype=float)
    score = np.where(np.isfinite(score), score, -np.inf)  # no value: ranked last
    columns = [score] + [(-1 if mode == "min" else 1) * pool[m].to_numpy(dtype=float)
                         for m, mode in space.objectives if m != "val_accuracy"]
    levels = pareto_levels(np.column_stack(columns))
    order = np.lexsort((-score, levels))[:KEEP]
    rows = pool.iloc[order].assign(suggested=range(len(order)))
    upfront = float(pool[f"{proxy}_s"].sum()) if f"{proxy}_s" in pool else 0.0
    return {"space": space.name, "sampler": f"{PRESCREEN}{proxy}", "seed": seed, "train_seed": train_seed,
            "sampler_s": 0.0, "upfront_s": round(upfront, 4), "trace": space.trace(rows, train_seed)}


def jobs(spaces: dict[str, Space], samplers, seeds) -> list[tuple]:
    return [(name, tuple((k, str(v)) for k, v in s.run_dirs.items()), sampler, seed)
            for name, s in spaces.items() for sampler in samplers for seed in seeds]


def interval(values: np.ndarray) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))


def costs(trace: list[float], target: float, per_trial: float, upfront: float = 0.0) -> float:
    """Full-training equivalents spent until the trace first reaches ``target``: ``upfront``
    (a prescreen's proxies, in full trials), then each trial one full training plus the
    sampler's time as a fraction of a trial's (``per_trial`` = 1 + that); inf when 40 trials do
    not reach it."""
    for i, hv in enumerate(trace, start=1):
        if hv >= target - 1e-12:
            return upfront + i * per_trial
    return float("inf")


def summary(results: pd.DataFrame, spaces: dict[str, Space]) -> pd.DataFrame:
    """Per space and sampler: HV/true at :data:`READ_AT` (mean, 95% t-interval), the paired
    difference from random at 20 trials (same seed, same training seed's table), the sampler's
    seconds per suggestion, and the median cost until random's median HV at 40 trials."""
    out = []
    for name, g in results.groupby("space", sort=False):
        random = g[g["sampler"] == "random"].set_index("seed")
        target = float(np.median([t[BUDGET - 1] for t in random["trace"]])) if len(random) else float("nan")
        for sampler, h in g.groupby("sampler", sort=False):
            h = h.set_index("seed")
            row = {"space": name, "sampler": sampler, "seeds": len(h), "target": target}
            for b in READ_AT:
                row[f"hv{b}"], row[f"hv{b}_ci"] = interval(np.array([t[b - 1] for t in h["trace"]]))
            common = h.index.intersection(random.index)
            diff = np.array([h.at[s, "trace"][19] - random.at[s, "trace"][19] for s in common])
            row["diff20"], row["diff20_ci"] = interval(diff) if len(diff) else (float("nan"), float("nan"))
            row["sampler_s"] = float(h["sampler_s"].median())
            frac = row["sampler_s"] / spaces[name].trial_seconds
            row["sampler_frac"] = frac
            ups = h["upfront_s"].fillna(0.0) if "upfront_s" in h else pd.Series(0.0, index=h.index)
            c = np.array([costs(t, target, 1 + frac, u / spaces[name].trial_seconds)
                          for t, u in zip(h["trace"], ups)])
            row["cost"] = float(np.median(c))
            row["reached"] = float(np.isfinite(c).mean())
            out.append(row)
    return pd.DataFrame(out)


def print_tables(table: pd.DataFrame, spaces: dict[str, Space], title: str, out=sys.stdout) -> None:
    for name, g in table.groupby("space", sort=False):
        s = spaces[name]
        sizes = {seed: int((t["status"] == "completed").sum()) for seed, t in s.trials.items()}
        print(f"\n{title}: {name}{' (held out)' if name in HELD_OUT else ''}: {len(s.tables[s.seeds[0]].rows)} "
              f"configurations, trained per training seed {sizes}; reference "
              f"{dict(zip([m for m, _ in s.objectives], s.bounds.reference))}; a full trial "
              f"{s.trial_seconds:.2f} s (median train_seconds); target: random's median HV/true at {BUDGET} "
              f"trials = {g['target'].iloc[0]:.3f}", file=out)
        print("| sampler | seeds | " + " | ".join(f"HV/true @{b}" for b in READ_AT)
              + " | minus random @20 (paired) | sampler s/suggestion (% of a trial) | cost to random@40 (median) "
              "| reached |", file=out)
        print("|---|---:|" + "---:|" * len(READ_AT) + "---:|---:|---:|---:|", file=out)
        for _, r in g.iterrows():
            cells = [f"{r[f'hv{b}']:.3f} ± {r[f'hv{b}_ci']:.3f}" for b in READ_AT]
            diff = "—" if r["sampler"] == "random" else f"{r['diff20']:+.3f} ± {r['diff20_ci']:.3f}"
            print(f"| {r['sampler']} | {r['seeds']} | " + " | ".join(cells) + f" | {diff} | {r['sampler_s']:.3f} "
                  f"({100 * r['sampler_frac']:.1f}%) | {r['cost']:.2f} | {r['reached']:.0%} |", file=out)


def default_name() -> str:
    return SearchSpec.model_fields["sampler"].default


def cache_key(spaces: dict[str, "Space"]) -> str:
    """A hash of everything that decides a replay: the code it runs (:data:`CODE`), this file,
    Optuna's version and the grid results it looks up (every training seed's table)."""
    import optuna

    h = hashlib.sha256(b"".join((ROOT / p).read_bytes() for p in CODE) + Path(__file__).read_bytes())
    h.update(optuna.__version__.encode())
    for name, s in sorted(spaces.items()):
        cols = [d.name for d in s.dims] + ["status"] + [m for m, _ in s.objectives]
        for seed, t in s.trials.items():
            h.update(f"{name} {seed}".encode() + t[cols].sort_values(cols[:len(s.dims)]).to_csv(index=False).encode())
    return h.hexdigest()[:12]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=30, help="replays per cell, on seeds 0.. and on 100..")
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
    spaces = {name: Space(name, {seed: grids[(name, seed)] for seed in train_seeds}) for name in names}
    cache = args.store / f"replays_{cache_key(spaces)}.jsonl"
    known = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            known[(r["space"], r["sampler"], r["seed"])] = r
    samplers = args.samplers.split(",")
    seed_sets = {"choice": CHOICE_SEEDS[:args.seeds], "fresh": FRESH_SEEDS[:args.seeds]}
    wanted = [j for seeds in seed_sets.values() for j in jobs(spaces, samplers, seeds)]
    todo = [j for j in wanted if (j[0], j[2], j[3]) not in known]
    if any(x.startswith(PRESCREEN) for x in samplers):  # the proxies once, here, before the workers read them
        proxy_correlation.compute([(name, seed, d) for name, s in spaces.items() for seed, d in s.run_dirs.items()])
    print(f"replays: {len(todo)} to run ({len(known)} cached in {cache.name}) on {args.processes} processes", flush=True)
    t0 = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # GP's torch: one thread per process
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool, cache.open("a") as f:
        for i, r in enumerate(pool.imap_unordered(_job, todo, chunksize=1), start=1):
            known[(r["space"], r["sampler"], r["seed"])] = r
            f.write(json.dumps(r) + "\n")
            f.flush()  # an interrupted invocation keeps what it replayed
            if i % 50 == 0:
                print(f"  {i}/{len(todo)} replays, {time.perf_counter() - t0:.0f}s, load average {load()}", flush=True)
    default = default_name()
    worst = float("nan")
    for title, seeds in seed_sets.items():
        results = pd.DataFrame([known[(j[0], j[2], j[3])] for j in jobs(spaces, samplers, seeds)])
        table = summary(results, spaces)
        print_tables(table, spaces, f"seeds {seeds[0]}-{seeds[-1]} ({title})")
        if title == "fresh":
            d = table[table["sampler"] == default]
            worst = float(d["cost"].max()) if len(d) else float("nan")
    print(f"\nreplays {time.perf_counter() - t0:.0f}s, total {time.perf_counter() - start:.0f}s wall, "
          f"load average {load()}")
    print(f"default: {default}; its median cost to random's {BUDGET}-trial front on its worst space, fresh seeds "
          "(full-training equivalents; inf: not reached within 40 trials)")
    print(f"search_cost_to_random40: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
