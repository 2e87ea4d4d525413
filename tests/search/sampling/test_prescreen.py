"""search.prescreen (a random pool ranked by a proxy, the best trained first), ASHA replayed
through Ray's own scheduler, and sampler auto's hand-over from gp to tpe."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from archscale.search.dispatch.asha import make_scheduler
from archscale.search.sampling.asktell import AskTell, optuna_space
from archscale.search.sampling.prescreen import Scored, config_key, prescreen, rank, vote
from archscale.search.sampling.replay import Table, TableScorer, replay, replay_search
from archscale.spec import SpecError, parse_spec

PARAMS = {"c1_width": [4, 8, 12], "c2_width": [8, 16], "c3_width": [8, 16, 24], "downsample": ["stride", "maxpool"]}
MAX_PARAMS = 1000


def make_spec(sampler="random", num_trials=10, seed=0, prescreen=None, scheduler="none", epochs=4, objectives=None):
    search = {"sampler": sampler, "num_trials": num_trials, "max_concurrent": 2, "scheduler": scheduler,
              "objectives": objectives or (["val_accuracy:max", "macs:min"] if scheduler == "none"
                                           else ["val_accuracy:max"])}
    if prescreen:
        search["prescreen"] = prescreen
    return parse_spec({"name": "s", "seed": seed, "space": {"params": PARAMS, "max_params": MAX_PARAMS},
                       "train": {"epochs": epochs}, "search": search})


@pytest.fixture(scope="module")
def grid():
    """36 configurations, the widest over budget; accuracy grows with params, a proxy column
    ``proxy_synflow`` that is the negative of the accuracy (a proxy that ranks backwards) and
    ``proxy_zico`` equal to it (a perfect one), each 0.01 s; 4-epoch histories rising to it."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (c1, c2, c3, ds) in enumerate(itertools.product(*PARAMS.values())):
        params = 10 * (c1 + c2) * c3 // 4
        row = {"trial_id": f"t{i}", "c1_width": c1, "c2_width": c2, "c3_width": c3, "downsample": ds,
               "params": params, "macs": params * 30 + int(rng.integers(0, 500)), "train_seconds": 2.0}
        if params > MAX_PARAMS:
            row.update(status="infeasible", epochs=0)
        else:
            acc = round(0.5 + params / 4000 + rng.uniform(0, 0.1), 4)
            row.update(status="completed", val_accuracy=acc, epochs=4, proxy_synflow=-acc, proxy_synflow_s=0.01,
                       proxy_zico=acc, proxy_zico_s=0.01,
                       history=json.dumps([round(acc * f, 4) for f in (0.6, 0.8, 0.9, 1.0)]))
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table(grid):
    return Table(grid, make_spec().searched())


def test_rank_puts_cheap_fair_networks_beside_strong_costly_ones_and_missing_values_last():
    def s(name, value, macs):
        return Scored({"n": name}, value, 0.0, {"macs": macs})

    scored = [s("big", 10.0, 1000), s("small", 5.0, 10), s("dominated", 4.0, 2000), s("none", math.nan, 1),
              s("mid", 7.0, 500)]
    order = [x.config["n"] for x in rank(scored, [("val_accuracy", "max"), ("macs", "min")])]
    assert order == ["big", "mid", "small", "dominated", "none"]  # level 0 by proxy, then level 1, then no value
    # with accuracy the only objective the proxy alone orders them
    assert [x.config["n"] for x in rank(scored, [("val_accuracy", "max")])] == ["big", "mid", "small", "dominated",
                                                                               "none"]


def test_vote_ranks_by_the_mean_of_ranks_worked_by_hand():
    """Five candidates under params, synflow and grad_norm; a missing value ranks lowest (e has
    none at all, b no grad_norm: they share ranks 1 and 2 there, 1.5 each). Mean ranks: a (2, 2,
    3) 7/3, b (3, 5, 1.5) 19/6, c (4, 4, 5) 13/3, d (5, 3, 4) 4; e has no value and ranks last."""
    def s(name, p, syn, g):
        return Scored({"n": name}, math.nan, 0.0, {}, {"params": p, "synflow": syn, "grad_norm": g})

    nan = math.nan
    voted = vote([s("a", 10, 0.1, 5), s("b", 20, 0.4, nan), s("c", 30, 0.3, 7), s("d", 40, 0.2, 6),
                  s("e", nan, nan, nan)])
    assert [v.value for v in voted[:4]] == pytest.approx([7 / 3, 19 / 6, 13 / 3, 4])
    assert math.isnan(voted[4].value)
    assert [x.config["n"] for x in rank(voted, [("val_accuracy", "max")])] == ["c", "d", "b", "a", "e"]


