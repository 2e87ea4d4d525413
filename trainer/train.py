"""A fast training and evaluation loop.

The whole split lives on the training device as one normalised float tensor; every
epoch is a ``randperm`` over it, and augmentation (random crop with padding, flip)
is done on whole batches on the device. No DataLoader, no worker processes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainer.data import Splits

EpochCallback = Callable[[int, dict], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) | "adamw"
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # "onecycle" | "cosine" | "constant"
    warmup: float = 0.25  # fraction of all steps spent rising to the peak (onecycle)
    label_smoothing: float = 0.0
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU | "fp32" | "bf16"
    crop_padding: int = 0  # pixels of zero padding for random crops; 0 = no crop
    flip: bool = False  # random horizontal flips
    eval_batch_size: int = 1024
    seed: int = 0


@dataclass
class TrainResult:
    val_accuracy: float
    test_accuracy: float
    epochs: int
    train_seconds: float  # time in the training steps only (no evaluation, no data loading)
    wall_seconds: float  # whole call, data transfer and evaluation included
    peak_memory_mb: float | None  # torch.cuda.max_memory_allocated, CUDA only
    mean: list[float] = field(default_factory=list)  # per-channel input normalisation used
    std: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    x = images.float().div_(255)
    return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).clamp_min(1e-3).tolist()


def normalise(images: torch.Tensor, mean: list[float], std: list[float], device: torch.device) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 on ``device``, (x / 255 - mean) / std."""
    x = images.to(device, non_blocking=True).float().div_(255)
    m = torch.tensor(mean, device=device)[None, :, None, None]
    s = torch.tensor(std, device=device)[None, :, None, None]
    return x.sub_(m).div_(s)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``padding`` pixels with zero fill, per image: (B, C, H, W)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2: (B, C, H, W)."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def _autocast(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: sgd, adamw")


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps + 1, pct_start=cfg.warmup,
            anneal_strategy="linear", cycle_momentum=False, div_factor=25.0, final_div_factor=1e3)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)  # 0 at the last step
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; known: onecycle, cosine, constant")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024, precision: str = "auto") -> float:
    """Top-1 accuracy of ``model`` on normalised images ``x`` (already on the model's device)."""
    if len(y) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    with _autocast(x.device, precision):
        for i in range(0, len(y), batch_size):
            correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(y)


def train(model: nn.Module, splits: Splits, cfg: TrainConfig, device: str | torch.device = "auto",
          callback: EpochCallback | None = None) -> TrainResult:
    """Train ``model`` on ``splits`` and return its validation and test accuracy.

    ``callback(epoch, metrics)`` is called after every epoch with ``epoch`` (1-based),
    ``train_loss``, ``train_accuracy``, ``val_accuracy``, ``lr`` and ``train_seconds``;
    on the last epoch ``test_accuracy`` is added (the test split is never used to choose).
    """
    start = time.perf_counter()
    dev = resolve_device(device) if isinstance(device, str) else device
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    mean, std = channel_stats(splits.x_train)
    x_train = normalise(splits.x_train, mean, std, dev)  # (N, C, H, W) float32
    y_train = splits.y_train.to(dev)
    x_val, y_val = normalise(splits.x_val, mean, std, dev), splits.y_val.to(dev)
    model = model.to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    n = len(y_train)
    steps_per_epoch = max(1, n // cfg.batch_size)  # drop the last partial batch
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, cfg.epochs * steps_per_epoch)
    history: list[dict] = []
    train_seconds = 0.0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(n, device=dev, generator=gen)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if cfg.crop_padding > 0:
                xb = random_crop(xb, cfg.crop_padding, gen)
            if cfg.flip:
                xb = random_flip(xb, gen)
            with _autocast(dev, cfg.precision):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == yb).sum()
        mean_loss = loss_sum.item() / steps_per_epoch  # one sync per epoch
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        train_seconds += time.perf_counter() - t0
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(f"loss became {mean_loss} in epoch {epoch}")
        metrics = {
            "epoch": epoch,
            "train_loss": mean_loss,
            "train_accuracy": correct.item() / (steps_per_epoch * cfg.batch_size),
            "val_accuracy": evaluate(model, x_val, y_val, cfg.eval_batch_size, cfg.precision),
            "lr": opt.param_groups[0]["lr"],
            "train_seconds": train_seconds,
        }
        if epoch == cfg.epochs:
            x_test = normalise(splits.x_test, mean, std, dev)
            metrics["test_accuracy"] = evaluate(model, x_test, splits.y_test.to(dev), cfg.eval_batch_size, cfg.precision)
        history.append(metrics)
        if callback is not None:
            callback(epoch, dict(metrics))

    last = history[-1] if history else {"val_accuracy": float("nan"), "test_accuracy": float("nan")}
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return TrainResult(
        val_accuracy=last["val_accuracy"], test_accuracy=last["test_accuracy"], epochs=len(history),
        train_seconds=train_seconds, wall_seconds=time.perf_counter() - start, peak_memory_mb=peak,
        mean=mean, std=std, history=history,
    )
