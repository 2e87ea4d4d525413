"""A run directory written before the code moved under ``archscale/`` (commit c147cfc, then
``python -m search.cli run tests/data/legacy_spec.yaml``; its ``tune/`` left out) still
loads: ``pareto``, ``report``, ``export`` and ``run --resume`` work on a copy of it."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import archscale
from archscale.analysis.export import read_exported
from archscale.cli import main

LEGACY = Path(__file__).resolve().parent / "data" / "legacy_run"


@pytest.fixture
def legacy(tmp_path) -> Path:
    run_dir = tmp_path / "legacy_run"
    shutil.copytree(LEGACY, run_dir)
    return run_dir


def test_the_fixture_was_written_by_the_old_code():
    metrics = json.loads((LEGACY / "best" / "metrics.json").read_text())
    assert metrics["provenance"]["git_commit"].startswith("c147cfc")
    assert not (LEGACY / "tune").exists()
    trials = pd.read_csv(LEGACY / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 3 and (trials["status"] == "completed").all()
    for trial_id in trials["trial_id"]:  # the weights are in git (.gitignore lets tests/**/*.pt through)
        assert (LEGACY / "trials" / trial_id / "weights.pt").stat().st_size > 1000


def test_pareto(legacy, capsys):
    assert main(["pareto", str(legacy), "--reference", "val_accuracy=0,macs=3e5"]) == 0
    out = capsys.readouterr().out
    trials = pd.read_csv(legacy / "trials.csv", dtype={"trial_id": str})
    # The front by hand: no other trial is at least as accurate and at most as costly.
    acc, macs = trials["val_accuracy"], trials["macs"]
    front = [t for t, a, m in zip(trials["trial_id"], acc, macs)
             if not ((acc >= a) & (macs <= m) & ((acc > a) | (macs < m))).any()]
    shown = re.search(r"Pareto front under val_accuracy:max, macs:min \((\d+) trials\)", out)
    assert shown and int(shown.group(1)) == len(front)
    for trial_id in front:
        assert f"  {trial_id}: budgeted:" in out
    # 2-D hypervolume of the front up to (0, 3e5), normalised by the box from the ideal point.
    points = sorted(((a, m) for t, a, m in zip(trials["trial_id"], acc, macs) if t in front), key=lambda p: p[1])
    raw, best_acc = 0.0, 0.0
    for (a, m), nxt in zip(points, [p[1] for p in points[1:]] + [3e5]):
        best_acc = max(best_acc, a)
        raw += best_acc * (nxt - m)
    norm = raw / (acc.max() * (3e5 - macs.min()))
    assert f"hypervolume: {norm:.4f} normalised" in out
    assert (legacy / "pareto.png").stat().st_size > 1000


def test_report(legacy, capsys):
    assert main(["report", str(legacy)]) == 0
    assert f"report: {legacy / 'report.html'}" in capsys.readouterr().out
    html = (legacy / "report.html").read_text()
    for trial_id in pd.read_csv(legacy / "trials.csv", dtype={"trial_id": str})["trial_id"]:
        assert trial_id in html


def test_export_and_reload(legacy, capsys, tmp_path):
    out = tmp_path / "cheap"
    assert main(["export", str(legacy), "--pick", "macs", "--out", str(out)]) == 0
    trials = pd.read_csv(legacy / "trials.csv", dtype={"trial_id": str})
    cheapest = trials.loc[trials["macs"].idxmin()]
    printed = capsys.readouterr()
    assert f"exported trial {cheapest['trial_id']} (--pick macs" in printed.out
    doc = read_exported(out)
    assert doc["text"] == cheapest["arch"]
    model = archscale.load_exported(out)
    saved = torch.load(legacy / "trials" / cheapest["trial_id"] / "weights.pt", weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    run = archscale.load_run(legacy)
    assert run.best["trial_id"] == json.loads((LEGACY / "best" / "metrics.json").read_text())["trial_id"]
    # trained before provenance was recorded: null, said in one warning line, never taken anew at export
    assert json.loads((out / "metrics.json").read_text())["provenance"] is None
    warnings = [line for line in printed.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "recorded no provenance" in warnings[0] and cheapest["trial_id"] in warnings[0]


def test_resume_of_the_finished_legacy_run_changes_nothing(legacy, capsys):
    before = (legacy / "trials.csv").read_text()
    assert main(["run", str(legacy / "spec.yaml"), "--out", str(legacy), "--resume"]) == 0
    assert "the run is complete (3 of 3 trials); nothing to resume" in capsys.readouterr().out
    assert (legacy / "trials.csv").read_text() == before


@pytest.mark.slow
def test_resume_reruns_a_trial_missing_from_trials_csv(legacy, capsys, ray_session):
    lines = (legacy / "trials.csv").read_text().splitlines(keepends=True)
    removed = lines.pop(2)  # the second trial: as if the run had been killed before it was recorded
    removed_id = removed.split(",")[0]
    (legacy / "trials.csv").write_text("".join(lines))
    kept = pd.read_csv(legacy / "trials.csv", dtype={"trial_id": str})
    started = {json.loads(x)["trial_id"]: json.loads(x)["config"] for x in (legacy / "started.jsonl").read_text().splitlines()}

    assert main(["run", str(legacy / "spec.yaml"), "--out", str(legacy), "--resume"]) == 0
    assert "1 unfinished to rerun" in capsys.readouterr().out
    after = pd.read_csv(legacy / "trials.csv", dtype={"trial_id": str})
    assert len(after) == 3 and after["trial_id"].is_unique
    pd.testing.assert_frame_equal(after.iloc[:2].reset_index(drop=True), kept)  # kept once, unchanged
    new = after.iloc[2]
    assert new["status"] == "completed"
    assert {k: new[k] for k in started[removed_id]} == started[removed_id]  # the same configuration, rerun
    assert (legacy / "trials" / new["trial_id"] / "weights.pt").is_file()
