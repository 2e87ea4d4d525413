"""Every sampler over the same space: Optuna distributions and samplers built from a spec,
and a two-trial real search with each."""

import pytest

from archscale.cli import main
from archscale.search.check import sample_configs
from archscale.search.searcher import make_sampler, optuna_space
from archscale.search.spec import parse_spec
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


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "grid"])
def test_make_sampler(sampler):
    import optuna

    spec = spec_with(sampler, {"c1_width": [4, 8], "c2_convs": {"low": 1, "high": 2}})
    made = make_sampler(spec)
    expected = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
                "random": optuna.samplers.RandomSampler,
                "grid": optuna.samplers.RandomSampler}[sampler]  # the grid is enqueued: its sampler is never asked
    assert isinstance(made, expected)


def test_sample_configs_start_at_the_low_corner_and_stay_in_range():
    spec = spec_with("random", {"c1_width": [4, 8], "c2_convs": {"low": 1, "high": 3}, "dropout": {"low": 0.0, "high": 0.2}})
    configs = sample_configs(spec.space.searched(), 20, seed=0)
    assert configs[0] == {"c1_width": 4, "c2_convs": 1, "dropout": 0.0}
    assert all(c["c1_width"] in (4, 8) and 1 <= c["c2_convs"] <= 3 and 0 <= c["dropout"] <= 0.2 for c in configs)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("sampler", ["nsga2", "random"])
def test_two_trial_search_with_each_sampler(tmp_path, write_spec, tiny_spec, sampler):
    tiny_spec["search"].update(sampler=sampler, num_trials=2)
    tiny_spec["space"]["max_params"] = None
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir), "--quiet"]) == 0
    trials = read_trials(run_dir)
    assert len(trials) == 2 and (trials["status"] == "completed").all()
