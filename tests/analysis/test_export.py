"""``archscale export``: the files that rebuild a trial's model, which trial each ``--pick``
takes, and the standalone ``model.py`` / ONNX copies of it."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from archscale.analysis.export import load_exported, read_exported
from archscale.analysis.records import read_trials
from archscale.cli import main
from archscale.space import Arch, build
from archscale.trainer import evaluate, load_dataset, normalise, split

pytestmark = pytest.mark.slow  # they read the session's finished run (one tiny search)

FILES = ("arch.yaml", "weights.pt", "metrics.json", "model.py")


def completed(run_dir):
    trials = read_trials(run_dir)
    return trials[trials["status"] == "completed"]


def trial_model(run_dir, trial_id):
    """The trial's model rebuilt from its arch text in trials.csv, with the weights it saved."""
    row = read_trials(run_dir).set_index("trial_id").loc[trial_id]
    model = build(Arch.from_text(row["arch"]))
    model.load_state_dict(torch.load(run_dir / "trials" / trial_id / "weights.pt", weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def test_split(finished_run):
    """The run's data split as it was carved (spec: mnist-5k, val_fraction, subset, seed)."""
    from archscale.analysis.records import read_spec

    spec = read_spec(finished_run)
    data = spec["data"]
    return split(load_dataset(data["dataset"]), data["val_fraction"], data["subset"], spec["seed"])


def test_export_writes_files_that_give_the_trials_logits(finished_run, test_split, tmp_path, capsys,
                                                         no_archscale_python):
    trial = completed(finished_run).iloc[-1]["trial_id"]
    out = tmp_path / "exported"
    assert main(["export", str(finished_run), "--trial", trial, "--out", str(out)]) == 0
    for name in FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial_id"] == trial and set(FILES) <= set(metrics["files"])
    # provenance: copied from what the trial recorded when it trained, never taken anew
    recorded = json.loads((finished_run / "trials" / trial / "result.json").read_text())["provenance"]
    assert metrics["provenance"] == recorded and recorded["torch"] and recorded["spec_sha256"]
    # The input normalisation written is the training split's per-channel mean and std.
    doc = read_exported(out)
    pixels = test_split.x_train.double() / 255
    assert doc["input"]["mean"] == pytest.approx([pixels.mean().item()], abs=1e-6)
    assert doc["input"]["std"] == pytest.approx([pixels.std().item()], abs=1e-6)
    # Reloaded from the export alone (and by model.py without archscale): the trial's logits.
    x = normalise(test_split.x_test, doc["input"]["mean"], doc["input"]["std"], torch.device("cpu"))
    with torch.no_grad():
        expected = trial_model(finished_run, trial)(x)
        assert torch.equal(load_exported(out)(x), expected)
    torch.save(x, tmp_path / "inputs.pt")
    stdout = no_archscale_python(
        "net = load_model_py(sys.argv[1]).load()\n"
        "with torch.no_grad():\n"
        "    torch.save(net(torch.load(sys.argv[2])), sys.argv[3])\n",
        out, tmp_path / "inputs.pt", tmp_path / "logits.pt", cwd=tmp_path)
    assert (torch.load(tmp_path / "logits.pt") - expected).abs().max() < 1e-4, stdout
    # The trial's recorded test accuracy is what the reloaded weights score.
    assert evaluate(load_exported(out), x, test_split.y_test) == pytest.approx(metrics["test_accuracy"], abs=1e-9)


def knee_by_hand(done: pd.DataFrame) -> str:
    """The knee of the (val_accuracy:max, macs:min) front, computed from the README's rule: both
    scaled to [0, 1]; the front point farthest beyond the line through the front's two ends on
    the side of the ideal point; the most accurate when the front has <= 2 points or none is beyond."""
    rows = [(r["trial_id"], float(r["val_accuracy"]), float(r["macs"])) for _, r in done.iterrows()]
    front = [r for r in rows if not any(o[1] >= r[1] and o[2] <= r[2] and (o[1] > r[1] or o[2] < r[2]) for o in rows)]
    most_accurate = max(front, key=lambda r: (r[1], -r[2]))
    if len({(r[1], r[2]) for r in front}) <= 2:
        return most_accurate[0]
    accs, costs = [r[1] for r in front], [r[2] for r in front]
    points = [((a - min(accs)) / (max(accs) - min(accs)), (max(costs) - c) / (max(costs) - min(costs)))
              for a, c in zip(accs, costs)]
    end_a = points[accs.index(max(accs))]  # (1, c): the most accurate end
    end_c = points[costs.index(min(costs))]  # (a, 1): the cheapest end
    normal = np.array([-(end_c[1] - end_a[1]), end_c[0] - end_a[0]])  # perpendicular to the chord
    normal /= np.linalg.norm(normal)
    if normal @ (np.array([1.0, 1.0]) - end_a) < 0:  # point it towards the ideal point (1, 1)
        normal = -normal
    dist = [normal @ (np.array(p) - end_a) for p in points]
    best = int(np.argmax(dist))
    return front[best][0] if dist[best] > 1e-12 else most_accurate[0]


def pick_by_hand(done: pd.DataFrame, pick: str) -> str:
    if pick == "accuracy":
        return done.sort_values(["val_accuracy", "macs", "params"], ascending=[False, True, True]).iloc[0]["trial_id"]
    if pick == "macs":
        return done.sort_values(["macs", "val_accuracy"], ascending=[True, False]).iloc[0]["trial_id"]
    return knee_by_hand(done)


@pytest.mark.parametrize("pick", ["accuracy", "macs", "knee"])
def test_export_pick_takes_the_trial_a_hand_computation_on_trials_csv_takes(finished_run, tmp_path, capsys, pick):
    out = tmp_path / pick
    assert main(["export", str(finished_run), "--pick", pick, "--out", str(out)]) == 0
    assert f"--pick {pick}" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial_id"] == pick_by_hand(completed(finished_run), pick)
    assert metrics["picked_by"] == f"--pick {pick}"


def test_export_picks_on_a_front_with_a_clear_knee(finished_run, tmp_path, capsys):
    """The run's completed trials given made-up accuracies and MACs: an accurate but costly
    trial, a cheap but poor one, the elbow between them, and a dominated one."""
    run = tmp_path / "crafted"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("tune", "best"))
    trials = pd.read_csv(run / "trials.csv", dtype={"trial_id": str})
    ids = list(trials.loc[trials["status"] == "completed", "trial_id"])
    assert len(ids) == 4
    made_up = {ids[0]: (0.90, 1000.0), ids[1]: (0.50, 100.0), ids[2]: (0.85, 200.0), ids[3]: (0.60, 900.0)}
    for trial_id, (acc, macs) in made_up.items():
        trials.loc[trials["trial_id"] == trial_id, ["val_accuracy", "macs"]] = acc, macs
    trials.to_csv(run / "trials.csv", index=False)
    expected = {"accuracy": ids[0], "macs": ids[1], "knee": ids[2]}
    for pick, trial_id in expected.items():
        assert pick_by_hand(read_trials(run)[lambda t: t["status"] == "completed"], pick) == trial_id
        out = tmp_path / pick
        assert main(["export", str(run), "--pick", pick, "--out", str(out)]) == 0
        assert json.loads((out / "metrics.json").read_text())["trial_id"] == trial_id, pick


def test_export_of_a_non_completed_trial_is_refused(finished_run, tmp_path, capsys):
    trials = read_trials(finished_run)
    infeasible = trials.loc[trials["status"] == "infeasible", "trial_id"]
    assert len(infeasible) == 4
    assert main(["export", str(finished_run), "--trial", infeasible.iloc[0], "--out", str(tmp_path / "x")]) == 2
    assert "only completed trials" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_export_trial_and_pick_are_exclusive(finished_run, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["export", str(finished_run), "--trial", "x", "--pick", "knee"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_export_onnx_gives_the_trials_logits_in_onnxruntime(finished_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

    trial = completed(finished_run).iloc[0]["trial_id"]
    out = tmp_path / "onnx"
    assert main(["export", str(finished_run), "--trial", trial, "--onnx", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(4, 1, 28, 28)
    (got,) = session.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        assert abs(got - trial_model(finished_run, trial)(x).numpy()).max() < 1e-4
