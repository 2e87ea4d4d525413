"""A fast training and evaluation loop with the techniques of seeds 000 and 003.

The whole split lives on the training device as one normalised tensor; every epoch is
a ``randperm`` over it, and augmentation (random crop with padding, flip, cutout,
mixup) is done on whole batches on the device. No DataLoader, no worker processes.
When the normalised splits do not fit (over ``max_device_mb``, or on CUDA over half the
device's free memory) they stay uint8 in host memory, pinned when CUDA is there, and each
batch is gathered there, copied over and normalised on arrival: the same batches, value for
value, and augmentation still on the device (:mod:`archscale.trainer.batches`). The
optimizer, the schedules and the precision are :mod:`archscale.trainer.optim`.

Techniques, each off by default (``TrainConfig``, in :mod:`archscale.trainer.config`):

- label smoothing, mixup (``mixup`` = Beta alpha), cutout (``cutout`` = square side, px);
- SAM (``sam_rho``): ascend to ``w + rho * g / |g|``, take the gradient there, step from
  ``w``; BatchNorm running statistics are updated by the first pass only;
- SWA (``swa``): from ``swa_start`` (fraction of epochs) the weights are averaged each
  epoch at ``swa_lr``; BatchNorm statistics are recomputed for the average at the end;
- EMA of weights (``ema`` = decay per step), evaluated instead of the raw weights;
- schedules: one-cycle, cosine, constant, and ``triangular`` (piecewise linear: up to
  the peak at the end of warm-up, down to zero at the end), as in seed 003;
- test-time flip augmentation (``tta``): logits averaged over the image and its mirror;
- bf16 autocast on CUDA (BatchNorm stays fp32 under autocast), ``channels_last`` and
  ``compile`` (torch.compile) for GPUs.

Always: fused optimizer steps where torch has them, and on a CPU glibc keeps freed memory
for reuse (``keep_freed_memory``: no page faults on every step's activations). ``RECIPES``
(in :mod:`archscale.trainer.config`) holds named recipes (seed 003's ``davidnet``) that a
spec's ``train.recipe`` fills in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn

from archscale.trainer.arrays import Splits
from archscale.trainer.batches import DeviceImages, augment, channel_stats, keeps_on_device
from archscale.trainer.config import TrainConfig
from archscale.trainer.distributed import Ranks, all_sum, average_bn_stats, from_rank0, local_batch, shard, wrap
from archscale.trainer.optim import autocast, configure_backends, make_optimizer, make_scheduler, uses_bf16
from archscale.trainer.steps import step

EpochCallback = Callable[[int, dict], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    val_accuracy: float
    test_accuracy: float
    epochs: int
    train_seconds: float  # time in the training steps only (no evaluation, no data loading, no compile)
    wall_seconds: float  # whole call, data transfer, compilation and evaluation included
    compile_seconds: float  # torch.compile's warm-up, 0 without compile
    peak_memory_mb: float | None  # torch.cuda.max_memory_allocated, CUDA only
    mean: list[float] = field(default_factory=list)  # per-channel input normalisation used
    std: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    streamed: bool = False  # batches came from host memory (the splits did not fit on the device)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------- the CPU's allocator

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
_freed_memory_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (process-wide, once).

    By default glibc serves a block above its mmap threshold (128 KiB, rising by itself to
    at most 32 MiB) with a fresh ``mmap`` and unmaps it when freed, so each activation
    tensor of a CPU training step is new memory and each of its pages a page fault on
    first touch (measured: 1,300-1,800 faults per
    step for the MNIST model of ``benchmarks/trainer_throughput.py``; 0 after this). Blocks
    under 1 GiB now come from the heap, and the heap is not trimmed below 1 GiB, which is
    what jemalloc or tcmalloc would give (Intel's PyTorch CPU tuning guide preloads one of
    them). The process keeps its peak memory until it exits. False where the C library is
    not glibc (nothing is changed there)."""
    global _freed_memory_kept
    if _freed_memory_kept is None:
        _freed_memory_kept = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _freed_memory_kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
                                          and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
            except (OSError, AttributeError):
                pass
    return _freed_memory_kept


# --------------------------------------------------------------------------- evaluation


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
             precision: str = "auto", tta: bool = False) -> float:
    """Top-1 accuracy of ``model`` on normalised images ``x`` (already on the model's device);
    with ``tta`` the logits of each image and its mirror image are averaged."""
    batches = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size))
    return accuracy(model, batches, len(y), x.device, precision, tta)


