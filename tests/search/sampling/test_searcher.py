"""What the Optuna study is told, through its ask-and-tell API: each trial's real outcome,
live and on --resume; repeats answered from what is known; over-budget draws skipped."""

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from archscale.search.configs.context import TrialContext
from archscale.search.configs.evaluate import Evaluator
from archscale.search.sampling.asktell import MAX_TWIN_DRAWS, grid_points, make_sampler, optuna_space
from archscale.search.sampling.searcher import make_searcher
from archscale.spec import parse_spec

PARAMS = {"c1_width": [4, 8, 12], "c4_width": [8, 16]}
ALL_POINTS = {(c, w) for c in (4, 8, 12) for w in (8, 16)}


def spec_with(sampler="tpe", objectives=("val_accuracy:max", "macs:min"), num_trials=6, params=None):
    return parse_spec({"name": "s", "space": {"params": dict(params or PARAMS)},
                       "search": {"sampler": sampler, "num_trials": num_trials, "objectives": list(objectives)}})


def searcher_for(spec, recorded=None, unfinished=(), **kwargs):
    return make_searcher(spec, spec.space.searched(), spec.search.objective_pairs(), recorded=recorded,
                         unfinished=list(unfinished), **kwargs)


def point(config):
    return config["c1_width"], config["c4_width"]


@pytest.mark.parametrize("objectives", [("val_accuracy:max", "macs:min"), ("val_accuracy:max",)])
def test_each_outcome_is_told_as_what_it_was(objectives):
    searcher = searcher_for(spec_with(sampler="random", objectives=objectives))
    outcomes = {
        "done": {"status": "completed", "val_accuracy": 0.9, "macs": 1000, "epochs": 4},
        "cut": {"status": "pruned", "val_accuracy": 0.3, "macs": 500, "epochs": 1},
        "over": {"status": "infeasible", "val_accuracy": 0.0, "macs": 9e9, "epochs": 0},
        "nan": {"status": "failed", "error": "TrainingDiverged: loss became nan", "macs": 700, "epochs": 1},
    }
    numbers = {}
    for trial_id, result in outcomes.items():
        searcher.suggest(trial_id)
        numbers[trial_id] = searcher.live[trial_id].number
        if result["status"] == "pruned":  # its per-epoch report came first
            searcher.on_trial_result(trial_id, {**result, "status": "running"})
        searcher.on_trial_complete(trial_id, result)
    searcher.suggest("crash")
    numbers["crash"] = searcher.live["crash"].number
    searcher.on_trial_complete("crash", error=True)  # the worker died, retries used up
    frozen = searcher.study.get_trials(deepcopy=False)
    told = {tid: (frozen[n].state, frozen[n].values) for tid, n in numbers.items()}
    two = len(objectives) == 2
    assert told["done"] == (TrialState.COMPLETE, [0.9, 1000.0] if two else [0.9])
    # never COMPLETE with the accuracy it had when stopped: that would put it on the sampler's front
    # (one objective: Optuna keeps the last intermediate value as a PRUNED trial's value)
    assert told["cut"] == (TrialState.PRUNED, None if two else [0.3])
    assert told["over"] == (TrialState.COMPLETE, [0.0, 9e9] if two else [0.0])
    assert told["nan"] == (TrialState.FAIL, None) and told["crash"] == (TrialState.FAIL, None)
    assert frozen[numbers["cut"]].intermediate_values == ({} if two else {1: 0.3})
    assert searcher.live == {}  # every trial told once


def recorded_frame():
    return pd.DataFrame([
        {"trial_id": "a", "status": "completed", "c1_width": 8, "c4_width": 16, "val_accuracy": 0.8, "macs": 2000,
         "epochs": 4, "train_seconds": 3.0},
        {"trial_id": "b", "status": "pruned", "c1_width": 4, "c4_width": 8, "val_accuracy": 0.2, "macs": 900,
         "epochs": 1, "train_seconds": 0.7},
        {"trial_id": "c", "status": "infeasible", "c1_width": 12, "c4_width": 16, "val_accuracy": None,
         "macs": 5000, "epochs": 0, "train_seconds": None},
        {"trial_id": "d", "status": "failed", "c1_width": 12, "c4_width": 8, "val_accuracy": None, "macs": 3000,
         "epochs": 0, "train_seconds": None},
    ])


def test_resume_tells_the_recorded_trials_and_reruns_the_unfinished_first():
    unfinished = {"c1_width": 4, "c4_width": 16}
    searcher = searcher_for(spec_with(), recorded_frame(), [unfinished])
    told = [(t.state, t.values) for t in searcher.study.get_trials(deepcopy=False)]
    assert [s for s, _ in told] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL,
                                    TrialState.WAITING]
    assert told[0][1] == [0.8, 2000.0] and told[2][1] == [0.0, 5000.0]
    assert searcher.suggest("next") == unfinished  # the unfinished trial runs again, as it was


