"""trials.csv survives a writer killed mid-row; staged runs carry a ``stage`` column; a file
written with other columns keeps its own header when rows are appended."""

from archscale.analysis.records import TrialsCSV, columns_for, drop_partial_row, read_trials


def test_a_row_cut_by_a_kill_is_dropped_and_appending_goes_on(tmp_path):
    csv = TrialsCSV(tmp_path / "trials.csv", ["c1_width"])
    csv.append({"trial_id": "a", "status": "completed", "c1_width": 4, "val_accuracy": 0.5})
    with (tmp_path / "trials.csv").open("a") as f:
        f.write("b,completed,8,12")  # the kill came before the rest of the row and its newline
    assert drop_partial_row(tmp_path / "trials.csv") and not drop_partial_row(tmp_path / "trials.csv")
    again = TrialsCSV(tmp_path / "trials.csv", ["c1_width"])
    assert again.append({"trial_id": "b", "status": "completed", "c1_width": 8, "val_accuracy": 0.7})
    assert not again.append({"trial_id": "a", "status": "completed", "c1_width": 4})  # never twice
    trials = read_trials(tmp_path)
    assert list(trials["trial_id"]) == ["a", "b"] and list(trials["val_accuracy"]) == [0.5, 0.7]


def test_a_header_cut_by_a_kill(tmp_path):
    (tmp_path / "trials.csv").write_text("trial_id,sta")
    csv = TrialsCSV(tmp_path / "trials.csv", [])
    assert read_trials(tmp_path).empty
    csv.append({"trial_id": "a", "status": "failed"})
    assert list(read_trials(tmp_path)["status"]) == ["failed"]


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
