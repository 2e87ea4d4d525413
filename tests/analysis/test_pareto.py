import math

import numpy as np
import pandas as pd
import pytest

from archscale.analysis.pareto import (best_trial, crowding, non_dominated, pareto_front, pareto_levels, parse_objectives,
                                      plot_pareto)


def test_non_dominated_max_min():
    # (accuracy max, macs min)
    pts = np.array([[0.9, 100], [0.95, 200], [0.85, 150], [0.95, 300], [0.7, 50]])
    assert non_dominated(pts, ["max", "min"]).tolist() == [True, True, False, False, True]


def test_ties_stay_together_and_nans_are_excluded():
    pts = np.array([[0.9, 100], [0.9, 100], [math.nan, 10], [0.8, 100]])
    assert non_dominated(pts, ["max", "min"]).tolist() == [True, True, False, False]


def test_pareto_levels_sort_by_domination():
    points = np.array([[3, 1], [1, 3], [2, 2], [1, 1], [0, 0], [2, 2]])  # maximise both
    assert pareto_levels(points).tolist() == [0, 0, 0, 1, 2, 0]


def test_crowding_distance_as_nsga2_defines_it():
    # Deb et al. 2002: per objective, the extremes get inf and an inner point the gap between
    # its neighbours over the objective's range; summed. The middle of three points:
    # (3 - 1) / (3 - 1) on the first objective + (5 - 1) / (5 - 1) on the second = 2.
    assert crowding(np.array([[1, 5], [2, 3], [3, 1]])).tolist() == [math.inf, 2.0, math.inf]
    # four points: inner ones (3-1)/(4-1) + (8-2)/(8-1) and (4-2)/(4-1) + (7-1)/(8-1)
    got = crowding(np.array([[1, 8], [2, 7], [3, 2], [4, 1]]))
    assert got[[0, 3]].tolist() == [math.inf, math.inf]
    assert got[1] == pytest.approx(2 / 3 + 6 / 7) and got[2] == pytest.approx(2 / 3 + 6 / 7)
    assert crowding(np.array([[1, 1], [2, 2]])).tolist() == [math.inf, math.inf]  # two: both ends


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


def front_with_a_knee():
    # (val_accuracy, macs): accuracy climbs fast up to c, then slowly for many more MACs.
    return pd.DataFrame({
        "trial_id": list("abcdefg"),
        "status": ["completed"] * 6 + ["infeasible"],
        "val_accuracy": [0.50, 0.80, 0.90, 0.91, 0.92, 0.60, np.nan],
        "macs": [10, 20, 30, 200, 1000, 500, 1],
        "params": [1, 2, 3, 4, 5, 6, 1],
    })


@pytest.mark.parametrize("pick,expected", [("accuracy", "e"), ("macs", "a"), ("knee", "c")])
def test_pick_trial(pick, expected):
    from archscale.analysis.pareto import pick_trial

    assert pick_trial(front_with_a_knee(), pick)["trial_id"] == expected


def test_pick_on_ties_and_nothing_completed():
    from archscale.analysis.pareto import pick_trial

    df = front_with_a_knee()
    df.loc[df["trial_id"] == "d", "val_accuracy"] = 0.92  # d ties e on accuracy with fewer MACs
    assert pick_trial(df, "accuracy")["trial_id"] == "d"
    assert pick_trial(df[df["status"] != "completed"], "knee") is None
    with pytest.raises(ValueError, match="accuracy, macs, knee"):
        pick_trial(df, "params")


def test_short_ids():
    from archscale.analysis.pareto import short_ids

    assert short_ids(["ab_00001", "ab_00002"]) == ["00001", "00002"]
    assert short_ids(["ab_00001", "cd_00001"]) == ["ab_00001", "cd_00001"]  # prefixes differ
    assert short_ids(["1f2e3d4c", "99aa00bb"]) == ["1f2e3d4c", "99aa00bb"]


def test_plot_places_a_failed_trial_from_its_arch_text(tmp_path):
    from archscale.analysis.pareto import fill_missing_costs, plot_pareto
    from archscale.space import get_space

    arch = get_space("budgeted").resolve({"c1_width": 4, "c2_width": 4, "c3_width": 4, "c4_width": 4},
                                         {"in_channels": 1, "num_classes": 10, "image_size": 28}).text
    df = front_with_a_knee()
    df["arch"] = None
    failed = pd.DataFrame([{"trial_id": "h", "status": "failed", "arch": arch}])
    df = pd.concat([df, failed], ignore_index=True)
    filled = fill_missing_costs(df)
    assert filled.loc[filled["trial_id"] == "h", "params"].item() > 0
    assert filled.loc[filled["trial_id"] == "h", "macs"].item() > 0
    assert filled.loc[filled["trial_id"] == "a", "macs"].item() == 10  # measured values untouched
    path = plot_pareto(df, parse_objectives("val_accuracy:max,macs:min"), tmp_path / "p.png")
    assert path.stat().st_size > 1000


def test_knee_ignores_points_in_a_concave_stretch_of_the_front():
    from archscale.analysis.pareto import pick_trial

    # b sits beyond the line joining the ends (a convex knee); c sits short of it (concave):
    # c is farther from the line, but on the wrong side.
    df = pd.DataFrame({"trial_id": list("abcd"), "status": ["completed"] * 4,
                       "val_accuracy": [0.925, 0.94, 0.945, 0.97], "macs": [112, 128, 491, 567], "params": 1})
    assert pick_trial(df, "knee")["trial_id"] == "b"
    concave = pd.DataFrame({"trial_id": list("xyz"), "status": ["completed"] * 3,
                            "val_accuracy": [0.5, 0.55, 0.9], "macs": [10, 80, 100], "params": 1})
    assert pick_trial(concave, "knee")["trial_id"] == "z"  # nothing beyond the line: the most accurate
