"""``search.prescreen``: rank a random pool of candidates by a training-free proxy and train
the best first.

:func:`prescreen` draws ``pool`` distinct configurations at random (Optuna's
``RandomSampler`` under the spec's seed), keeps the feasible ones (within every budget and
the family's constraint; an infeasible draw costs one cheap measurement and is drawn anew,
up to :data:`DRAWS_PER_SLOT` draws a slot), scores each with the proxy and ranks them
(:func:`rank`): by non-dominated sorting of (the proxy, to be maximised; each cost objective
of the search in its own direction), so that a cheap network with a fair score is not ranked
below every expensive one, the proxy ordering the networks of one level. The best ``keep``
are enqueued to the Optuna study (``enqueue_trial``): they are the search's first trials,
and the sampler, told their results, proposes the rest.

Who scores: a :data:`Scorer` answers a configuration with its :class:`Scored` (None:
infeasible). A run's is :class:`ProxyScorer` (the driver's
:class:`~archscale.search.configs.evaluate.Evaluator` and the trial's own minibatch of the
training split, so a proxy here has the value the trial's ``proxy_NAME`` column would);
``benchmarks/sampler_quality.py`` replays the same code with scores looked up in its grids
(:class:`~archscale.search.sampling.replay.TableScorer`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import optuna
import torch
from scipy.stats import rankdata, spearmanr

from archscale.analysis.pareto import pareto_levels
from archscale.search.configs.context import native
from archscale.search.configs.evaluate import Evaluator
from archscale.spec.objectives import COSTS

logger = logging.getLogger(__name__)
DRAWS_PER_SLOT = 20  # random draws per pool slot before the pool is taken as it is (a small or tight space)
AUTO = "auto"  # search.prescreen.proxy: auto: the check chooses the proxy (:class:`Choice`)
# What proxy auto chooses among: params (the baseline, free) and the three proxies that rank some
# space of the benchmark best (docs, benchmarks, Training-free proxies); macs is the cost
# objective itself on most spaces, naswot ranks none best and costs the most.
AUTO_PROXIES = ("params", "synflow", "grad_norm", "zico")
VOTE = "vote"  # search.prescreen.proxy: vote: the pool ranked by the mean of its ranks under several proxies
# What vote ranks by: the parameter count and the two proxies that rank the benchmark's spaces best; the mean of
# their ranks is never the worst of the three there (zico, backwards on two spaces, makes it worse on six of seven:
# docs, benchmarks, Training-free proxies). Abdelfattah et al. (ICLR 2021) found a vote of three proxies more
# robust than any one. Less those that are a cost objective too: vote_proxies.
VOTE_PROXIES = ("params", "synflow", "grad_norm")
SEVERAL = {AUTO: AUTO_PROXIES, VOTE: VOTE_PROXIES}  # a proxy name that scores with several proxies -> which


@dataclass(frozen=True)
class Scored:
    """A feasible candidate: its proxy ``value`` (NaN: the proxy has none for it, ranked last),
    the proxy's seconds and the costs measured to check its budgets; with proxy auto or vote,
    ``values`` holds each of their proxies (:data:`SEVERAL`) and ``seconds`` their sum; ``value`` is
    NaN (vote: its mean rank in the pool, once :func:`vote` has ranked it)."""

    config: dict[str, Any]
    value: float
    seconds: float = 0.0
    costs: dict[str, float] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)

    def of(self, proxy: str | None = None) -> float:
        """The value of ``proxy`` (None: the one proxy scored)."""
        return self.value if proxy is None else self.values.get(proxy, math.nan)


Scorer = Callable[[dict], "Scored | None"]  # config -> its score, None when it may not train


def config_key(config: dict) -> str:
    return json.dumps({k: native(v) for k, v in config.items()}, sort_keys=True, default=str)


@dataclass
class ProxyScorer:
    """A run's scorer: ``evaluator`` judges the budgets and measures the costs; the proxy is
    computed as the trial computes it (:meth:`Evaluator.proxies`) on ``data``, the images and
    labels the trial's seeded minibatch is drawn from. Holds only that minibatch's images (it
    is pickled with the searcher), drawn by :func:`minibatch_source`."""

    evaluator: Evaluator
    proxy: str
    data: tuple[torch.Tensor, torch.Tensor]

    def __call__(self, config: dict) -> Scored | None:
        return self.judge(config)[0]

    def judge(self, config: dict) -> tuple[Scored | None, str]:
        """The candidate's score and why it has none or lacks a proxy's value (empty: it has
        every one): the budget it exceeds, the family's refusal, the error building it raised,
        or each proxy's reason (``name: reason``, joined by ``; ``)."""
        verdict = self.evaluator(config)  # the budgets' check (no training step on the driver's GPU)
        if not verdict.feasible:
            return None, verdict.why
        try:
            costs = {k: float(v) for k, v in verdict.metrics().items() if k in COSTS and v is not None}
            costs.update({k: float(v) for k, v in self.evaluator.counts(config).items()})
            if self.proxy in ("params", "macs"):
                return Scored(dict(config), costs[self.proxy], 0.0, costs), ""
            names = SEVERAL.get(self.proxy, (self.proxy,))
            scores = self.evaluator.proxies(config, self.data, tuple(n for n in names if n not in COSTS))
        except Exception as err:  # noqa: BLE001 - a family's code may fail in any way: not a candidate
            why = " ".join(f"{type(err).__name__}: {err}".split())[:200]
            logger.warning("prescreen: %s left out: %s", config, why)
            return None, why
        why = "; ".join(f"{k}: {v}" for k, v in scores.errors.items())
        if self.proxy in SEVERAL:
            values = {n: costs[n] if n in COSTS else scores.values.get(n, math.nan) for n in names}
            return Scored(dict(config), math.nan, float(sum(scores.seconds.values())), costs, values), why
        return Scored(dict(config), scores.values.get(self.proxy, math.nan), scores.seconds.get(self.proxy, 0.0),
                      costs), why


