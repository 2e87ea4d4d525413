"""``archscale compare``: several runs under one reference point; their hypervolumes checked
against Optuna's ``compute_hypervolume``."""

import shutil

import numpy as np
import pandas as pd
import pytest

from archscale.analysis.records import read_trials
from archscale.cli import main

pytestmark = pytest.mark.slow  # they read the session's finished run (one tiny search)

OBJECTIVES = [("val_accuracy", "max"), ("macs", "min")]  # the finished run's


@pytest.fixture(scope="module")
def second_run(finished_run, tmp_path_factory):
    """A second run directory: the finished run's spec and only its two least accurate
    completed trials (so its front, and its hypervolume, are smaller)."""
    run = tmp_path_factory.mktemp("compare") / "subset"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("tune", "best", "trials"))
    trials = pd.read_csv(run / "trials.csv", dtype={"trial_id": str})
    done = trials[trials["status"] == "completed"].sort_values("val_accuracy")
    done.iloc[:2].to_csv(run / "trials.csv", index=False)
    return run


def expected_hypervolumes(runs, reference, optuna_hypervolume):
    """{run: (raw, normalised)} by Optuna, under ``reference`` (metric -> value; where absent,
    what the runs' spec implies: chance accuracy, the largest MACs in the space) and the ideal
    point (best completed over all runs)."""
    from archscale.analysis.reference import reference_point
    from archscale.analysis.runspec import load_run_spec

    implied = {m: v for m, (v, _) in reference_point(load_run_spec(runs[0]), OBJECTIVES).items()}
    done = {run: read_trials(run)[lambda t: t["status"] == "completed"] for run in runs}
    every = pd.concat(done.values())
    modes = [mode for _, mode in OBJECTIVES]
    ref = [reference.get(m, implied.get(m, every[m].min() if mode == "max" else every[m].max()))
           for m, mode in OBJECTIVES]
    ideal = [every[m].max() if mode == "max" else every[m].min() for m, mode in OBJECTIVES]
    box = np.prod([abs(r - i) for r, i in zip(ref, ideal)])
    out = {}
    for run, trials in done.items():
        raw = optuna_hypervolume(trials[[m for m, _ in OBJECTIVES]].to_numpy(float), ref, modes)
        out[run] = (raw, raw / box)
    return out, ref


@pytest.mark.parametrize("reference", [{}, {"val_accuracy": 0.0, "macs": 1e6}], ids=["spec-implied", "given"])
def test_compare_hypervolumes_equal_optunas_under_one_reference(finished_run, second_run, tmp_path, capsys,
                                                                optuna_hypervolume, brute_force_front, reference):
    argv = ["compare", str(finished_run), str(second_run), "--out", str(tmp_path)]
    if reference:
        argv += ["--reference", ",".join(f"{m}={v}" for m, v in reference.items())]
    assert main(argv) == 0
    out = capsys.readouterr().out
    expected, ref = expected_hypervolumes([finished_run, second_run], reference, optuna_hypervolume)
    assert f"reference point val_accuracy={ref[0]:.6g}" in out, out
    for name in ("compare_fronts.png", "compare_hypervolume.png", "compare.csv"):
        assert (tmp_path / name).is_file()
    table = pd.read_csv(tmp_path / "compare.csv")
    assert list(table["run"]) == ["run (grid)", "subset (grid)"]
    for (_, row), run in zip(table.iterrows(), [finished_run, second_run]):
        raw, normalised = expected[run]
        assert row["hypervolume"] == pytest.approx(raw, rel=1e-9, abs=1e-12)
        assert row["hypervolume_normalised"] == pytest.approx(normalised, rel=1e-9, abs=1e-12)
        assert row["front"] == len(brute_force_front(read_trials(run), OBJECTIVES))
        assert row["run"] in out
    # The second run's trials are some of the first's: its front cannot dominate more.
    assert table["hypervolume"].iloc[0] >= table["hypervolume"].iloc[1]
    if reference:  # a reference below every trial: each front dominates a box of its own
        assert table["hypervolume"].iloc[1] > 0


def test_compare_of_a_non_run_is_a_usage_error(finished_run, capsys, tmp_path):
    code = main(["compare", str(finished_run), str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "not a run directory" in err and "Traceback" not in err


def test_compare_uses_the_first_runs_objectives(write_run, capsys, tmp_path):
    first = write_run("a", sampler="random", objectives=["val_accuracy:max", "train_seconds:min"])
    second = write_run("b", sampler="tpe")  # val_accuracy:max, macs:min
    assert main(["compare", str(first), str(second), "--out", str(tmp_path / "out")]) == 0
    assert "Runs compared under val_accuracy:max, train_seconds:min" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert [c for c in table.columns if c.startswith("best ")] == ["best val_accuracy", "best train_seconds"]
    assert list(table["best train_seconds"]) == [1.0, 1.0]
