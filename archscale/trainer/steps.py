"""One optimizer step: the loss (label smoothing, mixup's two targets), a plain step, and
SAM's two passes (Foret et al. 2021) with the BatchNorm statistics of the first kept."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from archscale.trainer.config import TrainConfig
from archscale.trainer.optim import autocast


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics but keep their running statistics
    (SAM's second pass must not count the batch twice): the buffers are saved and copied back.
    No module attribute changes (setting ``momentum`` would make torch.compile recompile)."""
    buffers = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in zip(buffers, saved):
                b.copy_(value)


def loss_of(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, yb2: torch.Tensor | None, lam: float,
            cfg: TrainConfig, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's cross-entropy (label-smoothed by ``cfg``; with mixup's second labels ``yb2``,
    ``lam`` of it against ``yb`` and the rest against ``yb2``) and the fp32 logits."""
    with autocast(dev, cfg.precision):
        logits = model(xb)
    logits = logits.float()
    loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
    if yb2 is not None:
        loss = lam * loss + (1 - lam) * F.cross_entropy(logits, yb2, label_smoothing=cfg.label_smoothing)
    return loss, logits


def sam_step(model: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
             yb2: torch.Tensor | None, lam: float, cfg: TrainConfig, dev: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One SAM update (Foret et al. 2021): gradient at the worst nearby point, step from here."""
    loss, logits = loss_of(model, xb, yb, yb2, lam, cfg, dev)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = torch.norm(torch.stack([p.grad.norm(2) for p in params]), 2)
    scale = cfg.sam_rho / (grad_norm + 1e-12)
    shifts = []
    with torch.no_grad():
        for p in params:
            e = p.grad * scale
            p.add_(e)
            shifts.append(e)
    opt.zero_grad(set_to_none=True)
    with frozen_bn_stats(model):
        second, _ = loss_of(model, xb, yb, yb2, lam, cfg, dev)
        second.backward()
    with torch.no_grad():
        for p, e in zip(params, shifts):
            p.sub_(e)
    opt.step()
    return loss, logits


def step(model: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
         yb2: torch.Tensor | None, lam: float, cfg: TrainConfig, dev: torch.device
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step (SAM's two passes with ``cfg.sam_rho``); returns the loss and the logits."""
    if cfg.sam_rho > 0:
        return sam_step(model, opt, xb, yb, yb2, lam, cfg, dev)
    loss, logits = loss_of(model, xb, yb, yb2, lam, cfg, dev)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, logits
