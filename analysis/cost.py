"""Cost of a model: parameters, MACs (fvcore) and activation memory.

Units: fvcore counts one fused multiply-add as one "flop"; we call that count
``macs``. ``torch.utils.flop_counter`` counts two flops per multiply-add, so its
conv/linear totals are twice ours (``tests/analysis/test_cost.py`` checks this).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn


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
            from fvcore.nn import FlopCountAnalysis

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


MEMORY_SOURCES = ("cuda_peak", "cpu_estimate")


def cuda_peak_mb(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, device: torch.device | str = "cuda",
                 bf16: bool = True) -> float:
    """Measured peak CUDA memory of one training step (forward, loss, backward) on a
    random batch of ``batch_size``: ``torch.cuda.max_memory_allocated`` in MiB, weights,
    gradients and activations included. The model is moved to ``device`` and left there
    with its gradients cleared."""
    dev = torch.device(device)
    model = model.to(dev).train()
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    x = torch.randn((batch_size, *input_shape[1:]), device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss = model(x).float().logsumexp(1).mean()
    loss.backward()
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20
    model.zero_grad(set_to_none=True)
    return peak


def training_memory_mb(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
                       device: torch.device | str = "cpu", bf16: bool = True) -> tuple[float, str]:
    """Memory of one training batch and how it was obtained: measured on CUDA
    (:func:`cuda_peak_mb`, ``"cuda_peak"``), else estimated from the activation sizes
    (:func:`activation_mb`, fp32, ``"cpu_estimate"``)."""
    if torch.device(device).type == "cuda":
        return round(cuda_peak_mb(model, input_shape, batch_size, device, bf16), 3), "cuda_peak"
    return round(activation_mb(model, (1, *input_shape[1:]), batch_size), 3), "cpu_estimate"
