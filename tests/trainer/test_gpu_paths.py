"""What the trainer does on a GPU, reproduced on a CPU: bf16 data (as CUDA keeps it) through
SWA, channels_last batches after every augmentation, torch.compile without recompiles inside
the timed loop and with fresh caches per training run, and cuDNN's autotuning on CUDA.

torch.compile runs here with a counting backend over Dynamo (no Inductor, no C++ compiler):
what is traced, guarded and recompiled is Dynamo's, the same on a CPU as on a GPU."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from archscale.trainer import Splits, TrainConfig, train

train_module = importlib.import_module("archscale.trainer.loop")


@pytest.fixture(scope="module")
def rgb_splits() -> Splits:
    """3x8x8 images of 4 classes (class k: channel k % 3 bright in quadrant k), 128/64/64."""
    gen = torch.Generator().manual_seed(0)

    def make(n):
        y = torch.arange(n) % 4
        x = torch.randint(0, 100, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)
        for k in range(4):
            r, c = divmod(k, 2)
            x[y == k, k % 3, r * 4:r * 4 + 4, c * 4:c * 4 + 4] = 230
        return x, y

    (xt, yt), (xv, yv), (xs, ys) = make(128), make(64), make(64)
    return Splits(xt, yt, xv, yv, xs, ys, num_classes=4)


def convnet(seed: int = 0, width: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(width * 16, 4))


class Inputs(nn.Module):
    """Wraps a model and keeps the dtype and layout of every batch it is given in training."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        if self.training:
            self.seen.append((x.dtype, x.is_contiguous(memory_format=torch.channels_last), x.stride()))
        return self.inner(x)


def test_swa_on_bf16_data_recomputes_batchnorm_and_evaluates(rgb_splits):
    """bf16 precision keeps the data in bf16 (CUDA's path, here on a CPU); SWA's BatchNorm
    pass then runs the fp32 averaged model on it, which must be done under autocast."""
    model = Inputs(convnet())
    result = train(model, rgb_splits, TrainConfig(epochs=3, batch_size=32, lr=0.1, precision="bf16", swa=True,
                                                  swa_start=0.5), device="cpu")
    assert {dtype for dtype, _, _ in model.seen} == {torch.bfloat16}  # the data the model trained on
    assert result.val_accuracy > 0.5  # chance is 0.25
    bn = model.inner[1]
    assert torch.isfinite(bn.running_var).all() and not torch.equal(bn.running_var, torch.ones_like(bn.running_var))


@pytest.mark.parametrize("overrides", [dict(cutout=3), dict(crop_padding=2), dict(flip=True), dict(mixup=0.4),
                                       dict(crop_padding=2, flip=True, cutout=3, mixup=0.4)],
                         ids=lambda o: "+".join(o))
def test_every_augmented_batch_stays_channels_last(rgb_splits, overrides):
    model = Inputs(convnet())
    train(model, rgb_splits, TrainConfig(epochs=1, batch_size=32, channels_last=True, **overrides), device="cpu")
    assert model.seen and all(cl for _, cl, _ in model.seen), model.seen[:2]
    assert len({stride for _, _, stride in model.seen}) == 1  # the warm-up's strides, every step


class CountingBackend:
    """A torch.compile backend that counts the graphs Dynamo hands it and runs them as traced."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture
def counted_compile(monkeypatch):
    """``torch.compile`` as the trainer calls it, with the counting backend; Dynamo's caches
    cleared before and after."""
    backend = CountingBackend()
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, backend=backend, **kw))
    torch.compiler.reset()
    yield backend
    torch.compiler.reset()


@pytest.mark.parametrize("overrides", [dict(channels_last=True, cutout=3, crop_padding=2, flip=True),
                                       dict(sam_rho=0.05), dict(sam_rho=0.05, channels_last=True, cutout=3)],
                         ids=["cutout", "sam", "sam+cutout"])
def test_compiled_training_compiles_once_before_the_clock_starts(rgb_splits, counted_compile, overrides):
    """The warm-up compiles; no step of the timed loop may recompile (a recompile there would
    be counted in train_seconds, and each one costs the next ones their cache)."""
    cfg = TrainConfig(epochs=2, batch_size=32, compile=True, **overrides)
    with torch._dynamo.config.patch(error_on_recompile=True):
        result = train(convnet(), rgb_splits, cfg, device="cpu")
    assert counted_compile.graphs >= 1 and result.compile_seconds > 0


def test_every_training_run_in_a_process_is_compiled(rgb_splits, counted_compile):
    """A Ray worker reused across trials trains one model after another: each is compiled,
    not run eagerly once Dynamo's recompile limit is spent on earlier ones."""
    cfg = TrainConfig(epochs=1, batch_size=32, compile=True)
    with torch._dynamo.config.patch(recompile_limit=2):
        for width in (4, 6, 8, 10):
            before = counted_compile.graphs
            train(convnet(width=width), rgb_splits, cfg, device="cpu")
            assert counted_compile.graphs > before, f"width {width} ran uncompiled"


def test_cuda_turns_on_cudnn_autotuning(monkeypatch):
    """airbench94 sets cudnn.benchmark; the trainer does too on CUDA, and leaves it alone elsewhere."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    train_module.configure_backends(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    train_module.configure_backends(torch.device("cuda"))  # a device object: no GPU is touched
    assert torch.backends.cudnn.benchmark is True
