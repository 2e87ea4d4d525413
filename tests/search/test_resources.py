"""GPU shares: the sizing arithmetic and ``gpu: auto`` with the measured memory injected
(no GPU on CI: what a GPU would measure is given, the logic around it is real)."""

import math
import pickle

import pytest

from archscale.search.resources import MAX_SHARE, RAY_STEP, TrialResources, gpu_need_mb, gpu_share
from archscale.search.context import trial_context
from archscale.search.evaluate import Evaluator
from archscale.search.spec import parse_spec

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
