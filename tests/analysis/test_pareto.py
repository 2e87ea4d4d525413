import math

import numpy as np
import pandas as pd
import pytest

from analysis.pareto import best_trial, non_dominated, pareto_front, parse_objectives, plot_pareto


def test_non_dominated_max_min():
    # (accuracy max, macs min)
    pts = np.array([[0.9, 100], [0.95, 200], [0.85, 150], [0.95, 300], [0.7, 50]])
    assert non_dominated(pts, ["max", "min"]).tolist() == [True, True, False, False, True]


def test_ties_stay_together_and_nans_are_excluded():
    pts = np.array([[0.9, 100], [0.9, 100], [math.nan, 10], [0.8, 100]])
    assert non_dominated(pts, ["max", "min"]).tolist() == [True, True, False, False]


def test_three_objectives():
    pts = np.array([[1, 1, 1], [0, 0, 0], [1, 0.5, 0], [0.5, 0.5, 0.5], [0.4, 0.6, 0.4]])
    assert non_dominated(pts, ["max", "min", "max"]).tolist() == [True, True, True, True, False]


def test_front_only_counts_completed_trials_and_best_is_first_objective():
    df = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d"],
        "status": ["completed", "completed", "infeasible", "failed"],
        "val_accuracy": [0.9, 0.8, np.nan, np.nan],
        "macs": [200, 100, 10, 5],
    })
    objectives = parse_objectives("val_accuracy:max,macs:min")
    front = pareto_front(df, objectives)
    assert front["trial_id"].tolist() == ["a", "b"]
    assert best_trial(df, objectives)["trial_id"] == "a"


def test_parse_objectives_rejects_missing_direction():
    with pytest.raises(ValueError, match="METRIC:max or METRIC:min"):
        parse_objectives("val_accuracy")


@pytest.mark.parametrize("objectives", ["val_accuracy:max", "val_accuracy:max,macs:min", "val_accuracy:max,macs:min,params:min"])
def test_plot_writes_a_png(tmp_path, objectives):
    df = pd.DataFrame({
        "trial_id": list("abcde"), "status": ["completed", "completed", "completed", "infeasible", "failed"],
        "val_accuracy": [0.9, 0.8, 0.7, np.nan, np.nan], "macs": [200, 100, 150, 500, 50], "params": [5, 3, 4, 9, 1],
    })
    path = plot_pareto(df, parse_objectives(objectives), tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
