"""GPU shares: the sizing arithmetic and ``gpu: auto`` with the measured memory injected
(no GPU on CI: what a GPU would measure is given, the logic around it is real)."""

import math
import pickle

import pytest
import torch

from archscale.search.dispatch.resources import MAX_SHARE, RAY_STEP, TrialResources, gpu_need_mb, gpu_share
from archscale.search.configs.context import trial_context
from archscale.search.configs.evaluate import Evaluator
from archscale.spec import parse_spec

H100_MB = 81_559.0  # torch.cuda.get_device_properties(0).total_memory / 2**20 on an H100 80GB


@pytest.mark.parametrize("need_mb", [700.0, 1_000.0, 2_345.6, 5_000.0, 20_000.0, 40_000.0, 41_000.0])
def test_share_packs_exactly_as_many_trials_as_fit_in_memory(need_mb):
    share = gpu_share(need_mb, H100_MB)
    fit = math.floor(H100_MB / need_mb)
    assert share * fit <= 1.0 + 1e-12  # Ray can place `fit` of them on one GPU ...
    assert share * (fit + 1) > 1.0  # ... and not one more, which would not fit in memory
    assert round(share / RAY_STEP, 6) == int(round(share / RAY_STEP))  # a multiple of Ray's granularity


def test_share_of_a_trial_bigger_than_a_gpu():
    assert gpu_share(H100_MB * 2, H100_MB) == MAX_SHARE
    assert gpu_share(H100_MB * 0.6, H100_MB) == MAX_SHARE  # one per GPU, a sliver left for measuring
    with pytest.raises(ValueError):
        gpu_share(0, H100_MB)


def test_need_counts_step_data_headroom_and_context():
    assert gpu_need_mb(100.0, 50.0, context_mb=600.0, headroom=1.2) == pytest.approx(780.0)


def _spec(**resources):
    return parse_spec({"name": "r", "train": {"batch_size": 256},
                       "space": {"params": {"c1_width": [8, 64], "c4_width": [16, 2048]}, "max_params": 200_000},
                       "search": {"resources_per_trial": resources}})


def test_auto_sizes_each_architecture_from_its_measured_memory():
    spec = _spec(cpu=2, gpu="auto")
    ctx = trial_context(spec, ".", {"in_channels": 3, "num_classes": 10, "image_size": 32})
    measured = []

    def measure(config):  # what step_peak_mb would read on the GPU: grows with the first width and the batch
        measured.append(dict(config))
        return 20.0 * config["c1_width"] * config.get("train.batch_size", 256) / 256

    res = TrialResources(Evaluator(ctx), 2, "auto", data_mb=700.0, gpu_total_mb=H100_MB, measure=measure)
    small, big = {"c1_width": 8, "c4_width": 16}, {"c1_width": 64, "c4_width": 16}
    assert res.gpu_for(small) == gpu_share(gpu_need_mb(160.0, 700.0), H100_MB)
    assert res.gpu_for(big) == gpu_share(gpu_need_mb(1280.0, 700.0), H100_MB)
    assert res.gpu_for(big) > res.gpu_for(small)
    assert len(measured) == 2  # once per architecture, then cached
    over_budget = {"c1_width": 64, "c4_width": 2048}  # > max_params: recorded infeasible, never trained
    assert res.gpu_for(over_budget) == 0.0 and len(measured) == 2
    bundle = res(small).bundles[0]
    assert bundle["CPU"] == 2 and bundle["GPU"] == res.gpu_for(small)
    assert "GPU" not in res(over_budget).bundles[0]
    # a searched batch size is sized for itself, not for the spec's first value
    larger = {**small, "train.batch_size": 1024}
    assert res.gpu_for(larger) == gpu_share(gpu_need_mb(640.0, 700.0), H100_MB) > res.gpu_for(small)
    assert len(measured) == 3


def test_fixed_gpu_and_pickling():
    spec = _spec(cpu=1, gpu=0.25)
    ctx = trial_context(spec, ".", {"in_channels": 3, "num_classes": 10, "image_size": 32})
    res = TrialResources(Evaluator(ctx), 1, 0.25)
    assert res(None).bundles[0] == {"CPU": 1.0, "GPU": 0.25}
    auto = TrialResources(Evaluator(ctx), 1, "auto", gpu_total_mb=H100_MB, measure=lambda config: 1.0)
    copy = pickle.loads(pickle.dumps(auto))  # Tune ships it to the workers with the trainable
    assert copy.measure is None and copy.evaluator is None and copy.gpu == "auto"


def test_spec_gpu_field():
    assert _spec().search.resources_per_trial.gpu == "auto"
    assert _spec(gpu=0.5).search.resources_per_trial.gpu == 0.5
    assert _spec(gpu=2).search.resources_per_trial.gpu == 2.0


@pytest.mark.parametrize("need_mb", [700.0, 20_000.0, 27_000.0, 40_000.0])
def test_shares_of_a_full_gpu_leave_the_probe_its_step(need_mb):
    share = gpu_share(need_mb, H100_MB)
    assert share * math.floor(H100_MB / need_mb) <= 1.0 - RAY_STEP + 1e-12


PROBE_SCRIPT = """
import logging, math, sys, time
import ray
from archscale.search.dispatch.resources import gpu_measurer, gpu_need_mb, gpu_share
from ray.util.placement_group import placement_group

# a node that declares one GPU and has none: Ray schedules the fractions as it would on a GPU
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level=logging.ERROR,
         log_to_driver=False)
total_mb, measure = gpu_measurer("ctx", peak=lambda ctx, config: 1000.0 * config["width"], total=lambda: 80_000.0)
share = gpu_share(gpu_need_mb(measure({"width": 10}), 0.0), total_mb)  # 12,600 MiB: 6 fit
trials = [placement_group([{"GPU": share}]) for _ in range(math.floor(total_mb / 12_600))]
ray.get([pg.ready() for pg in trials], timeout=60)  # as many trials as fit, all placed at once
print("placed", len(trials), "trials of", share, "GPU", flush=True)
t0 = time.time()
print("measured", measure({"width": 20}), "MiB in", round(time.time() - t0, 1), "s", flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a driver without a GPU: here it would measure on its own")
def test_the_probe_of_a_driver_without_a_gpu_measures_beside_a_full_gpu(tmp_path):
    """A driver without a GPU measures in a Ray actor on a GPU node, inside Tune's loop. With
    the GPU's shares all taken, the measurement must still run (it used to ask for its sliver
    then, and wait forever)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run([sys.executable, "-c", PROBE_SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the probe was never scheduled beside the full GPU: {(err.stdout or b'')!r}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "placed 6 trials" in done.stdout and "measured 20000.0 MiB" in done.stdout, done.stdout


def test_more_cpus_than_this_machine_has_are_refused_before_ray_starts(tmp_path, write_spec, tiny_spec, capsys):
    import os
    import time

    from archscale.cli import main

    tiny_spec["search"]["resources_per_trial"] = {"cpu": 512, "gpu": 0}
    run_dir, cores = tmp_path / "run", len(os.sched_getaffinity(0))
    start = time.monotonic()
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir)]) == 2
    assert time.monotonic() - start < 10  # no data loaded, no Ray started
    assert capsys.readouterr().err.splitlines() == [
        f"archscale: error: search.resources_per_trial.cpu: 512 CPU per trial, but this machine has {cores} cores, "
        f"so no trial could ever start; allowed: at most {cores}"]
    assert not run_dir.exists()
