"""One trial: resolve the sampled architecture, measure its cost, reject it if over
budget, otherwise train it and report every epoch to Ray Tune (so a scheduler can stop
it between epochs). Its weights and result travel to the driver with its last report.

Runs inside a Ray worker; imports ray lazily so the module can be imported anywhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from archscale.analysis.cost import latency_ms, measure
from archscale.analysis.export import trial_files
from archscale.space import Arch, build, get_space
from archscale.trainer import Splits, TrainConfig, train


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
    max_memory_mb: float | None = None  # peak training memory of one batch, MiB


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


def budget_violation(ctx: TrialContext, params: int, macs: int, latency: float | None = None, *,
                     memory_mb: float | None = None, memory_source: str = "cpu_estimate",
                     arch: Arch | None = None) -> str | None:
    """Why a configuration is infeasible (over a budget, or outside the family's search
    constraint, e.g. efficientnet's alpha*beta^2*gamma^2 ~ target), or None."""
    broken = []
    if arch is not None and (why := get_space(arch.family).constraint_violation(arch.params)):
        broken.append(why)
    if ctx.max_params is not None and params > ctx.max_params:
        broken.append(f"params {params:,} > max_params {ctx.max_params:,}")
    if ctx.max_macs is not None and macs > ctx.max_macs:
        broken.append(f"macs {macs:,} > max_macs {ctx.max_macs:,}")
    if ctx.max_latency_ms is not None and latency is not None and latency > ctx.max_latency_ms:
        broken.append(f"latency_ms {latency:.3f} > max_latency_ms {ctx.max_latency_ms:g}")
    if ctx.max_memory_mb is not None and memory_mb is not None and memory_mb > ctx.max_memory_mb:
        broken.append(f"memory_mb {memory_mb:,.1f} ({memory_source}) > max_memory_mb {ctx.max_memory_mb:g}")
    return "; ".join(broken) or None


def has_constraint(family: str) -> bool:
    """Whether a family restricts its search beyond its parameters' ranges (see
    :meth:`space.SearchSpace.constraint_violation`)."""
    from archscale.space import SearchSpace

    return type(get_space(family)).constraint_violation is not SearchSpace.constraint_violation


def batch_memory(ctx: TrialContext, model: torch.nn.Module, shape: tuple[int, ...], recipe: dict[str, Any],
                 device: str = "auto", estimate: float | None = None) -> tuple[float, str]:
    """Memory (MiB) of one training batch on ``device`` and how it was obtained: measured
    on CUDA (``cuda_peak``: :func:`trainer.memory.step_peak_mb`), else estimated from the
    activation sizes (``cpu_estimate``; ``estimate``, when given, is that figure already
    computed by :func:`analysis.cost.measure`)."""
    from archscale.analysis.cost import activation_mb
    from archscale.trainer import resolve_device
    from archscale.trainer.memory import step_peak_mb

    dev = resolve_device(str(device))
    if dev.type == "cuda":
        cfg = TrainConfig(**recipe)
        probe = copy.deepcopy(model)  # the step changes weights and BatchNorm statistics: not the model's own
        peak = step_peak_mb(probe, tuple(shape[1:]), ctx.data_context["num_classes"], cfg, dev)
        del probe
        return round(peak, 3), "cuda_peak"
    if estimate is None:
        estimate = activation_mb(model, (1, *shape[1:]), int(recipe["batch_size"]))
    return round(estimate, 3), "cpu_estimate"


def measure_latency(model: torch.nn.Module, shape: tuple[int, ...], ctx: TrialContext,
                    with_batch: bool = True) -> dict[str, float]:
    """Inference latency on the trial's device, batch 1 and (``with_batch``) the training
    batch (median ms), under the autocast the trial trains with. Leaves the model on that device."""
    from archscale.trainer import resolve_device

    device = resolve_device(str(ctx.train.get("device", "auto")))
    precision = ctx.train.get("precision", "auto")
    dtype = torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None
    model.to(device)
    out = {"latency_ms": round(latency_ms(model, shape, 1, autocast_dtype=dtype), 4)}
    if with_batch:
        out["latency_batch_ms"] = round(latency_ms(model, shape, int(ctx.train["batch_size"]), autocast_dtype=dtype), 4)
    return out


ARTIFACTS = "artifacts"  # key of the last result that carries the trial's files to the driver


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a CPU allocation the host refused."""
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in text or "not enough memory" in text


def describe_error(err: BaseException) -> str:
    """One line for trials.csv: the exception's type and message (500 characters at most)."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return (f"out of memory: {text}" if is_out_of_memory(err) else text)[:500]


def run_trial(config: dict[str, Any], ctx: TrialContext, splits: Splits) -> None:
    """Ray Tune function trainable.

    A trial that fails in its own code (an exception, a NaN loss, memory the host refuses)
    reports ``status: failed`` with its error and ends: running it again would fail again.
    Only CUDA out-of-memory is raised to Tune, which retries it (``search.max_failures``):
    on a shared GPU a neighbour may have held the memory. A worker that dies (killed, its
    node lost) is retried the same way.
    """
    from ray import tune

    reached: dict[str, Any] = {"epochs": 0}  # what the trial got to before a failure
    try:
        _run(config, ctx, splits, tune, reached)
    except torch.OutOfMemoryError:
        raise
    except Exception as err:
        tune.report({**reached, "status": "failed", "error": describe_error(err)})


def _claim_resources() -> dict[str, float]:
    """Hold the trial to what Ray gave it: torch threads = its CPUs (no other worker threads
    or processes: the trainer loads no data in the background), and, on a shared GPU, a cap
    of its share of the GPU's memory."""
    import ray

    assigned = ray.get_runtime_context().get_assigned_resources()
    cpus, gpus = assigned.get("CPU", 1.0), assigned.get("GPU", 0.0)
    torch.set_num_threads(max(1, int(cpus)))
    if 0 < gpus < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpus, 0)
    return {"cpus": cpus, "gpus": gpus, "threads": torch.get_num_threads(),
            "node_id": ray.get_runtime_context().get_node_id()}


