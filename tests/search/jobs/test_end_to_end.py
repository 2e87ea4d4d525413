"""A real (tiny) search: Ray Tune dispatches, Optuna samples, trials train on mnist-5k. The
session's finished run is a grid of 8 configurations of which 4 break the params budget."""

import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from archscale.analysis.records import read_trials
from archscale.cli import main
from archscale.space import Arch, build

pytestmark = pytest.mark.slow  # every test here reads or runs a search

GRID = {"c1_width": [4, 8], "c3_conv": ["regular", "depthwise"], "c4_width": [8, 64]}  # the finished run's


def test_run_leaves_every_grid_point_once_with_its_status(finished_run):
    for name in ("spec.yaml", "trials.csv", "pareto.csv", "pareto.png", "hypervolume.png", "started.jsonl",
                 "best/arch.yaml", "best/weights.pt", "best/metrics.json", "best/model.py"):
        assert (finished_run / name).is_file(), name
    trials = read_trials(finished_run)
    assert len(trials) == 8 and trials["trial_id"].is_unique
    configs = {tuple(row[k] for k in GRID) for _, row in trials.iterrows()}
    assert configs == set(itertools.product(*GRID.values()))  # the grid, each point once
    for _, row in trials.iterrows():  # params as torch counts them, for the architecture recorded
        model = build(Arch.from_text(row["arch"]))
        assert row["params"] == sum(p.numel() for p in model.parameters()), row["trial_id"]
    done = trials[trials["status"] == "completed"]
    infeasible = trials[trials["status"] == "infeasible"]
    assert set(done["c4_width"]) == {8} and (done["params"] <= 3000).all() and (done["epochs"] == 2).all()
    assert done["val_accuracy"].gt(0.15).all()  # two epochs leave chance (0.1) behind
    assert set(infeasible["c4_width"]) == {64} and (infeasible["params"] > 3000).all()
    assert infeasible["val_accuracy"].isna().all() and (infeasible["epochs"] == 0).all()
    assert infeasible["error"].str.contains("max_params 3,000").all()
    # every completed trial keeps its weights and history; the infeasible ones never trained
    assert {p.name for p in (finished_run / "trials").iterdir()} == set(done["trial_id"])
    started = [json.loads(line) for line in (finished_run / "started.jsonl").read_text().splitlines()]
    assert {s["trial_id"] for s in started} == set(trials["trial_id"])


def test_the_winner_is_the_most_accurate_front_trial(finished_run):
    trials = read_trials(finished_run)
    done = trials[trials["status"] == "completed"]
    best = done.sort_values(["val_accuracy", "macs"], ascending=[False, True]).iloc[0]
    metrics = json.loads((finished_run / "best" / "metrics.json").read_text())
    assert metrics["trial_id"] == best["trial_id"] and metrics["val_accuracy"] == best["val_accuracy"]
    assert (finished_run / "best" / "weights.pt").read_bytes() == \
        (finished_run / "trials" / best["trial_id"] / "weights.pt").read_bytes()


def test_resume_of_a_finished_run_changes_nothing(finished_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "tune" not in p.parts}
    assert main(["run", str(run_dir / "spec.yaml"), "--out", str(run_dir), "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "tune" not in p.parts}
    assert after == before


def test_failing_trials_are_recorded_and_the_search_goes_on(ray_session, tmp_path, write_spec, tiny_spec):
    tiny_spec["train"]["lr"] = 1e12  # the loss turns NaN: every trial fails
    tiny_spec["train"]["momentum"] = 0.0
    tiny_spec["search"].update(num_trials=2, sampler="tpe", objectives=["val_accuracy:max"])
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir)]) == 0
    trials = read_trials(run_dir)
    assert len(trials) == 2 and (trials["status"] == "failed").all()
    assert trials["error"].str.contains("loss became").all()
    assert not (run_dir / "best").exists()


