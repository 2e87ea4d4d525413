import math

import numpy as np
import pandas as pd
import pytest

from archscale.analysis.hypervolume import (bounds, front_hypervolume, hypervolume, hypervolume_history, hypervolume_min,
                                  plot_hypervolume, summarise)

OBJ = [("val_accuracy", "max"), ("macs", "min")]


def test_two_objectives_by_hand():
    # (accuracy max, macs min), reference (0.5, 200): two rectangles, 0.4*100 + 0.3*50
    pts = np.array([[0.9, 100], [0.8, 50]])
    assert hypervolume(pts, [0.5, 200], ["max", "min"]) == pytest.approx(0.4 * 100 + 0.3 * 50)


def test_dominated_duplicate_and_out_of_box_points_add_nothing():
    base = hypervolume(np.array([[0.9, 100], [0.8, 50]]), [0.5, 200], ["max", "min"])
    more = np.array([[0.9, 100], [0.8, 50], [0.7, 120], [0.9, 100], [0.4, 10], [0.95, 250], [math.nan, 1]])
    assert hypervolume(more, [0.5, 200], ["max", "min"]) == pytest.approx(base)


def test_three_objectives_by_hand():
    # one point: a box; two points: the union of two boxes
    assert hypervolume_min(np.array([[1.0, 2.0, 3.0]]), [2.0, 4.0, 7.0]) == pytest.approx(1 * 2 * 4)
    two = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # box A: 2*2*1 (z 1..2); box B: 2*1*2; overlap: 2*1*1
    assert hypervolume_min(two, [2.0, 2.0, 2.0]) == pytest.approx(4 + 4 - 2)


@pytest.mark.parametrize("k", [2, 3])
def test_matches_optuna_on_random_fronts(k):
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(k)
    for trial in range(60):
        pts = rng.random((int(rng.integers(1, 25)), k))
        if trial % 3 == 0:
            pts = np.round(pts, 1)  # ties
        ref = np.full(k, 1.05)
        assert hypervolume_min(pts, ref) == pytest.approx(compute_hypervolume(pts, ref), abs=1e-12)


def trials_frame():
    return pd.DataFrame({
        "trial_id": list("abcdef"),
        "status": ["completed", "infeasible", "completed", "failed", "completed", "completed"],
        "val_accuracy": [0.80, math.nan, 0.90, math.nan, 0.85, 0.70],
        "macs": [100.0, 10.0, 300.0, 5.0, 150.0, 400.0],
    })


def test_bounds_default_to_worst_completed_and_spec_overrides():
    t = trials_frame()
    b = bounds(t, OBJ)
    assert b.reference == (0.70, 400.0) and b.ideal == (0.90, 100.0)  # infeasible/failed ignored
    assert b.reference_source == ("worst completed", "worst completed")
    b = bounds(t, OBJ, {"macs": 1000.0})
    assert b.reference == (0.70, 1000.0) and b.reference_source == ("worst completed", "given")
    assert "macs=1000 (given)" in b.describe()
    b = bounds(t, OBJ, {"macs": (2000.0, "space.max_macs")})  # (value, where it comes from)
    assert b.reference == (0.70, 2000.0) and "macs=2000 (space.max_macs)" in b.describe()


def test_history_grows_with_trials_and_ends_at_the_front():
    t = trials_frame()
    b = bounds(t, OBJ)
    hist = hypervolume_history(t, OBJ, b)
    assert hist["trial"].tolist() == [1, 2, 3, 4, 5, 6]
    assert hist["hypervolume"].is_monotonic_increasing
    raw, norm = front_hypervolume(t, OBJ, b)
    assert hist["hypervolume"].iloc[-1] == pytest.approx(raw)
    # front: a (0.80, 100), e (0.85, 150), c (0.90, 300) against (0.70, 400)
    expected = 0.10 * 300 + 0.05 * 250 + 0.05 * 100
    assert raw == pytest.approx(expected)
    assert norm == pytest.approx(expected / (0.2 * 300))
    assert hist["hypervolume"].iloc[0] == pytest.approx(0.10 * 300)  # after trial a alone


def test_plot_and_summary(tmp_path):
    t = trials_frame()
    line = summarise(t, OBJ, None, tmp_path / "hv.png", "run")
    assert line.startswith("hypervolume: ") and "worst completed" in line
    assert (tmp_path / "hv.png").read_bytes()[:4] == b"\x89PNG"
    assert summarise(t[t["status"] != "completed"], OBJ, None) is None
    b = bounds(t, OBJ)
    path = plot_hypervolume({"x": hypervolume_history(t, OBJ, b), "y": hypervolume_history(t.iloc[:3], OBJ, b)},
                            tmp_path / "two.png")
    assert path.stat().st_size > 1000
