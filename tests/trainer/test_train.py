"""The training loop: it learns, it is deterministic, its schedules follow their formulas, its
augmentations stay on the device, and on a CPU the allocator keeps freed memory."""

import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import archscale
from archscale.trainer import RECIPES, TrainConfig, TrainingDiverged, train
from archscale.trainer.batches import normalise, random_crop, random_flip
from archscale.trainer.optim import make_optimizer


@pytest.mark.slow
def test_training_learns_and_reports_every_epoch(mnist_splits, tiny_model):
    seen = []
    result = train(tiny_model(), mnist_splits, TrainConfig(epochs=4, batch_size=32, lr=0.1, crop_padding=1),
                   callback=lambda epoch, m: seen.append((epoch, m)))
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert "test_accuracy" not in seen[0][1] and "test_accuracy" in seen[-1][1]
    assert result.val_accuracy > 0.5 and result.test_accuracy > 0.5  # chance is 0.1
    assert result.train_seconds > 0 and result.epochs == 4 and len(result.mean) == 1


@pytest.mark.slow
def test_same_seed_same_weights(mnist_splits, tiny_model):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, crop_padding=2, seed=7)
    a, b = tiny_model(), tiny_model()
    train(a, mnist_splits, cfg)
    train(b, mnist_splits, cfg)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_nan_loss_raises(mnist_splits, tiny_model):
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(tiny_model(), mnist_splits, TrainConfig(epochs=1, batch_size=64, lr=1e12, momentum=0.0, weight_decay=0))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_each_optimizer_and_schedule_fits_an_easy_task(separable_splits, linear_model, schedule, optimizer):
    """4 classes told apart by a bright quadrant: every optimizer under every schedule gets
    (nearly) all validation images right, and the learning rate follows the schedule."""
    lrs = []
    peak = 0.2 if optimizer == "sgd" else 0.05
    cfg = TrainConfig(epochs=4, batch_size=32, lr=peak, schedule=schedule, optimizer=optimizer)
    result = train(linear_model(), separable_splits, cfg, callback=lambda e, m: lrs.append(m["lr"]))
    assert result.val_accuracy >= 0.95 and result.test_accuracy >= 0.95  # chance is 0.25
    steps = 256 // 32  # per epoch
    if schedule == "constant":
        assert lrs == [peak] * 4
    elif schedule == "cosine":  # 0.5 * peak * (1 + cos(pi * step / total)) after each epoch's last step
        assert lrs == pytest.approx([0.5 * peak * (1 + math.cos(math.pi * e * steps / (4 * steps))) for e in (1, 2, 3, 4)],
                                    abs=1e-9)
    else:  # up to the peak at the end of warm-up (epoch 1), then down towards 0
        assert lrs[0] == pytest.approx(peak, rel=0.05) and lrs[0] > lrs[1] > lrs[2] > lrs[3] and lrs[3] < peak / 100


def test_onecycle_peaks_at_the_end_of_warmup(separable_splits, linear_model):
    lrs = []
    cfg = TrainConfig(epochs=4, batch_size=32, lr=0.4, schedule="onecycle", warmup=0.25)
    train(linear_model(), separable_splits, cfg, callback=lambda e, m: lrs.append(m["lr"]))
    assert lrs[0] == pytest.approx(0.4, rel=0.05)  # end of epoch 1 = end of warm-up
    assert lrs[-1] < 0.001


def test_crop_and_flip_on_the_device():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    assert torch.equal(random_crop(x, 0, gen), x)
    cropped = random_crop(x, 2, gen)
    assert cropped.shape == x.shape
    # each crop is a shifted window of the zero-padded image
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        assert any(torch.equal(cropped[i], padded[i, :, dy:dy + 4, dx:dx + 4]) for dy in range(5) for dx in range(5))
    flipped = random_flip(x, gen)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))


