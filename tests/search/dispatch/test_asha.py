"""ASHA stops weak trials early and they are recorded ``pruned`` with the epochs they ran; in a
multi-objective search a weak trial that is cheap enough to be on the front goes on."""

import json

import pandas as pd
import pytest

from archscale.analysis.records import read_trials
from archscale.cli import main
from archscale.search.sampling.asktell import grid_points
from archscale.spec import Dimension

@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("objectives", [["val_accuracy:max"], ["val_accuracy:max", "params:min"]])
def test_asha_stops_the_weak_trial_after_its_grace_period(tmp_path, write_spec, tiny_spec, objectives):
    # c4_width=1 squeezes the network through one channel before its head: after one epoch it
    # is near chance (0.10) where widths 16 and 24 are at 0.19 and 0.22 (same seed, same data).
    # One trial at a time, in the grid's seeded order with the weak one last: when it reaches
    # the first rung, ASHA (reduction 2) has both strong trials there, and it must stop it,
    # unless params are an objective too: then it is the cheapest, on the front, and goes on.
    widths = [16, 1, 24]  # the grid runs them as 24, 16, 1 (seed 0)
    assert grid_points([Dimension("c4_width", "choice", tuple(widths))], seed=0)[-1] == {"c4_width": 1}
    tiny_spec["data"]["subset"] = 0.2
    tiny_spec["space"]["params"].update(c1_width=4, c3_width=8, c3_conv="depthwise", c4_width=widths)
    tiny_spec["train"]["epochs"] = 3
    tiny_spec["search"].update(sampler="grid", num_trials=3, max_concurrent=1, scheduler="asha",
                               asha={"grace_period": 1, "reduction_factor": 2},
                               objectives=objectives)
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir), "--quiet"]) == 0
    trials = read_trials(run_dir).set_index("c4_width")
    assert len(trials) == 3 and trials["trial_id"].is_unique
    assert trials.loc[24, "status"] == "completed" and trials.loc[24, "epochs"] == 3  # first: nothing to compare with
    weak = trials.loc[1]
    if len(objectives) > 1:
        assert weak["params"] < trials.loc[16, "params"] < trials.loc[24, "params"]
        assert weak["status"] == "completed" and weak["epochs"] == 3
        front = pd.read_csv(run_dir / "pareto.csv", dtype={"trial_id": str})
        assert weak["trial_id"] in set(front["trial_id"])
        return
    assert weak["status"] == "pruned" and weak["epochs"] == 1
    strong = json.loads((run_dir / "trials" / trials.loc[24, "trial_id"] / "result.json").read_text())["history"]
    assert weak["val_accuracy"] < strong[0]["val_accuracy"]  # both after their first epoch
    assert pd.isna(weak["test_accuracy"])  # the test split is evaluated after the last epoch only
    for _, trial in trials.iterrows():  # a pruned trial keeps no weights and is not on the front
        assert (run_dir / "trials" / trial["trial_id"] / "weights.pt").is_file() == (trial["status"] == "completed")
    front = pd.read_csv(run_dir / "pareto.csv", dtype={"trial_id": str})
    assert set(front["trial_id"]) <= set(trials.loc[trials["status"] == "completed", "trial_id"])


