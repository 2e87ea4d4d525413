"""Training-free proxies: a score of an untrained network from one seeded minibatch.

Each proxy takes the network as built (its initial weights, which the caller fixes by seeding
before it builds) and one minibatch ``(x, y)`` of normalised images and labels, and returns
one number; a higher score is meant to predict a higher trained accuracy. They work on any
``nn.Module`` (every family, users' included): parameters are found by their module type
(``Conv*d`` and ``Linear`` weights, as the papers' reference code does), activations by
forward hooks. A network on which a proxy cannot be computed (no such layers, a value that is
not finite, a forward pass that fails) gets no value and a reason (:class:`ProxyError`).

- ``synflow``: :func:`synflow`, Tanaka et al., NeurIPS 2020, as a zero-cost proxy in
  Abdelfattah et al., ICLR 2021;
- ``naswot``: :func:`naswot`, Mellor et al., ICML 2021;
- ``grad_norm``: :func:`grad_norm`, Abdelfattah et al., ICLR 2021;
- ``zico``: :func:`zico`, Li et al., ICLR 2023.

``params`` and ``macs`` (the baselines every proxy is judged against, after ZiCo's finding that
most proxies do no better than the parameter count) are measured by :mod:`archscale.analysis.cost`
and need nothing here. :func:`score` computes several proxies on copies of one network and times
each. Nothing here imports ray or optuna.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

PROXIES = ("synflow", "naswot", "grad_norm", "zico")  # computed here
BASELINES = ("params", "macs")  # measured with the other costs
ALL = BASELINES + PROXIES  # every name a spec may list
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
# Activations whose pattern naswot reads: the sign of their input (a ReLU's on/off; for the
# smooth ones, which side of the kink the unit is on).
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Hardswish)


class ProxyError(ValueError):
    """Why a proxy has no value for a network (one line)."""


def _weighted(model: nn.Module) -> list[nn.Module]:
    layers = [m for m in model.modules() if isinstance(m, WEIGHTED) and getattr(m, "weight", None) is not None]
    if not layers:
        raise ProxyError("the network has no Conv or Linear layer")
    return layers


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ProxyError(f"{what} is {value} (not finite)")
    return float(value)


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Synaptic flow (Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks without any data
    by iteratively conserving synaptic flow", NeurIPS 2020), scored as in Abdelfattah, Mehrotra,
    Dudziak, Lane, "Zero-Cost Proxies for Lightweight NAS", ICLR 2021:

        R = 1^T f(1; |theta|),    synflow = sum over weights theta of |theta * dR/dtheta|

    Every parameter is replaced by its absolute value, the input is a single all-ones image of
    ``x``'s shape, the network runs in float64 and in eval mode (BatchNorm then applies its
    initial running statistics, i.e. an affine map, where the reference code removes it), and
    the sum is over the weights of Conv and Linear layers. Data and labels are not used."""
    net = copy.deepcopy(model).double().eval()
    layers = _weighted(net)
    with torch.no_grad():
        for p in net.state_dict().values():
            if torch.is_floating_point(p):
                p.abs_()
    net.zero_grad(set_to_none=True)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    torch.sum(net(ones)).backward()
    total = sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in layers if m.weight.grad is not None)
    return _finite(total, "synflow")


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """NASWOT (Mellor, Turner, Storkey, Crowley, "Neural Architecture Search without Training",
    ICML 2021): the log-determinant of the kernel of binary activation patterns,

        K_H[i, j] = N_A - d_H(c_i, c_j),    naswot = log |K_H|

    where c_i is input i's code (1 where a unit's input is positive, over the N_A units of every
    activation module) and d_H the Hamming distance. The network runs in train mode (BatchNorm
    on the batch's statistics), as the reference code. Activation modules are those of
    :data:`ACTIVATIONS`; a network that applies its activations as functions has no pattern to read."""
    net = copy.deepcopy(model).train()
    codes: list[torch.Tensor] = []

    def hook(_module, inputs, _output):
        codes.append((inputs[0].detach().reshape(len(inputs[0]), -1) > 0).double())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, ACTIVATIONS)]
    if not handles:
        raise ProxyError("the network has no activation module (nn.ReLU and the like) to read a pattern from")
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    c = torch.cat(codes, dim=1)
    k = c @ c.T + (1 - c) @ (1 - c).T  # units where both are on, plus both off: N_A - Hamming distance
    sign, logdet = torch.linalg.slogdet(k)
    if sign <= 0:
        raise ProxyError(f"naswot: the activation-pattern kernel of the {len(x)} inputs is singular "
                         "(two inputs share a pattern)")
    return _finite(float(logdet), "naswot")


