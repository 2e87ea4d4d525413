"""One trial, inside a Ray worker: the sampled architecture is built, judged by the
:class:`~archscale.search.configs.evaluate.Evaluator` on the trial's own device, then trained with a
report to Ray Tune after every epoch (so a scheduler can stop it between epochs). Its
weights and ``result.json`` (metrics, history, recipe, where it ran and its provenance)
travel to the driver with its last report.

Imports ray lazily, so the module can be imported anywhere.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray
import torch
from ray import tune

from archscale.analysis.export import trial_files
from archscale.search.configs.context import TrialContext, resolve_arch, train_values
from archscale.search.jobs.profile import TIMES, process_start
from archscale.search.dispatch.shared import SharedSplits, loads, local_splits
from archscale.search.configs.evaluate import Evaluator, Verdict, describe_error, is_cuda_out_of_memory
from archscale.search.jobs.provenance import trial_provenance
from archscale.space import build
from archscale.trainer import Splits, TrainConfig, resolve_device, train
from archscale.trainer.distributed import Ranks, from_rank0

ARTIFACTS = "artifacts"  # key of the last result that carries the trial's files to the driver
_IMPORTED = time.time()  # when this process had imported what a trial needs (preloaded: before any trial)


def run_trial(config: dict[str, Any], ctx: TrialContext, splits: Splits | SharedSplits) -> None:
    """Ray Tune function trainable.

    A trial that fails in its own code (an exception, a NaN loss, memory the host refuses)
    reports ``status: failed`` with its error and ends: running it again would fail again.
    Only a failed GPU allocation is raised to Tune, which retries it (``search.max_failures``):
    on a shared GPU a neighbour may have held the memory. That is ``torch.OutOfMemoryError``
    and what cuBLAS, cuDNN or torch.compile raise for it (:func:`is_cuda_out_of_memory`).
    A worker that dies (killed, its node lost) is retried the same way.

    ``splits``: the data, or (as the launcher sends them) a :class:`SharedSplits` handle,
    fetched from Ray's object store once per worker process and kept for its later trials.
    """

    entered = time.time()
    reached: dict[str, Any] = {"epochs": 0}  # what the trial got to before a failure
    try:
        host = {**claim_resources(), "workers": 1}
        splits = local_splits(splits)
        host["data_loads"] = loads()  # fetches of the dataset by this worker process, this trial's included
        train_trial(config, ctx, splits, tune.report, host, reached,
                    times={"worker_start": process_start(), "imported": _IMPORTED, "entered": entered})
    except Exception as err:
        if is_cuda_out_of_memory(err):
            raise
        tune.report({**reached, "status": "failed", "error": describe_error(err)})


def claim_resources() -> dict[str, Any]:
    """Hold the trial to what Ray gave it: torch threads = its CPUs (no other worker threads
    or processes: the trainer loads no data in the background), and, on a shared GPU, a cap
    of its share of the GPU's memory."""

    assigned = ray.get_runtime_context().get_assigned_resources()
    cpus, gpus = assigned.get("CPU", 1.0), assigned.get("GPU", 0.0)
    torch.set_num_threads(max(1, int(cpus)))
    if 0 < gpus < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpus, 0)
    return {"cpus": cpus, "gpus": gpus, "threads": torch.get_num_threads(),
            "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


def device_name(device: str) -> str:
    """The device as a person reads it: ``cpu``, or ``cuda:0 (NVIDIA H200)``."""

    dev = resolve_device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return dev.type


def train_trial(config: dict[str, Any], ctx: TrialContext, splits: Splits, report, host: dict[str, Any],
                reached: dict[str, Any] | None = None, times: dict[str, float] | None = None) -> None:
    """Judge, then train, one configuration; ``report(dict)`` receives each epoch's result and
    the final one (Ray Tune's ``tune.report`` in a worker). ``host``: the CPUs and GPU share
    the trial was given; ``reached`` collects what it got to, for the record of a failure;
    ``times``: wall-clock stamps of the trial, sent with its last result
    (:data:`~archscale.search.jobs.profile.TIMES`, for ``--profile``).

    In a process group of several ranks (a trial's Ray Train workers) every rank calls this:
    rank 0's verdict decides for all, every rank reports each epoch (the same metrics), and
    rank 0 alone sends the trial's files."""
    ranks = Ranks.current()
    times = dict(times or {})
    reached = reached if reached is not None else {}
    arch = resolve_arch(ctx, config)
    recipe = train_values(ctx, config)
    # Every trial alike (same init stream, data order and augmentation) unless the
    # configuration names its seed (repeats over seeds, as `archscale ablate` runs them).
    seed = int(config.get("seed", ctx.seed))
    torch.manual_seed(seed)
    device = recipe.get("device", "auto")
    if device == "auto" and not host["gpus"]:
        device = "cpu"  # a trial uses only the GPU share Ray gave it, whatever CUDA_VISIBLE_DEVICES says
    try:
        model = build(arch)
    except Exception as err:  # noqa: BLE001 - a family's code may fail in any way: the configuration is infeasible
        if is_cuda_out_of_memory(err):
            raise
        model, verdict = None, Verdict(dict(config), arch, why=f"cannot be built: {describe_error(err)}",
                                       buildable=False)
    if model is not None:  # measured on the trial's device; a forward pass that fails is "cannot be built" too
        verdict = Evaluator(ctx, device=device, latency=True)(config, full=True, model=model,
                                                              data=(splits.x_train, splits.y_train))
    base = verdict.metrics()
    reached.update(base)
    if from_rank0(bool(verdict.why), ranks):  # each rank measured its own latency: rank 0's counts
        # Optuna still needs every objective: an infeasible point scores worst on accuracy.
        report({**base, "status": "infeasible", "error": verdict.why, "val_accuracy": 0.0, "epochs": 0,
                "train_seconds": float("inf")})
        return

    cfg = TrainConfig(**recipe, seed=seed)

    def on_epoch(epoch: int, metrics: dict) -> None:
        reached.update(epochs=epoch, train_seconds=metrics["train_seconds"])
        if epoch < cfg.epochs:  # the last epoch is reported once with the trial's files
            report({**base, **metrics, "epochs": epoch, "status": "running"})

    times["train_start"] = time.time()
    result = train(model, splits, cfg, device=device, callback=on_epoch,
                   max_device_mb=ctx.data_info.get("max_device_mb"))
    times["train_end"] = time.time()
    if not ranks.leader:  # the same final result, without the files: rank 0 sends them
        report({**base, **result.history[-1], "epochs": result.epochs, "status": "completed"})
        return
    final = {**base, **result.history[-1], "epochs": result.epochs, "status": "completed",
             "train_seconds": result.train_seconds, "wall_seconds": result.wall_seconds}
    if result.peak_memory_mb is not None:
        final["memory_mb"] = result.peak_memory_mb  # measured on CUDA over the whole training
        final["memory_source"] = "cuda_peak"
    files = trial_files(model, {
        "arch": arch.text, "metrics": {k: v for k, v in final.items() if k != "arch"},
        "mean": result.mean, "std": result.std, "history": result.history, "data": ctx.data_info, "seed": seed,
        "recipe": recipe, "host": {**host, "data_streamed": result.streamed},
        "classes": list(ctx.classes) if ctx.classes else None,
        "provenance": trial_provenance(ctx.provenance, seed, device_name(str(device))),
    })
    report({**final, ARTIFACTS: files, TIMES: {**times, "reported": time.time()}})  # the driver writes them into trials/<id>/