def minibatch_source(x: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``size`` images and labels of ``(x, y)`` that :func:`archscale.analysis.proxies.minibatch`
    draws under ``seed``, as they are (not standardised), placed so that ``minibatch`` of them
    under the same seed gives the trial's minibatch in the trial's order (zico splits a
    minibatch in halves: the order counts)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed)))[:min(size, len(y))]
    again = torch.randperm(len(order), generator=torch.Generator().manual_seed(int(seed)))  # minibatch's own draw
    held_x, held_y = torch.empty_like(x[order]), torch.empty_like(y[order])
    held_x[again], held_y[again] = x[order], y[order]
    return held_x, held_y


def vote(scored: Sequence[Scored], names: Sequence[str] = VOTE_PROXIES) -> list[Scored]:
    """``scored`` with each ``value`` the mean of its ranks among ``scored`` under each proxy of
    ``names`` (1: the lowest value; ties share their mean rank; a candidate without a proxy's value
    ranks lowest under it). A candidate with no value under any of them keeps NaN (ranked last)."""
    table = np.array([[s.values.get(n, math.nan) for n in names] for s in scored], dtype=float).reshape(-1, len(names))
    ranks = np.column_stack([rankdata(np.where(np.isfinite(col), col, -np.inf)) for col in table.T]) if len(scored) \
        else np.empty((0, len(names)))
    return [replace(s, value=float(r.mean()) if np.isfinite(row).any() else math.nan)
            for s, r, row in zip(scored, ranks, table)]


