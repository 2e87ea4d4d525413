"""A fast training and evaluation loop with the techniques of seeds 000 and 003.

The whole split lives on the training device as one normalised tensor; every epoch is
a ``randperm`` over it, and augmentation (random crop with padding, flip, cutout,
mixup) is done on whole batches on the device. No DataLoader, no worker processes.
When the normalised splits do not fit (over ``max_device_mb``, or on CUDA over half the
device's free memory) they stay uint8 in host memory, pinned when CUDA is there, and each
batch is gathered there, copied over and normalised on arrival (:class:`DeviceImages`):
the same batches, value for value, and augmentation still on the device.

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
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn

from archscale.trainer.config import SCHEDULES, TrainConfig
from archscale.trainer.arrays import Splits

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


# --------------------------------------------------------------------------- data on the device


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    x = images.float().div_(255)
    return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).clamp_min(1e-3).tolist()


def normalise(images: torch.Tensor, mean: list[float], std: list[float], device: torch.device,
              dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, C, H, W) -> ``dtype`` on ``device``, (x / 255 - mean) / std."""
    x = images.to(device, non_blocking=True).float().div_(255)
    m = torch.tensor(mean, device=device)[None, :, None, None]
    s = torch.tensor(std, device=device)[None, :, None, None]
    x = x.sub_(m).div_(s).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


MiB = 2**20


def keeps_on_device(nbytes: int, dev: torch.device, max_device_mb: float | None = None) -> bool:
    """Whether ``nbytes`` of normalised images may live on ``dev``: within ``max_device_mb``
    (MiB) when given, and on CUDA within half of the device's free memory (the other half is
    left to the training step). A CPU's device memory is the host's: no limit of its own."""
    if max_device_mb is not None and nbytes > max_device_mb * MiB:
        return False
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return nbytes <= free / 2
    return True