def test_a_vote_prescreen_keeps_the_pool_s_best_mean_rank(table):
    spec = make_spec("random", num_trials=12, prescreen={"proxy": "vote", "pool": 16, "keep": 6})
    _, ask_tell = replay_search(spec, table, spec.searched())
    out = ask_tell.prescreened
    assert out.scored == 16 and out.no_value == 0  # params has a value for every candidate
    by_hand = vote([TableScorer(table, "vote")(s.config) for s in out.ranked])
    best = [config_key(s.config) for s in rank(by_hand, spec.search.objective_pairs())[:6]]
    assert [config_key(c) for c in out.kept] == best
    assert out.describe("vote").startswith("prescreen: vote (the mean rank under params, synflow and grad_norm) "
                                           "scored 16 feasible candidates")


def test_a_vote_leaves_out_the_proxy_that_is_a_cost_objective(table):
    """Judged on parameters, the vote ranks by synflow and grad_norm alone: params would rank
    the largest networks, the costliest, first. With no other proxy left, all three."""
    from archscale.search.sampling.prescreen import vote_proxies

    assert vote_proxies([("val_accuracy", "max"), ("macs", "min")]) == ("params", "synflow", "grad_norm")
    assert vote_proxies([("val_accuracy", "max"), ("params", "min")]) == ("synflow", "grad_norm")
    assert vote_proxies([("val_accuracy", "max"), ("params", "min"), ("macs", "min")]) == ("synflow", "grad_norm")
    spec = make_spec("random", num_trials=12, prescreen={"proxy": "vote", "pool": 16, "keep": 6},
                     objectives=["val_accuracy:max", "params:min"])
    _, ask_tell = replay_search(spec, table, spec.searched())
    out = ask_tell.prescreened
    by_hand = vote([TableScorer(table, "vote")(s.config) for s in out.ranked], ("synflow", "grad_norm"))
    best = [config_key(s.config) for s in rank(by_hand, spec.search.objective_pairs())[:6]]
    assert [config_key(c) for c in out.kept] == best
    with_params = vote([TableScorer(table, "vote")(s.config) for s in out.ranked])
    assert best != [config_key(s.config) for s in rank(with_params, spec.search.objective_pairs())[:6]]
    assert out.describe("vote").startswith("prescreen: vote (the mean rank under synflow and grad_norm) ")


def test_the_pool_is_distinct_feasible_and_the_best_are_kept(table):
    spec = make_spec()
    dims = spec.searched()
    calls = []

    def scorer(config):
        calls.append(config_key(config))
        return TableScorer(table, "zico")(config)

    out = prescreen(optuna_space(dims), [("val_accuracy", "max")], scorer, proxy="zico", pool=10, keep=4, seed=3)
    assert len(set(calls)) == len(calls) == out.drawn  # each candidate scored once
    assert out.scored == 10 and len(out.kept) == 4
    assert out.proxy_seconds == pytest.approx(0.1)
    accs = {config_key({n: r[n] for n in PARAMS}): r["val_accuracy"] for r in table.rows.values()
            if r["status"] == "completed"}
    pool_accs = sorted((accs[k] for k in calls if k in accs), reverse=True)
    assert [accs[config_key(c)] for c in out.kept] == pool_accs[:4]  # a perfect proxy keeps the pool's best
    again = prescreen(optuna_space(dims), [("val_accuracy", "max")], scorer, proxy="zico", pool=10, keep=4, seed=3,
                      skip={config_key(out.kept[0])})
    assert again.kept == out.kept[1:]  # seeded; a recorded one is not enqueued again