def _loss_grads(net: nn.Module, layers: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    net.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(x), y).backward()
    return [m.weight.grad.detach().clone() if m.weight.grad is not None else torch.zeros_like(m.weight)
            for m in layers]


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Gradient norm (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021):
    the sum over Conv and Linear layers of the Euclidean norm of the cross-entropy loss's
    gradient with respect to the layer's weight, on one minibatch, in train mode:

        grad_norm = sum over layers l of || dL/dW_l ||_2"""
    net = copy.deepcopy(model).train()
    layers = _weighted(net)
    grads = _loss_grads(net, layers, x, y)
    return _finite(sum(float(g.norm()) for g in grads), "grad_norm")


def zico(model: nn.Module, x: torch.Tensor, y: torch.Tensor, splits: int = 2) -> float:
    """ZiCo (Li, Yang, Wang, Zhang, Marculescu, "ZiCo: Zero-shot NAS via Inverse Coefficient of
    Variation on Gradients", ICLR 2023):

        zico = sum over layers l of log( sum over theta in l of E[|g_theta|] / sqrt(Var[g_theta]) )

    where g_theta is the cross-entropy gradient of weight theta and the mean and (population)
    variance run over ``splits`` minibatches, here the one minibatch cut into ``splits`` equal
    parts, as the reference code splits its batch. Weights whose gradient does not vary are left
    out; a layer whose sum is 0 adds nothing (both as the reference code). Conv and Linear
    weights, train mode."""
    if splits < 2 or len(x) < splits:
        raise ProxyError(f"zico needs at least {max(splits, 2)} inputs (got {len(x)})")
    net = copy.deepcopy(model).train()
    layers = _weighted(net)
    parts = [_loss_grads(net, layers, xb, yb) for xb, yb in zip(x.chunk(splits), y.chunk(splits))]
    total = 0.0
    for per_layer in zip(*parts):
        g = torch.stack([t.reshape(-1).double() for t in per_layer])
        std = g.std(dim=0, unbiased=False)
        keep = std != 0
        s = float((g.abs().mean(dim=0)[keep] / std[keep]).sum())
        if s != 0:
            total += math.log(s)
    return _finite(total, "zico")


FUNCTIONS: dict[str, Callable[..., float]] = {"synflow": synflow, "naswot": naswot, "grad_norm": grad_norm,
                                              "zico": zico}


@dataclass
class Scores:
    """What :func:`score` found: a value, a reason or nothing per proxy, and each one's seconds."""

    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float | str]:
        """As trials.csv columns: ``proxy_<name>`` (the value), ``proxy_<name>_s`` (seconds) and
        ``proxy_errors`` (``name: reason``, joined by ``; ``) when any has no value."""
        out: dict[str, float | str] = {}
        for name, seconds in self.seconds.items():
            if name in self.values:
                out[f"proxy_{name}"] = self.values[name]
            out[f"proxy_{name}_s"] = round(seconds, 6)
        if self.errors:
            out["proxy_errors"] = "; ".join(f"{k}: {v}" for k, v in self.errors.items())
        return out


def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names=PROXIES) -> Scores:
    """Each proxy of ``names`` (those of :data:`PROXIES`; the baselines are skipped) on ``model``
    (left unchanged: each works on a copy) and the minibatch ``(x, y)``, timed. A proxy that
    raises gives its reason instead of a value (a family's code may fail in any way)."""
    out = Scores()
    for name in names:
        if name not in FUNCTIONS:
            continue
        start = time.perf_counter()
        try:
            out.values[name] = FUNCTIONS[name](model, x, y)
        except ProxyError as err:
            out.errors[name] = str(err)
        except Exception as err:  # noqa: BLE001 - a user's network may fail in any way; the others go on
            out.errors[name] = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        out.seconds[name] = time.perf_counter() - start
    return out


def minibatch(x: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` images and labels drawn without replacement from ``(x, y)`` (uint8 or float
    NCHW) by a generator seeded with ``seed``, as float32 scaled to [0, 1] (uint8) and then
    standardised per channel with the minibatch's own mean and standard deviation."""
    n = len(y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:min(size, n)]
    xb = x[order].float()
    if x.dtype == torch.uint8:
        xb = xb / 255.0
    mean = xb.mean(dim=(0, 2, 3), keepdim=True)
    std = xb.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (xb - mean) / std, y[order].long()