class DeviceImages:
    """One split as the loop reads it: batches of normalised images on ``dev``, and labels.

    ``resident``: the whole split is normalised onto the device once (airbench's way). Else
    the uint8 images stay on the host (pinned when the device is CUDA, so copies run while
    the device computes) and each batch is gathered there into one of two reused buffers,
    copied over and normalised on the device: 1 byte a value crosses instead of 2-4, no
    DataLoader and no worker. Both give the same values in the same order."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: list[float], std: list[float],
                 dev: torch.device, dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 resident: bool = True):
        self.dev, self.resident, self.dtype, self.channels_last = dev, resident, dtype, channels_last
        self.mean, self.std = mean, std
        self.labels = labels.to(dev)
        if resident:
            self.images = normalise(images, mean, std, dev, dtype, channels_last)  # (N, C, H, W) on dev
        else:
            self.images = images.contiguous()  # uint8 (N, C, H, W) on the host
            if dev.type == "cuda":
                try:
                    self.images = self.images.pin_memory()
                except RuntimeError:  # pinning refused (locked-memory limits): pageable copies, synchronous
                    pass
        self._buffers: list[torch.Tensor | None] = []
        self._copied: list = []  # a CUDA event per buffer: its last copy to the device is done

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, order: torch.Tensor | None, batch_size: int, steps: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches on the device: ``order`` (a permutation on the device, or
        None for the stored order), ``steps`` full batches, or every batch (the last partial)."""
        n = len(self)
        steps = steps if steps is not None else -(-n // batch_size)
        if self.resident:
            for i in range(steps):
                idx = order[i * batch_size:(i + 1) * batch_size] if order is not None else slice(
                    i * batch_size, (i + 1) * batch_size)
                yield self.images[idx], self.labels[idx]
            return
        host_order = order.cpu() if order is not None else None  # one sync per pass
        for i in range(steps):
            lo, hi = i * batch_size, min(n, (i + 1) * batch_size)
            if order is None:
                yield self._stream(torch.arange(lo, hi), i % 2), self.labels[lo:hi]
            else:
                yield self._stream(host_order[lo:hi], i % 2), self.labels[order[lo:hi]]

    def _stream(self, idx: torch.Tensor, slot: int) -> torch.Tensor:
        """The images at ``idx`` (host indices), gathered on the host, normalised on the device."""
        if self.dev.type != "cuda":
            return normalise(self.images.index_select(0, idx), self.mean, self.std, self.dev, self.dtype,
                             self.channels_last)
        if slot == len(self._buffers):  # two pinned gather buffers, reused: batch i+1 is gathered during step i
            self._buffers.append(None)
            self._copied.append(None)
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()  # the buffer's previous batch has reached the device
        if self._buffers[slot] is None or len(self._buffers[slot]) < len(idx):
            self._buffers[slot] = torch.empty((len(idx), *self.images.shape[1:]), dtype=torch.uint8,
                                              pin_memory=self.images.is_pinned())
        buffer = self._buffers[slot]
        out = buffer[:len(idx)]
        torch.index_select(self.images, 0, idx, out=out)
        xb = normalise(out, self.mean, self.std, self.dev, self.dtype, self.channels_last)
        event = torch.cuda.Event()
        event.record()
        self._copied[slot] = event
        return xb


# --------------------------------------------------------------------------- batch augmentation


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``padding`` pixels with zero fill, per image: (B, C, H, W).

    One ``gather`` of each image's window out of the flattened padded plane (on a CPU 3-7x
    faster than indexing with four broadcast index tensors: 0.52 -> 0.10 ms for 128 MNIST
    images, 8.4 -> 1.2 ms for 512 CIFAR images); NCHW or channels_last in, the same out."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    pw = w + 2 * padding
    window = (torch.arange(h, device=x.device)[:, None] * pw + torch.arange(w, device=x.device)).reshape(1, h * w)
    index = window + (dy * pw + dx)[:, None]  # (B, H*W): each output pixel's place in the padded plane
    if c > 1 and x.is_contiguous(memory_format=torch.channels_last):
        flat = padded.permute(0, 2, 3, 1).reshape(b, -1, c)  # (B, Hp*Wp, C)
        out = flat.gather(1, index[:, :, None].expand(b, h * w, c))
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)
    out = padded.reshape(b, c, -1).gather(2, index[:, None, :].expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2: (B, C, H, W)."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square (clipped at the border) at a random centre per image."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), device=x.device, generator=generator)[:, None, None]
    cx = torch.randint(0, w, (b,), device=x.device, generator=generator)[:, None, None]
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (B, H, W)
    # in place on a copy of x's own layout: masked_fill would return NCHW for channels_last x
    # (its layout follows the NCHW mask), a recompile under torch.compile and a conversion each step
    return x.clone(memory_format=torch.preserve_format).masked_fill_(inside[:, None], 0.0)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix each image with a random partner: ``lam * x + (1 - lam) * x[perm]``, one
    ``lam ~ Beta(alpha, alpha)`` per batch. Returns (mixed, y, y[perm], lam)."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
    return x.mul(lam).add_(x[perm], alpha=1 - lam), y, y[perm], lam


# --------------------------------------------------------------------------- optimisation


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether training on ``device`` at ``precision`` runs under bf16 autocast (and keeps its
    data in bf16): ``bf16``, or ``auto`` on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str):
    """The autocast context a training step on ``device`` at ``precision`` runs under."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, precision))


def configure_backends(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms for each new shape and keep the
    fastest (``cudnn.benchmark``, as airbench94 sets it): the batch shape of a training run
    never changes, and the timing happens in the untimed warm-up step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def make_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = True) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW, fused into one kernel per step where this torch can
    (CPU and CUDA; the same update as the per-tensor loop, fewer kernels)."""
    if cfg.optimizer == "sgd":
        make = partial(torch.optim.SGD, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                       weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        make = partial(torch.optim.AdamW, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: sgd, adamw")
    params = list(model.parameters())
    if fused:
        try:
            return make(params, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a device or dtype the fused kernels do not take
            pass
    return make(params)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps + 1, pct_start=cfg.warmup,
            anneal_strategy="linear", cycle_momentum=False, div_factor=25.0, final_div_factor=1e3)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)  # 0 at the last step
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0)
    if cfg.schedule == "triangular":
        return torch.optim.lr_scheduler.LambdaLR(opt, triangular(total_steps, cfg.warmup))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; known: {', '.join(SCHEDULES)}")


