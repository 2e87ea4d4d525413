"""One trial: resolve the sampled architecture, measure its cost, reject it if over
budget, otherwise train it and report every epoch to Ray Tune.

Runs inside a Ray worker; imports ray lazily so the module can be imported anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from analysis.cost import latency_ms, measure
from analysis.export import save_trial, trial_dir
from space import Arch, build, get_space
from trainer import Splits, TrainConfig, train

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
    max_latency_ms: float | None = None  # batch-1 inference latency on the trial's device
    cpus: float = 1.0
    seed: int = 0


TRAIN_PREFIX = "train."
REJECTED_SUFFIX = "_infeasible"  # trial ids of configurations rejected over budget before dispatch


def counted(trials) -> int:
    """Trials that count toward ``num_trials``: all but those rejected before dispatch."""
    return int((~trials["trial_id"].astype(str).str.endswith(REJECTED_SUFFIX)).sum()) if len(trials) else 0
META_KEYS = ("seed", "variant")  # configuration keys that are neither architecture nor recipe


def resolve_arch(ctx: TrialContext, sampled: dict[str, Any]) -> Arch:
    """The architecture of a sampled configuration (``train.*`` and META_KEYS are not part of it)."""
    arch_values = {k: v for k, v in sampled.items() if not k.startswith(TRAIN_PREFIX) and k not in META_KEYS}
    return get_space(ctx.family).resolve({**ctx.fixed, **arch_values}, ctx.data_context)


def train_values(ctx: TrialContext, sampled: dict[str, Any]) -> dict[str, Any]:
    """The spec's training recipe with the sampled ``train.*`` values applied."""
    return {**ctx.train, **{k[len(TRAIN_PREFIX):]: v for k, v in sampled.items() if k.startswith(TRAIN_PREFIX)}}


def budget_violation(ctx: TrialContext, params: int, macs: int, latency: float | None = None) -> str | None:
    """Why a configuration is infeasible, or None."""
    broken = []
    if ctx.max_params is not None and params > ctx.max_params:
        broken.append(f"params {params:,} > max_params {ctx.max_params:,}")
    if ctx.max_macs is not None and macs > ctx.max_macs:
        broken.append(f"macs {macs:,} > max_macs {ctx.max_macs:,}")
    if ctx.max_latency_ms is not None and latency is not None and latency > ctx.max_latency_ms:
        broken.append(f"latency_ms {latency:.3f} > max_latency_ms {ctx.max_latency_ms:g}")
    return "; ".join(broken) or None


def measure_latency(model: torch.nn.Module, shape: tuple[int, ...], ctx: TrialContext,
                    with_batch: bool = True) -> dict[str, float]:
    """Inference latency on the trial's device, batch 1 and (``with_batch``) the training
    batch (median ms), under the autocast the trial trains with. Leaves the model on that device."""
    from trainer import resolve_device

    device = resolve_device(str(ctx.train.get("device", "auto")))
    precision = ctx.train.get("precision", "auto")
    dtype = torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None
    model.to(device)
    out = {"latency_ms": round(latency_ms(model, shape, 1, autocast_dtype=dtype), 4)}
    if with_batch:
        out["latency_batch_ms"] = round(latency_ms(model, shape, int(ctx.train["batch_size"]), autocast_dtype=dtype), 4)
    return out


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
    recipe = train_values(ctx, config)
    # Every trial alike (same init stream, data order and augmentation) unless the
    # configuration names its seed (repeats over seeds, as `archscale ablate` runs them).
    seed = int(config.get("seed", ctx.seed))
    torch.manual_seed(seed)
    model = build(arch)
    cost = measure(model, shape, batch_size=recipe["batch_size"])
    base = {"params": cost.params, "macs": cost.macs, "memory_mb": cost.activation_mb, "arch": arch.text}
    base.update(measure_latency(model, shape, ctx))
    why = budget_violation(ctx, cost.params, cost.macs, base["latency_ms"])
    if why:
        # Optuna still needs every objective: an infeasible point scores worst on accuracy.
        tune.report({**base, "status": "infeasible", "error": why, "val_accuracy": 0.0, "epochs": 0,
                     "train_seconds": float("inf")})
        return

    cfg = TrainConfig(**{k: v for k, v in recipe.items() if k != "device"}, seed=seed)

    def on_epoch(epoch: int, metrics: dict) -> None:
        if epoch < cfg.epochs:  # the last epoch is reported once its weights are saved
            tune.report({**base, **metrics, "epochs": epoch, "status": "running"})

    result = train(model, splits, cfg, device=recipe.get("device", "auto"), callback=on_epoch)
    final = {**base, **result.history[-1], "epochs": result.epochs, "status": "completed",
             "train_seconds": result.train_seconds, "wall_seconds": result.wall_seconds}
    if result.peak_memory_mb is not None:
        final["memory_mb"] = result.peak_memory_mb  # measured on CUDA rather than estimated
    final["memory_source"] = "cuda_peak" if result.peak_memory_mb is not None else "activation_estimate"
    save_trial(trial_dir(ctx.run_dir, trial_id), model, {
        "arch": arch.text, "metrics": {k: v for k, v in final.items() if k != "arch"},
        "mean": result.mean, "std": result.std, "history": result.history, "data": ctx.data_info, "seed": seed,
        "recipe": recipe,
    })
    tune.report(final)
