"""RUN/study.db: the run's trials in Optuna's RDB storage, read back by Optuna itself."""

import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from archscale.analysis.records import read_trials
from archscale.analysis.runspec import load_run_spec
from archscale.search.sampling.studydb import STUDY_FILE, study_storage, write_study

LEGACY_RUN = Path(__file__).resolve().parents[2] / "data" / "legacy_run"
STATES = {"completed": TrialState.COMPLETE, "infeasible": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
          "failed": TrialState.FAIL}


def test_a_loaded_study_has_one_trial_per_row_with_its_values(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(LEGACY_RUN, run)  # written before trials.csv had a source column
    spec = load_run_spec(run)
    trials = read_trials(run)
    choices = [d.name for d in spec.searched()]
    write_study(run, spec, trials, choices)
    write_study(run, spec, trials, choices)  # written anew, as by a resumed run: not appended
    study = optuna.load_study(study_name=spec.name, storage=study_storage(run))
    assert len(optuna.get_all_study_names(study_storage(run))) == 1
    assert len(study.trials) == len(trials) > 0
    metrics = [m for m, _ in spec.search.objective_pairs()]
    for t, (_, row) in zip(study.trials, trials.iterrows()):
        assert t.user_attrs["trial_id"] == row["trial_id"] and t.user_attrs["status"] == row["status"]
        assert t.state == STATES[row["status"]]
        assert t.params == {c: row[c].item() if hasattr(row[c], "item") else row[c] for c in choices}
        if row["status"] == "completed":
            assert t.values == pytest.approx([float(row[m]) for m in metrics])
            assert t.user_attrs["macs"] == row["macs"] and t.user_attrs["params"] == row["params"]
    assert not (run / f".{STUDY_FILE}.tmp").exists()
