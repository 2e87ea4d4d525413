"""Fixtures every package's tests share: the shared data folder, the tiny spec, one Ray
instance for the session, and one tiny finished run that the inspecting tests read."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

from archscale.space import registry, user

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

# The finished run's grid: c1_width x c3_conv x c4_width = 8 points, of which the 4 with
# c4_width=64 break max_params=3000 and are recorded infeasible; 4 train.
FINISHED_RUN_GRID = {"c1_width": [4, 8], "c3_width": 8, "c3_conv": ["regular", "depthwise"], "c4_width": [8, 64]}
FINISHED_RUN_MAX_PARAMS = 3000


FOLDER_SIDE = 16  # px: the side of the smallest images make_image_folder writes
FOLDER_CLASSES = ("cat", "dog", "fish")


def image_of(channels: int, h: int, w: int, seed: int):
    """A uint8 (C, H, W) image: a smooth gradient plus noise (JPEG keeps it close)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 200, w)[None, None, :].expand(channels, h, w)
    return (ramp + torch.randint(0, 40, (channels, h, w), generator=gen)).to(torch.uint8)


def make_image_folder(root: Path, splits=(("train", 4), ("test", 2)), grey_every: int = 3) -> Path:
    """``root/<split>/<class>/`` with RGB JPEGs and PNGs of several sizes; every ``grey_every``-th
    image is a grey PNG, so RGB is what most images hold."""
    from torchvision.io import write_jpeg, write_png

    n = 0
    for name, per_class in splits:
        for cls in FOLDER_CLASSES:
            folder = root / name / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = (FOLDER_SIDE + 4 * (i % 3), FOLDER_SIDE + 8 * (i % 2))
                n += 1
                if n % grey_every == 0:
                    write_png(image_of(1, h, w, n), str(folder / f"{i}.png"))
                elif n % 2:
                    write_jpeg(image_of(3, h, w, n), str(folder / f"{i}.jpg"), quality=95)
                else:
                    write_png(image_of(3, h, w, n), str(folder / f"{i}.png"))
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared datasets folder (``ARCHSCALE_DATA``, else ``../shared/data`` beside the checkout)."""
    return Path(os.environ.get("ARCHSCALE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def tiny_spec() -> dict:
    """A spec whose trials train in well under a second: 3 random trials, 1 epoch, 15% of mnist-5k."""
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


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, ray_session) -> Path:
    """One tiny grid search run once per session through the CLI (8 grid points: 4 trained,
    4 over the params budget), read by the pareto, report, export and compare tests. Tests
    must not write into it: copy it (``shutil.copytree``) to change anything."""
    from archscale.cli import main

    spec = copy.deepcopy(TINY_SPEC)
    spec["name"] = "finished"
    spec["search"].update(sampler="grid", num_trials=8)
    spec["space"]["params"].update(FINISHED_RUN_GRID)
    spec["space"]["max_params"] = FINISHED_RUN_MAX_PARAMS
    spec["train"]["epochs"] = 2  # enough to leave chance level, so the trials' accuracies differ
    spec["data"]["subset"] = 0.3
    tmp = tmp_path_factory.mktemp("finished_run")
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp / "run"
    assert main(["run", str(path), "--out", str(run_dir), "--quiet"]) == 0
    return run_dir


def _brute_force_front(trials, objectives) -> set[str]:
    """Trial ids of the completed trials no other completed trial dominates, by the definition:
    at least as good in every objective and better in one (a NaN is never on the front)."""
    import math

    done = trials[trials["status"] == "completed"]
    rows = [(str(r["trial_id"]), [float(r[m]) if mode == "min" else -float(r[m]) for m, mode in objectives])
            for _, r in done.iterrows()]
    rows = [(tid, cost) for tid, cost in rows if not any(math.isnan(v) for v in cost)]
    return {tid for tid, cost in rows
            if not any(all(o <= c for o, c in zip(other, cost)) and any(o < c for o, c in zip(other, cost))
                       for _, other in rows)}


@pytest.fixture(scope="session")
def brute_force_front():
    """``front(trials, [(metric, "max"|"min"), ...]) -> set of trial ids``, computed pairwise
    from the definition of dominance, independently of ``archscale.analysis.pareto``."""
    return _brute_force_front


def _optuna_hypervolume(points, reference, modes) -> float:
    """Hypervolume of ``points`` (n, k) up to ``reference`` by Optuna's ``compute_hypervolume``
    (minimisation), after turning every "max" objective into a "min" one; points that are not
    strictly better than the reference in every objective add nothing and are left out."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    signs = np.array([1.0 if mode == "min" else -1.0 for mode in modes])
    pts = np.asarray(points, dtype=float).reshape(-1, len(modes)) * signs
    ref = np.asarray(reference, dtype=float) * signs
    pts = pts[(pts < ref).all(axis=1)]
    return float(compute_hypervolume(pts, ref)) if len(pts) else 0.0


@pytest.fixture(scope="session")
def optuna_hypervolume():
    """``hv(points, reference, modes) -> float`` by Optuna, an outside reference for archscale's."""
    return _optuna_hypervolume


@pytest.fixture
def isolated(monkeypatch):
    """A user's family loaded by the test is forgotten after it (sys.path too)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    families, loaded = dict(registry._REGISTRY), dict(user._LOADED)
    yield
    for table, before in ((registry._REGISTRY, families), (user._LOADED, loaded)):
        table.clear()
        table.update(before)
