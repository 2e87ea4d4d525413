"""Every sampler over the same space: Optuna distributions and samplers built from a spec,
and a two-trial real search with each."""

import pandas as pd
import pytest

from archscale.cli import main
from archscale.search.jobs.check import sample_configs
from archscale.search.sampling.asktell import make_sampler, optuna_space
from archscale.spec import parse_spec
from archscale.analysis.records import read_trials


def spec_with(sampler, params):
    return parse_spec({"name": "s", "search": {"sampler": sampler, "num_trials": 6}, "space": {"params": params}})


def test_optuna_space_maps_every_kind_of_dimension():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    spec = spec_with("tpe", {"c1_width": [4, 8], "c2_convs": {"low": 1, "high": 3}, "dropout": {"low": 0.0, "high": 0.2},
                             "se_ratio": {"low": 0.1, "high": 0.5, "log": True}, "norm": "batch"})
    space = optuna_space(spec.space.searched())
    assert set(space) == {"c1_width", "c2_convs", "dropout", "se_ratio"}  # fixed values are not searched
    assert isinstance(space["c1_width"], CategoricalDistribution)
    assert isinstance(space["c2_convs"], IntDistribution) and space["c2_convs"].high == 3
    assert isinstance(space["dropout"], FloatDistribution) and not space["dropout"].log
    assert space["se_ratio"].log


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "grid", "gp"])
def test_make_sampler(sampler):
    import optuna

    spec = spec_with(sampler, {"c1_width": [4, 8], "c2_convs": {"low": 1, "high": 2}})
    made = make_sampler(spec)
    expected = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
                "random": optuna.samplers.RandomSampler, "gp": optuna.samplers.GPSampler,
                "grid": optuna.samplers.RandomSampler}[sampler]  # the grid is enqueued: its sampler is never asked
    assert isinstance(made, expected)


def test_sample_configs_start_at_the_low_corner_and_stay_in_range():
    spec = spec_with("random", {"c1_width": [4, 8], "c2_convs": {"low": 1, "high": 3}, "dropout": {"low": 0.0, "high": 0.2}})
    configs = sample_configs(spec.space.searched(), 20, seed=0)
    assert configs[0] == {"c1_width": 4, "c2_convs": 1, "dropout": 0.0}
    assert all(c["c1_width"] in (4, 8) and 1 <= c["c2_convs"] <= 3 and 0 <= c["dropout"] <= 0.2 for c in configs)


# Each sampler's search is judged on its own objectives: tpe and nsga2 on latency and params,
# which the trial measures itself (so the multi-objective samplers are told those values).
SAMPLER_OBJECTIVES = {"tpe": ["val_accuracy:max", "latency_ms:min"], "nsga2": ["val_accuracy:max", "params:min"],
                      "random": ["val_accuracy:max", "macs:min"], "grid": ["val_accuracy:max", "macs:min"]}


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("sampler", sorted(SAMPLER_OBJECTIVES))
def test_two_trial_search_with_each_sampler(tmp_path, write_spec, tiny_spec, brute_force_front, sampler):
    """A real search per sampler through the CLI: 2 trials of 1 epoch on 10% of mnist-5k."""
    import yaml

    tiny_spec["search"].update(sampler=sampler, num_trials=2, objectives=SAMPLER_OBJECTIVES[sampler])
    tiny_spec["space"]["max_params"] = None
    tiny_spec["data"]["subset"] = 0.1
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir), "--quiet"]) == 0
    assert yaml.safe_load((run_dir / "spec.yaml").read_text())["search"]["sampler"] == sampler
    trials = read_trials(run_dir)
    assert len(trials) == 2 and (trials["status"] == "completed").all() and (trials["epochs"] == 1).all()
    choices = {k: v for k, v in tiny_spec["space"]["params"].items() if isinstance(v, list) and len(v) > 1}
    for name, values in choices.items():  # every sampled value is one the spec allows
        assert set(trials[name]) <= set(values), name
    objectives = [tuple(o.split(":")) for o in SAMPLER_OBJECTIVES[sampler]]
    for metric, _ in objectives:
        assert trials[metric].gt(0).all(), metric
    front = pd.read_csv(run_dir / "pareto.csv", dtype={"trial_id": str})
    assert set(front["trial_id"]) == brute_force_front(trials, objectives)
