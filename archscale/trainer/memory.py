"""GPU memory of a training job, measured: what ``gpu: auto`` sizes a trial's GPU share from.

A trial holds on its GPU the whole normalised dataset (the trainer keeps data on the
device) plus what one training step allocates at its peak: weights, gradients,
optimizer state and the activations kept for backward. The step is measured with
``torch.cuda.max_memory_allocated``; the dataset is counted from its shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archscale.trainer.config import TrainConfig
from archscale.trainer.optim import autocast, make_optimizer, uses_bf16

MiB = 2**20


def dataset_mb(num_images: int, image_shape: tuple[int, ...]) -> float:
    """MiB that ``num_images`` float32 images of ``image_shape`` (C, H, W) occupy on the device."""
    per_image = 1
    for dim in image_shape:
        per_image *= dim
    return num_images * per_image * 4 / MiB


def step_peak_mb(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, cfg: TrainConfig,
                 device: str | torch.device = "cuda") -> float:
    """Peak CUDA memory (MiB) of one training step of ``model`` on a batch of
    ``cfg.batch_size`` images of ``input_shape`` (C, H, W): forward, loss, backward and
    the optimizer step, in the trainer's precision. Only on CUDA (CPU has no such counter)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"step_peak_mb measures CUDA memory; got device {dev}")
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    model = model.to(dev).train()  # weights count: they are allocated after `base`
    # the batch as the trainer holds it: bf16 under bf16 autocast, in the model's memory format
    dtype = torch.bfloat16 if uses_bf16(dev, cfg.precision) else torch.float32
    x = torch.randn(cfg.batch_size, *input_shape, device=dev, dtype=dtype)  # (B, C, H, W)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (cfg.batch_size,), device=dev)
    opt = make_optimizer(model, cfg)
    with autocast(dev, cfg.precision):
        loss = F.cross_entropy(model(x).float(), y, label_smoothing=cfg.label_smoothing)
    loss.backward()
    opt.step()  # allocates the optimizer state (momentum, Adam moments)
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev)
    del x, y, loss, opt
    model.to("cpu")
    torch.cuda.empty_cache()
    return (peak - base) / MiB
