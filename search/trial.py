"""One trial: resolve the sampled architecture, measure its cost, reject it if over
budget, otherwise train it and report every epoch to Ray Tune.

Runs inside a Ray worker; imports ray lazily so the module can be imported anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from analysis.cost import measure, training_memory_mb
from analysis.export import save_trial, trial_dir
from space import Arch, build, get_space
from trainer import Splits, TrainConfig, resolve_device, train

ERROR_FILE = "error.txt"


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides the sampled values (picklable)."""

    run_dir: str
    family: str
    fixed: dict[str, Any]
    data_context: dict[str, int]
    data_info: dict[str, Any]  # dataset, root, val_fraction, subset, seed: how to reload the splits
    train: dict[str, Any]  # TrainSpec fields
    max_params: int | None = None
    max_macs: int | None = None
    cpus: float = 1.0
    seed: int = 0
    max_memory_mb: float | None = None  # peak training memory of one batch, MiB


def resolve_arch(ctx: TrialContext, sampled: dict[str, Any]) -> Arch:
    return get_space(ctx.family).resolve({**ctx.fixed, **sampled}, ctx.data_context)


def budget_violation(ctx: TrialContext, params: int, macs: int, memory_mb: float | None = None,
                     arch: Arch | None = None, memory_source: str = "cpu_estimate") -> str | None:
    """Why a configuration is infeasible (over a budget, or outside the family's search
    constraint, e.g. efficientnet's alpha*beta^2*gamma^2 ~ target), or None."""
    broken = []
    if arch is not None and (why := get_space(arch.family).constraint_violation(arch.params)):
        broken.append(why)
    if ctx.max_params is not None and params > ctx.max_params:
        broken.append(f"params {params:,} > max_params {ctx.max_params:,}")
    if ctx.max_macs is not None and macs > ctx.max_macs:
        broken.append(f"macs {macs:,} > max_macs {ctx.max_macs:,}")
    if ctx.max_memory_mb is not None and memory_mb is not None and memory_mb > ctx.max_memory_mb:
        broken.append(f"memory_mb {memory_mb:,.1f} ({memory_source}) > max_memory_mb {ctx.max_memory_mb:,}")
    return "; ".join(broken) or None


def batch_memory(ctx: TrialContext, model: torch.nn.Module, shape: tuple[int, ...],
                 estimate: float | None = None) -> tuple[float, str]:
    """Memory of one training batch on the trial's device and its source: measured on
    CUDA (``cuda_peak``), else estimated from activation sizes (``cpu_estimate``;
    ``estimate``, when given, is that figure already computed by ``measure``)."""
    device = resolve_device(ctx.train.get("device", "auto"))
    if device.type != "cuda" and estimate is not None:
        return estimate, "cpu_estimate"
    bf16 = ctx.train.get("precision", "auto") in ("auto", "bf16")
    return training_memory_mb(model, shape, int(ctx.train["batch_size"]), device, bf16)


def run_trial(config: dict[str, Any], ctx: TrialContext, splits: Splits) -> None:
    """Ray Tune function trainable. An exception's message is written to the trial's
    ``error.txt`` (for trials.csv) and raised again, so Tune and the sampler see a failure."""
    from ray import tune

    try:
        _run(config, ctx, splits, tune)
    except Exception as err:
        folder = trial_dir(ctx.run_dir, tune.get_context().get_trial_id())
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ERROR_FILE).write_text(f"{type(err).__name__}: {err}"[:500])
        raise


def _run(config: dict[str, Any], ctx: TrialContext, splits: Splits, tune) -> None:
    trial_id = tune.get_context().get_trial_id()
    torch.set_num_threads(max(1, int(ctx.cpus)))
    arch = resolve_arch(ctx, config)
    shape = (1, ctx.data_context["in_channels"], ctx.data_context["image_size"], ctx.data_context["image_size"])
    seed = ctx.seed  # every trial alike: same init stream, data order and augmentation
    torch.manual_seed(seed)
    model = build(arch)
    cost = measure(model, shape, batch_size=ctx.train["batch_size"])
    memory_mb, source = batch_memory(ctx, model, shape, cost.activation_mb)
    base = {"params": cost.params, "macs": cost.macs, "memory_mb": memory_mb, "memory_source": source, "arch": arch.text}
    why = budget_violation(ctx, cost.params, cost.macs, memory_mb, arch, source)
    if why:
        # Optuna still needs every objective: an infeasible point scores worst on accuracy.
        tune.report({**base, "status": "infeasible", "error": why, "val_accuracy": 0.0, "epochs": 0,
                     "train_seconds": 0.0})
        return

    cfg = TrainConfig(**{k: v for k, v in ctx.train.items() if k != "device"}, seed=seed)

    def on_epoch(epoch: int, metrics: dict) -> None:
        if epoch < cfg.epochs:  # the last epoch is reported once its weights are saved
            tune.report({**base, **metrics, "epochs": epoch, "status": "running"})

    result = train(model, splits, cfg, device=ctx.train.get("device", "auto"), callback=on_epoch)
    final = {**base, **result.history[-1], "epochs": result.epochs, "status": "completed",
             "train_seconds": result.train_seconds, "wall_seconds": result.wall_seconds}
    if result.peak_memory_mb is not None:
        final["memory_mb"] = result.peak_memory_mb  # measured on CUDA over the whole training
    save_trial(trial_dir(ctx.run_dir, trial_id), model, {
        "arch": arch.text, "metrics": {k: v for k, v in final.items() if k != "arch"},
        "mean": result.mean, "std": result.std, "history": result.history, "data": ctx.data_info, "seed": seed,
    })
    tune.report(final)
