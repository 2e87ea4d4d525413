"""Inspecting a finished (tiny) run from the command line: the pareto command's front and
hypervolume, the trials' latency, parameter importances, and the seeds' claims table. The
report, export and compare commands are tested in tests/analysis."""

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from archscale.analysis.records import read_trials
from archscale.cli import main

pytestmark = pytest.mark.slow  # they read the session's finished run (one tiny search)

SPEC_OBJECTIVES = [("val_accuracy", "max"), ("macs", "min")]  # the finished run's


def test_trials_carry_latency_and_the_run_writes_hypervolume(finished_run):
    trials = read_trials(finished_run)
    assert {"latency_ms", "latency_batch_ms"} <= set(trials.columns)
    # latency is measured before training: the infeasible configurations have it too
    assert (trials["latency_ms"] > 0).all() and (trials["latency_batch_ms"] > 0).all()
    assert (finished_run / "hypervolume.png").is_file()
    assert (finished_run / "best" / "model.py").is_file()  # the run's winner comes with its standalone model


def test_pareto_csv_is_the_brute_force_front_of_trials_csv(finished_run, brute_force_front):
    front = pd.read_csv(finished_run / "pareto.csv", dtype={"trial_id": str})
    expected = brute_force_front(read_trials(finished_run), SPEC_OBJECTIVES)
    assert set(front["trial_id"]) == expected and len(front) == len(expected)
    assert front["val_accuracy"].is_monotonic_decreasing  # best first by the first objective


def test_pareto_over_any_objectives_prints_the_front_and_its_hypervolume(finished_run, capsys, tmp_path,
                                                                         brute_force_front, optuna_hypervolume):
    objectives = [("val_accuracy", "max"), ("latency_ms", "min"), ("params", "min")]
    code = main(["pareto", str(finished_run), "--objectives", "val_accuracy:max,latency_ms:min,params:min",
                 "--plot", str(tmp_path / "front.png")])
    out = capsys.readouterr().out
    assert code == 0
    trials = read_trials(finished_run)
    expected = brute_force_front(trials, objectives)
    assert f"Pareto front under val_accuracy:max, latency_ms:min, params:min ({len(expected)} trials)" in out
    printed = re.findall(r"^  (\S+): (budgeted:\S+)$", out, re.M)  # each front trial's architecture text
    arch = dict(zip(trials["trial_id"], trials["arch"]))
    assert {tid for tid, _ in printed} == expected and all(arch[tid] == text for tid, text in printed)
    # Hypervolume under the reference the spec implies (chance accuracy, a budget, the largest
    # in the space; latency_ms has no budget: the worst completed), normalised by the ideal-reference box.
    from archscale.analysis.reference import reference_point
    from archscale.analysis.runspec import load_run_spec

    implied = reference_point(load_run_spec(finished_run), objectives)
    assert "latency_ms" not in implied and implied["val_accuracy"][1].startswith("chance")
    done = trials[trials["status"] == "completed"]
    points = done[[m for m, _ in objectives]].to_numpy(float)
    ref = [implied[m][0] if m in implied else done[m].min() if mode == "max" else done[m].max()
           for m, mode in objectives]
    ideal = [done[m].max() if mode == "max" else done[m].min() for m, mode in objectives]
    raw = optuna_hypervolume(points, ref, [mode for _, mode in objectives])
    box = 1.0
    for r, i in zip(ref, ideal):
        box *= abs(r - i)
    match = re.search(r"hypervolume: ([0-9.]+) normalised, ([0-9.e+-]+) raw", out)
    assert match, out
    assert float(match.group(1)) == pytest.approx(raw / box, abs=5e-5)
    assert float(match.group(2)) == pytest.approx(raw, rel=1e-5)
    assert (tmp_path / "front.png").is_file() and (tmp_path / "hypervolume.png").is_file()


@pytest.mark.parametrize("argv,fragments", [
    (["--objectives", "accuracy:max"], ["--objectives", "'accuracy'", "val_accuracy"]),
    (["--objectives", "val_accuracy:max,macs:min,params:min,latency_ms:min"], ["--objectives", "1 to 3"]),
    (["--objectives", "macs:min,macs:max"], ["--objectives", "twice"]),
    (["--reference", "macs=lots"], ["--reference", "not a number"]),
])
def test_pareto_bad_arguments(finished_run, capsys, argv, fragments):
    code = main(["pareto", str(finished_run), *argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert all(f in err for f in fragments), err


def test_param_importances_from_trials(finished_run):
    from archscale.search.sampling.importance import param_importances
    from archscale.spec import parse_spec, read_yaml

    spec = parse_spec(read_yaml(finished_run / "spec.yaml"))
    trials = read_trials(finished_run)
    done = trials[trials["status"] == "completed"]
    assert done["val_accuracy"].nunique() == len(done) == 4  # the fixture's trials differ
    importances, note = param_importances(spec, trials)
    assert set(importances) == {d.name for d in spec.space.searched()}
    assert sum(importances.values()) == pytest.approx(1.0)
    # c1_width and c3_conv vary between the completed trials; c4_width=64 never completed
    assert importances["c4_width"] == pytest.approx(0.0, abs=1e-9)
    flat = trials.assign(val_accuracy=0.5)  # nothing to apportion
    assert param_importances(spec, flat)[0] is None
    assert param_importances(spec, trials.iloc[:0]) == (None, "0 completed trial(s); at least 2 are needed")


def test_reproduce_reads_a_run_directory_and_marks_gpu_rows_not_run(finished_run, tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    reproduce = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = reproduce  # its dataclasses look their module up there
    spec.loader.exec_module(reproduce)
    table, results = tmp_path / "seeds.md", tmp_path / "seeds.json"
    code = reproduce.main(["--only", "mnist_1p5k", "--from-run", f"mnist_1p5k={finished_run}",
                           "--results", str(results), "--out", str(table), "--runs-dir", str(tmp_path / "runs")])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"[a-z0-9_]+: [0-9.]+", lines[-1])
    metrics = json.loads((finished_run / "best" / "metrics.json").read_text())
    text = table.read_text()
    row = next(ln for ln in text.splitlines() if "98.35%" in ln)
    assert f"test {100 * metrics['test_accuracy']:.2f}%" in row and "not recorded" in row
    for claim in ("86.76%", "> 85%", "94%", "alpha=1.2"):
        other = next(ln for ln in text.splitlines() if claim in ln)
        assert "not run" in other, other
    assert json.loads(results.read_text())["mnist_1p5k"]["values"]["test_accuracy"] == metrics["test_accuracy"]
