"""What a trial asks Ray for: CPU cores, and a GPU share that is whole, fractional, or
sized from measured memory (``gpu: auto``).

``gpu: auto`` measures, once per architecture, the peak CUDA memory of one training step
of the trial's model and batch (:func:`trainer.memory.step_peak_mb`), adds the dataset the
trainer keeps on the GPU and a CUDA context, and asks for ``1/k`` of a GPU where ``k``
such trials fit in its memory. A trial's share is also its cap: the trial calls
``torch.cuda.set_per_process_memory_fraction`` with it, so one that outgrows its share
fails alone (out of memory: retried, then recorded) instead of starving its neighbours.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable

from archscale.search.trial import TrialContext, budget_violation, resolve_arch
from archscale.space import SpaceError, build

CUDA_CONTEXT_MB = 600.0  # CUDA context + cuBLAS/cuDNN workspaces of one process: not in max_memory_allocated
HEADROOM = 1.2  # allocator fragmentation, evaluation batches and the test split
RAY_STEP = 1e-4  # Ray's granularity for fractional resources
MAX_SHARE = 1 - RAY_STEP  # one step of every GPU stays free for the next measurement task


def gpu_need_mb(step_peak_mb: float, data_mb: float, context_mb: float = CUDA_CONTEXT_MB,
                headroom: float = HEADROOM) -> float:
    """GPU memory (MiB) a trial needs: its measured step peak and on-device dataset, with
    headroom, plus one CUDA context."""
    return (step_peak_mb + data_mb) * headroom + context_mb


def gpu_share(need_mb: float, gpu_total_mb: float) -> float:
    """The fraction of one GPU to ask for: ``1/k`` where ``k = floor(total / need)`` trials
    fit, rounded down to Ray's granularity (so ``k`` of them never add up to more than one
    GPU), at most :data:`MAX_SHARE`. A trial that needs more than a whole GPU gets
    :data:`MAX_SHARE` and will run out of memory (recorded as a failed trial)."""
    if need_mb <= 0 or gpu_total_mb <= 0:
        raise ValueError(f"need_mb ({need_mb}) and gpu_total_mb ({gpu_total_mb}) must be positive")
    per_gpu = max(1, math.floor(gpu_total_mb / need_mb))
    steps = math.floor(1 / per_gpu / RAY_STEP + 1e-9)  # float-safe floor
    return min(MAX_SHARE, steps * RAY_STEP)


MeasureFn = Callable[[Any], float]  # (arch) -> peak MiB of one training step


class TrialResources:
    """``tune.with_resources`` callable: a trial's config -> its placement group.

    ``gpu`` is a number (every trial alike) or ``"auto"``; for auto, ``measure(arch)`` gives
    the step peak in MiB (cached per architecture) and ``gpu_total_mb`` the memory of one GPU.
    Configurations that will not train (over a budget, or invalid) ask for no GPU.
    """

    def __init__(self, ctx: TrialContext, cpu: float, gpu: float | str, *, batch_size: int, data_mb: float = 0.0,
                 gpu_total_mb: float | None = None, measure: MeasureFn | None = None):
        if gpu == "auto" and (gpu_total_mb is None or measure is None):
            raise ValueError("gpu 'auto' needs gpu_total_mb and measure")
        self.ctx, self.cpu, self.gpu = ctx, float(cpu), gpu
        self.batch_size, self.data_mb = batch_size, data_mb
        self.gpu_total_mb, self.measure = gpu_total_mb, measure
        self.shares: dict[str, float] = {}  # arch text -> GPU share
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # Tune ships this object with the trainable to the workers, which never call it:
        # leave out the lock and the measuring function (it may hold a CUDA model).
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "measure")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), measure=None)

    def gpu_for(self, config: dict) -> float:
        """GPUs for one trial's sampled ``config``."""
        if self.gpu != "auto":
            return float(self.gpu)
        try:
            arch = resolve_arch(self.ctx, config)
        except SpaceError:
            return 0.0  # the trial will be recorded infeasible without training
        with self._lock:
            if arch.text not in self.shares:
                self.shares[arch.text] = self._share(arch)
            return self.shares[arch.text]

    def _share(self, arch) -> float:
        from archscale.analysis.cost import count_macs, count_params

        if self.ctx.max_params is not None or self.ctx.max_macs is not None:
            model = build(arch)
            c = self.ctx.data_context
            macs = count_macs(model, (1, c["in_channels"], c["image_size"], c["image_size"])) if self.ctx.max_macs else 0
            if budget_violation(self.ctx, count_params(model), macs):
                return 0.0
        peak = self.measure(arch)
        return gpu_share(gpu_need_mb(peak, self.data_mb), self.gpu_total_mb)

    def __call__(self, config: dict):
        from ray.tune.execution.placement_groups import PlacementGroupFactory

        bundle = {"CPU": self.cpu}
        gpu = self.gpu_for(config)
        if gpu > 0:
            bundle["GPU"] = gpu
        return PlacementGroupFactory([bundle])


# --------------------------------------------------------------------------- measuring on a GPU


def _measure_here(arch_text: str, input_shape: tuple[int, ...], num_classes: int, train: dict) -> float:
    """Step peak (MiB) of ``arch_text`` on this process's first CUDA device."""
    from archscale.space import Arch
    from archscale.trainer.memory import step_peak_mb
    from archscale.trainer.train import TrainConfig

    cfg = TrainConfig(**train)
    return step_peak_mb(build(Arch.from_text(arch_text)), input_shape, num_classes, cfg, "cuda")


def _gpu_total_here() -> float:
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 2**20


def gpu_measurer(ctx: TrialContext) -> tuple[float, MeasureFn]:
    """(memory of one GPU in MiB, a measure function) on the first GPU this driver sees, or,
    where the driver has none (a cluster's CPU head), in a one-shot Ray task on a GPU node
    that asks for one :data:`RAY_STEP` of a GPU and no CPU, so it never waits for a trial."""
    import torch

    c = ctx.data_context
    shape = (c["in_channels"], c["image_size"], c["image_size"])
    args = (shape, c["num_classes"], dict(ctx.train))
    if torch.cuda.is_available():
        return _gpu_total_here(), lambda arch: _measure_here(arch.text, *args)

    import ray

    remote_measure = ray.remote(num_cpus=0, num_gpus=RAY_STEP, max_calls=1)(_measure_here)
    remote_total = ray.remote(num_cpus=0, num_gpus=RAY_STEP, max_calls=1)(_gpu_total_here)
    total = ray.get(remote_total.remote())
    return total, lambda arch: ray.get(remote_measure.remote(arch.text, *args))
