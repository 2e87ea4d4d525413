"""TensorBoard and MLflow trackers, read back with TensorBoard's own event reader and MLflow's
own client, as the user's tools read them."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from archscale.analysis.records import read_trials
from archscale.cli import main
from archscale.spec import Dimension, SpecError, parse_spec
from archscale.search.track.options import require_trackers

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed: pip install \"archscale[track]\"")
mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed: pip install \"archscale[track]\"")

from archscale.search.track.mlflowrun import MLFLOW_FILE, MLflowTracker  # noqa: E402
from archscale.search.track.tboard import TensorBoardTracker, tensorboard_dir  # noqa: E402

DIMS = [Dimension("c1_width", "choice", (4, 8)), Dimension("c3_conv", "choice", ("regular", "depthwise")),
        Dimension("downsample", "fixed", ("maxpool",))]
ROW = {"trial_id": "a1", "c1_width": 8, "c3_conv": "depthwise", "status": "completed", "val_accuracy": 0.75,
       "test_accuracy": 0.7, "params": 1234, "macs": 5678.0, "epochs": 2, "error": ""}


def _write_result(run_dir: Path, trial_id: str, history: list[dict]) -> None:
    folder = run_dir / "trials" / trial_id
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"history": history}))


def _events(run_dir: Path, trial_id: str):
    acc = event_accumulator.EventAccumulator(str(tensorboard_dir(run_dir, trial_id)))
    acc.Reload()
    return acc


def test_tensorboard_writes_each_epoch_as_it_comes_then_the_last_and_the_hparams(tmp_path):
    history = [{"epoch": 1, "train_loss": 1.5, "val_accuracy": 0.5, "lr": 0.1, "epoch_seconds": 2.0},
               {"epoch": 2, "train_loss": 0.9, "val_accuracy": 0.75, "lr": 0.05, "epoch_seconds": 1.5}]
    with TensorBoardTracker(tmp_path, DIMS) as tb:
        tb.epoch("a1", {"epochs": 1, **{k: v for k, v in history[0].items() if k != "epoch"}})
    seen = _events(tmp_path, "a1")  # the first epoch is there while the trial runs
    assert [(e.step, e.value) for e in seen.Scalars("val_accuracy")] == [(1, 0.5)]

    _write_result(tmp_path, "a1", history)  # the last epoch comes with the trial's files
    with TensorBoardTracker(tmp_path, DIMS) as tb:
        tb.epoch("a1", {"epochs": 1, **{k: v for k, v in history[0].items() if k != "epoch"}})
        tb.add(ROW)
    acc = _events(tmp_path, "a1")
    assert [(e.step, e.value) for e in acc.Scalars("val_accuracy")][-2:] == [(1, 0.5), (2, 0.75)]
    assert [e.step for e in acc.Scalars("lr")][-2:] == [1, 2] and acc.Scalars("epoch_seconds")[-1].value == 1.5
    assert acc.Scalars("final/test_accuracy")[0].value == pytest.approx(0.7)
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    start = [plugin_data_pb2.HParamsPluginData.FromString(v).session_start_info for v in content.values()]
    start = [s for s in start if s.hparams]
    assert len(start) == 1
    hparams = start[0].hparams
    assert hparams["c1_width"].number_value == 8 and hparams["c3_conv"].string_value == "depthwise"
    assert hparams["status"].string_value == "completed" and "downsample" not in hparams  # fixed: not searched


def test_tensorboard_resume_adds_only_the_trials_without_a_folder(tmp_path):
    (tmp_path / "trials.csv").write_text("trial_id,status,arch,c1_width,c3_conv,val_accuracy,epochs\n"
                                         "a1,completed,x,4,regular,0.5,1\nb2,infeasible,y,8,regular,,0\n")
    with TensorBoardTracker(tmp_path, DIMS):
        pass
    assert _events(tmp_path, "a1").Scalars("val_accuracy")[0].value == 0.5  # from trials.csv: no history
    assert sorted(p.name for p in (tmp_path / "tensorboard").iterdir()) == ["a1", "b2"]
    before = sorted(p.name for p in tensorboard_dir(tmp_path, "a1").iterdir())
    with TensorBoardTracker(tmp_path, DIMS):
        pass
    assert sorted(p.name for p in tensorboard_dir(tmp_path, "a1").iterdir()) == before  # nothing written twice


def _spec(tmp_path, tiny_spec, **search):
    tiny_spec["search"].update(track=["mlflow"], **search)
    return parse_spec(tiny_spec)


def test_mlflow_nests_a_run_per_trial_under_the_search_and_resume_adds_none_twice(tmp_path, tiny_spec):
    spec = _spec(tmp_path, tiny_spec)
    history = [{"epoch": 1, "val_accuracy": 0.5, "train_loss": 1.2}, {"epoch": 2, "val_accuracy": 0.75}]
    _write_result(tmp_path, "a1", history)
    with MLflowTracker(tmp_path, spec, DIMS) as tracker:
        tracker.epoch("a1", {"epochs": 1, "val_accuracy": 0.5, "train_loss": 1.2})
        tracker.add(ROW)
        tracker.add({**ROW, "trial_id": "b2", "status": "failed", "val_accuracy": None, "error": "boom"})
    saved = json.loads((tmp_path / MLFLOW_FILE).read_text())
    assert saved["uri"] == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(saved["uri"])
    parent = client.get_run(saved["run_id"])
    assert parent.info.status == "FINISHED"

    def children():
        found = client.search_runs([parent.info.experiment_id],
                                   filter_string=f"tags.mlflow.parentRunId = '{saved['run_id']}'")
        return {r.data.tags["archscale.trial_id"]: r for r in found}

    runs = children()
    assert sorted(runs) == ["a1", "b2"]
    a1 = runs["a1"]
    assert a1.data.params == {"c1_width": "8", "c3_conv": "depthwise"} and a1.info.status == "FINISHED"
    curve = client.get_metric_history(a1.info.run_id, "val_accuracy")
    assert sorted((m.step, m.value) for m in curve) == [(1, 0.5), (2, 0.75)]  # epoch 1 once, though told twice
    assert a1.data.metrics["final/params"] == 1234
    assert [f.path for f in client.list_artifacts(a1.info.run_id)] == ["result.json"]
    assert runs["b2"].info.status == "FAILED" and runs["b2"].data.tags["archscale.error"] == "boom"
    assert (tmp_path / "mlartifacts").is_dir()  # beside the database, not in the current folder

    (tmp_path / "trials.csv").write_text("trial_id,status,arch,c1_width,c3_conv,val_accuracy,epochs\n"
                                         "a1,completed,x,8,depthwise,0.75,2\nc3,completed,z,4,regular,0.6,2\n")
    with MLflowTracker(tmp_path, spec, DIMS):  # --resume: the same parent, only what it lacks
        pass
    assert json.loads((tmp_path / MLFLOW_FILE).read_text())["run_id"] == saved["run_id"]
    assert sorted(children()) == ["a1", "b2", "c3"]


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9", "sqlite:////proc/archscale-none/mlflow.db"])
def test_a_store_that_cannot_be_reached_or_written_is_refused_at_once(tmp_path, tiny_spec, uri):
    spec = _spec(tmp_path, tiny_spec, mlflow_uri=uri)
    with pytest.raises(SpecError, match=r"search.mlflow_uri: the MLflow tracking store .* cannot be reached") as err:
        MLflowTracker(tmp_path, spec, DIMS)
    assert uri in str(err.value) and not (tmp_path / MLFLOW_FILE).exists()


def test_a_missing_tracker_package_names_the_install_command(tiny_spec, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    tiny_spec["search"]["track"] = ["tensorboard", "mlflow"]
    with pytest.raises(SpecError, match=r'search.track: mlflow .* install it with: pip install "archscale\[track\]"'):
        require_trackers(parse_spec(tiny_spec))


@pytest.mark.usefixtures("ray_session")
def test_cli_refuses_an_unreachable_store_before_any_trial_and_leaves_nothing(tmp_path, write_spec, tiny_spec, capsys):
    tiny_spec["search"].update(track=["mlflow"], mlflow_uri="http://127.0.0.1:9")
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "search.mlflow_uri: the MLflow tracking store http://127.0.0.1:9 cannot be reached" in err
    assert "Traceback" not in err and not run_dir.exists()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_a_tracked_search_leaves_every_trial_in_tensorboard_and_mlflow(tmp_path, write_spec, tiny_spec):
    """The issue's bar, small: every completed trial has val_accuracy per epoch in TensorBoard
    and in the MLflow store that spec.yaml names, each trial once."""
    tiny_spec["search"].update(track=["tensorboard", "mlflow"], num_trials=4, sampler="random")
    tiny_spec["train"]["epochs"] = 2
    run_dir = tmp_path / "run"
    spec = write_spec(tiny_spec)
    assert main(["run", str(spec), "--out", str(run_dir)]) == 0
    rows = read_trials(run_dir)
    completed = rows[rows["status"] == "completed"]
    assert len(completed) >= 3
    for trial_id in completed["trial_id"]:
        assert [e.step for e in _events(run_dir, trial_id).Scalars("val_accuracy")] == [1, 2]
    assert not list((run_dir / "tune").glob("**/tensorboard"))  # outside Tune's folder
    uri = yaml.safe_load((run_dir / "spec.yaml").read_text())["search"]["mlflow_uri"]
    assert uri == f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.data.tags["archscale.trial_id"] for r in children) == sorted(rows["trial_id"])  # once each
    for r in children:
        if r.data.tags["archscale.status"] == "completed":
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy")]
            assert sorted(steps) == [1, 2]
    shutil.rmtree(run_dir)
