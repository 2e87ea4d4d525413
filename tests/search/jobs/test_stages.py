"""Two-stage compound scaling: the spec, ``archscale check`` on it, and one real (tiny)
staged run with ``--resume`` across the stage boundary."""

import copy
import math

import optuna
import pandas as pd
import pytest
import yaml

from archscale.analysis.cost import count_macs
from archscale.analysis.pareto import best_trial
from archscale.analysis.records import read_trials
from archscale.cli import main
from archscale.spec import parse_spec
from archscale.search.jobs.compound import remaining_sweep, stage_one_configs, stage_one_total
from archscale.search.configs.context import TrialContext
from archscale.search.configs.evaluate import budget_violation
from archscale.space import build, get_space

SQRT2 = 1.4142  # alpha*beta^2*gamma^2 = 1.99996

STAGED = {
    "name": "staged",
    "seed": 0,
    "data": {"dataset": "mnist-5k", "val_fraction": 0.1, "subset": 0.1},
    "space": {
        "family": "efficientnet",
        # (1, 1, 1): product 1 and (2, 1, sqrt2): 4 are outside 2 +- 10%; (1, 1, sqrt2) and (2, 1, 1) train.
        "params": {"base": "resnet18", "base_width": 0.125, "divisor": 4, "alpha": [1.0, 2.0], "beta": 1.0,
                   "gamma": [1.0, SQRT2], "stochastic_depth": 0.0, "dropout": 0.0},
    },
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "search": {"objectives": ["val_accuracy:max", "macs:min"], "max_concurrent": 2, "resources_per_trial": {"cpu": 1},
               "stages": {"phi_sweep": {"phi": [0, 1]}}},
}


@pytest.fixture
def staged() -> dict:
    return copy.deepcopy(STAGED)


# --------------------------------------------------------------------------- spec


@pytest.mark.parametrize("patch,fragments", [
    ({"space": {"family": "budgeted", "params": {}}}, ["search.stages", "needs space.family 'efficientnet'", "'budgeted'"]),
    ({"space": {"params": {"phi": 1.0}}}, ["space.params.phi", "set by search.stages"]),
    ({"space": {"params": {"alpha": {"low": 1.0, "high": 1.4}}}}, ["search.stages.coefficients.sampler", "'grid' needs finite",
                                                                  "space.params.alpha"]),
    ({"search": {"stages": {"phi_sweep": {"phi": [0, 9]}}}}, ["search.stages.phi_sweep.phi", "phi 9.0 is out of range",
                                                             "0 <= phi <= 8"]),
    ({"search": {"stages": {"phi_sweep": {"phi": [1]}, "sweep": {}}}}, ["search.stages.sweep", "unknown key",
                                                                       "coefficients, phi_sweep"]),
    ({"search": {"stages": {"coefficients": {"sampler": "bayes"}, "phi_sweep": {"phi": [1]}}}},
     ["search.stages.coefficients.sampler", "bayes"]),
    ({"space": {"params": {"gamma": 0.5}}}, ["space.params.gamma", "0.5", "float in [1.0, 16.0]"]),
])
def test_bad_staged_spec(tmp_path, capsys, write_spec, staged, patch, fragments):
    for key, value in patch.items():
        for k, v in value.items():
            if k == "params":
                staged[key]["params"] = {**staged[key]["params"], **v} if v else {}
            else:
                staged[key][k] = v
    assert main(["check", str(write_spec(staged))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_stage_one_plan(staged):
    spec = parse_spec(staged)
    assert stage_one_total(spec) == 4
    assert stage_one_configs(spec) == [{"alpha": a, "gamma": g, "beta": 1.0, "phi": 1.0} for a in (1.0, 2.0)
                                       for g in (1.0, SQRT2)]
    staged["search"]["stages"]["coefficients"] = {"num_trials": 3}
    spec = parse_spec(staged)
    assert stage_one_total(spec) == 3 and len(stage_one_configs(spec)) == 3


def test_memory_budget_names_its_source():
    ctx = TrialContext(run_dir=".", family="efficientnet", fixed={}, data_context={}, data_info={}, train={},
                       max_memory_mb=100.0)
    assert budget_violation(ctx, 1, 1, memory_mb=50.0) == ''
    assert budget_violation(ctx, 1, 1, memory_mb=150.0) == "memory_mb 150.0 (cpu_estimate) > max_memory_mb 100"
    assert "cuda_peak" in budget_violation(ctx, 1, 1, memory_mb=150.0, memory_source="cuda_peak")


def test_check_prints_the_grid_feasibility_and_macs(capsys, write_spec, staged):
    staged["space"]["max_memory_mb"] = 1000
    assert main(["check", str(write_spec(staged))]) == 0
    out = capsys.readouterr().out
    assert "stage 1: grid sampler over alpha, gamma at phi = 1; 4 trials" in out
    assert "constraint: alpha*beta^2*gamma^2 within 2 +- 10%; budgets: max_memory_mb=1,000" in out
    assert "estimated from activation sizes" in out
    assert "2 of 4 grid points are feasible" in out
    assert "alpha*beta^2*gamma^2 = 4.000 is outside target 2 +- 10%" in out
    assert "stage 2: phi in [0.0, 1.0]" in out and "nothing trained" in out
    arch = get_space("efficientnet").resolve({**staged["space"]["params"], "alpha": 2.0, "gamma": 1.0, "phi": 1.0},
                                             {"in_channels": 1, "num_classes": 10, "image_size": 28})
    assert f"{count_macs(build(arch), (1, 1, 28, 28)):,}" in out  # the measured MACs of a feasible point


# --------------------------------------------------------------------------- a real staged run


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("staged")
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(STAGED))
    run_dir = tmp / "run"
    assert main(["run", str(path), "--out", str(run_dir)]) == 0
    return path, run_dir


def test_both_stages_land_in_one_trials_csv(staged_run):
    _, run_dir = staged_run
    for name in ("spec.yaml", "trials.csv", "pareto.csv", "pareto.png", "scaling.png", "best/arch.yaml", "study.db"):
        assert (run_dir / name).is_file(), name
    trials = read_trials(run_dir)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")  # both stages' trials
    assert [t.user_attrs["trial_id"] for t in study.trials] == list(trials["trial_id"])
    assert list(trials.columns[:3]) == ["trial_id", "stage", "status"] and trials["trial_id"].is_unique
    one, two = trials[trials["stage"] == 1], trials[trials["stage"] == 2]
    assert len(one) == 4 and len(two) == 1
    infeasible = one[one["status"] == "infeasible"]
    assert sorted(zip(infeasible["alpha"], infeasible["gamma"])) == [(1.0, 1.0), (2.0, SQRT2)]
    assert infeasible["error"].str.contains("alpha\\*beta\\^2\\*gamma\\^2").all() and infeasible["macs"].gt(0).all()
    assert infeasible["val_accuracy"].isna().all() and (infeasible["epochs"] == 0).all()
    done = one[one["status"] == "completed"]
    assert len(done) == 2 and (done["phi"] == 1.0).all() and done["memory_source"].eq("cpu_estimate").all()
    # stage 2: the stage-1 winner at phi = 0 trained; at phi = 1 it is stage 1's own trial, not trained again
    best = best_trial(done, [("val_accuracy", "max"), ("macs", "min")])
    assert two.iloc[0]["status"] == "completed" and two.iloc[0]["phi"] == 0.0
    assert (two.iloc[0]["alpha"], two.iloc[0]["beta"], two.iloc[0]["gamma"]) == (best["alpha"], best["beta"], best["gamma"])


def test_pareto_on_a_staged_run_draws_scaling_png(staged_run, capsys, tmp_path):
    _, run_dir = staged_run
    assert main(["pareto", str(run_dir), "--plot", str(tmp_path / "front.png")]) == 0
    out = capsys.readouterr().out
    assert "phi sweep:" in out and "stage 1 best (alpha, beta, gamma)" in out
    assert (tmp_path / "front.png").is_file() and (tmp_path / "scaling.png").is_file()
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("compound")]
    assert len(lines) == 2 and all("completed" in ln for ln in lines)