def test_crop_keeps_channels_last_and_moves_every_channel_alike():
    gen = torch.Generator().manual_seed(1)
    x = torch.arange(4 * 3 * 5 * 5, dtype=torch.float32).reshape(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    cropped = random_crop(x, 2, gen)
    assert cropped.is_contiguous(memory_format=torch.channels_last)
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    shifts = [(dy, dx) for dy in range(5) for dx in range(5)]
    for i in range(4):
        assert sum(torch.equal(cropped[i], padded[i, :, dy:dy + 5, dx:dx + 5]) for dy, dx in shifts) >= 1
    # the same generator state gives the same crops in either memory format
    again = random_crop(x.contiguous(), 2, torch.Generator().manual_seed(1))
    assert torch.equal(again, cropped)


# Minor page faults of each of 20 CPU training steps of a small conv net, after 5 warm-up
# steps; with "keep" the process first calls keep_freed_memory (as train does on a CPU).
FAULTS_PER_STEP = r"""
import json, resource, sys, torch
from torch import nn
from archscale.trainer.loop import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.manual_seed(0)
torch.set_num_threads(1)
model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
def step():
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
for _ in range(5):
    step()
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keeping_freed_memory_stops_the_page_faults_of_every_step(tmp_path):
    """glibc's default mmap threshold makes each step's activations fresh pages (thousands of
    faults per step); keep_freed_memory serves them from the heap again (none in a typical
    step). The heap may still grow once to a new peak (one step of ~1,500 faults was seen
    after the warm-up), so the typical step is compared: the median of 20."""
    env = {**os.environ, "PYTHONPATH": str(Path(archscale.__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}

    def faults(mode):
        proc = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    default, kept = faults("default"), faults("keep")
    assert kept["kept"] is True
    typical = {mode: statistics.median(run["faults"]) for mode, run in (("default", default), ("keep", kept))}
    assert typical["default"] > 1000, default  # 64 x 16 x 28 x 28 fp32 activations: 200 pages each, new every step
    assert typical["keep"] < typical["default"] / 20, kept


def test_normalise_uses_mean_and_std():
    x = torch.full((2, 1, 2, 2), 255, dtype=torch.uint8)
    out = normalise(x, [0.5], [0.25], torch.device("cpu"))
    assert torch.allclose(out, torch.full_like(out, 2.0))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_fused_optimizer_makes_the_per_tensor_update(tiny_model, optimizer):
    cfg = TrainConfig(optimizer=optimizer, lr=0.1, momentum=0.9, weight_decay=5e-4)
    fused_model, plain_model = tiny_model(), tiny_model()
    fused = make_optimizer(fused_model, cfg)
    assert fused.defaults.get("fused") is True  # this torch fuses on a CPU
    plain = make_optimizer(plain_model, cfg, fused=False)
    assert not plain.defaults.get("fused")
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for model, opt in ((fused_model, fused), (plain_model, plain)):
        for _ in range(3):  # momentum / moments come in from the second step
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)  # the same update, summed in another order


def test_the_config_names_the_device_unless_train_is_given_one(mnist_splits, tiny_model, monkeypatch):
    asked = []
    train_module = sys.modules["archscale.trainer.loop"]  # the module, not the function train
    monkeypatch.setattr(train_module, "resolve_device", lambda device: asked.append(device) or torch.device("cpu"))
    cfg = TrainConfig(epochs=1, batch_size=256, device="cuda:7")
    train(tiny_model(), mnist_splits, cfg)
    train(tiny_model(), mnist_splits, cfg, device="cpu")
    assert asked == ["cuda:7", "cpu"]


@pytest.mark.parametrize("overrides,message", [
    ({"epochs": 0}, "TrainConfig.epochs: 0 is not allowed; allowed: >= 1"),
    ({"momentum": 1.0}, "TrainConfig.momentum: 1.0 is not allowed; allowed: >= 0, < 1"),
    ({"schedule": "step"}, "TrainConfig.schedule: 'step' is not allowed; allowed: 'onecycle', 'cosine', 'constant', "
                           "'triangular'"),
])
def test_a_config_outside_its_fields_bounds_is_refused_in_one_line(overrides, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(**overrides)
    assert str(err.value) == message


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_valid_config(name):
    cfg = TrainConfig(**RECIPES[name])
    assert {k: getattr(cfg, k) for k in RECIPES[name]} == RECIPES[name]


# --------------------------------------------------------------------------- data larger than the device


@pytest.mark.parametrize("recipe", [dict(), dict(crop_padding=1, flip=True, cutout=3, mixup=0.4, swa=True)],
                         ids=["plain", "augmented+swa"])
def test_streamed_batches_train_exactly_as_batches_kept_on_the_device(separable_splits, small_convnet, recipe):
    cfg = TrainConfig(epochs=3, batch_size=48, lr=0.1, eval_batch_size=100, device="cpu", **recipe)  # 100: partial
    kept_model, streamed_model = small_convnet(), small_convnet()
    kept = train(kept_model, separable_splits, cfg, stream=False)
    streamed = train(streamed_model, separable_splits, cfg, stream=True)
    assert not kept.streamed and streamed.streamed
    untimed = [[{k: v for k, v in epoch.items() if k not in ("train_seconds", "epoch_seconds")} for epoch in r.history] for r in (kept, streamed)]
    assert untimed[0] == untimed[1]
    for (name, a), b in zip(kept_model.state_dict().items(), streamed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_device_budget_smaller_than_the_splits_makes_batches_stream(separable_splits, linear_model):
    from archscale.trainer.batches import DeviceImages, keeps_on_device

    nbytes = sum(x.numel() for x in (separable_splits.x_train, separable_splits.x_val, separable_splits.x_test)) * 4
    assert keeps_on_device(nbytes, torch.device("cpu")) and not keeps_on_device(nbytes, torch.device("cpu"), 0.1)
    cfg = TrainConfig(epochs=1, batch_size=64, device="cpu")
    assert train(linear_model(), separable_splits, cfg, max_device_mb=0.1).streamed
    assert not train(linear_model(), separable_splits, cfg, max_device_mb=1.0).streamed
    # streamed images stay uint8 on the host; batches arrive normalised, in the order asked for
    data = DeviceImages(separable_splits.x_train, separable_splits.y_train, [0.5], [0.25], torch.device("cpu"),
                        resident=False)
    assert data.images.dtype == torch.uint8
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    xb, yb = next(data.batches(order, 10))
    assert torch.equal(yb, separable_splits.y_train[order[:10]])
    assert torch.equal(xb, normalise(separable_splits.x_train[order[:10]], [0.5], [0.25], torch.device("cpu")))
