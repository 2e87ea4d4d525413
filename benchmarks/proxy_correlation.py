"""How well does each training-free proxy rank the configurations of the stored grids?

For every grid that ``benchmarks/sampler_quality.py`` trained and published in
``benchmarks/grids/`` (``sq_<space>_s<training seed>/``: the run's spec.yaml and trials.csv), each configuration's proxies (:mod:`archscale.analysis.proxies`) are computed as
a run with ``search.proxies`` computes them: on the network initialised under that training
seed and a seeded minibatch (``--batch``, 64) of the run's own training split. Then, per space,
the Spearman and Kendall (tau-b) rank correlations of each proxy with the trained validation
accuracy:

- ``feasible``: the configurations within the space's budget (those trained);
- ``all``: every configuration of the grid, an over-budget one at 0 accuracy (as a run tells
  it to its sampler; its proxy is computed all the same).

Per space: the mean over training seeds of each seed's correlation (its proxy values against
its accuracies), with the smallest and largest seed's value. ``params`` and ``macs`` are the
baselines (ZiCo, ICLR 2023: most proxies do no better than the parameter count). Proxy values
are cached in the git-ignored ``benchmarks/.store/proxies_<hash>.jsonl``, keyed by proxies.py, the minibatch
size and torch's version, each row by its family's model code (a rerun computes only what is new).

Then what ``search.prescreen: {proxy: auto, check: N}`` would choose on each space: for
:data:`DRAWS` random draws of N trained configurations per training seed (``--check``, 10),
archscale's own :class:`~archscale.search.sampling.prescreen.Choice` is told their accuracies
and picks the proxy whose ranking agrees best (or none), as a run's check would; the table gives
how often it picks each.

The last line is ``best_proxy_minus_params_spearman: X``: over the spaces present, the smallest
(worst space) of the best proxy's feasible Spearman minus that of params.

    python benchmarks/proxy_correlation.py
    python benchmarks/proxy_correlation.py --spaces quickstart --batch 128
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archscale.analysis import proxies  # noqa: E402
from archscale.analysis.records import read_trials  # noqa: E402
from archscale.search.configs.runstore import family_code_hash  # noqa: E402
from archscale.search.sampling.prescreen import VOTE_PROXIES  # noqa: E402
from archscale.space import Arch, build  # noqa: E402
from archscale.spec import load_spec  # noqa: E402
from archscale.trainer.data import load_dataset, split  # noqa: E402

STORE = ROOT / "benchmarks" / ".store"  # caches
DRAWS = 300  # random checks per training seed, for the table of what proxy auto picks
GRIDS = ROOT / "benchmarks" / "grids"  # the published grids
SPACES = ("quickstart", "davidnet", "efficientnet", "plainnet", "depthwise", "cifar", "plaincifar", "depthcifar")
NAMES = proxies.BASELINES + proxies.PROXIES


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def runs(store: Path, spaces) -> list[tuple[str, int, Path]]:
    """(space, training seed, run dir) of every grid run present with a trials.csv."""
    out = []
    for name in spaces:
        for d in sorted(store.glob(f"sq_{name}_s*")):
            if (d / "trials.csv").is_file() and (d / "spec.yaml").is_file():
                out.append((name, int(d.name.rsplit("_s", 1)[1]), d))
    return out


def cache_key(batch: int) -> str:
    """The cache file's key: the proxies' code, the minibatch size and torch's version (each row
    also carries the code hash of its family's model code, :func:`family_code_hash`, and is
    used only while that matches; not this file: its tables do not change a proxy's value)."""
    h = hashlib.sha256((ROOT / "archscale" / "analysis" / "proxies.py").read_bytes())
    h.update(f"{batch} {torch.__version__}".encode())
    return h.hexdigest()[:12]