def _run(config: dict[str, Any], ctx: TrialContext, splits: Splits, tune, reached: dict[str, Any]) -> None:
    host = _claim_resources()
    arch = resolve_arch(ctx, config)
    shape = (1, ctx.data_context["in_channels"], ctx.data_context["image_size"], ctx.data_context["image_size"])
    recipe = train_values(ctx, config)
    # Every trial alike (same init stream, data order and augmentation) unless the
    # configuration names its seed (repeats over seeds, as `archscale ablate` runs them).
    seed = int(config.get("seed", ctx.seed))
    torch.manual_seed(seed)
    model = build(arch)
    cost = measure(model, shape, batch_size=recipe["batch_size"])
    device = recipe.get("device", "auto")
    if device == "auto" and not host["gpus"]:
        device = "cpu"  # a trial uses only the GPU share Ray gave it, whatever CUDA_VISIBLE_DEVICES says
    memory_mb, source = batch_memory(ctx, model, shape, recipe, device, cost.activation_mb)
    base = {"params": cost.params, "macs": cost.macs, "memory_mb": memory_mb, "memory_source": source, "arch": arch.text}
    base.update(measure_latency(model, shape, ctx))
    reached.update(base)
    why = budget_violation(ctx, cost.params, cost.macs, base["latency_ms"], memory_mb=memory_mb,
                           memory_source=source, arch=arch)
    if why:
        # Optuna still needs every objective: an infeasible point scores worst on accuracy.
        tune.report({**base, "status": "infeasible", "error": why, "val_accuracy": 0.0, "epochs": 0,
                     "train_seconds": float("inf")})
        return

    cfg = TrainConfig(**recipe, seed=seed)

    def on_epoch(epoch: int, metrics: dict) -> None:
        reached.update(epochs=epoch, train_seconds=metrics["train_seconds"])
        if epoch < cfg.epochs:  # the last epoch is reported once with the trial's files
            tune.report({**base, **metrics, "epochs": epoch, "status": "running"})

    result = train(model, splits, cfg, device=device, callback=on_epoch)
    final = {**base, **result.history[-1], "epochs": result.epochs, "status": "completed",
             "train_seconds": result.train_seconds, "wall_seconds": result.wall_seconds}
    if result.peak_memory_mb is not None:
        final["memory_mb"] = result.peak_memory_mb  # measured on CUDA over the whole training
        final["memory_source"] = "cuda_peak"
    files = trial_files(model, {
        "arch": arch.text, "metrics": {k: v for k, v in final.items() if k != "arch"},
        "mean": result.mean, "std": result.std, "history": result.history, "data": ctx.data_info, "seed": seed,
        "recipe": recipe,
        "host": host,
    })
    tune.report({**final, ARTIFACTS: files})  # the driver writes them into trials/<id>/