def vote_proxies(objectives: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """What proxy vote ranks by in a search judged on ``objectives``: :data:`VOTE_PROXIES` less
    those that are also a cost objective (``params``, where the search is judged on parameters:
    it ranks the largest networks first, the costliest on that objective), all three if that
    leaves none. The benchmark's rule kept it on a space held out to test it (depthcifar: 20.6
    full trials to random search's 40-trial front against 25.6 with all three; docs,
    benchmarks, Search cost)."""
    judged = {metric for metric, _ in objectives}
    return tuple(n for n in VOTE_PROXIES if n not in judged) or VOTE_PROXIES


def rank(scored: Sequence[Scored], objectives: Sequence[tuple[str, str]], proxy: str | None = None) -> list[Scored]:
    """``scored`` best first: by non-dominated level of (the proxy, each cost objective in its
    direction; ``val_accuracy`` is what the proxy stands for), then by the proxy within a level.
    A candidate without a proxy value ranks after every one with a value. ``proxy``: rank by
    that one of each candidate's ``values`` (proxy auto) instead of its ``value``."""
    if not scored:
        return []
    value = np.array([s.of(proxy) if math.isfinite(s.of(proxy)) else -np.inf for s in scored], dtype=float)
    columns = [np.where(np.isfinite(value), value, np.finfo(float).min)]
    for metric, mode in objectives:
        if metric in COSTS:
            v = np.array([s.costs.get(metric, math.nan) for s in scored], dtype=float)
            if np.isfinite(v).all():
                columns.append(-v if mode == "min" else v)
    levels = pareto_levels(np.column_stack(columns))
    order = np.lexsort((-value, levels, ~np.isfinite(value)))
    return [scored[i] for i in order]


@dataclass
class Outcome:
    """What a prescreen did: candidates drawn, scored (feasible), the kept configurations in
    order, the proxy's seconds summed over the pool and the whole prescreen's wall seconds;
    ``ranked``: every scored candidate, best first."""

    drawn: int = 0
    scored: int = 0
    kept: list[dict] = field(default_factory=list)
    proxy_seconds: float = 0.0
    wall_seconds: float = 0.0
    no_value: int = 0
    ranked: list[Scored] = field(default_factory=list)
    voted: tuple[str, ...] = VOTE_PROXIES  # proxy vote: the proxies it ranked by (vote_proxies)

    def describe(self, proxy: str) -> str:
        missing = f", {self.no_value} without a value (ranked last)" if self.no_value else ""
        if proxy == VOTE:
            return (f"prescreen: vote (the mean rank under {_names(self.voted)}) scored {self.scored} feasible "
                    f"candidates of {self.drawn} drawn{missing} in {self.wall_seconds:.1f}s; the best {len(self.kept)} "
                    "train first")
        if proxy == AUTO:
            return (f"prescreen: auto: {_names(AUTO_PROXIES)} scored {self.scored} feasible candidates of "
                    f"{self.drawn} drawn{missing} in {self.wall_seconds:.1f}s")
        return (f"prescreen: {proxy} scored {self.scored} feasible candidates of {self.drawn} drawn{missing} in "
                f"{self.wall_seconds:.1f}s; the best {len(self.kept)} train first")


def prescreen(distributions: dict, objectives: Sequence[tuple[str, str]], scorer: Scorer, *, proxy: str, pool: int,
              keep: int, seed: int, skip: set[str] = frozenset()) -> Outcome:
    """Draw ``pool`` distinct feasible candidates at random (seeded by ``seed``), score and rank
    them, and return the best ``keep``, less those whose :func:`config_key` is in ``skip`` (already
    recorded: a resumed search enqueues only what its first run did not train)."""
    start = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen: set[str] = set()
    scored: list[Scored] = []
    out = Outcome()
    for _ in range(pool * DRAWS_PER_SLOT):
        if len(scored) >= pool:
            break
        trial = draws.ask(distributions)
        config = dict(trial.params)
        draws.tell(trial, 0.0)
        key = config_key(config)
        if key in seen:
            continue
        seen.add(key)
        out.drawn += 1
        s = scorer(config)
        if s is not None:
            scored.append(s)
    if proxy == VOTE:
        out.voted = vote_proxies(objectives)
        scored = vote(scored, out.voted)
    out.scored = len(scored)
    out.no_value = sum(not math.isfinite(s.value) for s in scored) if proxy != AUTO else sum(
        not any(math.isfinite(v) for v in s.values.values()) for s in scored)
    out.proxy_seconds = float(sum(s.seconds for s in scored))
    out.ranked = rank(scored, objectives)
    out.kept = [s.config for s in out.ranked[:keep] if config_key(s.config) not in skip]
    out.wall_seconds = time.perf_counter() - start
    return out


CHECK_P = 0.1  # the proxy is trusted when its rank correlation with accuracy is positive at this one-sided level


@dataclass
class Check:
    """``search.prescreen.check``: before the proxy's best train, ``check`` candidates of the
    pool at evenly spaced places of the proxy's ranking train first (its best and its worst
    included), and the proxy is trusted only if its ranking agrees with their validation
    accuracy: Spearman's rho over them is positive at one-sided p < :data:`CHECK_P` (scipy's
    ``spearmanr``). Spread over the whole ranking, the test sees the proxy's full range, not a
    random handful, and the proxy's best candidate is trained whatever the verdict (on the
    benchmark's grids a random draw cost about the same: docs, benchmarks, Search cost). A trial that ends without an accuracy (failed, pruned,
    over budget) is left out of the test."""

    values: dict[str, float]  # config_key -> proxy value, of the candidates drawn for the check
    results: dict[str, float | None] = field(default_factory=dict)  # config_key -> accuracy (None: none)
    rho: float = math.nan
    p: float = math.nan
    trusted: bool | None = None  # None: not decided yet

    @classmethod
    def draw(cls, outcome: Outcome, n: int, skip: set[str] = frozenset()) -> "tuple[Check, list[dict]]":
        """``n`` of ``outcome``'s ranked candidates at evenly spaced ranks, best first: the check,
        and the configurations to train for it (those not in ``skip``, the already recorded)."""
        places = np.unique(np.round(np.linspace(0, len(outcome.ranked) - 1, min(n, len(outcome.ranked)))).astype(int))
        picked = [outcome.ranked[i] for i in places]
        check = cls({config_key(s.config): s.value for s in picked})
        return check, [s.config for s in picked if config_key(s.config) not in skip]

    def record(self, config: dict, accuracy: float | None) -> None:
        key = config_key(config)
        if key in self.values and key not in self.results:
            self.results[key] = accuracy if accuracy is not None and math.isfinite(accuracy) else None

    @property
    def ready(self) -> bool:
        return self.trusted is None and len(self.results) >= len(self.values)

    def decide(self) -> bool:
        pairs = [(self.values[k], a) for k, a in self.results.items() if a is not None and math.isfinite(self.values[k])]
        if len(pairs) >= 3 and len({p for p, _ in pairs}) > 1 and len({a for _, a in pairs}) > 1:
            test = spearmanr([p for p, _ in pairs], [a for _, a in pairs], alternative="greater")
            self.rho, self.p = float(test.statistic), float(test.pvalue)
        self.trusted = bool(self.p < CHECK_P)  # NaN (too few or constant values): not trusted
        return self.trusted

    def describe(self, proxy: str, keep: int) -> str:
        told = sum(a is not None for a in self.results.values())
        verdict = (f"its best {keep} train next" if self.trusted else
                   "its ranking is not used: the sampler proposes the rest")
        if math.isnan(self.p):
            return (f"prescreen: {told} trial(s) of the check ended with a validation accuracy, too few (or too alike) "
                    f"to test {proxy}'s ranking; {verdict}")
        return (f"prescreen: {proxy} against the validation accuracy of {told} trials spread over its ranking: "
                f"Spearman {self.rho:.2f}, one-sided p {self.p:.2f} "
                f"({'<' if self.trusted else 'not <'} {CHECK_P:g}); {verdict}")

    def kept(self, outcome: Outcome, keep: int, skip: set[str] = frozenset()) -> list[dict]:
        """The proxy's best ``keep`` of the pool, less the checked and the ``skip``."""
        best = [s.config for s in outcome.ranked if config_key(s.config) not in self.values][:keep]
        return [c for c in best if config_key(c) not in skip]


@dataclass
class Choice:
    """``search.prescreen.proxy: auto``: ``check`` candidates drawn at random from the pool train
    first (the sampler's own start-up would have been random draws too), and each proxy of
    :data:`AUTO_PROXIES` is tested on them as :class:`Check` tests one. Of those that agree
    (one-sided p < :data:`CHECK_P`), the one with the highest Spearman rho ranks the pool, and its
    best ``keep`` of the rest train next; when none agrees, the sampler proposes the rest. The
    space, not the literature, picks the proxy: no proxy ranks every space of the benchmark
    (docs, benchmarks, Training-free proxies)."""

    checks: dict[str, Check]  # proxy -> its test, over the same candidates
    objectives: list[tuple[str, str]]
    chosen: str | None = None

    @classmethod
    def draw(cls, outcome: Outcome, n: int, seed: int, objectives: Sequence[tuple[str, str]],
             skip: set[str] = frozenset()) -> "tuple[Choice, list[dict]]":
        """``n`` of ``outcome``'s scored candidates at random (seeded by ``seed``): the choice,
        and the configurations to train for it (those not in ``skip``)."""
        picks = np.random.default_rng(seed).permutation(len(outcome.ranked))[:n]
        picked = [outcome.ranked[i] for i in sorted(picks)]
        checks = {p: Check({config_key(s.config): s.of(p) for s in picked}) for p in AUTO_PROXIES}
        return cls(checks, list(objectives)), [s.config for s in picked if config_key(s.config) not in skip]

    @property
    def values(self) -> dict[str, float]:
        return next(iter(self.checks.values())).values

    @property
    def results(self) -> dict[str, float | None]:
        return next(iter(self.checks.values())).results

    @property
    def trusted(self) -> bool | None:
        if any(c.trusted is None for c in self.checks.values()):
            return None
        return self.chosen is not None

    def record(self, config: dict, accuracy: float | None) -> None:
        for check in self.checks.values():
            check.record(config, accuracy)

    @property
    def ready(self) -> bool:
        return all(c.ready for c in self.checks.values())

    def decide(self) -> bool:
        agree = [(c.rho, p) for p, c in self.checks.items() if c.decide()]
        self.chosen = max(agree)[1] if agree else None
        return self.chosen is not None

    def describe(self, proxy: str, keep: int) -> str:
        told = sum(a is not None for a in self.results.values())
        tests = ", ".join(f"{p} {c.rho:.2f} (p {c.p:.2f})" if math.isfinite(c.p) else f"{p} untestable"
                          for p, c in self.checks.items())
        verdict = (f"{self.chosen} agrees best: its best {keep} train next" if self.chosen else
                   f"none agrees at p < {CHECK_P:g}: the sampler proposes the rest")
        return (f"prescreen: auto: Spearman with the validation accuracy of {told} trials drawn at random from the "
                f"pool: {tests}; {verdict}")

    def kept(self, outcome: Outcome, keep: int, skip: set[str] = frozenset()) -> list[dict]:
        """The chosen proxy's best ``keep`` of the pool, less the checked and the ``skip``."""
        if self.chosen is None:
            return []
        ranked = rank(outcome.ranked, self.objectives, self.chosen)
        best = [s.config for s in ranked if config_key(s.config) not in self.values][:keep]
        return [c for c in best if config_key(c) not in skip]


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
