"""A real (tiny) search: Ray Tune dispatches, Optuna samples, trials train on mnist-5k."""

import json

import pandas as pd
import pytest
import torch

from archscale.analysis.export import load_exported, read_exported
from archscale.analysis.records import read_trials
from archscale.cli import main
from archscale.trainer import evaluate, load_dataset, normalise, split

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    import copy

    import yaml

    from tests.conftest import TINY_SPEC

    tmp = tmp_path_factory.mktemp("e2e")
    spec = copy.deepcopy(TINY_SPEC)
    # A 4-point grid in which c4_width=64 breaks max_params: 2 trials train, 2 are infeasible.
    spec["search"].update(sampler="grid", num_trials=4)
    spec["space"]["params"].update(c1_width=[4, 8], c3_width=8, c3_conv="depthwise", c4_width=[8, 64])
    spec["space"]["max_params"] = 3000
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp / "run"
    code = main(["run", str(path), "--out", str(run_dir)])
    assert code == 0
    return path, run_dir


def test_run_writes_the_run_directory(finished_run):
    _, run_dir = finished_run
    for name in ("spec.yaml", "trials.csv", "pareto.csv", "pareto.png", "best/arch.yaml", "best/weights.pt", "best/metrics.json"):
        assert (run_dir / name).is_file(), name
    trials = read_trials(run_dir)
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert sorted(trials["status"]) == ["completed", "completed", "infeasible", "infeasible"]
    assert sorted(zip(trials["c1_width"], trials["c4_width"])) == [(4, 8), (4, 64), (8, 8), (8, 64)]
    for col in ("c1_width", "c4_width", "params", "macs", "val_accuracy", "test_accuracy", "train_seconds", "epochs", "arch"):
        assert col in trials.columns
    done = trials[trials["status"] == "completed"]
    assert (done["params"] <= 3000).all() and done["val_accuracy"].between(0, 1).all()
    infeasible = trials[trials["status"] == "infeasible"]
    assert (infeasible["params"] > 3000).all() and infeasible["val_accuracy"].isna().all()
    assert (infeasible["epochs"] == 0).all()


def test_pareto_command_prints_the_front(finished_run, capsys, tmp_path):
    _, run_dir = finished_run
    assert main(["pareto", str(run_dir), "--objectives", "val_accuracy:max,params:min", "--plot", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "Pareto front under val_accuracy:max, params:min" in out
    assert (tmp_path / "f.png").is_file()
    front = pd.read_csv(run_dir / "pareto.csv", dtype={"trial_id": str})
    assert set(front["trial_id"]) <= set(read_trials(run_dir)["trial_id"])


def test_export_reloads_and_reproduces_test_accuracy(finished_run, tmp_path, capsys):
    _, run_dir = finished_run
    trials = read_trials(run_dir)
    trial = trials[trials["status"] == "completed"].iloc[-1]["trial_id"]
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--trial", trial, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    doc = read_exported(out)
    model = load_exported(out)
    info = doc["data"]
    splits = split(load_dataset(info["dataset"], info["root"]), info["val_fraction"], info["subset"], info["seed"])
    x = normalise(splits.x_test, doc["input"]["mean"], doc["input"]["std"], torch.device("cpu"))
    assert evaluate(model, x, splits.y_test) == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    recorded = json.loads((run_dir / "trials" / trial / "result.json").read_text())["provenance"]
    assert metrics["provenance"] == recorded and recorded["torch"]  # copied from training, not taken anew


def test_export_of_a_non_completed_trial_is_refused(finished_run, capsys):
    _, run_dir = finished_run
    trials = read_trials(run_dir)
    bad = trials[trials["status"] != "completed"]
    if bad.empty:
        pytest.skip("every trial completed")
    assert main(["export", str(run_dir), "--trial", bad.iloc[0]["trial_id"]]) == 2
    assert "only completed trials" in capsys.readouterr().err


def test_resume_of_a_finished_run_changes_nothing(finished_run, capsys):
    spec, run_dir = finished_run
    before = (run_dir / "trials.csv").read_text()
    assert main(["run", str(spec), "--out", str(run_dir), "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert (run_dir / "trials.csv").read_text() == before


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path, write_spec, tiny_spec):
    tiny_spec["train"]["lr"] = 1e12  # the loss turns NaN: every trial fails
    tiny_spec["train"]["momentum"] = 0.0
    tiny_spec["search"].update(num_trials=2, sampler="tpe", objectives=["val_accuracy:max"])
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir)]) == 0
    trials = read_trials(run_dir)
    assert len(trials) == 2 and (trials["status"] == "failed").all()
    assert trials["error"].str.contains("loss became").all()
    assert not (run_dir / "best").exists()


def test_over_budget_configurations_are_skipped_without_spending_trials(tmp_path, write_spec, tiny_spec):
    # c4_width=64 breaks the budget; the sampler must still deliver num_trials trained trials
    tiny_spec["space"]["params"].update(c4_width=[8, 64], c3_width=8, c3_conv="depthwise")
    tiny_spec["space"]["max_params"] = 3000
    tiny_spec["search"].update(sampler="random", num_trials=3)
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir), "--quiet"]) == 0
    trials = read_trials(run_dir)
    trained = trials[trials["status"] == "completed"]
    rejected = trials[trials["trial_id"].str.endswith("_infeasible")]
    assert len(trained) == 3 and (trained["c4_width"] == 8).all()
    assert len(rejected) >= 1 and (rejected["status"] == "infeasible").all() and (rejected["params"] > 3000).all()
    assert len(trials) == len(trained) + len(rejected)
