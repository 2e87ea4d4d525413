"""trials.csv: staged runs carry a ``stage`` column; a file written with other columns
keeps its own header when rows are appended (a run resumed by a newer version)."""

from analysis.records import TrialsCSV, columns_for, read_trials


def test_staged_columns():
    assert columns_for(["alpha"])[:3] == ["trial_id", "status", "alpha"]
    assert columns_for(["alpha"], staged=True)[:4] == ["trial_id", "stage", "status", "alpha"]
    assert "memory_source" in columns_for([])


def test_an_existing_header_is_kept(tmp_path):
    old = "trial_id,status,c1_width,params,macs,memory_mb,val_accuracy,test_accuracy,train_seconds,epochs,error,arch\n"
    path = tmp_path / "trials.csv"
    path.write_text(old + "t1,completed,8,100,1000,1.5,0.9,0.8,3.0,1,,budgeted:c1_width=8\n")
    csv = TrialsCSV(path, ["c1_width"], staged=True)
    assert csv.columns == old.strip().split(",")
    assert csv.append({"trial_id": "t2", "stage": 1, "status": "completed", "c1_width": 16, "params": 200,
                       "memory_source": "cpu_estimate", "arch": "budgeted:c1_width=16"})
    assert not csv.append({"trial_id": "t2", "status": "failed"})  # written once
    trials = read_trials(tmp_path)
    assert list(trials["trial_id"]) == ["t1", "t2"] and "stage" not in trials and list(trials["c1_width"]) == [8, 16]
