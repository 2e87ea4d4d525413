"""RUN/study.db: the run's trials in Optuna's RDB storage as they are recorded, read back by
Optuna itself."""

import json
import threading
import pickle
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from archscale.analysis.records import read_trials
from archscale.analysis.runspec import load_run_spec
from archscale.search.sampling.studydb import STUDY_FILE, LiveStudy, study_storage, write_study

LEGACY_RUN = Path(__file__).resolve().parents[2] / "data" / "legacy_run"
STATES = {"completed": TrialState.COMPLETE, "infeasible": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
          "failed": TrialState.FAIL}


@pytest.fixture
def legacy(tmp_path):
    """A copy of a run written before trials.csv had a source column and before study.db was live."""
    run = tmp_path / "run"
    shutil.copytree(LEGACY_RUN, run)
    (run / STUDY_FILE).unlink(missing_ok=True)
    return run, load_run_spec(run)


def loaded(run, spec) -> optuna.Study:
    return optuna.load_study(study_name=spec.name, storage=study_storage(run))


def row_of(trial_id: str, status: str, **values) -> dict:
    base = {"trial_id": trial_id, "status": status, "c1_width": 4, "c3_width": 8, "c4_width": 16,
            "c3_conv": "regular", "params": 1800, "macs": 110000, "arch": "budgeted:c1_width=4", "source": "trained"}
    return {**base, **values}


def test_a_study_brought_up_to_date_has_one_trial_per_row_with_its_values(legacy):
    run, spec = legacy
    trials = read_trials(run)
    dims = spec.searched()
    write_study(run, spec, dims)
    write_study(run, spec, dims)  # again, as a resumed run does: nothing appended twice
    study = loaded(run, spec)
    assert len(optuna.get_all_study_names(study_storage(run))) == 1
    assert len(study.trials) == len(trials) > 0
    metrics = [m for m, _ in spec.search.objective_pairs()]
    assert study.metric_names == metrics  # what optuna-dashboard names its axes with
    choices = [d.name for d in dims]
    for t, (_, row) in zip(study.trials, trials.iterrows()):
        assert t.user_attrs["trial_id"] == row["trial_id"] and t.user_attrs["status"] == row["status"]
        assert t.state == STATES[row["status"]]
        assert t.params == {c: row[c].item() if hasattr(row[c], "item") else row[c] for c in choices}
        assert t.user_attrs["arch"] == row["arch"]
        if row["status"] == "completed":
            assert t.values == pytest.approx([float(row[m]) for m in metrics])
            assert t.user_attrs["macs"] == row["macs"] and t.user_attrs["params"] == row["params"]
            history = json.loads((run / "trials" / row["trial_id"] / "result.json").read_text())["history"]
            assert t.intermediate_values == {h["epoch"]: pytest.approx(h["val_accuracy"]) for h in history}


def test_each_status_lands_in_the_state_the_sampler_was_told_with_its_curve(legacy):
    run, spec = legacy
    (run / "trials.csv").unlink()  # only the rows added live
    with LiveStudy(run, spec, spec.searched()) as live:
        live.add(row_of("a", "completed", val_accuracy=0.5, test_accuracy=0.45, epochs=2), {1: 0.3, 2: 0.5})
        live.add(row_of("b", "pruned", val_accuracy=0.2, epochs=1), {1: 0.2})
        live.add(row_of("c_x", "infeasible", epochs=0, error="params 9000 > max_params 5000"))
        live.add(row_of("d", "failed", error="CUDA out of memory"))
        live.add(row_of("a", "completed", val_accuracy=0.5, epochs=2))  # recorded twice: written once
    trials = {t.user_attrs["trial_id"]: t for t in loaded(run, spec).trials}
    assert sorted(trials) == ["a", "b", "c_x", "d"] and live.written == 4
    assert trials["a"].state == TrialState.COMPLETE and trials["a"].values == pytest.approx([0.5, 110000])
    assert trials["a"].intermediate_values == {1: 0.3, 2: 0.5}
    assert trials["a"].user_attrs["test_accuracy"] == 0.45
    assert trials["b"].state == TrialState.PRUNED and trials["b"].intermediate_values == {1: 0.2}
    assert trials["c_x"].state == TrialState.COMPLETE and trials["c_x"].values[0] == 0.0  # the worst accuracy
    assert trials["c_x"].user_attrs["status"] == "infeasible" and "max_params" in trials["c_x"].user_attrs["error"]
    assert trials["d"].state == TrialState.FAIL and trials["d"].user_attrs["status"] == "failed"


def test_a_resumed_writer_adds_the_rows_a_kill_left_out_and_then_only_new_ones(legacy):
    run, spec = legacy
    rows = read_trials(run)
    with LiveStudy(run, spec, spec.searched()) as live:  # the first run, killed after it wrote trials.csv
        live.add(rows.iloc[0].to_dict())
    assert len(loaded(run, spec).trials) == len(rows)  # the rows it lacked were written when it opened
    with LiveStudy(run, spec, spec.searched()) as live:
        live.add(rows.iloc[1].to_dict())  # already there
        live.add(row_of("new", "completed", val_accuracy=0.3))
    ids = [t.user_attrs["trial_id"] for t in loaded(run, spec).trials]
    assert ids == [*rows["trial_id"], "new"]


def test_a_study_that_cannot_be_written_warns_and_never_raises(tmp_path, legacy):
    _, spec = legacy
    said = []
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with LiveStudy(blocked, spec, spec.searched(), warn=said.append) as live:
        live.add(row_of("a", "completed", val_accuracy=0.5))
    assert len(said) == 1 and "cannot be written" in said[0] and live.written == 0


def test_a_row_outside_the_space_is_left_out_with_a_warning(legacy):
    run, spec = legacy
    (run / "trials.csv").unlink()
    said = []
    with LiveStudy(run, spec, spec.searched(), warn=said.append) as live:
        live.add(row_of("odd", "completed", val_accuracy=0.5, c1_width=999))
        live.add(row_of("ok", "completed", val_accuracy=0.5))
    assert [t.user_attrs["trial_id"] for t in loaded(run, spec).trials] == ["ok"]
    assert len(said) == 1 and "trial odd not written" in said[0]


def test_a_pickled_writer_as_ray_tune_keeps_it_writes_nothing(legacy):
    run, spec = legacy
    (run / "trials.csv").unlink()
    with LiveStudy(run, spec, spec.searched()) as live:
        copy = pickle.loads(pickle.dumps(live))
        copy.add(row_of("copy", "completed", val_accuracy=0.5))
        copy.close()
        live.add(row_of("live", "completed", val_accuracy=0.5))
    assert [t.user_attrs["trial_id"] for t in loaded(run, spec).trials] == ["live"]


def test_a_reader_polling_from_the_start_never_meets_a_half_made_file(tmp_path, legacy):
    """optuna-dashboard started with the run: every read of study.db, from the moment it exists,
    finds the study (a half-made file would make the reader create its tables too, and fail)."""
    _, spec = legacy
    failures = []
    for attempt in range(4):
        run = tmp_path / f"run{attempt}"
        run.mkdir()
        done = threading.Event()

        def read():
            while not done.is_set():
                if (run / STUDY_FILE).exists():
                    try:
                        optuna.load_study(study_name=spec.name, storage=study_storage(run))
                    except Exception as err:  # noqa: BLE001
                        failures.append(repr(err))
                        return

        reader = threading.Thread(target=read)
        reader.start()
        with LiveStudy(run, spec, spec.searched()):
            pass
        done.set()
        reader.join()
        assert not list(run.glob(".*partial"))
    assert failures == []
