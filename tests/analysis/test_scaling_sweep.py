"""The phi sweep of a staged run, without training: which points it plans, which trials it
reads them from, and scaling.png."""

import math

import pandas as pd
import pytest

from archscale.analysis.scaling import (best_of_stage_one, network_key, plot_scaling, scaling_table, single_dimension,
                              stage_rows, sweep_points)
from archscale.space import get_space

MNIST = {"in_channels": 1, "num_classes": 10, "image_size": 28}
SMALL = {"base": "resnet18", "base_width": 0.125, "divisor": 4}
OBJECTIVES = [("val_accuracy", "max"), ("macs", "min")]


def arch(alpha, beta, gamma, phi, **extra):
    return get_space("efficientnet").resolve({**SMALL, "alpha": alpha, "beta": beta, "gamma": gamma, "phi": phi,
                                              **extra}, MNIST)


@pytest.mark.parametrize("kind", ["compound", "depth", "width", "resolution"])
def test_single_dimension_scaling_keeps_the_macs_multiplier(kind):
    a, b, g = single_dimension(1.2, 1.1, 1.15, kind)
    assert a * b * b * g * g == pytest.approx(1.2 * 1.1 ** 2 * 1.15 ** 2)
    assert sum(x != 1.0 for x in (a, b, g)) == (3 if kind == "compound" else 1)


def test_sweep_points_in_order():
    best = {"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "base": "resnet18"}
    assert [(k, p) for k, p, _ in sweep_points(best, [0, 1, 2], compare=False)] == [("compound", 0.0), ("compound", 1.0),
                                                                                    ("compound", 2.0)]
    points = sweep_points(best, [0, 2], compare=True)
    assert [k for k, _, _ in points] == ["compound"] * 2 + ["depth"] * 2 + ["width"] * 2 + ["resolution"] * 2
    assert all(p["base"] == "resnet18" for _, _, p in points)
    assert points[2][2]["alpha"] == pytest.approx(1.92027, abs=1e-5) and points[2][2]["beta"] == 1.0


def test_network_key_identifies_the_built_network():
    assert network_key(arch(1.2, 1.1, 1.15, 0.0)) == network_key(arch(2.0, 1.0, 1.0, 0.0))  # phi = 0: the base
    assert network_key(arch(1.2, 1.1, 1.15, 1.0)) != network_key(arch(1.2, 1.1, 1.15, 2.0))
    assert network_key(arch(1.2, 1.1, 1.15, 1.0)) == network_key(arch(1.2, 1.1, 1.15, 1.0, tolerance=0.3))
    assert network_key(arch(1.2, 1.1, 1.15, 1.0)) != network_key(arch(1.2, 1.1, 1.15, 1.0, dropout=0.1))


def row(trial_id, stage, status, a, acc=None, macs=None):
    return {"trial_id": trial_id, "stage": stage, "status": status, "alpha": a["alpha"], "beta": a["beta"],
            "gamma": a["gamma"], "phi": a["phi"], "val_accuracy": acc, "test_accuracy": acc, "macs": macs,
            "params": 1, "arch": a.text}


@pytest.fixture
def synthetic_run():
    base = arch(1.0, 1.0, 1.0, 1.0)  # stage 1: infeasible (its coefficients), same network as phi = 0
    good, other = arch(1.2, 1.1, 1.15, 1.0), arch(1.4, 1.2, 1.0, 1.0)
    return pd.DataFrame([
        row("a", 1, "infeasible", base, macs=7),
        row("b", 1, "completed", good, 0.90, 20),
        row("c", 1, "completed", other, 0.80, 21),
        row("d", 2, "completed", arch(1.2, 1.1, 1.15, 0.0), 0.70, 7),
        row("e", 2, "completed", arch(1.2, 1.1, 1.15, 2.0), 0.95, 40),
    ])


def test_scaling_table_reads_each_point_from_the_right_trial(synthetic_run):
    assert best_of_stage_one(synthetic_run, OBJECTIVES)["trial_id"] == "b"
    table = scaling_table(synthetic_run, OBJECTIVES, [0, 1, 2, 3], compare=True).set_index(["kind", "phi"])
    assert table.loc[("compound", 0.0), "trial_id"] == "d"  # not the infeasible stage-1 row "a"
    assert table.loc[("compound", 1.0), "trial_id"] == "b"  # stage 1's own trial, not retrained
    assert table.loc[("compound", 2.0), "trial_id"] == "e"
    assert table.loc[("compound", 3.0), "status"] == "missing"
    for kind in ("depth", "width", "resolution"):  # phi = 0 is the same base network for every kind
        assert table.loc[(kind, 0.0), "trial_id"] == "d" and table.loc[(kind, 1.0), "status"] == "missing"
    assert table.loc[("compound", 2.0), "resolution"] == 36 and table.loc[("resolution", 1.0), "resolution"] > 28
    assert table.loc[("depth", 2.0), "blocks"] > table.loc[("compound", 2.0), "blocks"]


def test_stage_rows_of_an_unstaged_run_are_stage_one():
    df = pd.DataFrame({"trial_id": ["x"], "status": ["completed"]})
    assert len(stage_rows(df, 1)) == 1 and stage_rows(df, 2).empty


def test_plot_scaling(synthetic_run, tmp_path):
    table = scaling_table(synthetic_run, OBJECTIVES, [0, 1, 2], compare=True)
    assert plot_scaling(table, tmp_path / "s.png").stat().st_size > 10_000
    assert plot_scaling(table.iloc[0:0], tmp_path / "empty.png").is_file()
    assert not math.isnan(table["macs"].astype(float).max())
