"""``archscale compare`` takes its objectives from the first run's validated spec."""

import pandas as pd

from archscale.cli import main


def test_compare_uses_the_first_runs_objectives(write_run, capsys, tmp_path):
    first = write_run("a", sampler="random", objectives=["val_accuracy:max", "train_seconds:min"])
    second = write_run("b", sampler="tpe")  # val_accuracy:max, macs:min
    assert main(["compare", str(first), str(second), "--out", str(tmp_path / "out")]) == 0
    assert "Runs compared under val_accuracy:max, train_seconds:min" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert [c for c in table.columns if c.startswith("best ")] == ["best val_accuracy", "best train_seconds"]
    assert list(table["best train_seconds"]) == [1.0, 1.0]