@torch.no_grad()
def accuracy(model: nn.Module, batches, n: int, device: torch.device, precision: str = "auto",
             tta: bool = False) -> float:
    """Top-1 accuracy of ``model`` over ``batches`` of (normalised images, labels) on ``device``,
    ``n`` images in all (NaN when none); ``tta`` as in :func:`evaluate`."""
    if n == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    with autocast(device, precision):
        for xb, yb in batches:
            logits = model(xb).float()
            if tta:
                logits = logits + model(xb.flip(3)).float()
            correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    return correct / n


# --------------------------------------------------------------------------- the loop


class _Timer:
    """Seconds of GPU work between start and stop (CUDA events), or wall seconds on CPU."""

    def __init__(self, dev: torch.device):
        self.cuda = dev.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            self.begin = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            return self.begin.elapsed_time(self.end) / 1000.0
        return time.perf_counter() - self.t0


def train(model: nn.Module, splits: Splits, cfg: TrainConfig, device: str | torch.device | None = None,
          callback: EpochCallback | None = None, max_device_mb: float | None = None,
          stream: bool | None = None) -> TrainResult:
    """Train ``model`` on ``splits`` (on ``device``, default ``cfg.device``) and return its
    validation and test accuracy.

    The normalised splits are kept on the device when they fit (:func:`keeps_on_device`,
    within ``max_device_mb`` MiB), else batches stream from host memory; ``stream`` forces
    one way (True: stream, False: keep on the device).

    ``callback(epoch, metrics)`` is called after every epoch with ``epoch`` (1-based),
    ``train_loss``, ``train_accuracy``, ``val_accuracy``, ``lr``, ``train_seconds`` (so far) and
    ``epoch_seconds`` (this epoch's training);
    on the last epoch ``test_accuracy`` is added (the test split is never used to choose).
    With SWA or EMA, validation and test use the averaged weights, which are then copied
    into ``model``.

    Data-parallel, where a ``torch.distributed`` process group is started (Ray Train's, one
    process per rank): each rank keeps only its shard of the training split
    (:func:`~archscale.trainer.distributed.shard`) and steps on ``batch_size / world``
    images of it; the model is under DDP (SyncBatchNorm first with ``cfg.sync_bn``). Each
    epoch's permutation of the shard comes from a generator seeded alike on every rank, the
    augmentation from one seeded per rank. The training loss and accuracy are summed over the
    ranks; rank 0 alone evaluates (validation, test), and every rank gets its metrics. Every
    rank must call this with the same ``cfg``.
    """
    start = time.perf_counter()
    ranks = Ranks.current()
    device = cfg.device if device is None else device
    dev = resolve_device(device) if isinstance(device, str) else device
    if dev.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's too)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)  # the data order: alike on every rank
    # the augmentation: one stream per rank (the same as the order's with one process)
    aug_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 7919 * ranks.rank) if ranks.distributed else gen
    configure_backends(dev)
    data = _place_splits(splits, cfg, dev, max_device_mb, stream, ranks)
    model = _place_model(model, cfg, dev)
    optim = _optimisation(model, cfg, len(data.train), data.batch)
    step_model, compile_seconds = _compiled(model, data, cfg, dev)

    history: list[dict] = []
    train_seconds = 0.0
    timer = _Timer(dev)
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        timer.start()
        mean_loss, correct = _train_epoch(epoch, model, step_model, data, optim, cfg, gen, aug_gen)
        epoch_seconds = timer.stop()
        train_seconds += epoch_seconds
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(f"loss became {mean_loss} in epoch {epoch}")
        metrics = _evaluate_epoch(epoch, mean_loss, correct, train_seconds, model, data, optim, cfg)
        metrics["epoch_seconds"] = from_rank0(epoch_seconds, data.ranks)  # rank 0's, as every metric
        history.append(metrics)
        if callback is not None:
            callback(epoch, dict(metrics))

    last_metrics = history[-1] if history else {"val_accuracy": float("nan"), "test_accuracy": float("nan")}
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return TrainResult(
        val_accuracy=last_metrics["val_accuracy"], test_accuracy=last_metrics["test_accuracy"], epochs=len(history),
        train_seconds=train_seconds, wall_seconds=time.perf_counter() - start, compile_seconds=compile_seconds,
        peak_memory_mb=peak, mean=data.mean, std=data.std, history=history, streamed=data.streamed,
    )


