"""The reference point a spec implies: chance accuracy, a budget, the largest cost in the
space, the spec's own search.reference_point first; the same for every run of a spec, so that
``archscale compare`` of its runs needs no --reference."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from archscale.analysis.reference import reference_point
from archscale.cli import main
from archscale.space import get_space
from archscale.spec import parse_spec

SPACE = {"family": "budgeted", "params": {"c1_width": [4, 8], "c3_width": {"low": 8, "high": 16, "step": 8},
                                          "c3_conv": ["regular", "depthwise"]}}
OBJ = [("val_accuracy", "max"), ("macs", "min"), ("params", "min")]


def _spec(**space) -> dict:
    return {"name": "ref", "data": {"dataset": "mnist-5k"}, "space": {**SPACE, **space},
            "search": {"objectives": ["val_accuracy:max", "macs:min", "params:min"]}}


def test_chance_accuracy_a_budget_and_the_largest_cost_in_the_space():
    ref = reference_point(parse_spec(_spec(max_macs=500_000)), OBJ)
    assert ref["val_accuracy"] == (0.1, "chance, 1/10 classes")
    assert ref["macs"] == (500_000.0, "space.max_macs")
    value, source = ref["params"]
    assert source == "largest in the space"
    family = get_space("budgeted")
    context = {"in_channels": 1, "num_classes": 10, "image_size": 28}
    sizes = [sum(p.numel() for p in family.build_model(family.resolve(
        {"c1_width": w, "c3_width": c, "c3_conv": conv}, context)).parameters())
        for w in (4, 8) for c in (8, 16) for conv in ("regular", "depthwise")]
    assert value == max(sizes)


def test_the_specs_reference_point_wins_and_train_seconds_has_none():
    spec = parse_spec({**_spec(), "search": {"objectives": ["val_accuracy:max", "train_seconds:min"],
                                             "reference_point": {"val_accuracy": 0.5}}})
    ref = reference_point(spec, [("val_accuracy", "max"), ("train_seconds", "min")])
    assert ref == {"val_accuracy": (0.5, "search.reference_point")}  # train_seconds: the worst completed


def _run(folder, spec: dict, accuracies: list[float], macs: list[int]):
    folder.mkdir()
    resolved = parse_spec(spec)
    (folder / "spec.yaml").write_text(resolved.to_yaml())
    pd.DataFrame({"trial_id": [f"t{i}" for i in range(len(macs))], "status": "completed",
                  "val_accuracy": accuracies, "test_accuracy": accuracies, "macs": macs, "params": [1000] * len(macs),
                  "arch": "budgeted:c1_width=4"}).to_csv(folder / "trials.csv", index=False)
    return folder


def test_compare_of_runs_of_one_spec_needs_no_reference(tmp_path, capsys):
    spec = _spec(max_macs=1_000_000)
    spec["search"]["objectives"] = ["val_accuracy:max", "macs:min"]
    a = _run(tmp_path / "a", spec, [0.5, 0.9], [200_000, 800_000])
    b = _run(tmp_path / "b", spec, [0.6], [300_000])
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "reference point val_accuracy=0.1 (chance, 1/10 classes), macs=1,000,000 (space.max_macs)" in out
    assert main(["pareto", str(b), "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "reference point val_accuracy=0.1 (chance, 1/10 classes), macs=1,000,000 (space.max_macs)" in out
    raw = float(out.split(" normalised, ")[1].split(" raw")[0])
    assert raw == pytest.approx((0.6 - 0.1) * (1_000_000 - 300_000), rel=1e-5)  # one trial: not 0 any more
