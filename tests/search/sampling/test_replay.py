"""Replays of a search against a table of known results (no training), and over-budget
configurations told to Optuna as constraints."""

import itertools

import numpy as np
import pandas as pd
import pytest

from archscale.search.sampling.replay import Table, key_of, replay
from archscale.search.sampling.asktell import AskTell, budget_excess
from archscale.spec import parse_spec

PARAMS = {"c1_width": [4, 8, 12], "c2_width": [8, 16], "c3_width": [8, 16, 24], "downsample": ["stride", "maxpool"]}
MAX_PARAMS = 1000


def make_spec(sampler="random", num_trials=10, seed=0, concurrent=2):
    return parse_spec({"name": "s", "seed": seed, "space": {"params": PARAMS, "max_params": MAX_PARAMS},
                       "search": {"sampler": sampler, "num_trials": num_trials, "max_concurrent": concurrent,
                                  "objectives": ["val_accuracy:max", "macs:min"]}})


@pytest.fixture(scope="module")
def grid():
    """A synthetic exhaustive run: 36 configurations, the widest 8 over budget, one failed."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (c1, c2, c3, ds) in enumerate(itertools.product(*PARAMS.values())):
        params = 10 * (c1 + c2) * c3 // 4
        row = {"trial_id": f"t{i}", "c1_width": c1, "c2_width": c2, "c3_width": c3, "downsample": ds,
               "params": params, "macs": params * 30 + int(rng.integers(0, 500))}
        if params > MAX_PARAMS:
            row.update(status="infeasible", error=f"params {params} > max_params {MAX_PARAMS}", epochs=0)
        elif i == 5:
            row.update(status="failed", epochs=0)
        else:
            row.update(status="completed", val_accuracy=round(0.5 + params / 4000 + rng.uniform(0, 0.1), 4), epochs=1)
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table(grid):
    return Table(grid, make_spec().searched())


def test_the_table_must_hold_every_configuration(grid):
    with pytest.raises(ValueError, match="lacks 1 configuration"):
        Table(grid.iloc[1:], make_spec().searched())


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_a_replay_trains_num_trials_and_looks_every_result_up(grid, table, sampler):
    spec = make_spec(sampler, num_trials=12)
    rows = replay(spec, table, spec.searched())
    trained = rows[rows["suggested"] >= 0]
    assert sorted(trained["suggested"]) == list(range(12))  # num_trials counts trials that train
    assert set(trained["status"]) <= {"completed", "failed"}  # over-budget draws never become trials
    refused = rows[rows["suggested"] < 0]
    assert (refused["status"] == "infeasible").all() and refused["trial_id"].str.endswith("_infeasible").all()
    assert (refused["params"] > MAX_PARAMS).all()
    by_key = {key_of(r, list(PARAMS)): r for r in grid.to_dict("records")}
    for r in trained.to_dict("records"):  # each result is the table's
        known = by_key[key_of(r, list(PARAMS))]
        assert r["status"] == known["status"] and r["macs"] == known["macs"]
        if known["status"] == "completed":
            assert r["val_accuracy"] == known["val_accuracy"]


@pytest.mark.parametrize("sampler", ["random", "tpe_optuna"])
def test_a_shorter_replay_is_a_prefix_of_a_longer_one(table, sampler):
    """The sampler never sees the budget (these two's settings do not depend on num_trials),
    so the first 10 trials of a 25-trial replay are the 10-trial replay, two in flight or not."""
    long = replay(make_spec("random", 25, seed=3), table, make_spec().searched(), sampler=sampler)
    short = replay(make_spec("random", 10, seed=3), table, make_spec().searched(), sampler=sampler)
    pick = ["suggested", *PARAMS]
    a = long[long["suggested"].between(0, 9)][pick].sort_values("suggested").reset_index(drop=True)
    b = short[short["suggested"] >= 0][pick].sort_values("suggested").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_a_replay_is_reproducible_and_seeded(table):
    dims = make_spec().searched()
    one, again = (replay(make_spec("tpe", 12, seed=1), table, dims) for _ in range(2))
    other = replay(make_spec("tpe", 12, seed=2), table, dims)
    pd.testing.assert_frame_equal(one, again)
    assert not one[list(PARAMS)].equals(other[list(PARAMS)])


def test_budget_excess_is_the_largest_relative_overshoot():
    spec = parse_spec({"name": "s", "space": {"params": PARAMS, "max_params": 8000, "max_macs": 1_000_000}})
    assert budget_excess(spec, {"params": 12_000, "macs": 1_100_000}) == pytest.approx(0.5)
    assert budget_excess(spec, {"params": 4_000, "macs": 500_000}) == pytest.approx(-0.5)
    assert budget_excess(spec, {}) == 0.0


@pytest.mark.parametrize("constraints", [False, True])
def test_over_budget_draws_become_optuna_constraints_only_when_asked(table, constraints):
    """With constraints on, Optuna itself sees the refused draws as infeasible: its feasible
    best trials leave them out, which it cannot know from 0 accuracy alone."""
    from optuna.trial import TrialState

    spec = make_spec("tpe", 12)
    at = AskTell(spec, spec.searched(), spec.search.objective_pairs(), evaluator=table, constraints=constraints)
    for i in range(12):
        config = at.suggest(str(i))
        at.complete(str(i), table.result(config))
    trials = at.study.get_trials(states=(TrialState.COMPLETE,))
    over = [t for t in trials if table(t.params).row["params"] > MAX_PARAMS]
    assert at.rejected == len(over) > 0
    if not constraints:
        assert all(not t.constraints for t in trials)
        return
    assert all(t.constraints["budget"] > 0 for t in over)
    assert all(t.constraints["budget"] <= 0 for t in trials if t not in over)
    assert not {t.number for t in at.study.best_trials} & {t.number for t in over}


def test_constraints_is_a_spec_field_told_to_the_sampler():
    spec = parse_spec({"name": "s", "space": {"params": PARAMS, "max_params": MAX_PARAMS},
                       "search": {"sampler": "nsga2", "constraints": True}})
    assert spec.search.constraints is True
    at = AskTell(spec, spec.searched(), spec.search.objective_pairs())
    assert at.constraints


@pytest.mark.parametrize("name", ["random", "tpe", "tpe_independent", "tpe_optuna", "nsga2", "gp"])
def test_every_named_sampler_is_built_with_its_settings(name):
    """The variants the benchmark compares, as Optuna builds them (gp and nsga2: a third of the budget)."""
    import optuna

    from archscale.search.sampling.asktell import SAMPLERS

    made = SAMPLERS[name](0, 30)
    kind = {"random": optuna.samplers.RandomSampler, "nsga2": optuna.samplers.NSGAIISampler,
            "gp": optuna.samplers.GPSampler}.get(name, optuna.samplers.TPESampler)
    assert isinstance(made, kind)
    with pytest.raises(KeyError):
        AskTell(make_spec(), make_spec().searched(), [("val_accuracy", "max")], sampler="tpe_typo")