@dataclass
class _Data:
    """The splits as one training run reads them: train and validation on the device (or
    streamed to it), the test split placed the same way when the last epoch needs it. With
    several ranks: this rank's shard of the training split, steps of ``batch`` images of it;
    validation and test on rank 0 only (``val`` None elsewhere)."""

    splits: Splits
    dev: torch.device
    ranks: Ranks
    batch: int  # images per step on this rank
    mean: list[float]  # per-channel normalisation, from the training images
    std: list[float]
    placement: dict  # DeviceImages' dtype, channels_last and resident
    streamed: bool
    train: DeviceImages
    val: DeviceImages | None

    def test(self) -> DeviceImages:
        return DeviceImages(self.splits.x_test, self.splits.y_test, self.mean, self.std, self.dev, **self.placement)


def _place_splits(splits: Splits, cfg: TrainConfig, dev: torch.device, max_device_mb: float | None,
                  stream: bool | None, ranks: Ranks = Ranks()) -> _Data:
    """Normalise the training and validation splits onto ``dev`` in the dtype the steps read
    (bf16 under bf16 autocast), or keep them on the host to stream from when they do not fit
    (this rank's part only: its shard of the training split, and on rank 0 the validation and
    test splits). The normalisation is the whole training split's on every rank."""
    data_dtype = torch.bfloat16 if uses_bf16(dev, cfg.precision) else torch.float32
    mean, std = channel_stats(splits.x_train)
    x_train, y_train = shard(splits.x_train, splits.y_train, ranks)
    if stream is None:
        values = x_train.numel() + (splits.x_val.numel() + splits.x_test.numel() if ranks.leader else 0)
        stream = not keeps_on_device(values * data_dtype.itemsize, dev, max_device_mb)
    placement = dict(dtype=data_dtype, channels_last=cfg.channels_last, resident=not stream)
    train_data = DeviceImages(x_train, y_train, mean, std, dev, **placement)
    val_data = DeviceImages(splits.x_val, splits.y_val, mean, std, dev, **placement) if ranks.leader else None
    return _Data(splits, dev, ranks, local_batch(cfg.batch_size, ranks), mean, std, placement, stream, train_data,
                 val_data)


def _place_model(model: nn.Module, cfg: TrainConfig, dev: torch.device) -> nn.Module:
    """``model`` on ``dev`` (channels_last with ``cfg.channels_last``); CUDA's peak memory counted from here."""
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    return model


