"""`archscale ablate` and `archscale repeat` on a tiny spec, through Ray Tune."""

import json

import pandas as pd
import pytest

from archscale.analysis.records import read_trials
from archscale.cli import main

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.mark.slow
def test_ablate_then_repeat(tmp_path, write_spec, tiny_spec, capsys):
    spec = write_spec(tiny_spec)
    out = tmp_path / "abl"
    assert main(["ablate", str(spec), "--techniques", "cutout=4,label_smoothing", "--seeds", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = pd.read_csv(out / "ablation.csv")
    assert summary["variant"].tolist() == ["baseline", "cutout", "label_smoothing", "all"]
    assert summary["delta_test_pp"].iloc[0] == 0 and (summary["seeds"] == 1).all()
    assert (out / "ablation.png").is_file() and "delta_test_pp" in printed and "per seed" in printed
    trials = read_trials(out)
    # each variant trained with its own recipe: techniques on only where the variant says so
    for _, row in trials.iterrows():
        recipe = json.loads((out / "trials" / row["trial_id"] / "result.json").read_text())["recipe"]
        assert recipe["cutout"] == (4 if row["variant"] in ("cutout", "all") else 0)
        assert recipe["label_smoothing"] == (0.1 if row["variant"] in ("label_smoothing", "all") else 0.0)

    rep = tmp_path / "rep"
    assert main(["repeat", str(out), "--seeds", "2", "--out", str(rep)]) == 0
    repeat = read_trials(rep)
    assert sorted(repeat["seed"]) == [0, 1] and (repeat["status"] == "completed").all()
    assert repeat["arch"].nunique() == 1


def test_ablate_bad_input(tmp_path, write_spec, tiny_spec, capsys):
    spec = write_spec(tiny_spec)
    assert main(["ablate", str(spec), "--techniques", "dropout", "--out", str(tmp_path / "a")]) == 2
    assert "unknown technique 'dropout'" in capsys.readouterr().err
    assert main(["ablate", str(spec), "--techniques", "mixup", "--seeds", "0", "--out", str(tmp_path / "a")]) == 2
    assert main(["repeat", str(tmp_path / "nothing")]) == 2
    assert not (tmp_path / "a").exists()