def triangular(total_steps: int, warmup: float) -> Callable[[int], float]:
    """Piecewise-linear LR factor: 0 -> 1 over ``warmup * total_steps`` steps, then 1 -> 0."""
    peak = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:
        if step <= peak:
            return step / peak
        return max(0.0, (total_steps - step) / max(1, total_steps - peak))

    return factor


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics but keep their running statistics
    (SAM's second pass must not count the batch twice): the buffers are saved and copied back.
    No module attribute changes (setting ``momentum`` would make torch.compile recompile)."""
    buffers = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in zip(buffers, saved):
                b.copy_(value)


def _loss(model, xb, yb, yb2, lam, cfg, dev):
    with autocast(dev, cfg.precision):
        logits = model(xb)
    logits = logits.float()
    loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
    if yb2 is not None:
        loss = lam * loss + (1 - lam) * F.cross_entropy(logits, yb2, label_smoothing=cfg.label_smoothing)
    return loss, logits


def _sam_step(model, opt, xb, yb, yb2, lam, cfg, dev):
    """One SAM update (Foret et al. 2021): gradient at the worst nearby point, step from here."""
    loss, logits = _loss(model, xb, yb, yb2, lam, cfg, dev)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = torch.norm(torch.stack([p.grad.norm(2) for p in params]), 2)
    scale = cfg.sam_rho / (grad_norm + 1e-12)
    shifts = []
    with torch.no_grad():
        for p in params:
            e = p.grad * scale
            p.add_(e)
            shifts.append(e)
    opt.zero_grad(set_to_none=True)
    with frozen_bn_stats(model):
        second, _ = _loss(model, xb, yb, yb2, lam, cfg, dev)
        second.backward()
    with torch.no_grad():
        for p, e in zip(params, shifts):
            p.sub_(e)
    opt.step()
    return loss, logits


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
    ``train_loss``, ``train_accuracy``, ``val_accuracy``, ``lr`` and ``train_seconds``;
    on the last epoch ``test_accuracy`` is added (the test split is never used to choose).
    With SWA or EMA, validation and test use the averaged weights, which are then copied
    into ``model``.
    """
    start = time.perf_counter()
    device = cfg.device if device is None else device
    dev = resolve_device(device) if isinstance(device, str) else device
    if dev.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    configure_backends(dev)
    data_dtype = torch.bfloat16 if uses_bf16(dev, cfg.precision) else torch.float32
    mean, std = channel_stats(splits.x_train)
    if stream is None:
        values = sum(x.numel() for x in (splits.x_train, splits.x_val, splits.x_test))
        stream = not keeps_on_device(values * data_dtype.itemsize, dev, max_device_mb)
    prep = dict(dtype=data_dtype, channels_last=cfg.channels_last, resident=not stream)
    train_data = DeviceImages(splits.x_train, splits.y_train, mean, std, dev, **prep)
    val_data = DeviceImages(splits.x_val, splits.y_val, mean, std, dev, **prep)
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    n = len(train_data)
    steps_per_epoch = max(1, n // cfg.batch_size)  # drop the last partial batch
    opt = make_optimizer(model, cfg)
    swa_epoch = min(cfg.epochs, max(1, math.ceil(cfg.swa_start * cfg.epochs))) if cfg.swa else None
    main_steps = (swa_epoch if swa_epoch else cfg.epochs) * steps_per_epoch
    sched = _scheduler(opt, cfg, main_steps)
    swa_model = AveragedModel(model) if cfg.swa else None
    swa_sched = None  # made when SWA starts: a scheduler sets the lr as soon as it is created
    ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    if cfg.compile:
        # Dynamo's caches are per process: a reused worker's earlier models would count against
        # its recompile limit, past which this one would run eagerly while reported compiled.
        torch.compiler.reset()
    step_model = torch.compile(model) if cfg.compile else model
    # compilation and cuDNN's autotuning happen in one step outside the timed loop
    warm_up = (_warm_up(step_model, next(train_data.batches(None, cfg.batch_size, 1))[0], cfg, dev)
               if cfg.compile or dev.type == "cuda" else 0.0)
    compile_seconds = warm_up if cfg.compile else 0.0

    history: list[dict] = []
    train_seconds = 0.0
    timer = _Timer(dev)
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        timer.start()
        order = torch.randperm(n, device=dev, generator=gen)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        in_swa = swa_epoch is not None and epoch > swa_epoch
        for xb, yb in train_data.batches(order, cfg.batch_size, steps_per_epoch):
            if cfg.crop_padding > 0:
                xb = random_crop(xb, cfg.crop_padding, gen)
            if cfg.flip:
                xb = random_flip(xb, gen)
            if cfg.cutout > 0:
                xb = cutout(xb, cfg.cutout, gen)
            yb2, lam = None, 1.0
            if cfg.mixup > 0:
                xb, yb, yb2, lam = mixup(xb, yb, cfg.mixup, gen)
            if cfg.sam_rho > 0:
                loss, logits = _sam_step(step_model, opt, xb, yb, yb2, lam, cfg, dev)
            else:
                loss, logits = _loss(step_model, xb, yb, yb2, lam, cfg, dev)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if not in_swa:
                sched.step()
            if ema_model is not None:
                ema_model.update_parameters(model)
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == yb).sum()
        if swa_epoch is not None and epoch >= swa_epoch:
            swa_model.update_parameters(model)  # one snapshot at the end of each SWA epoch
            swa_sched = swa_sched or SWALR(opt, swa_lr=cfg.swa_lr or cfg.lr / 10, anneal_epochs=1)
            swa_sched.step()
        mean_loss = loss_sum.item() / steps_per_epoch  # one sync per epoch
        train_seconds += timer.stop()
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(f"loss became {mean_loss} in epoch {epoch}")
        last = epoch == cfg.epochs
        if last and swa_model is not None:
            with autocast(dev, cfg.precision):  # the data may be bf16, the averaged model is fp32
                update_bn((xb for xb, _ in train_data.batches(None, cfg.eval_batch_size)), swa_model, device=dev)
        judged = swa_model.module if (last and swa_model is not None) else (ema_model.module if ema_model else model)
        metrics = {
            "epoch": epoch,
            "train_loss": mean_loss,
            "train_accuracy": correct.item() / (steps_per_epoch * cfg.batch_size),
            "val_accuracy": accuracy(judged, val_data.batches(None, cfg.eval_batch_size), len(val_data), dev,
                                     cfg.precision, cfg.tta),
            "lr": opt.param_groups[0]["lr"],
            "train_seconds": train_seconds,
        }
        if last:
            test_data = DeviceImages(splits.x_test, splits.y_test, mean, std, dev, **prep)
            metrics["test_accuracy"] = accuracy(judged, test_data.batches(None, cfg.eval_batch_size), len(test_data),
                                                dev, cfg.precision, cfg.tta)
            if judged is not model:
                model.load_state_dict(judged.state_dict())  # the weights that were judged are the ones kept
        history.append(metrics)
        if callback is not None:
            callback(epoch, dict(metrics))

    last_metrics = history[-1] if history else {"val_accuracy": float("nan"), "test_accuracy": float("nan")}
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return TrainResult(
        val_accuracy=last_metrics["val_accuracy"], test_accuracy=last_metrics["test_accuracy"], epochs=len(history),
        train_seconds=train_seconds, wall_seconds=time.perf_counter() - start, compile_seconds=compile_seconds,
        peak_memory_mb=peak, mean=mean, std=std, history=history, streamed=stream,
    )


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