def test_a_resumed_asha_stops_what_the_interrupted_one_would_have(tmp_path, tiny_spec):
    """Replayed through ASHA's public hooks, the recorded results set the rung cutoffs: a new
    trial below them is stopped at its first rung, one above them goes on, as in the first run."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from archscale.search.dispatch.asha import make_scheduler, replay
    from archscale.spec import parse_spec

    tiny_spec["train"]["epochs"] = 4
    tiny_spec["search"].update(scheduler="asha", asha={"grace_period": 1, "reduction_factor": 2},
                               objectives=["val_accuracy:max"])  # Ray's own ASHA
    spec = parse_spec(tiny_spec)
    (tmp_path / "trials" / "a").mkdir(parents=True)
    history = [{"epoch": e, "val_accuracy": v} for e, v in ((1, 0.5), (2, 0.6), (3, 0.65), (4, 0.7))]
    (tmp_path / "trials" / "a" / "result.json").write_text(json.dumps({"history": history}))
    recorded = pd.DataFrame([{"trial_id": "a", "status": "completed", "epochs": 4, "val_accuracy": 0.7},
                             {"trial_id": "b", "status": "pruned", "epochs": 1, "val_accuracy": 0.2},
                             {"trial_id": "c", "status": "failed", "epochs": 0, "val_accuracy": None}])

    def first_rung(scheduler, value):
        trial = SimpleNamespace(trial_id=f"new{value}")
        scheduler.on_trial_add(None, trial)
        return scheduler.on_trial_result(None, trial, {"epochs": 1, "val_accuracy": value})

    resumed = make_scheduler(spec)
    assert replay(resumed, tmp_path, recorded) == 5  # a: 4 epochs; b: the epoch it was stopped at
    # rung 1 holds 0.5 and 0.2: with reduction 2 the cutoff is their median, 0.35
    assert first_rung(resumed, 0.3) == TrialScheduler.STOP
    assert first_rung(make_scheduler(spec), 0.3) == TrialScheduler.CONTINUE  # a fresh ASHA has nothing to compare
    resumed = make_scheduler(spec)
    replay(resumed, tmp_path, recorded)
    assert first_rung(resumed, 0.6) == TrialScheduler.CONTINUE


def _at_rung(scheduler, trial_id, accuracy, macs, epoch=1):
    from types import SimpleNamespace

    trial = SimpleNamespace(trial_id=trial_id)
    scheduler.on_trial_add(None, trial)
    return scheduler.on_trial_result(None, trial, {"epochs": epoch, "val_accuracy": accuracy, "macs": macs,
                                                   "params": 7})


def test_with_several_objectives_a_small_network_on_the_front_goes_on(tiny_spec):
    """Ray's ASHA ranks by accuracy alone and stops the cheap network that learns slower;
    FrontASHA judges the rung's points on (accuracy, MACs) and stops only a dominated one."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from archscale.search.dispatch.asha import FrontASHA, make_scheduler
    from archscale.spec import parse_spec

    tiny_spec["train"]["epochs"] = 4
    tiny_spec["search"].update(scheduler="asha", objectives=["val_accuracy:max", "macs:min"])
    front = make_scheduler(parse_spec(tiny_spec))
    assert isinstance(front, FrontASHA) and list(front.rungs) == [1, 2]
    tiny_spec["search"]["objectives"] = ["val_accuracy:max"]
    ray_asha = make_scheduler(parse_spec(tiny_spec))
    assert isinstance(ray_asha, ASHAScheduler)
    for scheduler in (front, ray_asha):
        assert _at_rung(scheduler, "a", 0.6, 1000) == TrialScheduler.CONTINUE  # first at the rung
    assert _at_rung(ray_asha, "b", 0.5, 900) == TrialScheduler.STOP  # below a's 0.6
    assert _at_rung(front, "b", 0.5, 900) == TrialScheduler.CONTINUE  # cheaper than a: both on the front
    # c: the cheapest by far, the least accurate after one epoch
    assert _at_rung(ray_asha, "c", 0.2, 10) == TrialScheduler.STOP
    assert _at_rung(front, "c", 0.2, 10) == TrialScheduler.CONTINUE  # the cheap end of the front
    # d: dominated by a (less accurate, more MACs): level 1, the three of level 0 ahead: 3 >= 4 / 2
    assert _at_rung(front, "d", 0.55, 2000) == TrialScheduler.STOP
    # e: on the front, between a and b, but crowded. Level 0 is c, b, e, a; the ends c and a
    # are inf; b's crowding (0.58-0.2)/0.4 + (950-10)/990 = 1.90 beats e's (0.6-0.5)/0.4 +
    # (1000-900)/990 = 0.35: three of five ahead, 3 >= 5 / 2
    assert _at_rung(front, "e", 0.58, 950) == TrialScheduler.STOP
    # at the second rung only those that reached it count
    assert _at_rung(front, "c", 0.3, 10, epoch=2) == TrialScheduler.CONTINUE


def test_front_asha_judges_a_missing_objective_as_worst():
    from ray.tune.schedulers import TrialScheduler

    from archscale.search.dispatch.asha import FrontASHA

    scheduler = FrontASHA([("val_accuracy", "max"), ("latency_ms", "min")], max_t=4)
    assert _at_rung(scheduler, "a", 0.5, 0) == TrialScheduler.CONTINUE  # no latency_ms: the worst
    from types import SimpleNamespace

    trial = SimpleNamespace(trial_id="b")
    assert scheduler.on_trial_result(None, trial, {"epochs": 1, "val_accuracy": 0.5, "latency_ms": 3.0}) \
        == TrialScheduler.CONTINUE
    trial = SimpleNamespace(trial_id="c")
    assert scheduler.on_trial_result(None, trial, {"epochs": 1, "val_accuracy": 0.4, "latency_ms": float("nan")}) \
        == TrialScheduler.STOP  # dominated by b (and a, equal at -inf latency, better accuracy)


def test_a_resumed_front_asha_has_the_recorded_costs_at_its_rungs(tmp_path, tiny_spec):
    from ray.tune.schedulers import TrialScheduler

    from archscale.search.dispatch.asha import make_scheduler, replay
    from archscale.spec import parse_spec

    tiny_spec["train"]["epochs"] = 4
    tiny_spec["search"].update(scheduler="asha", objectives=["val_accuracy:max", "macs:min"])
    spec = parse_spec(tiny_spec)
    (tmp_path / "trials" / "a").mkdir(parents=True)
    history = [{"epoch": e, "val_accuracy": v} for e, v in ((1, 0.5), (2, 0.6), (3, 0.65), (4, 0.7))]
    (tmp_path / "trials" / "a" / "result.json").write_text(json.dumps({"history": history}))
    recorded = pd.DataFrame([{"trial_id": "a", "status": "completed", "epochs": 4, "val_accuracy": 0.7, "macs": 100},
                             {"trial_id": "b", "status": "pruned", "epochs": 1, "val_accuracy": 0.2, "macs": 50}])
    resumed = make_scheduler(spec)
    assert replay(resumed, tmp_path, recorded) == 5
    assert set(resumed.rungs[1]) == {"a", "b"} and set(resumed.rungs[2]) == {"a"}
    # rung 1 holds a (0.5, 100 MACs) and b (0.2, 50): a new trial they both dominate stops;
    # a fresh scheduler, with nothing to compare, would let it go on
    assert _at_rung(resumed, "new", 0.1, 200) == TrialScheduler.STOP
    assert _at_rung(make_scheduler(spec), "new", 0.1, 200) == TrialScheduler.CONTINUE
    assert _at_rung(resumed, "cheap", 0.1, 10) == TrialScheduler.CONTINUE  # the cheapest yet
