"""What the Optuna study is told: each trial's real outcome, live and on --resume."""

import pandas as pd
import pytest
from optuna.trial import TrialState

from archscale.search.runner import _searcher, make_sampler
from archscale.search.searcher import ArchscaleSearch, GridInOrder, optuna_space
from archscale.search.spec import parse_spec

PARAMS = {"c1_width": [4, 8, 12], "c4_width": [8, 16]}


def spec_with(sampler="tpe", objectives=("val_accuracy:max", "macs:min"), num_trials=6):
    return parse_spec({"name": "s", "space": {"params": dict(PARAMS)},
                       "search": {"sampler": sampler, "num_trials": num_trials, "objectives": list(objectives)}})


def searcher_for(spec, recorded=None, unfinished=()):
    objectives = spec.search.objective_pairs()
    return _searcher(spec, spec.space.searched(), objectives, recorded if recorded is not None else pd.DataFrame(),
                     list(unfinished))


def states(searcher):
    return [(t.state, t.values) for t in searcher._ot_study.get_trials(deepcopy=False)]


@pytest.mark.parametrize("objectives", [("val_accuracy:max", "macs:min"), ("val_accuracy:max",)])
def test_each_outcome_is_told_as_what_it_was(objectives):
    searcher = searcher_for(spec_with(objectives=objectives))
    outcomes = {
        "done": {"status": "completed", "val_accuracy": 0.9, "macs": 1000, "epochs": 4},
        "cut": {"status": "pruned", "val_accuracy": 0.3, "macs": 500, "epochs": 1},
        "over": {"status": "infeasible", "val_accuracy": 0.0, "macs": 9e9, "epochs": 0},
        "nan": {"status": "failed", "error": "TrainingDiverged: loss became nan", "macs": 700, "epochs": 1},
    }
    for trial_id, result in outcomes.items():
        searcher.suggest(trial_id)
        if result["status"] == "pruned":  # its per-epoch report came first
            searcher.on_trial_result(trial_id, {**result, "status": "running", "training_iteration": 1})
        searcher.on_trial_complete(trial_id, result)
    searcher.suggest("crash")
    searcher.on_trial_complete("crash", error=True)  # the worker died, retries used up
    frozen = searcher._ot_study.get_trials(deepcopy=False)
    by_id = {tid: frozen[searcher._ot_trials[tid].number] for tid in [*outcomes, "crash"]}  # twin draws aside
    told = [(by_id[tid].state, by_id[tid].values) for tid in [*outcomes, "crash"]]
    two = len(objectives) == 2
    assert told[0] == (TrialState.COMPLETE, [0.9, 1000.0] if two else [0.9])
    # never COMPLETE with the accuracy it had when stopped: that would put it on the sampler's front
    # (one objective: Optuna keeps the last intermediate value as a PRUNED trial's value)
    assert told[1] == (TrialState.PRUNED, None if two else [0.3])
    assert told[2] == (TrialState.COMPLETE, [0.0, 9e9] if two else [0.0])
    assert told[3] == (TrialState.FAIL, None)
    assert told[4] == (TrialState.FAIL, None)
    pruned = by_id["cut"]
    assert pruned.intermediate_values == ({} if two else {1: 0.3})  # Optuna keeps none for several objectives


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
    told = states(searcher)
    assert [s for s, _ in told] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL,
                                    TrialState.WAITING]
    assert told[0][1] == [0.8, 2000.0] and told[2][1] == [0.0, 5000.0]
    assert searcher.suggest("next") == unfinished  # the unfinished trial runs again, as it was


def test_grid_resume_visits_each_remaining_point_once():
    spec = spec_with(sampler="grid")
    fresh = searcher_for(spec)
    order = [fresh.suggest(f"t{i}") for i in range(6)]
    assert len({tuple(sorted(p.items())) for p in order}) == 6  # the whole grid, once
    recorded = recorded_frame()  # 4 of the 6 points, in another order than the grid's
    searcher = searcher_for(spec, recorded)
    rest = [searcher.suggest(f"r{i}") for i in range(2)]
    seen = {(r.c1_width, r.c4_width) for r in recorded.itertuples()}
    assert {(p["c1_width"], p["c4_width"]) for p in rest} == {(c, w) for c in (4, 8, 12) for w in (8, 16)} - seen


def test_a_resumed_sampler_does_not_replay_the_first_draws():
    spec = spec_with(sampler="random")
    dims = spec.space.searched()
    first = [make_sampler(spec, dims)._rng.rng.random() for _ in range(1)]
    resumed = [make_sampler(spec, dims, told=4)._rng.rng.random() for _ in range(1)]
    assert first != resumed
    assert isinstance(make_sampler(spec_with(sampler="grid"), dims), GridInOrder)
    assert set(optuna_space(dims)) == {"c1_width", "c4_width"}
    assert isinstance(searcher_for(spec), ArchscaleSearch)


def test_a_configuration_already_trained_is_not_trained_again():
    spec = spec_with(sampler="random", objectives=("val_accuracy:max",), num_trials=6)
    searcher = searcher_for(spec)
    seen = []
    for i in range(6):  # the space has 6 points: each is proposed once
        config = searcher.suggest(f"t{i}")
        assert config not in seen
        seen.append(config)
        searcher.on_trial_complete(f"t{i}", {"status": "completed", "val_accuracy": 0.5 + i / 100, "macs": 1})
    twins_before = searcher.twins
    config = searcher.suggest("t6")  # the space is spent: after MAX_TWIN_DRAWS the draw goes through
    assert config in seen and searcher.twins == twins_before + 19
    assert "t6" in searcher._ot_trials and not any("_twin" in k for k in searcher._ot_trials)
    # each twin draw was told the outcome of the trial it repeats
    told = {tuple(sorted(t.params.items())): t.values for t in searcher._ot_study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE}
    assert len(told) == 6


def test_an_unfinished_trial_rerun_is_not_taken_for_a_twin():
    spec = spec_with(sampler="tpe", objectives=("val_accuracy:max",))
    recorded = pd.DataFrame([{"trial_id": "a", "status": "completed", "c1_width": 8, "c4_width": 16,
                              "val_accuracy": 0.8, "macs": 2000, "epochs": 2}])
    searcher = searcher_for(spec, recorded, unfinished=[{"c1_width": 8, "c4_width": 16}])
    assert searcher.suggest("r") == {"c1_width": 8, "c4_width": 16} and searcher.twins == 0