def test_over_budget_configurations_are_skipped_without_spending_trials(ray_session, tmp_path, write_spec, tiny_spec):
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


def test_a_run_with_proxy_auto_checks_every_proxy_on_random_candidates_then_goes_on(ray_session, tmp_path, write_spec,
                                                                                   tiny_spec, capsys):
    """proxy auto in a real run: the driver scores the pool with params, synflow, grad_norm and
    zico, 3 random candidates train first, and the run says what each proxy's ranking of them
    was and which (if any) ranks the rest; the search then trains its full budget."""
    tiny_spec["search"].update(sampler="tpe", num_trials=5, prescreen={"proxy": "auto", "pool": 6, "keep": 2, "check": 3})
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "prescreen: auto: params, synflow, grad_norm and zico scored 6 feasible candidates" in out
    assert "3 candidates drawn at random from the pool train first" in out
    line = next(x for x in out.splitlines() if "Spearman with the validation accuracy of" in x)
    assert all(f"{p} " in line for p in ("params", "synflow", "grad_norm", "zico"))
    assert ("agrees best: its best 2 train next" in line) or ("none agrees at p < 0.1" in line)
    trials = read_trials(run_dir)
    assert len(trials[trials["status"] == "completed"]) == 5


def test_a_prescreened_run_trains_the_pool_s_best_first(ray_session, tmp_path, write_spec, tiny_spec, capsys):
    tiny_spec["search"].update(sampler="tpe", num_trials=3, proxies=["grad_norm"],
                               prescreen={"proxy": "grad_norm", "pool": 6, "keep": 2})
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "prescreen: grad_norm scored 6 feasible candidates" in out and "the best 2 train first" in out
    assert "proxies: Too few completed trials with a value to rank anything (3;" in out
    trials = read_trials(run_dir)
    assert len(trials) == 3 and (trials["status"] == "completed").all()
    assert trials["proxy_grad_norm"].notna().all()  # each trial computes it too, as the driver did
    # RUN/prescreen.csv: the pool as the driver scored it; a trained candidate's value is its trial's
    pool = pd.read_csv(run_dir / "prescreen.csv")
    keys = [c for c, v in tiny_spec["space"]["params"].items() if isinstance(v, list) and len(v) > 1]
    assert pool.columns[0] == "candidate" and set(pool.columns[1:-6]) == set(keys)
    assert list(pool.columns[-6:]) == ["scored", "params", "macs", "proxy_grad_norm", "proxy_seconds", "error"]
    assert pool["scored"].sum() == 6 and pool["proxy_grad_norm"].notna().sum() == 6
    assert (pool["error"].notna() == ~pool["scored"]).all()  # each candidate left out says why
    both = trials.merge(pool[pool["scored"]], on=keys, suffixes=("", "_driver"))
    assert len(both) >= 2  # the kept two at least
    assert np.allclose(both["proxy_grad_norm"], both["proxy_grad_norm_driver"], rtol=1e-4)
    assert (both["params"] == both["params_driver"]).all()
    # the report says how the recorded proxy ranked the trained configurations (3: too few to judge)
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    section = page[page.index("How the training-free proxies rank this run"):page.index("<h2>All trials")]
    assert ">grad_norm<" in section and ">params<" in section and "Too few completed trials" in section
    # with a results store, a second run ranks the same pool and is served its kept trials
    tiny_spec["search"]["store"] = str(tmp_path / "store.db")
    spec = write_spec(tiny_spec)
    assert main(["run", str(spec), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["run", str(spec), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    a, b = read_trials(tmp_path / "a"), read_trials(tmp_path / "b")
    cols = ["c1_width", "c3_width", "c4_width", "c3_conv"]
    assert (b["source"] == "store").sum() >= 2  # at least the two kept: the same pool, the same ranking
    served = b[b["source"] == "store"]
    assert set(map(tuple, served[cols].values)) <= set(map(tuple, a[cols].values))
