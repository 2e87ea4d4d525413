"""trials.csv survives a writer killed mid-row."""

from analysis.records import TrialsCSV, drop_partial_row, read_trials


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