def test_a_prescreened_replay_trains_the_kept_candidates_first_then_the_sampler_goes_on(table):
    spec = make_spec("tpe", num_trials=12, prescreen={"proxy": "zico", "pool": 16, "keep": 6})
    rows, ask_tell = replay_search(spec, table, spec.searched())
    trained = rows[rows["suggested"] >= 0].sort_values("suggested")
    kept = [config_key(c) for c in ask_tell.prescreened.kept]
    names = list(PARAMS)
    assert [config_key({n: r[n] for n in names}) for r in trained.head(6).to_dict("records")] == kept
    assert len(trained) == 12 and (trained["cost"] == 1.0).all()
    assert (rows[rows["suggested"] < 0]["cost"] == 0.0).all()
    # a backwards proxy keeps the pool's worst: the first six trials are worse than a perfect proxy's
    bad = replay(make_spec("tpe", num_trials=12, prescreen={"proxy": "synflow", "pool": 16, "keep": 6}), table,
                 spec.searched())
    first = bad[bad["suggested"].between(0, 5)]
    assert first["val_accuracy"].mean() < trained.head(6)["val_accuracy"].mean()


def test_asha_in_a_replay_is_ray_s_own_and_a_stopped_trial_costs_its_epochs(table):
    spec = make_spec("random", num_trials=20, scheduler="asha")
    rows = replay(spec, table, spec.searched())
    trained = rows[rows["suggested"] >= 0]
    pruned = trained[trained["status"] == "pruned"]
    assert len(pruned) > 0 and (trained["status"] == "completed").any()
    assert set(pruned["epochs"]) <= {1, 2} and (pruned["cost"] == pruned["epochs"] / 4).all()
    assert (trained.loc[trained["status"] == "completed", "cost"] == 1.0).all()
    first = trained.sort_values("trial_id", key=lambda s: s.astype(int)).iloc[0]
    assert first["status"] == "completed"  # an empty rung stops nothing
    # a pruned trial's accuracy is its history's at the epoch it stopped
    for r in pruned.to_dict("records"):
        history = json.loads(table.rows[config_key({n: r[n] for n in PARAMS})]["history"])
        assert r["val_accuracy"] == history[r["epochs"] - 1]


def test_asha_in_a_replay_with_several_objectives_judges_on_all_of_them(table):
    """Accuracy grows with size here, so accuracy alone stops the small networks; with MACs
    an objective the cheapest trial is the cheap end of every rung's front and goes on."""
    front_spec = make_spec("random", num_trials=20, scheduler="asha", objectives=["val_accuracy:max", "macs:min"])
    one_spec = make_spec("random", num_trials=20, scheduler="asha")
    assert type(make_scheduler(front_spec)).__name__ == "FrontASHA"
    front, one = (replay(s, table, s.searched()) for s in (front_spec, one_spec))
    for rows in (front, one):
        assert (rows["status"] == "pruned").any()
    cheapest = front[front["suggested"] >= 0].sort_values("macs").iloc[0]
    assert cheapest["status"] == "completed"
    # the same draws (same seed), judged on accuracy alone: more of the small half stop
    small = front["macs"].median()
    assert (one[one["macs"] <= small]["status"] == "pruned").sum() > (front[front["macs"] <= small]["status"]
                                                                      == "pruned").sum()


def test_asha_needs_histories(grid):
    spec = make_spec("random", num_trials=5, scheduler="asha")
    with pytest.raises(ValueError, match="per-epoch history"):
        replay(spec, Table(grid.drop(columns=["history"]), spec.searched()), spec.searched())


@pytest.mark.parametrize("seconds, handed", [(1e-6, True), (1e6, False)])
def test_sampler_auto_hands_gp_over_to_tpe_when_gp_costs_more_than_5_percent_of_a_trial(grid, seconds, handed):
    spec = make_spec("auto", num_trials=8)
    rows, ask_tell = replay_search(spec, Table(grid.assign(train_seconds=seconds), spec.searched()), spec.searched())
    assert ask_tell.handed_over is handed
    assert type(ask_tell.auto.current).__name__ == ("TPESampler" if handed else "GPSampler")
    assert len(rows[rows["suggested"] >= 0]) == 8 and len(ask_tell.ask_seconds) >= 8


def test_a_prescreen_without_a_scorer_does_nothing(table):
    spec = make_spec("random", num_trials=4, prescreen={"proxy": "zico", "pool": 8, "keep": 2})
    ask_tell = AskTell(spec, spec.searched(), spec.search.objective_pairs())
    assert ask_tell.suggest("0") is not None and ask_tell.prescreened is None


