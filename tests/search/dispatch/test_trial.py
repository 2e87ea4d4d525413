"""One trial without Ray: judged on its device, trained with a report per epoch, and its
files (weights, result.json with the provenance of the training) sent with the last report."""

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch

from archscale.search.configs.context import trial_context
from archscale.search.jobs.provenance import KEYS, driver_provenance
from archscale.spec import parse_spec
from archscale.search.dispatch.trial import ARTIFACTS, train_trial
from archscale.trainer import load_dataset, split

HOST = {"cpus": 1, "gpus": 0.0, "threads": 1, "node_id": "test"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    spec = parse_spec({"name": "t", "data": {"dataset": "mnist-5k", "subset": 0.1},
                       "space": {"params": {"c1_width": [4, 8], "c2_width": 8, "c3_width": 8, "c4_width": 8,
                                            "c1_convs": 1, "c2_convs": 1, "c3_convs": 1, "c4_convs": 1},
                                 "max_params": 3000},
                       "train": {"epochs": 2, "batch_size": 64, "lr": 0.1}})
    (run_dir / "spec.yaml").write_text(spec.to_yaml())
    data = load_dataset("mnist-5k")
    splits = split(data, spec.data.val_fraction, spec.data.subset, seed=spec.seed)
    ctx = trial_context(spec, run_dir, data.context, driver_provenance(spec.to_yaml()))
    return ctx, splits


def run(setup, config):
    ctx, splits = setup
    reports = []
    train_trial(config, ctx, splits, reports.append, HOST)
    return reports


def weights(report):
    return torch.load(io.BytesIO(report[ARTIFACTS]["weights.pt"]), weights_only=True)


def test_a_trial_reports_each_epoch_then_its_files_with_provenance(setup):
    reports = run(setup, {"c1_width": 4})
    assert [r["status"] for r in reports] == ["running", "completed"]
    assert [r["epochs"] for r in reports] == [1, 2]
    last = reports[-1]
    assert last["params"] <= 3000 and last["macs"] > 0 and last["latency_ms"] > 0 and 0 <= last["val_accuracy"] <= 1
    result = json.loads(last[ARTIFACTS]["result.json"])
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    prov = result["provenance"]
    assert tuple(prov) == KEYS
    assert prov["torch"] == torch.__version__.split("+")[0] and prov["device"] == "cpu" and prov["seed"] == 0
    spec_file = Path(setup[0].run_dir) / "spec.yaml"
    assert prov["spec_sha256"] == hashlib.sha256(spec_file.read_bytes()).hexdigest()
    assert set(weights(last)) and all(k in result["metrics"] for k in ("val_accuracy", "test_accuracy"))


def test_every_trial_trains_alike_unless_its_config_names_a_seed(setup):
    first, again = run(setup, {"c1_width": 4})[-1], run(setup, {"c1_width": 4})[-1]
    other = run(setup, {"c1_width": 4, "seed": 1})[-1]
    a, b, c = weights(first), weights(again), weights(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert json.loads(other[ARTIFACTS]["result.json"])["provenance"]["seed"] == 1


def test_an_over_budget_trial_is_reported_infeasible_untrained(setup):
    reports = run(setup, {"c1_width": 64, "c2_width": 64})
    assert len(reports) == 1
    report = reports[0]
    assert report["status"] == "infeasible" and report["epochs"] == 0 and ARTIFACTS not in report
    assert "> max_params 3,000" in report["error"] and report["params"] > 3000
