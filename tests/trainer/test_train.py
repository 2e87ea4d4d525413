import importlib
import platform

import pytest
import torch
from torch import nn

from archscale.space import build, get_space
from archscale.trainer import RECIPES, TrainConfig, TrainingDiverged, load_dataset, split, train
from archscale.trainer.train import _optimizer, keep_freed_memory, normalise, random_crop, random_flip


@pytest.fixture(scope="module")
def small_splits():
    return split(load_dataset("mnist-5k"), 0.1, subset=0.5, seed=0)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    arch = get_space("budgeted").resolve(
        {"c1_width": 4, "c2_width": 8, "c3_width": 8, "c4_width": 16, **{f"c{i}_convs": 1 for i in range(1, 5)}},
        {"in_channels": 1, "num_classes": 10, "image_size": 28})
    return build(arch)


def test_training_learns_and_reports_every_epoch(small_splits):
    seen = []
    result = train(tiny_model(), small_splits, TrainConfig(epochs=4, batch_size=32, lr=0.1, crop_padding=1),
                   callback=lambda epoch, m: seen.append((epoch, m)))
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert "test_accuracy" not in seen[0][1] and "test_accuracy" in seen[-1][1]
    assert result.val_accuracy > 0.5 and result.test_accuracy > 0.5  # chance is 0.1
    assert result.train_seconds > 0 and result.epochs == 4 and len(result.mean) == 1


def test_same_seed_same_weights(small_splits):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, crop_padding=2, seed=7)
    a, b = tiny_model(), tiny_model()
    train(a, small_splits, cfg)
    train(b, small_splits, cfg)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_nan_loss_raises(small_splits):
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(tiny_model(), small_splits, TrainConfig(epochs=1, batch_size=64, lr=1e12, momentum=0.0, weight_decay=0))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_schedules_and_optimizers_run(small_splits, schedule, optimizer):
    cfg = TrainConfig(epochs=1, batch_size=256, lr=0.01, schedule=schedule, optimizer=optimizer, label_smoothing=0.1)
    result = train(tiny_model(), small_splits, cfg)
    assert 0 <= result.val_accuracy <= 1


def test_onecycle_peaks_at_the_end_of_warmup(small_splits):
    lrs = []
    model = tiny_model()
    cfg = TrainConfig(epochs=4, batch_size=128, lr=0.4, schedule="onecycle", warmup=0.25)
    train(model, small_splits, cfg, callback=lambda e, m: lrs.append(m["lr"]))
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


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_cpu_training_keeps_freed_memory_for_reuse():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # once per process, then the same answer


def test_normalise_uses_mean_and_std():
    x = torch.full((2, 1, 2, 2), 255, dtype=torch.uint8)
    out = normalise(x, [0.5], [0.25], torch.device("cpu"))
    assert torch.allclose(out, torch.full_like(out, 2.0))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_fused_optimizer_makes_the_per_tensor_update(optimizer):
    cfg = TrainConfig(optimizer=optimizer, lr=0.1, momentum=0.9, weight_decay=5e-4)
    fused_model, plain_model = tiny_model(), tiny_model()
    fused = _optimizer(fused_model, cfg)
    assert fused.defaults.get("fused") is True  # this torch fuses on a CPU
    plain = _optimizer(plain_model, cfg, fused=False)
    assert not plain.defaults.get("fused")
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for model, opt in ((fused_model, fused), (plain_model, plain)):
        for _ in range(3):  # momentum / moments come in from the second step
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)  # the same update, summed in another order


def test_the_config_names_the_device_unless_train_is_given_one(small_splits, monkeypatch):
    asked = []
    train_module = importlib.import_module("archscale.trainer.train")  # the module, not the function train
    monkeypatch.setattr(train_module, "resolve_device", lambda device: asked.append(device) or torch.device("cpu"))
    cfg = TrainConfig(epochs=1, batch_size=256, device="cuda:7")
    train(tiny_model(), small_splits, cfg)
    train(tiny_model(), small_splits, cfg, device="cpu")
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
