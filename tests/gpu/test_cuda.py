"""The trainer's CUDA paths, on a GPU, without Ray (the lent GPU machine has none): the memory
probe, the memory cap a trial sets, the bf16 path, SWA, EMA, SAM, torch.compile and latency.
Run with ``pytest -m gpu tests/gpu``; every test skips where CUDA is not available.
Imports only what the GPU image has (no ray, optuna, pydantic or fvcore)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from archscale.trainer import Splits, TrainConfig, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def rgb_splits(n: int = 2048, side: int = 16) -> Splits:
    """3 x side x side images of 4 classes (class k: channel k % 3 bright in its quadrant)."""
    gen = torch.Generator().manual_seed(0)

    def make(count):
        y = torch.arange(count) % 4
        x = torch.randint(0, 100, (count, 3, side, side), generator=gen, dtype=torch.uint8)
        h = side // 2
        for k in range(4):
            r, c = divmod(k, 2)
            x[y == k, k % 3, r * h:(r + 1) * h, c * h:(c + 1) * h] = 230
        return x, y

    (xt, yt), (xv, yv), (xs, ys) = make(n), make(512), make(512)
    return Splits(xt, yt, xv, yv, xs, ys, num_classes=4)


def convnet(seed: int = 0, width: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(width * 4, 4))


BASE = dict(epochs=3, batch_size=128, lr=0.1, device="cuda")


def test_memory_probe_measures_a_step_that_grows_with_the_batch():
    from archscale.trainer.memory import step_peak_mb

    small = step_peak_mb(convnet(), (3, 32, 32), 4, TrainConfig(batch_size=64))
    big = step_peak_mb(convnet(), (3, 32, 32), 4, TrainConfig(batch_size=512))
    fp32 = step_peak_mb(convnet(), (3, 32, 32), 4, TrainConfig(batch_size=512, precision="fp32"))
    assert 0 < small < big < fp32, (small, big, fp32)
    assert big > 4 * small  # activations dominate: about 8x the batch, 8x the memory


CAP_SCRIPT = """
import torch
torch.cuda.set_per_process_memory_fraction(0.01, 0)  # what a trial with a 0.01 GPU share sets
cap = 0.01 * torch.cuda.get_device_properties(0).total_memory
small = torch.empty(int(cap * 0.5), dtype=torch.uint8, device="cuda")  # inside the cap
try:
    torch.empty(int(cap * 0.8), dtype=torch.uint8, device="cuda")  # 1.3x the cap with the first
except torch.OutOfMemoryError:
    print("capped")
"""


def test_a_trials_memory_cap_refuses_what_its_share_does_not_hold():
    done = subprocess.run([sys.executable, "-c", CAP_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "capped"


def test_bf16_path_keeps_bf16_data_and_learns():
    seen = []
    model = convnet()
    model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype) if m.training else None)
    result = train(model, rgb_splits(), TrainConfig(**BASE, channels_last=True, crop_padding=2, flip=True, cutout=4))
    assert set(seen) == {torch.bfloat16}
    assert result.val_accuracy > 0.9 and result.test_accuracy > 0.9
    assert result.peak_memory_mb and result.peak_memory_mb > 0 and torch.backends.cudnn.benchmark


@pytest.mark.parametrize("overrides", [dict(swa=True, swa_start=0.5), dict(ema=0.9), dict(sam_rho=0.05),
                                       dict(swa=True, swa_start=0.5, sam_rho=0.05, mixup=0.2)],
                         ids=["swa", "ema", "sam", "swa+sam+mixup"])
def test_each_technique_trains_on_cuda(overrides):
    model = convnet()
    result = train(model, rgb_splits(), TrainConfig(**BASE, channels_last=True, **overrides))
    assert result.val_accuracy > 0.85, result.history
    assert all(torch.isfinite(v.float()).all() for v in model.state_dict().values())


@pytest.mark.parametrize("overrides", [dict(channels_last=True, crop_padding=2, flip=True, cutout=4),
                                       dict(channels_last=True, cutout=4, sam_rho=0.05)], ids=["augment", "sam"])
def test_compile_on_cuda_compiles_before_the_clock_and_never_again(overrides):
    with torch._dynamo.config.patch(error_on_recompile=True):
        result = train(convnet(), rgb_splits(), TrainConfig(**BASE, compile=True, **overrides))
    assert result.compile_seconds > 0 and result.val_accuracy > 0.85
    assert result.train_seconds < result.wall_seconds - result.compile_seconds


def test_latency_on_cuda_grows_with_the_batch():
    from archscale.analysis.cost import latency_ms

    model = convnet().cuda()
    one = latency_ms(model, (3, 32, 32), 1, autocast_dtype=torch.bfloat16)
    many = latency_ms(model, (3, 32, 32), 4096, autocast_dtype=torch.bfloat16)
    assert 0 < one < many


def test_proxies_on_cuda_agree_with_the_cpu():
    """search.prescreen scores its pool on the driver's GPU when it has one: each proxy there
    within 0.1% of its value on the CPU (the same weights, the same minibatch)."""
    import copy

    from archscale.analysis.proxies import minibatch, score

    splits = rgb_splits(256)
    x, y = minibatch(splits.x_train, splits.y_train, 64, 0)
    names = ("synflow", "naswot", "grad_norm", "zico")
    model = convnet()
    cpu = score(model, x, y, names)
    gpu = score(copy.deepcopy(model).cuda(), x.cuda(), y.cuda(), names)
    assert not cpu.errors and not gpu.errors, (cpu.errors, gpu.errors)
    for name in names:
        assert gpu.values[name] == pytest.approx(cpu.values[name], rel=1e-3), name
