"""What a trial needs besides its sampled values, and how a sampled configuration becomes
an architecture and a training recipe. Plain data: no torch, ray or optuna here, and no
pydantic either (a trial's worker imports this module; only the driver reads specs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archscale.analysis.records import REJECTED_SUFFIX  # noqa: F401 (its home before the records')
from archscale.spec import SpecError
from archscale.space import Arch, get_space

if TYPE_CHECKING:
    from archscale.spec import Spec

TRAIN_PREFIX = "train."  # sampled training fields: train.lr, train.mixup, ...
META_KEYS = ("seed", "variant")  # configuration keys that are neither architecture nor recipe


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides the sampled values (picklable: it travels to the workers)."""

    run_dir: str
    family: str
    fixed: dict[str, Any]  # the spec's fixed architecture values
    data_context: dict[str, int]  # in_channels, num_classes, image_size
    data_info: dict[str, Any]  # dataset, root, image_size, val_fraction, subset, seed: how to reload the splits
    train: dict[str, Any]  # the resolved training recipe (TrainConfig's fields)
    max_params: int | None = None
    max_macs: int | None = None
    max_latency_ms: float | None = None  # batch-1 inference latency on the trial's device
    max_memory_mb: float | None = None  # memory of one training batch, MiB
    cpus: float = 1.0
    seed: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)  # the driver's part (see search.provenance)
    classes: tuple[str, ...] | None = None  # class names in label order, when the dataset names them
    proxies: tuple[str, ...] = ()  # search.proxies: training-free proxies each trial computes before training
    proxy_batch: int = 64  # search.proxy_batch: images of the seeded minibatch they are computed on

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """(1, C, H, W) of one input image."""
        c = self.data_context
        return (1, c["in_channels"], c["image_size"], c["image_size"])

    @property
    def has_budgets(self) -> bool:
        return any(b is not None for b in (self.max_params, self.max_macs, self.max_memory_mb, self.max_latency_ms))


def require_suited_input(spec: Spec, data_context: dict[str, int]) -> None:
    """Raise SpecError when ``spec`` can sample a configuration that does not suit the dataset's
    input (:meth:`SearchSpace.input_mismatch`, e.g. a 32 px base on 224 px images), unless
    ``space.allow_resolution_mismatch``. Each listed value of each parameter is tried with the
    others at their fixed value, first value or low end."""
    if spec.space.allow_resolution_mismatch:
        return
    family = get_space(spec.space.family)
    dims = spec.space.dimensions()
    first = {**{p.name: p.default for p in family.params},
             **{d.name: d.values[0] if d.values else d.low for d in dims}, **data_context}
    candidates = [first] + [{**first, d.name: v} for d in dims for v in (d.values or (d.low, d.high))]
    for params in candidates:
        if (why := family.input_mismatch(params)) is not None:
            side = f", data.image_size {spec.data.image_size}" if spec.data.image_size is not None else ""
            raise SpecError(f"space.params.{why.field}: {why.message} (data.dataset {spec.data.dataset}{side}); or "
                            "set space.allow_resolution_mismatch: true")


def trial_context(spec: Spec, run_dir: str | Path, data_context: dict[str, int],
                  provenance: dict[str, Any] | None = None, classes: tuple[str, ...] | None = None) -> TrialContext:
    """The context of every trial of ``spec`` run in ``run_dir``; ``classes``: the dataset's
    class names in label order (an image folder's), recorded with each trial's result. Raises
    SpecError when the space does not suit the dataset's input (:func:`require_suited_input`)."""
    require_suited_input(spec, data_context)
    return TrialContext(
        run_dir=str(Path(run_dir).resolve()),
        family=spec.space.family,
        fixed=spec.space.fixed(),
        data_context=dict(data_context),
        data_info={"dataset": spec.data.dataset, "root": spec.data.root, "image_size": spec.data.image_size,
                   "val_fraction": spec.data.val_fraction, "subset": spec.data.subset, "seed": spec.seed,
                   "max_device_mb": spec.data.max_device_mb},
        train=spec.train.values(),
        max_params=spec.space.max_params,
        max_macs=spec.space.max_macs,
        max_latency_ms=spec.space.max_latency_ms,
        max_memory_mb=spec.space.max_memory_mb,
        cpus=spec.search.resources_per_trial.cpu,
        seed=spec.seed,
        provenance=dict(provenance or {}),
        classes=tuple(classes) if classes else None,
        proxies=tuple(spec.search.proxies),
        proxy_batch=spec.search.proxy_batch,
    )


def resolve_arch(ctx: TrialContext, sampled: dict[str, Any]) -> Arch:
    """The architecture of a sampled configuration (``train.*`` and META_KEYS are not part of it);
    raises SpaceError for values the family refuses."""
    arch_values = {k: v for k, v in sampled.items() if not k.startswith(TRAIN_PREFIX) and k not in META_KEYS}
    return get_space(ctx.family).resolve({**ctx.fixed, **arch_values}, ctx.data_context)


def train_values(ctx: TrialContext, sampled: dict[str, Any]) -> dict[str, Any]:
    """The spec's training recipe with the sampled ``train.*`` values applied."""
    return {**ctx.train, **{k[len(TRAIN_PREFIX):]: v for k, v in sampled.items() if k.startswith(TRAIN_PREFIX)}}


def counted(trials) -> int:
    """Trials that count toward ``num_trials``: all but those rejected before dispatch."""
    return int((~trials["trial_id"].astype(str).str.endswith(REJECTED_SUFFIX)).sum()) if len(trials) else 0


def native(value: Any) -> Any:
    """A numpy scalar (from a DataFrame) as the Python value Optuna and the families compare by."""
    return value.item() if hasattr(value, "item") else value
