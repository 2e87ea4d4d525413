"""Shared fixtures: tiny specs and one Ray instance for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

SHARED_DATA = Path(os.environ.get("ARCHSCALE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

TINY_SPEC = {
    "name": "tiny",
    "seed": 0,
    "data": {"dataset": "mnist-5k", "val_fraction": 0.1, "subset": 0.15},
    "space": {
        "family": "budgeted",
        "params": {
            "c1_width": [4, 8], "c2_width": [8], "c3_width": [8, 12], "c4_width": [8, 16],
            "c1_convs": 1, "c2_convs": 1, "c3_convs": 1, "c4_convs": 1,
            "c3_conv": ["regular", "depthwise"], "downsample": "maxpool",
        },
        "max_params": 5000,
    },
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.1},
    "search": {"sampler": "random", "num_trials": 3, "objectives": ["val_accuracy:max", "macs:min"],
               "max_concurrent": 2, "resources_per_trial": {"cpu": 1}},
}


@pytest.fixture
def tiny_spec() -> dict:
    import copy

    return copy.deepcopy(TINY_SPEC)


@pytest.fixture
def write_spec(tmp_path):
    def write(spec: dict | str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
        return path

    return write


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for every test that runs a search (starting Ray costs seconds)."""
    import logging

    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # address="local": a fresh instance even where `ray start` left a cluster to auto-connect to.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()