@pytest.mark.parametrize("prescreen, sampler, words", [
    ({"proxy": "zico", "pool": 4, "keep": 8}, "tpe", "keep 8 is more than pool 4"),
    ({"proxy": "zico", "pool": 40, "keep": 20}, "tpe", "search.prescreen.keep: 20 is more than search.num_trials"),
    ({"proxy": "flops", "pool": 40, "keep": 4}, "tpe", "unknown proxy 'flops'"),
    ({"proxy": "zico", "pool": 40, "keep": 4}, "grid", "nothing to prescreen"),
    ({"proxy": "zico", "keep": 4, "size": 3}, "tpe", "size"),
])
def test_a_bad_prescreen_is_refused_with_its_words(prescreen, sampler, words):
    with pytest.raises(SpecError, match=words):
        make_spec(sampler, num_trials=10, prescreen=prescreen)


def test_the_driver_s_minibatch_gives_the_trial_s_proxy_values():
    import torch

    from archscale.analysis.proxies import minibatch, score
    from archscale.search.sampling.prescreen import minibatch_source

    x = torch.randint(0, 256, (300, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(400, 10))
    trial = score(model, *minibatch(x, y, 32, 7))  # what a trial computes on its training split
    held = minibatch_source(x, y, 32, 7)  # what the driver keeps (32 images, not the split)
    assert len(held[1]) == 32
    driver = score(model, *minibatch(*held, 32, 7))
    for name in ("synflow", "naswot", "grad_norm", "zico"):
        assert driver.values[name] == pytest.approx(trial.values[name], rel=1e-6)


@pytest.mark.parametrize("proxy, trusted", [("zico", True), ("synflow", False)])
def test_a_checked_prescreen_trusts_a_proxy_only_where_it_agrees_with_accuracy(table, proxy, trusted):
    """check: 8 candidates spread over the proxy's ranking of the pool train first (its best and
    its worst among them); zico here equals the accuracy (it must be trusted and its best 6 of
    the rest train next), synflow is its negative (it must not be)."""
    spec = make_spec("random", num_trials=20, prescreen={"proxy": proxy, "pool": 20, "keep": 6, "check": 8})
    rows, ask_tell = replay_search(spec, table, spec.searched())
    check = ask_tell.check
    assert check.trusted is trusted and len(check.results) == 8
    assert all(a is not None for a in check.results.values())
    assert check.rho > 0.9 if trusted else check.rho < -0.9
    order = [config_key({n: r[n] for n in PARAMS})
             for r in rows[rows["suggested"] >= 0].sort_values("suggested").to_dict("records")]
    assert set(order[:8]) == set(check.values)  # the check's candidates are the first 8 trials
    ranked = [config_key(s.config) for s in ask_tell.prescreened.ranked]
    places = sorted(ranked.index(k) for k in check.values)
    assert places[0] == 0 and places[-1] == len(ranked) - 1  # the proxy's best and worst are checked
    assert max(b - a for a, b in zip(places, places[1:])) <= -(-len(ranked) // 7)  # evenly spread
    best = [config_key(s.config) for s in ask_tell.prescreened.ranked if config_key(s.config) not in check.values][:6]
    # the proxy's best 6 of the rest follow the check when trusted (one sampler draw may come
    # first, made while the last check trial was in flight); never when not
    assert len(set(order[8:15]) & set(best)) >= (6 if trusted else 0)
    kept = {config_key(c) for c in ask_tell.prescreened.kept}
    assert kept == set(check.values) | (set(best) if trusted else set())


def test_check_in_a_spec():
    with pytest.raises(ValueError, match="keep \\+ check \\(6 \\+ 16\\) is more than pool 20"):
        make_spec("random", num_trials=30, prescreen={"proxy": "zico", "pool": 20, "keep": 6, "check": 16})
    with pytest.raises(ValueError, match="keep \\+ check: 6 \\+ 8 is more than search.num_trials \\(10\\)"):
        make_spec("random", num_trials=10, prescreen={"proxy": "zico", "pool": 20, "keep": 6, "check": 8})
    with pytest.raises(ValueError, match="check 2 cannot test a ranking"):
        make_spec("random", num_trials=10, prescreen={"proxy": "zico", "pool": 20, "keep": 6, "check": 2})


def test_a_check_decides_on_spearman_and_says_so():
    from archscale.search.sampling.prescreen import Check

    values = {config_key({"a": i}): float(i) for i in range(6)}
    agree = Check(dict(values))
    for i in range(6):
        assert not agree.ready
        agree.record({"a": i}, 0.5 + 0.01 * i if i != 3 else None)  # one trial ended without accuracy
    assert agree.ready and agree.decide() and agree.rho == pytest.approx(1.0)
    assert "Spearman 1.00" in agree.describe("params", 4) and "best 4 train next" in agree.describe("params", 4)
    backwards = Check(dict(values))
    for i in range(6):
        backwards.record({"a": i}, 0.9 - 0.01 * i)
    assert not backwards.decide() and backwards.rho == pytest.approx(-1.0)
    assert "not used" in backwards.describe("params", 4)
    few = Check(dict(values))
    for i in range(6):
        few.record({"a": i}, 0.5 if i < 2 else None)
    assert not few.decide() and "too few" in few.describe("params", 4)
    few.record({"a": 0}, 0.99)  # a result is recorded once
    assert few.results[config_key({"a": 0})] == 0.5


@pytest.mark.parametrize("proxy", ["zico", "auto"])
def test_a_resumed_checked_prescreen_reads_the_check_from_the_recorded_trials(table, proxy):
    """Resumed after the check's 8 trials, a search decides the check from the recorded results
    (proxy auto: chooses the same proxy) and proposes what the first run did."""
    spec = make_spec("random", num_trials=20, prescreen={"proxy": proxy, "pool": 20, "keep": 6, "check": 8})
    rows, first = replay_search(spec, table, spec.searched())
    done = rows[rows["suggested"].between(0, 7)]  # the interrupted run recorded the check's 8 trials
    assert {config_key({n: r[n] for n in PARAMS}) for r in done.to_dict("records")} == set(first.check.values)
    resumed = AskTell(spec, spec.searched(), spec.search.objective_pairs(), recorded=done, evaluator=table,
                      scorer=TableScorer(table, proxy), note=lambda _: None)
    proposed = [config_key(resumed.suggest(str(i))) for i in range(6)]
    assert resumed.check.trusted and proposed == [config_key(c) for c in first.check.kept(first.prescreened, 6)]
    if proxy == "auto":
        assert resumed.check.chosen == first.check.chosen == "zico"


def test_proxy_auto_draws_its_check_at_random_and_chooses_the_proxy_that_agrees(table):
    """proxy auto: 8 candidates drawn at random from the pool train first; of params, synflow,
    grad_norm and zico, zico (equal to the accuracy here) agrees best and ranks the rest, synflow
    (its negative) is refused and grad_norm (no column) cannot be tested."""
    spec = make_spec("random", num_trials=20, prescreen={"proxy": "auto", "pool": 20, "keep": 6, "check": 8})
    rows, ask_tell = replay_search(spec, table, spec.searched())
    choice = ask_tell.check
    assert choice.chosen == "zico" and choice.trusted
    assert choice.checks["synflow"].rho < -0.9 and not choice.checks["synflow"].trusted
    assert math.isnan(choice.checks["grad_norm"].p) and choice.checks["params"].rho > 0.5
    order = [config_key({n: r[n] for n in PARAMS})
             for r in rows[rows["suggested"] >= 0].sort_values("suggested").to_dict("records")]
    assert set(order[:8]) == set(choice.values)
    by_zico = [config_key(s.config) for s in rank(ask_tell.prescreened.ranked, spec.search.objective_pairs(), "zico")]
    best = [k for k in by_zico if k not in choice.values][:6]
    assert len(set(order[8:15]) & set(best)) >= 6
    assert "zico agrees best: its best 6 train next" in choice.describe("auto", 6)
    assert "synflow -1.00" in choice.describe("auto", 6) and "grad_norm untestable" in choice.describe("auto", 6)
    # the draw is random, not spread over one ranking: another seed checks other candidates
    other = replay_search(make_spec("random", num_trials=20, seed=1, prescreen=spec.search.prescreen.model_dump()),
                          table, spec.searched())[1]
    assert set(other.check.values) != set(choice.values)


def test_proxy_auto_trains_no_proxy_s_best_when_none_agrees(grid):
    backwards = grid.assign(params=-grid["params"], proxy_zico=-grid["proxy_zico"].fillna(0))
    table = Table(backwards, make_spec().searched())
    spec = make_spec("random", num_trials=20, prescreen={"proxy": "auto", "pool": 20, "keep": 6, "check": 8})
    _, ask_tell = replay_search(spec, table, spec.searched())
    assert ask_tell.check.chosen is None and ask_tell.check.trusted is False
    assert {config_key(c) for c in ask_tell.prescreened.kept} == set(ask_tell.check.values)
    assert "none agrees at p < 0.1: the sampler proposes the rest" in ask_tell.check.describe("auto", 6)


def test_proxy_auto_needs_a_check():
    with pytest.raises(ValueError, match="proxy auto chooses its proxy by the check, but check is 0; allowed: 3"):
        make_spec("random", num_trials=20, prescreen={"proxy": "auto", "pool": 20, "keep": 6})


def test_a_slow_prescreen_says_how_far_it_is(table, monkeypatch):
    """The driver scores the pool one network at a time (minutes for large networks or
    images): a line every 10 s of scoring, with the candidates scored and the time left."""
    from archscale.search.jobs import run as run_module

    clock = itertools.count(0.0, 3.0)  # each look at the clock: 3 s later
    monkeypatch.setattr(run_module.time, "perf_counter", lambda: next(clock))
    spec = make_spec()
    lines = []
    scorer = run_module.ScoringProgress(TableScorer(table, "zico"), 10, lines.append)
    out = prescreen(optuna_space(spec.searched()), [("val_accuracy", "max")], scorer, proxy="zico", pool=10, keep=4,
                    seed=3)
    assert out.scored == 10 and scorer.scored == 10 and scorer.drawn == out.drawn
    assert lines and all(line.startswith("prescreen: ") and " of 10 candidates scored (" in line and
                         " elapsed, ~" in line and line.endswith(" left") for line in lines)
    scored = [int(line.split()[1]) for line in lines]
    assert scored == sorted(set(scored)) and scored[-1] < 10  # rising; none once the pool is full
    # the clock starts at the first candidate (3 s) and reads 18 s after the third: 15 s for 3, 35 s for 7 more
    assert lines[0] == "prescreen: 3 of 10 candidates scored (3 drawn), 15s elapsed, ~35s left"
    slow = run_module.ScoringProgress(TableScorer(table, "zico"), 400, lines.append)  # minutes left: how to skip it
    del lines[:]
    for config in itertools.islice(itertools.cycle(r for r in table.rows.values() if r["status"] == "completed"), 8):
        slow({n: config[n] for n in PARAMS})
    assert lines[0].endswith("left; search.prescreen: null skips it, a smaller search.prescreen.pool or "
                             "search.proxy_batch shortens it")
    assert lines[1:] and not any("null" in line for line in lines[1:])  # said once
    quiet = run_module.ScoringProgress(TableScorer(table, "zico"), 10, lines.append)
    monkeypatch.setattr(run_module.time, "perf_counter", lambda: 0.0)  # a fast pool: not a word
    del lines[:]
    prescreen(optuna_space(spec.searched()), [("val_accuracy", "max")], quiet, proxy="zico", pool=10, keep=4, seed=3)
    assert lines == []


def test_a_prescreen_stops_scoring_at_ctrl_c(table):
    """The first Ctrl-C (or the time budget) ends the prescreen with what it has scored,
    instead of minutes more of scoring before the search can stop."""
    from archscale.search.dispatch.recorder import SearchStopper
    from archscale.search.jobs.run import ScoringProgress

    stopper, lines, calls = SearchStopper(), [], []

    def scorer(config):
        calls.append(config)
        if len(calls) == 4:
            stopper.interrupt()  # Ctrl-C while the fourth candidate is scored
        return TableScorer(table, "zico")(config)

    progress = ScoringProgress(scorer, 10, lines.append, stopper)
    out = prescreen(optuna_space(make_spec().searched()), [("val_accuracy", "max")], progress, proxy="zico", pool=10,
                    keep=4, seed=3)
    assert len(calls) == 4 and out.scored == progress.scored <= 4
    assert lines == [f"prescreen: stopped (interrupted) after {progress.scored} of 10 candidates; a resumed run "
                     "scores its pool again"]
    budget = ScoringProgress(scorer, 10, lines.append, SearchStopper(time_budget_s=0))  # the time budget, spent
    assert budget(out.kept[0]) is None and "stopped (time budget of 0 s reached)" in lines[-1]


def test_each_candidate_lands_in_prescreen_csv_as_it_is_scored(tmp_path):
    """RUN/prescreen.csv: a row per draw, written at once (a stopped prescreen keeps what it
    scored): the values, whether it was scored, its params and MACs and each proxy's value."""
    from archscale.search.jobs.run import PrescreenFile

    path = tmp_path / "prescreen.csv"
    record = PrescreenFile(path, ["c1_width", "downsample"], ("params", "synflow", "grad_norm"))
    record.add({"c1_width": 4, "downsample": "stride"},
               Scored({"c1_width": 4}, math.nan, 0.25, {"params": 900.0, "macs": 27000.0},
                      {"params": 900.0, "synflow": 3.5, "grad_norm": math.nan}))
    record.add({"c1_width": 12, "downsample": "maxpool"}, None, "params 9,000 > max_params 8,000")  # over a budget
    rows = pd.read_csv(path)
    assert list(rows.columns) == ["candidate", "c1_width", "downsample", "scored", "params", "macs", "proxy_synflow",
                                  "proxy_grad_norm", "proxy_seconds", "error"]
    assert rows["candidate"].tolist() == [1, 2] and rows["scored"].tolist() == [True, False]
    assert rows.loc[0, "proxy_synflow"] == 3.5 and pd.isna(rows.loc[0, "proxy_grad_norm"])
    assert pd.isna(rows.loc[0, "error"]) and rows.loc[1, "error"] == "params 9,000 > max_params 8,000"
    assert rows.loc[1, ["params", "proxy_synflow", "proxy_seconds"]].isna().all()
    one = PrescreenFile(tmp_path / "one.csv", ["c1_width"], ("zico",))  # one proxy: its value is the score's
    one.add({"c1_width": 8}, Scored({"c1_width": 8}, -1.5, 0.1, {"params": 1.0, "macs": 2.0}))
    assert pd.read_csv(tmp_path / "one.csv").loc[0, "proxy_zico"] == -1.5
    again = PrescreenFile(path, ["c1_width", "downsample"], ("params", "synflow", "grad_norm"))  # a resumed run
    again.add({"c1_width": 8, "downsample": "stride"}, None)
    assert len(pd.read_csv(path)) == 1


def test_the_driver_s_scorer_says_why_a_candidate_has_no_score_or_lacks_a_proxy():
    """ProxyScorer.judge, on the budgeted family: over a budget, the verdict's words; a proxy
    that cannot be computed (zico on one image), its reason; a family's refusal, its error. What
    prescreen.csv's ``error`` column holds, through ScoringProgress."""
    import torch

    from archscale.search.configs.context import TrialContext
    from archscale.search.configs.evaluate import Evaluator
    from archscale.search.jobs.run import ScoringProgress
    from archscale.search.sampling.prescreen import ProxyScorer

    ctx = TrialContext(run_dir=".", family="budgeted", fixed={}, data_context={"in_channels": 1, "num_classes": 10,
                       "image_size": 28}, data_info={}, train={"batch_size": 32, "precision": "auto", "device": "cpu"},
                       max_params=3_000, proxy_batch=1)
    data = (torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (8,)))
    scorer = ProxyScorer(Evaluator(ctx), "zico", data)
    scored, why = scorer.judge({"c1_width": 4, "c2_width": 4, "c3_width": 4, "c4_width": 4})
    assert scored is not None and math.isnan(scored.value) and why == "zico: zico needs at least 2 inputs (got 1)"
    over, why = scorer.judge({"c1_width": 64})
    assert over is None and "max_params" in why
    refused, why = scorer.judge({"c1_width": -3})
    assert refused is None and "c1_width" in why
    rows = []
    progress = ScoringProgress(scorer, 2, lambda line: None, record=lambda config, result, why: rows.append(why))
    assert progress({"c1_width": 64}) is None and rows == [scorer.judge({"c1_width": 64})[1]]