def test_resume_across_the_stage_boundary(staged_run, monkeypatch):
    from archscale.search.dispatch import launch

    spec, run_dir = staged_run
    begun, real = [], launch.init_ray  # Ray is started once the records show the run unfinished
    monkeypatch.setattr(launch, "init_ray", lambda *args, **kw: (begun.append(args), real(*args, **kw)))
    before = read_trials(run_dir)
    # as if killed during stage 1: stage 2 and the last completed stage-1 trial are not recorded
    lost = before[(before["stage"] == 2)].index.union(before[(before["stage"] == 1) & (before["status"] == "completed")].index[-1:])
    kept = before.drop(lost)
    csv = (run_dir / "trials.csv").read_text().splitlines()
    (run_dir / "trials.csv").write_text("\n".join([csv[0], *(csv[i + 1] for i in kept.index)]) + "\n")
    assert main(["run", str(spec), "--out", str(run_dir), "--resume"]) == 0
    assert len(begun) == 1
    after = read_trials(run_dir)
    assert len(after) == len(before) and after["trial_id"].is_unique
    assert set(kept["trial_id"]) <= set(after["trial_id"])
    key = ["stage", "status", "alpha", "gamma", "phi"]
    assert sorted(map(tuple, after[key].values.tolist())) == sorted(map(tuple, before[key].values.tolist()))
    assert not remaining_sweep(parse_spec(yaml.safe_load(spec.read_text())), after)


def test_resume_of_a_finished_staged_run_changes_nothing(staged_run, capsys, monkeypatch):
    from archscale.search.dispatch import launch

    begun = []  # no Ray for a run found complete
    monkeypatch.setattr(launch, "init_ray", lambda *args, **kw: begun.append(args))
    spec, run_dir = staged_run
    before = (run_dir / "trials.csv").read_text()
    assert main(["run", str(spec), "--out", str(run_dir), "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out and begun == []
    assert (run_dir / "trials.csv").read_text() == before
    assert not math.isnan(pd.read_csv(run_dir / "pareto.csv")["val_accuracy"].max())
