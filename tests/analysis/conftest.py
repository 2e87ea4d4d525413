"""Fixtures: finished runs written by hand (spec.yaml and trials.csv, nothing trained)."""

from __future__ import annotations

from pathlib import Path

import pytest

from archscale.analysis.records import TrialsCSV

# (c1_width, train.lr, val_accuracy) of the four completed trials of every written run.
ROWS = [(4, 0.05, 0.61), (8, 0.05, 0.72), (4, 0.1, 0.66), (8, 0.1, 0.80)]


@pytest.fixture
def write_run(tmp_path, tiny_spec):
    """``write_run(name, **search)``: a run directory of the tiny spec searching ``train.lr``
    too, with ``search`` fields overridden; four completed trials."""
    from archscale.search.spec import Spec

    def write(name: str = "run", **search) -> Path:
        run_dir = tmp_path / name
        run_dir.mkdir()
        raw = {**tiny_spec, "name": name, "train": {**tiny_spec["train"], "lr": [0.05, 0.1]},
               "search": {**tiny_spec["search"], **search}}
        spec = Spec.model_validate(raw)
        (run_dir / "spec.yaml").write_text(spec.to_yaml())
        csv = TrialsCSV(run_dir / "trials.csv", [d.name for d in spec.searched()])
        for i, (width, lr, acc) in enumerate(ROWS):
            csv.append({"trial_id": f"t{i}", "status": "completed", "c1_width": width, "c3_width": 8, "c4_width": 8,
                        "c3_conv": "regular", "train.lr": lr, "params": 1000 + 500 * (width // 8),
                        "macs": 10_000 * width, "val_accuracy": acc, "test_accuracy": acc - 0.01,
                        "train_seconds": 1.0 + i, "epochs": 1, "arch": f"budgeted:c1_width={width}"})
        return run_dir

    return write
