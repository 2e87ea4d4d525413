"""Fixtures of the trainer tests: data splits (real digits and an easy synthetic task), a tiny
model, and a spy on the weight averages SWA and EMA keep."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from archscale.trainer import Splits, load_dataset, split


@pytest.fixture(scope="session")
def mnist_splits() -> Splits:
    """Half of mnist-5k's training images (1,800 after the 10% validation split)."""
    return split(load_dataset("mnist-5k"), 0.1, subset=0.5, seed=0)


def _separable(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 4
    x = torch.randint(0, 100, (n, 1, 8, 8), generator=gen, dtype=torch.uint8)
    for k in range(4):  # class k: its quadrant is bright
        rows, cols = divmod(k, 2)
        sel = y == k
        x[sel, :, rows * 4:rows * 4 + 4, cols * 4:cols * 4 + 4] = torch.randint(
            200, 256, (int(sel.sum()), 1, 4, 4), generator=gen, dtype=torch.uint8)
    perm = torch.randperm(n, generator=gen)
    return x[perm], y[perm]


@pytest.fixture(scope="session")
def separable_splits() -> Splits:
    """An easy task a linear model fits exactly: 1x8x8 images of 4 classes, class k has its
    k-th quadrant bright (200-255) on noise (0-99); 256 training, 128 validation, 128 test images."""
    gen = torch.Generator().manual_seed(0)
    (xt, yt), (xv, yv), (xs, ys) = (_separable(n, gen) for n in (256, 128, 128))
    return Splits(xt, yt, xv, yv, xs, ys, num_classes=4)


@pytest.fixture
def linear_model():
    """``make(seed=0)``: Flatten + Linear(64, 4), for the separable task."""

    def make(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 4))

    return make


@pytest.fixture(scope="session")
def small_convnet():
    """``make(seed=0)``: conv, BatchNorm, ReLU, pool, linear, for the separable task (1x8x8, 4 classes)."""

    def make(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(8 * 4 * 4, 4))

    return make


@pytest.fixture
def tiny_model():
    """``make(seed=0)``: the smallest budgeted network for 1x28x28 digits (BatchNorm included)."""
    from archscale.space import build, get_space

    def make(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        arch = get_space("budgeted").resolve(
            {"c1_width": 4, "c2_width": 8, "c3_width": 8, "c4_width": 8, **{f"c{i}_convs": 1 for i in range(1, 5)}},
            {"in_channels": 1, "num_classes": 10, "image_size": 28})
        return build(arch)

    return make


@pytest.fixture
def averaged_snapshots(monkeypatch):
    """Records, for every ``AveragedModel`` that ``train`` makes (SWA, EMA), a copy of the
    state dict of the model it was handed at each ``update_parameters``: a list per instance."""
    from torch.optim.swa_utils import AveragedModel

    # the training loop's module (``archscale.trainer.train`` is the function the package exports)
    train_module = importlib.import_module("archscale.trainer.loop")

    records: list[list[dict[str, torch.Tensor]]] = []

    class Recording(AveragedModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.snapshots = []
            records.append(self.snapshots)

        def update_parameters(self, model):
            self.snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            super().update_parameters(model)

    monkeypatch.setattr(train_module, "AveragedModel", Recording)
    return records