def test_the_grid_visits_every_point_once_then_finishes_and_a_resume_runs_the_rest():
    spec = spec_with(sampler="grid")
    fresh = searcher_for(spec)
    order = [point(fresh.suggest(f"t{i}")) for i in range(6)]
    assert set(order) == ALL_POINTS and len(order) == 6
    assert fresh.suggest("t6") == Searcher.FINISHED
    assert order == [point(p) for p in grid_points(spec.space.searched(), spec.seed)]  # seeded: the same each time
    recorded = recorded_frame()  # 4 of the 6 points, in another order than the grid's
    resumed = searcher_for(spec, recorded)
    rest = {point(resumed.suggest(f"r{i}")) for i in range(2)}
    assert rest == ALL_POINTS - {(r.c1_width, r.c4_width) for r in recorded.itertuples()}
    assert resumed.suggest("r2") == Searcher.FINISHED


def test_a_resumed_sampler_does_not_replay_the_first_draws():
    spec = spec_with(sampler="random", params={"dropout": {"low": 0.0, "high": 0.5}})
    space = optuna_space(spec.space.searched())
    first = optuna.create_study(sampler=make_sampler(spec)).ask(space).params
    again = optuna.create_study(sampler=make_sampler(spec)).ask(space).params
    resumed = optuna.create_study(sampler=make_sampler(spec, told=4)).ask(space).params
    assert first == again and first != resumed


def test_a_configuration_already_trained_is_not_trained_again():
    spec = spec_with(sampler="random", objectives=("val_accuracy:max",), num_trials=6)
    searcher = searcher_for(spec)
    seen = []
    for i in range(6):  # the space has 6 points: each is proposed once
        config = searcher.suggest(f"t{i}")
        assert point(config) not in seen
        seen.append(point(config))
        searcher.on_trial_complete(f"t{i}", {"status": "completed", "val_accuracy": 0.5 + i / 100, "macs": 1})
    twins_before = searcher.twins
    config = searcher.suggest("t6")  # the space is spent: after MAX_TWIN_DRAWS - 1 twins the draw goes through
    assert point(config) in seen and searcher.twins == twins_before + MAX_TWIN_DRAWS - 1
    # each twin draw was told the outcome of the trial it repeats
    values = {}
    for t in searcher.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        values.setdefault(point(t.params), set()).add(tuple(t.values))
    assert len(values) == 6 and all(len(v) == 1 for v in values.values())


def test_an_unfinished_trial_rerun_is_not_taken_for_a_twin():
    spec = spec_with(sampler="tpe", objectives=("val_accuracy:max",))
    recorded = pd.DataFrame([{"trial_id": "a", "status": "completed", "c1_width": 8, "c4_width": 16,
                              "val_accuracy": 0.8, "macs": 2000, "epochs": 2}])
    searcher = searcher_for(spec, recorded, unfinished=[{"c1_width": 8, "c4_width": 16}])
    assert searcher.suggest("r") == {"c1_width": 8, "c4_width": 16} and searcher.twins == 0


SMALL_RESNET = {"base": "resnet18", "base_width": 0.125, "divisor": 4, "beta": 1.0, "phi": 1.0,
                "stochastic_depth": 0.0, "dropout": 0.0}


def test_over_budget_draws_are_recorded_and_told_and_the_sampler_asked_again():
    spec = parse_spec({"name": "s", "space": {"family": "efficientnet", "params": {
        **SMALL_RESNET, "alpha": [1.0, 2.0], "gamma": [1.0, 1.0001]}},
        "search": {"sampler": "random", "num_trials": 2, "objectives": ["val_accuracy:max"]}})
    ctx = TrialContext(run_dir=".", family="efficientnet", fixed=spec.space.fixed(),
                       data_context={"in_channels": 1, "num_classes": 10, "image_size": 28}, data_info={},
                       train={"batch_size": 32, "device": "cpu"})
    rejected = []
    searcher = searcher_for(spec, evaluator=Evaluator(ctx), reject=lambda *row: rejected.append(row))
    for i in range(4):
        config = searcher.suggest(f"t{i}")
        assert config["alpha"] == 2.0  # only alpha*beta^2*gamma^2 ~ 2 may train
        searcher.on_trial_complete(f"t{i}", {"status": "completed", "val_accuracy": 0.5})
    assert rejected and all(verdict.config["alpha"] == 1.0 for _, _, verdict in rejected)
    assert all("is outside target 2" in verdict.why for _, _, verdict in rejected)
    row_ids = [row_id for row_id, _, _ in rejected]
    assert len(set(row_ids)) == len(row_ids)  # each refused draw gets its own row
    penalties = [t.values for t in searcher.study.get_trials(deepcopy=False) if t.params["alpha"] == 1.0]
    assert penalties and all(v == [0.0] for v in penalties)  # told as the worst accuracy
