"""A family written without care (issue 26): a configuration that cannot be built, or whose
forward pass fails at the dataset's image size, or whose ``build_model`` returns something
that is not a network, is recorded ``infeasible`` with its reason and the search goes on;
``check`` counts such configurations apart from those over a budget."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import archscale
from archscale.analysis.records import read_trials

ROOT = Path(archscale.__file__).resolve().parents[1]

# TinyCNN as the user wrote it: `depth` convs with a max-pool after every `pool_every`; on 28 px
# images 5 or more pools leave nothing to pool (the forward pass fails), and depth 6 with
# pool_every 1 is built but cannot run. No check(): the README calls it optional.
CARELESS = '''
from torch import nn

from archscale.space import Param, SearchSpace


class TinyCNN(SearchSpace):
    name = "tinycnn"
    description = "depth convs, a max-pool after every pool_every of them"
    params = (
        Param("depth", 2, "convs", low=2, high=6),
        Param("pool_every", 1, "convs between max-pools", choices=(1, 2)),
        Param("width", 8, "channels", choices=(4, 8)),
        Param("broken", False, "build_model returns None", choices=(False, True)),
    )

    def build_model(self, arch):
        p = arch.params
        if p["broken"]:
            return None
        layers, c = [], p["in_channels"]
        for i in range(p["depth"]):
            layers += [nn.Conv2d(c, p["width"], 3, padding=1), nn.ReLU()]
            c = p["width"]
            if (i + 1) % p["pool_every"] == 0:
                layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(p["num_classes"]))
'''


def careless_spec(sampler: str = "tpe", trials: int = 6, **space) -> dict:
    return {"name": "careless", "seed": 0,
            "data": {"dataset": "mnist-5k", "val_fraction": 0.1, "subset": 0.1},
            "space": {"family": "tinycnn_mod:TinyCNN", "max_params": 50_000,
                      "params": {"depth": {"low": 2, "high": 6}, "pool_every": [1, 2], "width": [4, 8]}, **space},
            "train": {"epochs": 1, "batch_size": 64, "lr": 0.05},
            "search": {"sampler": sampler, "num_trials": trials, "max_concurrent": 2, "resources_per_trial": {"cpu": 1},
                       "objectives": ["val_accuracy:max", "params:min"]}}


@pytest.fixture
def project(tmp_path):
    (tmp_path / "tinycnn_mod.py").write_text(CARELESS)
    return tmp_path


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "archscale", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_check_counts_what_cannot_be_built_apart_from_the_budgets(project):
    (project / "spec.yaml").write_text(yaml.safe_dump(careless_spec(sampler="grid")))
    done = cli(["check", "spec.yaml"], project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot be built (not counted as over a budget)" in done.stdout, done.stdout
    assert "RuntimeError" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_no_buildable_configuration_names_the_real_cause(project):
    spec = careless_spec(sampler="grid", params={"depth": [6], "pool_every": [1], "width": [4]})
    (project / "spec.yaml").write_text(yaml.safe_dump(spec))
    done = cli(["check", "spec.yaml"], project)
    assert done.returncode == 2
    assert "none of the 1 sampled configurations can be built" in done.stderr, done.stderr
    assert "max_params" not in done.stderr.splitlines()[-1]


def test_a_build_model_that_returns_none_is_an_unbuildable_configuration(project, monkeypatch):
    monkeypatch.chdir(project)
    spec = careless_spec(sampler="grid", params={"depth": [2], "pool_every": [1], "width": [4], "broken": [True]})
    with pytest.raises(archscale.CheckError, match=r"build_model returned NoneType, not a torch.nn.Module"):
        archscale.check(spec)


def test_a_run_that_fails_before_its_first_trial_leaves_nothing_that_blocks_a_rerun(tmp_path, monkeypatch):
    from archscale.search.jobs import run as run_module

    def fail(spec, run_dir, **kwargs):
        (run_dir / "tune").mkdir(parents=True)
        (run_dir / "spec.yaml").write_text(spec.to_yaml())
        (run_dir / "tune" / "tuner.pkl").write_bytes(b"state")
        raise RuntimeError("the driver failed before any trial")

    monkeypatch.setattr(run_module, "run_search", fail)
    spec = {"name": "t", "data": {"dataset": "mnist-5k"}, "space": {"family": "budgeted"},
            "search": {"num_trials": 1, "sampler": "random"}}
    for out, existed in ((tmp_path / "new", False), (tmp_path / "empty", True)):
        if existed:
            out.mkdir()
        with pytest.raises(RuntimeError):
            archscale.run(spec, out, quiet=True)
        assert out.exists() == existed and not (out.exists() and any(out.iterdir()))


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "gp", "nsga2", "random", "grid"])
def test_configurations_that_cannot_be_built_never_end_a_search(project, sampler):
    """Wherever it is found (the driver's budget check, budget-aware sampling, the worker)."""
    spec = careless_spec(sampler=sampler, trials=6)
    if sampler == "grid":  # 5 x 2 x 2 points: a few of them, the unbuildable ones among them
        spec["space"]["params"] = {"depth": [2, 5, 6], "pool_every": [1], "width": [4]}
        spec["search"]["num_trials"] = 3
    (project / "spec.yaml").write_text(yaml.safe_dump(spec))
    done = cli(["run", "spec.yaml", "--out", "run", "--quiet"], project)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = read_trials(project / "run")
    unbuildable = trials[trials["error"].fillna("").str.startswith("cannot be built")]
    assert (unbuildable["status"] == "infeasible").all()
    assert (trials["status"] == "completed").any()
    if sampler == "grid":
        assert len(unbuildable) == 2 and len(trials) == 3
