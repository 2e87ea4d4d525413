"""What a trial asks Ray for: CPU cores, and a GPU share that is whole, fractional, or
sized from measured memory (``gpu: auto``).

``gpu: auto`` measures, once per architecture, the peak CUDA memory of one training step
of the trial's model and batch (:func:`trainer.memory.step_peak_mb`), adds the dataset the
trainer keeps on the GPU and a CUDA context, and asks for ``1/k`` of a GPU where ``k``
such trials fit in its memory. A trial's share is also its cap: the trial calls
``torch.cuda.set_per_process_memory_fraction`` with it, so one that outgrows its share
fails alone (out of memory: retried, then recorded) instead of starving its neighbours.

A trial of several workers (``workers: N``) is a driver that starts Ray Train's workers
(:mod:`archscale.search.dispatch.workers`): Tune's placement group for the trial holds the
driver alone, with no CPU and no GPU (:data:`DRIVER_BUNDLE`), and Ray Train places the N
workers, ``cpu`` and ``gpu`` each, with a placement group of its own
(:meth:`TrialResources.worker_resources`). With ``gpu: auto`` each worker's share is sized
from a step of ``batch_size / N`` images, measured by the probe actor, which the driver calls.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Callable

import ray
import torch
from ray.tune import PlacementGroupFactory

from archscale.search.configs.context import TrialContext, train_values
from archscale.search.configs.evaluate import Evaluator
from archscale.spec import Spec
from archscale.trainer.memory import dataset_mb

CUDA_CONTEXT_MB = 600.0  # CUDA context + cuBLAS/cuDNN workspaces of one process: not in max_memory_allocated
HEADROOM = 1.2  # allocator fragmentation, evaluation batches and the test split
RAY_STEP = 1e-4  # Ray's granularity for fractional resources
MAX_SHARE = 1 - RAY_STEP  # one step of a GPU is the memory probe's (a driver without a GPU measures there)
# What Tune reserves for the driver of a trial of several workers: memory only (a placement
# group's bundle cannot be empty), no CPU, so that N workers of one CPU fit on N cores.
DRIVER_BUNDLE = {"memory": 64 * 2**20}


def gpu_need_mb(step_peak_mb: float, data_mb: float, context_mb: float = CUDA_CONTEXT_MB,
                headroom: float = HEADROOM) -> float:
    """GPU memory (MiB) a trial needs: its measured step peak and on-device dataset, with
    headroom, plus one CUDA context."""
    return (step_peak_mb + data_mb) * headroom + context_mb


def gpu_share(need_mb: float, gpu_total_mb: float) -> float:
    """The fraction of one GPU to ask for: ``k`` trials fit in its memory (``k = floor(total /
    need)``), and ``k`` such shares fit beside the memory probe's :data:`RAY_STEP` (each
    ``(1 - RAY_STEP) / k``, rounded down to Ray's granularity). A trial that needs more than
    a whole GPU gets :data:`MAX_SHARE` and will run out of memory (recorded as a failed trial)."""
    if need_mb <= 0 or gpu_total_mb <= 0:
        raise ValueError(f"need_mb ({need_mb}) and gpu_total_mb ({gpu_total_mb}) must be positive")
    per_gpu = max(1, math.floor(gpu_total_mb / need_mb))
    steps = math.floor(MAX_SHARE / per_gpu / RAY_STEP + 1e-9)  # float-safe floor
    return min(MAX_SHARE, steps * RAY_STEP)


MeasureFn = Callable[[dict], float]  # (sampled config) -> peak MiB of one training step on a GPU


class TrialResources:
    """``tune.with_resources`` callable: a trial's config -> its placement group.

    ``gpu`` is a number (every trial alike) or ``"auto"``; for auto, ``measure(config)`` gives
    the step peak in MiB and ``gpu_total_mb`` the memory of one GPU. Shares are kept per
    architecture and recipe (a searched batch size or precision is sized for itself).
    Configurations that will not train (over a budget, or invalid: the ``evaluator`` says)
    ask for no GPU.
    """

    def __init__(self, evaluator: Evaluator, cpu: float, gpu: float | str, *, data_mb: float = 0.0,
                 gpu_total_mb: float | None = None, measure: MeasureFn | None = None, workers: int = 1):
        if gpu == "auto" and (gpu_total_mb is None or measure is None):
            raise ValueError("gpu 'auto' needs gpu_total_mb and measure")
        self.evaluator, self.cpu, self.gpu, self.workers = evaluator, float(cpu), gpu, int(workers)
        self.data_mb, self.gpu_total_mb, self.measure = data_mb, gpu_total_mb, measure
        self.shares: dict[str, float] = {}  # arch text and recipe -> GPU share
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # Tune ships this object with the trainable to the workers, which never call it:
        # leave out the lock, the evaluator's caches and the measuring function (it may hold a CUDA model).
        # A trial of several workers sizes its workers' shares in its driver: it keeps the
        # measuring function, which then calls the probe actor (picklable: an actor handle).
        dropped = ("_lock", "evaluator") + (("measure",) if self.workers == 1 else ())
        return {k: v for k, v in self.__dict__.items() if k not in dropped}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"measure": None, **state, "_lock": threading.Lock(), "evaluator": None})

    def gpu_for(self, config: dict) -> float:
        """GPUs for one trial's sampled ``config``."""
        if self.gpu != "auto":
            return float(self.gpu)
        if self.evaluator is not None:
            verdict = self.evaluator(config)
            if not verdict.feasible:
                return 0.0  # the trial will be recorded infeasible without training
            recipe = train_values(self.evaluator.ctx, config)
            key = json.dumps([verdict.arch.text, *(recipe.get(k) for k in SIZED_BY)], default=str)
        else:  # in a trial's driver (several workers): the configuration is the key
            key = json.dumps(config, sort_keys=True, default=str)
        with self._lock:
            if key not in self.shares:
                self.shares[key] = gpu_share(gpu_need_mb(self.measure(config), self.data_mb), self.gpu_total_mb)
            return self.shares[key]

    def __call__(self, config: dict):
        if self.workers > 1:
            return PlacementGroupFactory([dict(DRIVER_BUNDLE)])  # Ray Train places the workers
        bundle = {"CPU": self.cpu}
        gpu = self.gpu_for(config)
        if gpu > 0:
            bundle["GPU"] = gpu
        return PlacementGroupFactory([bundle])

    def worker_resources(self, config: dict, batch_size: int) -> dict[str, float]:
        """What each of a trial's workers asks Ray Train for: ``cpu``, and ``gpu`` (with
        ``auto``: sized from one step of the worker's ``batch_size / workers`` images)."""
        per_worker = {**config, "train.batch_size": batch_size // self.workers}
        gpu = self.gpu_for(per_worker)
        return {"CPU": self.cpu, **({"GPU": gpu} if gpu > 0 else {})}


SIZED_BY = ("batch_size", "precision", "channels_last", "compile", "sam_rho", "swa", "ema")  # recipe fields a step's memory depends on


# --------------------------------------------------------------------------- measuring on a GPU


def _peak_here(ctx: TrialContext, config: dict) -> float:
    """Step peak (MiB) of ``config`` measured by an evaluator on this process's first CUDA device."""
    verdict = Evaluator(ctx, device="cuda")(config, full=True)
    if verdict.memory_mb is None:
        raise RuntimeError(f"no memory figure for {config}: {verdict.why}")
    return float(verdict.memory_mb)


def _gpu_total_here() -> float:
    return torch.cuda.get_device_properties(0).total_memory / 2**20


class _Probe:
    """The memory probe of a driver without a GPU: a Ray actor placed on a GPU node, holding
    :data:`RAY_STEP` of a GPU (and no CPU) for the whole search."""

    def __init__(self, peak: Callable[[TrialContext, dict], float], total: Callable[[], float]):
        self._peak, self._total = peak, total

    def total(self) -> float:
        return self._total()

    def peak(self, ctx: TrialContext, config: dict) -> float:
        return self._peak(ctx, config)


def gpu_measurer(ctx: TrialContext, *, peak: Callable[[TrialContext, dict], float] = _peak_here,
                 total: Callable[[], float] = _gpu_total_here, probe: bool = False) -> tuple[float, MeasureFn]:
    """(memory of one GPU in MiB, a measure function): ``total()`` and ``peak(ctx, config)``
    run on the first GPU this driver sees or, where it has none (a cluster's CPU head), in a
    :class:`_Probe` actor started now, before any trial. Tune asks for a trial's resources
    inside its controller loop: a probe that asked for its GPU sliver only then would wait
    forever behind trials whose shares fill the GPU (and which need that loop to finish), so
    the probe holds its sliver from the start and the shares leave it room (:func:`gpu_share`).
    ``probe``: a probe actor even where this driver has a GPU (the drivers of trials of
    several workers call it, from wherever they run)."""
    if torch.cuda.is_available() and not probe:
        return total(), lambda config: peak(ctx, config)
    probe = ray.remote(num_cpus=0, num_gpus=RAY_STEP)(_Probe).remote(peak, total)
    return ray.get(probe.total.remote()), lambda config: ray.get(probe.peak.remote(ctx, config))


def trial_resources(spec: Spec, evaluator: Evaluator, splits) -> TrialResources:
    """What each trial of ``spec`` asks Ray for; ``gpu: auto`` means no GPU where the cluster has none."""
    r = spec.search.resources_per_trial
    if r.gpu != "auto":
        return TrialResources(evaluator, r.cpu, r.gpu, workers=r.workers)
    if ray.cluster_resources().get("GPU", 0) == 0 or spec.train.device == "cpu":
        return TrialResources(evaluator, r.cpu, 0.0, workers=r.workers)
    images = len(splits.y_train) + len(splits.y_val) + len(splits.y_test)  # a worker holds its shard and rank 0 the rest
    total_mb, measure = gpu_measurer(evaluator.ctx, probe=r.workers > 1)
    data_mb = dataset_mb(images, tuple(splits.x_train.shape[1:]))
    if data_mb > min(spec.data.max_device_mb or math.inf, total_mb / 2):
        data_mb = 0.0  # the trainer streams it from host memory (trainer.loop.keeps_on_device): not on the GPU
    return TrialResources(evaluator, r.cpu, "auto", data_mb=data_mb, gpu_total_mb=total_mb, measure=measure,
                          workers=r.workers)
