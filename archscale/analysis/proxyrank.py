"""How well each training-free proxy a run recorded ranks the configurations it trained.

A proxy is worth a prescreen on a space where it orders the networks as training does, better
than the parameter count (ZiCo, Li et al., ICLR 2023, found most proxies no better). No proxy
ranks every space: on archscale's own grids ``grad_norm`` ranks the quickstart's best,
``params`` and ``synflow`` a CIFAR-10 space, and ``zico`` ranks that one backwards (docs,
Benchmarks, Training-free proxies). So the one way to choose is to look at the user's own
space: a run with ``search.proxies`` records each proxy for every trial (``proxy_NAME`` in
trials.csv), and :func:`proxy_ranking` sets them against the trained accuracy, with ``params``
and ``macs`` as the baselines. The report shows it (:func:`describe` says it in words).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from archscale.analysis.proxies import BASELINES
from archscale.spec.model import DEFAULT_PRESCREEN

MIN_TRIALS = 5  # fewer pairs than this rank nothing worth reading
P_AGREE = 0.1  # one-sided: the level search.prescreen.check trusts a proxy at (its CHECK_P; a test keeps them equal)
# What the report suggests for a proxy that agrees: the default prescreen's pool and keep with that proxy, its
# best 10 of 80 in place of the sampler's random start-up (`auto+pre:PROXY:80:10` on the benchmark's spaces, where
# the proxy ranks the space, costs less than no prescreen: docs, Benchmarks, Search cost).
POOL, START_UP = DEFAULT_PRESCREEN["pool"], DEFAULT_PRESCREEN["keep"]


def proxy_columns_of(trials: pd.DataFrame) -> dict[str, str]:
    """Proxy name -> its trials.csv column: the baselines (``params``, ``macs``) when present,
    then each recorded ``proxy_NAME`` (not its seconds or the errors column)."""
    out = {name: name for name in BASELINES if name in trials.columns}
    for col in trials.columns:
        if col.startswith("proxy_") and not col.endswith("_s") and col != "proxy_errors":
            out.setdefault(col[len("proxy_"):], col)
    return out


def recorded(trials: pd.DataFrame) -> bool:
    """Whether the run recorded any proxy beyond the baselines (``search.proxies``)."""
    return any(col != name for name, col in proxy_columns_of(trials).items())


def proxy_ranking(trials: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """One row per proxy (the baselines first): ``trials`` (completed trials with both values),
    Spearman's ``spearman`` and Kendall's tau-b ``kendall`` against ``metric``, ``p``
    (Spearman's one-sided p that the proxy ranks with the metric, not against it) and
    ``seconds`` (the proxy's median time a trial; NaN for the baselines, measured with the
    costs). Fewer than :data:`MIN_TRIALS` pairs, or a constant column, give NaN."""
    done = trials[trials["status"] == "completed"] if "status" in trials else trials
    rows = []
    for name, col in proxy_columns_of(trials).items():
        pairs = pd.DataFrame({"x": pd.to_numeric(done[col], errors="coerce"),
                              "y": pd.to_numeric(done.get(metric), errors="coerce")}).dropna()
        pairs = pairs[np.isfinite(pairs["x"]) & np.isfinite(pairs["y"])]
        row = {"proxy": name, "trials": len(pairs), "spearman": np.nan, "kendall": np.nan, "p": np.nan,
               "seconds": float(pd.to_numeric(done[f"{col}_s"], errors="coerce").median())
               if f"{col}_s" in done and len(done) else np.nan}
        if len(pairs) >= MIN_TRIALS and pairs["x"].nunique() > 1 and pairs["y"].nunique() > 1:
            rho = stats.spearmanr(pairs["x"], pairs["y"], alternative="greater")
            row.update(spearman=float(rho.statistic), p=float(rho.pvalue),
                       kendall=float(stats.kendalltau(pairs["x"], pairs["y"]).statistic))
        rows.append(row)
    return pd.DataFrame(rows, columns=["proxy", "trials", "spearman", "kendall", "p", "seconds"])


def describe(table: pd.DataFrame, prescreened: bool = False) -> str:
    """The table in one or two sentences: which proxy ranks this run's trained configurations
    best, against ``params``; whether it agrees at p < :data:`P_AGREE`; and, for a run whose
    first trials a prescreen chose, that they are not a random sample."""
    judged = table.dropna(subset=["spearman"])
    if judged.empty:
        most = int(table["trials"].max()) if len(table) else 0
        return (f"Too few completed trials with a value to rank anything ({most}; at least {MIN_TRIALS} "
                "with distinct values are needed).")
    best = judged.sort_values(["spearman", "kendall"], ascending=False).iloc[0]
    text = f"Ranks this run's trained configurations best: {best['proxy']} (Spearman {best['spearman']:.3f}"
    text += f", p {best['p']:.3g}, {int(best['trials'])} trials)"
    params = judged[judged["proxy"] == "params"]
    if best["proxy"] != "params" and len(params):
        text += f"; params: {params['spearman'].iloc[0]:.3f}"
    agrees = best["spearman"] > 0 and best["p"] < P_AGREE
    level = f"one-sided p < {P_AGREE:g}"
    text += (f". It agrees with training at {level}, as search.prescreen.check asks (the best of {len(judged)}: "
             "with few trials one of several agrees by chance more often than one alone)."
             if agrees and len(judged) > 1 else
             f". It agrees with training at {level}, as search.prescreen.check asks." if agrees else
             f". No proxy agrees with training at {level} here: a prescreen would rank this space by chance or"
             " worse.")
    if agrees:
        text += (f" To use it in the next search of this space: search.prescreen: {{proxy: {best['proxy']}, keep: "
                 f"{START_UP}}} trains the {START_UP} of {POOL} random candidates it ranks best first, in place of the "
                 "sampler's random start-up (docs: Benchmarks, Search cost).")
    backwards = judged[(judged["spearman"] < 0) & (judged["spearman"] == judged["spearman"].min())]
    if len(backwards) and backwards["spearman"].iloc[0] < -0.3:
        text += f" {backwards['proxy'].iloc[0]} ranks it backwards ({backwards['spearman'].iloc[0]:.3f})."
    if prescreened:
        text += (" The first trials were the prescreen's picks, not a random sample, so the proxy it ranked by is"
                 " judged on the range it chose.")
    return text