@dataclass
class _Optimisation:
    """The optimizer and its schedule, and the averaged copies of the weights (SWA, EMA)."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int
    swa_epoch: int | None  # SWA averages the weights at the end of this epoch and of every later one
    swa_model: AveragedModel | None
    ema_model: AveragedModel | None
    swa_sched: SWALR | None = None  # made when SWA starts: a scheduler sets the lr as soon as it is created

    def after_step(self, model: nn.Module, in_swa: bool) -> None:
        if not in_swa:
            self.sched.step()
        if self.ema_model is not None:
            self.ema_model.update_parameters(model)

    def after_epoch(self, model: nn.Module, epoch: int, cfg: TrainConfig) -> None:
        if self.swa_epoch is not None and epoch >= self.swa_epoch:
            self.swa_model.update_parameters(model)  # one snapshot at the end of each SWA epoch
            self.swa_sched = self.swa_sched or SWALR(self.opt, swa_lr=cfg.swa_lr or cfg.lr / 10, anneal_epochs=1)
            self.swa_sched.step()


def _optimisation(model: nn.Module, cfg: TrainConfig, n: int, batch: int | None = None) -> _Optimisation:
    """The optimizer of ``model``, a schedule over the steps before SWA starts (all of them
    without SWA), and the SWA and EMA averages ``cfg`` asks for; ``n`` training images
    (this rank's), ``batch`` images a step (default ``cfg.batch_size``)."""
    steps_per_epoch = max(1, n // (batch or cfg.batch_size))  # drop the last partial batch
    opt = make_optimizer(model, cfg)
    swa_epoch = min(cfg.epochs, max(1, math.ceil(cfg.swa_start * cfg.epochs))) if cfg.swa else None
    main_steps = (swa_epoch if swa_epoch else cfg.epochs) * steps_per_epoch
    sched = make_scheduler(opt, cfg, main_steps)
    swa_model = AveragedModel(model) if cfg.swa else None
    ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    return _Optimisation(opt, sched, steps_per_epoch, swa_epoch, swa_model, ema_model)


def _compiled(model: nn.Module, data: _Data, cfg: TrainConfig, dev: torch.device) -> tuple[nn.Module, float]:
    """The model the steps call (under DDP with several ranks, ``torch.compile``'d with
    ``cfg.compile``) and the seconds compiling took; compilation and cuDNN's autotuning
    happen in one step outside the timed loop."""
    if cfg.compile:
        # Dynamo's caches are per process: a reused worker's earlier models would count against
        # its recompile limit, past which this one would run eagerly while reported compiled.
        torch.compiler.reset()
    step_model = wrap(model, dev, cfg.sync_bn) if data.ranks.distributed else model
    step_model = torch.compile(step_model) if cfg.compile else step_model
    warm_up = (_warm_up(step_model, next(data.train.batches(None, data.batch, 1))[0], cfg, dev)
               if cfg.compile or dev.type == "cuda" else 0.0)
    return step_model, (warm_up if cfg.compile else 0.0)


def _train_epoch(epoch: int, model: nn.Module, step_model: nn.Module, data: _Data, optim: _Optimisation,
                 cfg: TrainConfig, gen: torch.Generator, aug_gen: torch.Generator | None = None
                 ) -> tuple[float, torch.Tensor]:
    """One epoch over a new permutation (drawn from ``gen``) of the training split (this rank's
    shard): augment each batch (drawing from ``aug_gen``, default ``gen``), step, schedule,
    average. Returns the mean loss over every rank (one sync) and the correct predictions of
    every rank (on the device)."""
    dev, aug_gen = data.dev, aug_gen or gen
    order = torch.randperm(len(data.train), device=dev, generator=gen)
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.int64)
    in_swa = optim.swa_epoch is not None and epoch > optim.swa_epoch
    for xb, yb in data.train.batches(order, data.batch, optim.steps_per_epoch):
        xb, yb, yb2, lam = augment(xb, yb, cfg, aug_gen)
        loss, logits = step(step_model, optim.opt, xb, yb, yb2, lam, cfg, dev)
        optim.after_step(model, in_swa)
        loss_sum += loss.detach()
        correct += (logits.argmax(1) == yb).sum()
    optim.after_epoch(model, epoch, cfg)
    all_sum(loss_sum, data.ranks)
    all_sum(correct, data.ranks)
    return loss_sum.item() / (optim.steps_per_epoch * data.ranks.world), correct


def _evaluate_epoch(epoch: int, mean_loss: float, correct: torch.Tensor, train_seconds: float, model: nn.Module,
                    data: _Data, optim: _Optimisation, cfg: TrainConfig) -> dict:
    """The epoch's metrics: the training loss and accuracy, and the validation accuracy (and
    on the last epoch the test accuracy) of the weights judged: SWA's average on the last
    epoch (its BatchNorm statistics recomputed first), else EMA's, else the model's. On the
    last epoch the weights judged are copied into ``model``. With several ranks, each
    recomputes SWA's statistics on its shard and they are averaged; rank 0 alone evaluates,
    and its metrics are every rank's."""
    dev, last = data.dev, epoch == cfg.epochs
    swa_model, ema_model = optim.swa_model, optim.ema_model
    if last and swa_model is not None:
        with autocast(dev, cfg.precision):  # the data may be bf16, the averaged model is fp32
            update_bn((xb for xb, _ in data.train.batches(None, cfg.eval_batch_size)), swa_model, device=dev)
        average_bn_stats(swa_model.module, data.ranks)
    judged = swa_model.module if (last and swa_model is not None) else (ema_model.module if ema_model else model)
    if last and judged is not model:
        model.load_state_dict(judged.state_dict())  # the weights that were judged are the ones kept
    if not data.ranks.leader:
        return from_rank0(None, data.ranks)
    metrics = {
        "epoch": epoch,
        "train_loss": mean_loss,
        "train_accuracy": correct.item() / (optim.steps_per_epoch * cfg.batch_size),
        "val_accuracy": accuracy(judged, data.val.batches(None, cfg.eval_batch_size), len(data.val), dev,
                                 cfg.precision, cfg.tta),
        "lr": optim.opt.param_groups[0]["lr"],
        "train_seconds": train_seconds,
    }
    if last:
        test_data = data.test()
        metrics["test_accuracy"] = accuracy(judged, test_data.batches(None, cfg.eval_batch_size), len(test_data),
                                            dev, cfg.precision, cfg.tta)
    return from_rank0(metrics, data.ranks)


def _warm_up(model: nn.Module, xb: torch.Tensor, cfg: TrainConfig, dev: torch.device) -> float:
    """Run forward and backward once so that torch.compile compiles, and cuDNN picks its
    algorithms, outside the timed loop; the weights' gradients are discarded (no optimizer
    step), BN statistics restored."""
    t0 = time.perf_counter()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with autocast(dev, cfg.precision):
        out = model(xb)
    out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0
