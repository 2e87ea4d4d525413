"""Cost of a model: parameters, MACs (fvcore), activation memory and inference latency.

Units: fvcore counts one fused multiply-add as one "flop"; we call that count
``macs``. ``torch.utils.flop_counter`` counts two flops per multiply-add, so its
conv/linear totals are twice ours (``tests/analysis/test_cost.py`` checks this).
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # fvcore uses torch.jit at import, deprecated in torch 2.9+
    from fvcore.nn import FlopCountAnalysis


@dataclass(frozen=True)
class Cost:
    params: int  # trainable parameters
    macs: int  # multiply-adds of one forward pass of ONE image (fvcore)
    activation_mb: float  # activations stored for backward, per training batch, fp32, estimated


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on a zero input of ``input_shape`` (B, C, H, W), per image."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # fvcore uses torch.jit, deprecated in torch 2.9+
            x = torch.zeros(input_shape)
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            total = analysis.total()
    finally:
        model.train(was_training)
    return int(round(total / input_shape[0]))


def activation_mb(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, bytes_per_element: int = 4) -> float:
    """Estimate of the activation memory a training step keeps for backward: the sum of
    every leaf module's output size, scaled to ``batch_size``. An estimate for CPU runs;
    on CUDA the trainer measures ``torch.cuda.max_memory_allocated`` instead."""
    total = 0
    hooks = []

    def hook(_module, _inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    for module in model.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    per_image = total / input_shape[0]
    return per_image * batch_size * bytes_per_element / 2**20


def measure(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1) -> Cost:
    """Params, MACs per image and estimated activation memory of a batch."""
    one = (1, *input_shape[1:])
    return Cost(count_params(model), count_macs(model, one), round(activation_mb(model, one, batch_size), 3))


# --------------------------------------------------------------------------- latency


def _sync_for(device: torch.device) -> Callable[[], None]:
    """What makes the host wait for queued work on ``device``: CUDA kernels run
    asynchronously, so a timer read without ``torch.cuda.synchronize`` measures the launch only."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1, *, warmup: int = 3,
               repeats: int = 20, max_seconds: float = 2.0, min_repeats: int = 3,
               autocast_dtype: torch.dtype | None = None) -> float:
    """Median wall time in milliseconds of one inference forward pass of a batch of
    ``batch_size`` images of ``input_shape`` ((C, H, W) or (B, C, H, W): B is ignored), on the
    device the model is on, in eval mode under ``torch.no_grad``.

    ``warmup`` passes are run and discarded first (allocator, cuDNN autotuning, caches);
    then up to ``repeats`` timed passes, fewer if ``max_seconds`` runs out (never fewer
    than ``min_repeats``). On CUDA the device is synchronised before each timer read.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``) times the model under autocast, as trained.
    """
    device = model_device(model)
    sync = _sync_for(device)
    chw = tuple(input_shape[-3:])
    x = torch.randn(batch_size, *chw, device=device)
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                             enabled=autocast_dtype is not None):
            for _ in range(warmup):
                model(x)
            sync()
            budget_end = time.perf_counter() + max_seconds
            for i in range(repeats):
                t0 = time.perf_counter()
                model(x)
                sync()
                times.append(time.perf_counter() - t0)
                if i + 1 >= min_repeats and time.perf_counter() > budget_end:
                    break
    finally:
        model.train(was_training)
    return statistics.median(times) * 1e3
