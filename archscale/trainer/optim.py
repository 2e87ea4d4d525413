"""How a training step runs: precision (bf16 autocast), cuDNN's autotuning, the optimizer
(fused where torch has it) and the learning-rate schedules of :data:`~archscale.trainer.config.SCHEDULES`."""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from archscale.trainer.config import SCHEDULES, TrainConfig


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether training on ``device`` at ``precision`` runs under bf16 autocast (and keeps its
    data in bf16): ``bf16``, or ``auto`` on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str):
    """The autocast context a training step on ``device`` at ``precision`` runs under."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, precision))


def configure_backends(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms for each new shape and keep the
    fastest (``cudnn.benchmark``, as airbench94 sets it): the batch shape of a training run
    never changes, and the timing happens in the untimed warm-up step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def make_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = True) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW, fused into one kernel per step where this torch can
    (CPU and CUDA; the same update as the per-tensor loop, fewer kernels)."""
    if cfg.optimizer == "sgd":
        make = partial(torch.optim.SGD, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                       weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        make = partial(torch.optim.AdamW, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: sgd, adamw")
    params = list(model.parameters())
    if fused:
        try:
            return make(params, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a device or dtype the fused kernels do not take
            pass
    return make(params)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule ``cfg.schedule`` over ``total_steps`` optimizer steps."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps + 1, pct_start=cfg.warmup,
            anneal_strategy="linear", cycle_momentum=False, div_factor=25.0, final_div_factor=1e3)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)  # 0 at the last step
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0)
    if cfg.schedule == "triangular":
        return torch.optim.lr_scheduler.LambdaLR(opt, triangular(total_steps, cfg.warmup))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; known: {', '.join(SCHEDULES)}")


def triangular(total_steps: int, warmup: float) -> Callable[[int], float]:
    """Piecewise-linear LR factor: 0 -> 1 over ``warmup * total_steps`` steps, then 1 -> 0."""
    peak = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:
        if step <= peak:
            return step / peak
        return max(0.0, (total_steps - step) / max(1, total_steps - peak))

    return factor