_SPLITS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def train_split(spec) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's training split (as its trials train on it: the split under the spec's seed)."""
    key = (spec.data.dataset, spec.data.val_fraction, spec.data.subset, spec.seed)
    if key not in _SPLITS:
        s = split(load_dataset(spec.data.dataset, spec.data.root, spec.data.image_size), spec.data.val_fraction,
                  spec.data.subset, spec.seed)
        _SPLITS[key] = (s.x_train, s.y_train)
    return _SPLITS[key]


def proxy_row(arch_text: str, seed: int, data, batch: int) -> dict:
    x, y = proxies.minibatch(*data, batch, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # as a trial builds its network
        model = build(Arch.from_text(arch_text))
    scores = proxies.score(model, x, y)
    return {**scores.values, **{f"{k}_s": v for k, v in scores.seconds.items()},
            **({"errors": scores.errors} if scores.errors else {})}


def compute(found: list[tuple[str, int, Path]], batch: int = 64, store: Path = STORE):
    """(proxy rows by (arch, training seed), how many were computed now, space -> per-seed
    frames of trials.csv with a column per proxy and its seconds) for the grid runs ``found``,
    through the cache file in ``store``."""
    specs = {d: load_spec(d / "spec.yaml") for _, _, d in found}
    codes = {d: family_code_hash(spec.space.family) for d, spec in specs.items()}
    store.mkdir(parents=True, exist_ok=True)
    cache = store / f"proxies_{cache_key(batch)}.jsonl"
    known: dict[tuple[str, int, str], dict] = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            known[(r["arch"], r["seed"], r["code"])] = r
    frames: dict[str, list[pd.DataFrame]] = {}
    computed = 0
    with cache.open("a") as f:
        for name, seed, run_dir in found:
            spec = specs[run_dir]
            trials = read_trials(run_dir)
            trials = trials[trials["status"].isin(["completed", "infeasible"]) & trials["arch"].notna()].copy()
            rows = []
            for arch_text in trials["arch"]:
                key = (arch_text, seed, codes[run_dir])
                if key not in known:
                    r = {"arch": arch_text, "seed": seed, "code": codes[run_dir],
                         **proxy_row(arch_text, seed, train_split(spec), batch)}
                    known[key] = r
                    f.write(json.dumps(r) + "\n")
                    f.flush()
                    computed += 1
                rows.append(known[key])
            p = pd.DataFrame(rows).drop(columns=["arch", "seed", "code"])
            trials = trials.reset_index(drop=True)
            for col in proxies.PROXIES:
                trials[col] = p[col] if col in p else np.nan
                trials[f"{col}_s"] = p[f"{col}_s"] if f"{col}_s" in p else np.nan
            trials["train_seed"] = seed
            frames.setdefault(name, []).append(trials)
    return known, computed, frames


def correlations(frame: pd.DataFrame) -> dict[str, tuple[float, float, int]]:
    """Proxy -> (Spearman, Kendall tau-b, configurations with a value) against ``val_accuracy``."""
    out = {}
    for name in NAMES:
        ok = frame[[name, "val_accuracy"]].dropna()
        if len(ok) < 3:
            out[name] = (float("nan"), float("nan"), len(ok))
            continue
        rho = stats.spearmanr(ok[name], ok["val_accuracy"]).statistic
        tau = stats.kendalltau(ok[name], ok["val_accuracy"]).statistic
        out[name] = (float(rho), float(tau), len(ok))
    return out


def picks(frame: pd.DataFrame, n: int, draws: int, seed: int) -> dict[str, int]:
    """How often proxy auto's :class:`Choice` picks each proxy (or ``none``) over ``draws``
    random draws of ``n`` trained configurations of ``frame`` (one training seed)."""
    from archscale.search.sampling.prescreen import AUTO_PROXIES, Check, Choice, config_key

    trained = frame[frame["status"] == "completed"].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys([*AUTO_PROXIES, "none"], 0)
    for _ in range(draws):
        rows = trained.iloc[rng.choice(len(trained), size=min(n, len(trained)), replace=False)]
        keys = [config_key({"row": int(i)}) for i in rows.index]
        choice = Choice({p: Check(dict(zip(keys, rows[p].astype(float)))) for p in AUTO_PROXIES}, [])
        for i, accuracy in zip(rows.index, rows["val_accuracy"]):
            choice.record({"row": int(i)}, float(accuracy))
        choice.decide()
        counts[choice.chosen or "none"] += 1
    return counts


def picks_table(frames: dict[str, list[pd.DataFrame]], n: int) -> None:
    from archscale.search.sampling.prescreen import AUTO_PROXIES

    print(f"\nWhat proxy auto picks from the accuracy of {n} trained configurations drawn at random "
          f"({DRAWS} draws per training seed; share of draws):")
    print("| space | " + " | ".join(AUTO_PROXIES) + " | none |")
    print("|---|" + "---:|" * (len(AUTO_PROXIES) + 1))
    for name, per_seed in frames.items():
        total = dict.fromkeys([*AUTO_PROXIES, "none"], 0)
        for t in per_seed:
            for k, v in picks(t, n, DRAWS, int(t["train_seed"].iloc[0])).items():
                total[k] += v
        share = sum(total.values())
        print(f"| {name} | " + " | ".join(f"{total[k] / share:.2f}" for k in total) + " |")


# Several proxies at once: each configuration ranked by the mean of its ranks under each proxy. Abdelfattah et
# al. ("Zero-Cost Proxies for Lightweight NAS", ICLR 2021) found a majority vote of three proxies more robust
# than any one; a mean of ranks is the same idea for a ranking. The first is search.prescreen's proxy: vote
# (archscale.search.sampling.prescreen.vote, which ranks a missing value lowest, as here); the second adds zico.
MEAN_RANKS = {"+".join(VOTE_PROXIES): VOTE_PROXIES, "+".join((*VOTE_PROXIES, "zico")): (*VOTE_PROXIES, "zico")}


def mean_rank_table(frames: dict[str, list[pd.DataFrame]]) -> None:
    """Per space, Spearman (feasible, mean over training seeds) of the mean rank of several
    proxies, beside the best and the worst of them alone."""
    names = list(dict.fromkeys(n for combo in MEAN_RANKS.values() for n in combo))
    print("\nThe mean rank of several proxies (Spearman with validation accuracy on the trained configurations, mean "
          "over training seeds), beside the best and the worst of " + ", ".join(names) + " alone:")
    print("| space | " + " | ".join(MEAN_RANKS) + " | best alone | worst alone |")
    print("|---|" + "---:|" * (len(MEAN_RANKS) + 2))
    for name, per_seed in frames.items():
        cells, alone = {}, {n: [] for n in names}
        for t in per_seed:
            t = t[t["status"] == "completed"]
            for n in names:
                alone[n].append(stats.spearmanr(t[n], t["val_accuracy"], nan_policy="omit").statistic)
            for label, combo in MEAN_RANKS.items():
                ranks = np.mean([stats.rankdata(t[n].fillna(-np.inf)) for n in combo], axis=0)
                cells.setdefault(label, []).append(stats.spearmanr(ranks, t["val_accuracy"]).statistic)
        means = {n: float(np.mean(v)) for n, v in alone.items()}
        best, worst = max(means, key=means.get), min(means, key=means.get)
        print(f"| {name} | " + " | ".join(f"{np.mean(v):.3f}" for v in cells.values())
              + f" | {best} {means[best]:.3f} | {worst} {means[worst]:.3f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--grids", type=Path, default=GRIDS, help="folder of the published grids")
    parser.add_argument("--store", type=Path, default=STORE, help="folder of the proxies' cache")
    parser.add_argument("--batch", type=int, default=64, help="images of the seeded minibatch")
    parser.add_argument("--check", type=int, default=10, help="trained configurations proxy auto chooses on")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(1)
    found = runs(args.grids, args.spaces.split(","))
    if not found:
        print(f"no grids in {args.grids}: run python benchmarks/sampler_quality.py --train-only first",
              file=sys.stderr)
        return 2
    known, computed, frames = compute(found, args.batch, args.store)
    print(f"proxies: {computed} computed, {len(known) - computed} from the cache; "
          f"{time.perf_counter() - start:.0f}s wall, load average {load()}")
    worst_gain = float("inf")
    for name, per_seed in frames.items():
        both = pd.concat(per_seed)
        seeds = sorted(both["train_seed"].unique())
        feasible = both[both["status"] == "completed"]
        print(f"\n{name}: training seeds {', '.join(map(str, seeds))}; {len(per_seed[0])} configurations per seed "
              f"({int((per_seed[0]['status'] == 'completed').sum())} trained); minibatch {args.batch}")
        print("| proxy | Spearman feasible | Kendall feasible | Spearman all | Kendall all | seconds (median) "
              "| no value |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        result = {}
        for subset in ("feasible", "all"):
            per = []
            for t in per_seed:
                t = t[t["status"] == "completed"] if subset == "feasible" else t.assign(
                    val_accuracy=t["val_accuracy"].fillna(0.0))
                per.append(correlations(t))
            result[subset] = {n: (np.mean([c[n][0] for c in per]), np.mean([c[n][1] for c in per]),
                                  min(c[n][0] for c in per), max(c[n][0] for c in per)) for n in NAMES}
        for n in NAMES:
            fs, fk, flo, fhi = result["feasible"][n]
            a_s, a_k, _, _ = result["all"][n]
            spread = f" [{flo:.3f}, {fhi:.3f}]" if len(seeds) > 1 else ""
            secs = f"{feasible[f'{n}_s'].median():.3f}" if f"{n}_s" in feasible else "(with the costs)"
            missing = int(feasible[n].isna().sum())
            print(f"| {n} | {fs:.3f}{spread} | {fk:.3f} | {a_s:.3f} | {a_k:.3f} | {secs} | {missing} |")
        base = result["feasible"]["params"][0]
        best = max(proxies.PROXIES, key=lambda n: np.nan_to_num(result["feasible"][n][0], nan=-2))
        gain = result["feasible"][best][0] - base
        print(f"best proxy on {name} (feasible, Spearman): {best} {result['feasible'][best][0]:.3f}, "
              f"params {base:.3f}: {gain:+.3f}")
        worst_gain = min(worst_gain, gain)
    picks_table(frames, args.check)
    mean_rank_table(frames)
    print(f"\ntotal {time.perf_counter() - start:.0f}s wall, load average {load()}")
    print(f"best_proxy_minus_params_spearman: {worst_gain:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
