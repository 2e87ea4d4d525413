"""What a spec may name of the trainer, importable without torch: every training field
(:class:`TrainConfig`, with its default, allowed values and doc), the named ``RECIPES``,
the learning-rate ``SCHEDULES``, the ``DATASETS`` :func:`~archscale.trainer.load_dataset`
knows and the ``DataError`` it raises. ``archscale run`` validates a spec with these before it starts Ray, so nothing here
may import torch, numpy or the training loop (:mod:`archscale.trainer.loop`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

SCHEDULES = ("onecycle", "cosine", "constant", "triangular")
TORCHVISION = {  # archscale's name -> torchvision.datasets' class
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
}
DATASETS = ("mnist-5k", *TORCHVISION, "npz:PATH", "imagefolder:PATH")


class DataError(ValueError):
    """A dataset that is unknown or cannot be found or read (here, not in :mod:`.data`, so that
    the command line can tell this input error from a failure without importing torch)."""


def _field(default, doc: str, *, choices: tuple | None = None, searchable: bool = False, **bounds: float):
    """A training field: its default, a one-line ``doc``, the values it takes (``choices``, or
    ``bounds`` among ge, gt, le, lt) and whether a spec may search it (a list or a range)."""
    unknown = set(bounds) - {"ge", "gt", "le", "lt"}
    if unknown:
        raise TypeError(f"unknown bound {sorted(unknown)[0]!r}; allowed: ge, gt, le, lt")
    return field(default=default, metadata={"doc": doc, "choices": choices, "searchable": searchable, **bounds})


_BOUND_TESTS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
                "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


def _allowed(f) -> str:
    """What a TrainConfig field takes, in words: ``'sgd', 'adamw'`` or ``>= 0, < 1``."""
    meta = f.metadata
    if meta.get("choices"):
        return ", ".join(repr(c) for c in meta["choices"])
    return ", ".join(f"{_BOUND_TESTS[k][1]} {meta[k]}" for k in _BOUND_TESTS if k in meta) or "any"


@dataclass(frozen=True)
class TrainConfig:
    """Every training field, once: default, allowed values and a one-line doc per field (in
    ``dataclasses.fields(TrainConfig)[i].metadata``). The spec's ``train`` section is built
    from these fields (all but ``seed``, which is the spec's top-level seed)."""

    epochs: int = _field(5, "passes over the training split", ge=1, searchable=True)
    batch_size: int = _field(128, "images per step", ge=1, searchable=True)
    optimizer: str = _field("sgd", "sgd (Nesterov momentum) or adamw", choices=("sgd", "adamw"), searchable=True)
    lr: float = _field(0.05, "peak learning rate", gt=0, searchable=True)
    momentum: float = _field(0.9, "SGD momentum (Nesterov when > 0)", ge=0, lt=1, searchable=True)
    weight_decay: float = _field(5e-4, "L2 weight decay (decoupled for adamw)", ge=0, searchable=True)
    schedule: str = _field("onecycle", "learning-rate schedule", choices=SCHEDULES, searchable=True)
    warmup: float = _field(0.25, "fraction of steps rising to the peak lr (onecycle, triangular)", ge=0, le=1,
                           searchable=True)
    label_smoothing: float = _field(0.0, "label smoothing of the cross-entropy", ge=0, lt=1, searchable=True)
    precision: str = _field("auto", "auto: bf16 autocast on CUDA, fp32 on CPU", choices=("auto", "fp32", "bf16"))
    crop_padding: int = _field(0, "random-crop padding in pixels (zero fill); 0 = off", ge=0, searchable=True)
    flip: bool = _field(False, "random horizontal flips", searchable=True)
    cutout: int = _field(0, "side in pixels of a zeroed square at a random place per image; 0 = off", ge=0,
                         searchable=True)
    mixup: float = _field(0.0, "Beta(alpha, alpha) mixing of image pairs and their labels; 0 = off", ge=0,
                          searchable=True)
    sam_rho: float = _field(0.0, "SAM neighbourhood radius; 0 = plain steps", ge=0, searchable=True)
    swa: bool = _field(False, "stochastic weight averaging over the last epochs", searchable=True)
    swa_start: float = _field(0.75, "fraction of epochs after which SWA averages (one snapshot per epoch)", gt=0,
                              le=1, searchable=True)
    swa_lr: float = _field(0.0, "SWA's constant learning rate; 0 = lr / 10", ge=0, searchable=True)
    ema: float = _field(0.0, "decay per step of an exponential moving average of the weights; 0 = off", ge=0,
                        lt=1, searchable=True)
    tta: bool = _field(False, "evaluate on the image and its left-right mirror, logits averaged", searchable=True)
    channels_last: bool = _field(False, "NHWC memory format for model and data (faster convs on GPUs)")
    compile: bool = _field(False, "torch.compile the model (compilation is excluded from train_seconds)")
    device: str = _field("auto", "auto | cpu | cuda | cuda:N (auto: cuda when there is one)")
    sync_bn: bool = _field(False, "with several workers (search.resources_per_trial.workers), BatchNorm statistics "
                           "over the global batch (SyncBatchNorm, CUDA only); else each worker's own")
    eval_batch_size: int = _field(1024, "images per evaluation batch", ge=1)
    seed: int = _field(0, "seeds the weights' initialisation, the shuffling and the augmentation")

    def __post_init__(self) -> None:
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            ok = value in meta["choices"] if meta.get("choices") else all(
                test(value, meta[k]) for k, (test, _) in _BOUND_TESTS.items() if k in meta)
            if not ok:
                raise ValueError(f"TrainConfig.{f.name}: {value!r} is not allowed; allowed: {_allowed(f)}")


# Named recipes: a spec's ``train.recipe`` fills every training field the spec does not set.
RECIPES: dict[str, dict] = {
    # Seed 003 (cifar10-fast, "How to train your ResNet"), in mean-loss units: its lr 0.4 and
    # weight decay 5e-4 x batch on a summed loss are lr 0.4 and weight decay 5e-4 here.
    # Piecewise-linear lr peaking after 5 of 24 epochs; pad-4 crop, flip, 8x8 cutout on the
    # device; label smoothing 0.2; test-time flips; bf16 autocast on CUDA (BatchNorm in fp32).
    "davidnet": dict(epochs=24, batch_size=512, optimizer="sgd", lr=0.4, momentum=0.9, weight_decay=5e-4,
                     schedule="triangular", warmup=5 / 24, label_smoothing=0.2, crop_padding=4, flip=True,
                     cutout=8, tta=True, channels_last=True),
}
