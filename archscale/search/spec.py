"""The YAML spec: pydantic models, loading, ``--set`` overrides and readable errors.

Every model forbids unknown keys. A parameter of the search space is written as

- a scalar: fixed (``norm: batch``);
- a list: a categorical choice (``c1_width: [8, 12, 16]``);
- ``{low, high[, step][, log]}``: an int range when low and high are ints, else a float range.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model, field_validator,
                      model_serializer, model_validator)

from archscale.search.errors import SpecError  # noqa: F401 - re-exported: archscale.search.spec.SpecError
from archscale.space import CONTEXT_PARAMS, SpaceError, get_space, user
from archscale.trainer.config import DATASETS, RECIPES, TrainConfig

OBJECTIVES = ("val_accuracy", "params", "macs", "memory_mb", "latency_ms", "train_seconds")
SAMPLERS = ("tpe", "nsga2", "random", "grid", "gp")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Range(_Strict):
    low: float | int
    high: float | int
    step: float | int | None = None
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)) and (
            self.step is None or isinstance(self.step, int))


@dataclass(frozen=True)
class Dimension:
    """One parameter of the space as the search sees it."""

    name: str
    kind: Literal["fixed", "choice", "int", "float"]
    values: tuple = ()  # fixed: (value,); choice: the choices
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    @property
    def size(self) -> float:
        """Number of distinct values (inf for a continuous float range)."""
        if self.kind in ("fixed", "choice"):
            return len(self.values)
        if self.kind == "int":
            return (self.high - self.low) // (self.step or 1) + 1
        if self.step:
            return math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return math.inf

    def grid(self) -> list:
        """Every value of the dimension; only for finite ones."""
        if self.kind in ("fixed", "choice"):
            return list(self.values)
        if self.kind == "int":
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.step:
            return [self.low + i * self.step for i in range(int(self.size))]
        raise SpecError(f"space.params.{self.name}: a float range without step has no grid; give step or a list")


class DataSpec(_Strict):
    dataset: str = Field("mnist-5k", description="mnist-5k | mnist | fashion-mnist | cifar10 | cifar100 | npz:PATH "
                         "| imagefolder:PATH")
    root: str = Field("data", description="where torchvision datasets are stored / downloaded, and where decoded "
                      "image folders are cached (ROOT/imagefolder-cache/)")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="fraction of the training set held out for validation "
                                "(not used when an image folder has val/)")
    subset: float = Field(1.0, gt=0, le=1, description="fraction of the remaining training set used for training")
    image_size: int | None = Field(None, ge=1, description="side in px an imagefolder: dataset's images are brought "
                                   "to (short side resized, centre crop); required for imagefolder:, only for it")
    max_device_mb: float | None = Field(None, gt=0, description="MiB of decoded images a trial may keep on its device; "
                                        "past it (or past half the GPU's free memory) batches stream from host memory")

    @field_validator("dataset")
    @classmethod
    def _known(cls, value: str) -> str:
        if not (value in DATASETS or value.startswith(("npz:", "imagefolder:"))) or value in (
                "npz:PATH", "imagefolder:PATH", "npz:", "imagefolder:"):
            raise ValueError(f"unknown dataset {value!r}; allowed: {', '.join(DATASETS)}")
        return value

    @model_validator(mode="after")
    def _side(self) -> "DataSpec":
        folder = self.dataset.startswith("imagefolder:")
        if folder and self.image_size is None:
            raise ValueError("data.image_size: not set; an imagefolder: dataset needs the side in px its images are "
                             "brought to (e.g. image_size: 64)")
        if not folder and self.image_size is not None:
            raise ValueError(f"data.image_size: {self.image_size} is only for imagefolder: datasets; "
                             f"{self.dataset} has its own side (remove image_size)")
        return self


class SpaceSpec(_Strict):
    family: str = Field("budgeted", description="a family's name (`archscale spaces`) or a family of your own, "
                        "package.module:ClassName, imported from the current folder or PYTHONPATH")
    family_path: str | None = Field(None, description="the folder the module of a package.module:ClassName family "
                                    "was found in; filled in when the spec is resolved, so that later commands "
                                    "find it from any folder")
    params: dict[str, Any] = Field(default_factory=dict, description="fixed values, choice lists or ranges")
    max_params: int | None = Field(None, gt=0, description="budget on trainable parameters")
    max_macs: int | None = Field(None, gt=0, description="budget on multiply-adds per image (fvcore)")
    max_latency_ms: float | None = Field(None, gt=0, description="budget on batch-1 inference latency (ms) on the trial's device")
    max_memory_mb: float | None = Field(None, gt=0, description="budget on the memory of one training batch, MiB "
                                        "(measured on a GPU, estimated from activation sizes on a CPU)")
    allow_resolution_mismatch: bool = Field(False, description="run configurations whose network was designed for "
                                            "an input side more than 2x from the dataset's (e.g. a 32 px base on "
                                            "224 px images); refused by default")

    @model_validator(mode="before")
    @classmethod
    def _user_family(cls, data: Any) -> Any:
        """Import a user's family (from ``family_path`` too, where a run found it) and record
        the folder it was found in."""
        family = data.get("family") if isinstance(data, dict) else None
        if not (isinstance(family, str) and user.is_reference(family)):
            return data
        folder = data.get("family_path")
        if folder is not None and not isinstance(folder, str):
            raise ValueError(f"space.family_path: {folder!r} is not a folder; expected the path of the folder "
                             "that holds the family's module")
        try:
            space = user.load_family(family, Path(folder).resolve() if folder else None)
        except SpaceError as err:
            raise ValueError(f"space.family: {err.message}") from None
        return {**data, "family_path": user.origin(space.name).folder}

    @field_validator("family")
    @classmethod
    def _family(cls, value: str) -> str:
        try:
            get_space(value)
        except SpaceError as err:
            raise ValueError(err.message) from None
        return value

    @model_validator(mode="after")
    def _params(self) -> "SpaceSpec":
        self.dimensions()  # raises ValueError with the parameter's name
        return self

    def dimensions(self) -> list[Dimension]:
        """The parameters as the search sees them; validated against the family."""
        family = get_space(self.family)
        context = {p.name for p in CONTEXT_PARAMS}
        dims = []
        for name, raw in self.params.items():
            if name in context:
                raise ValueError(f"params.{name}: set by the dataset, not by the spec")
            try:
                param = family.param(name)
            except SpaceError as err:
                raise ValueError(f"params.{name}: {err.message}") from None
            dims.append(_dimension(param, raw))
        return dims

    def fixed(self) -> dict[str, Any]:
        return {d.name: d.values[0] for d in self.dimensions() if d.kind == "fixed"}

    def searched(self) -> list[Dimension]:
        return [d for d in self.dimensions() if d.kind != "fixed"]


def _dimension(param, raw: Any) -> Dimension:
    where = f"params.{param.name}"

    def coerce(value: Any) -> Any:
        try:
            return param.coerce(value)
        except SpaceError as err:
            raise ValueError(f"{where}: {err.message}") from None

    if isinstance(raw, list):
        if not raw:
            raise ValueError(f"{where}: the choice list is empty; give at least one value")
        values = tuple(coerce(v) for v in raw)
        if len(set(values)) != len(values):
            raise ValueError(f"{where}: the choice list {list(raw)} repeats a value")
        return Dimension(param.name, "choice", values) if len(values) > 1 else Dimension(param.name, "fixed", values)
    if isinstance(raw, dict):
        try:
            rng = Range.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise ValueError(f"{where}{'.' + loc if loc else ''}: {_clean(first['msg'])} (got {raw})") from None
        if param.kind not in (int, float):
            raise ValueError(f"{where}: a range {raw} needs a numeric parameter; allowed: {param.allowed()}")
        if param.choices is not None:
            raise ValueError(f"{where}: takes only listed values, not a range; allowed: {param.allowed()}")
        is_int = param.kind is int
        if is_int and not rng.is_int:
            raise ValueError(f"{where}: an integer parameter needs integer low/high/step (got {raw})")
        coerce(rng.low), coerce(rng.high)
        return Dimension(param.name, "int" if is_int else "float", (), rng.low if is_int else float(rng.low),
                         rng.high if is_int else float(rng.high), rng.step, rng.log)
    return Dimension(param.name, "fixed", (coerce(raw),))


# The spec's ``train`` section is built from ``trainer.TrainConfig``: every field but ``seed``
# (each trial's seed comes from the spec's top-level ``seed``), with its default, bounds,
# allowed values and doc. A field whose metadata says ``searchable`` may be a list or a range.
TRAIN_FIELDS = tuple(f for f in dataclasses.fields(TrainConfig) if f.name != "seed")
SEARCHABLE_TRAIN = tuple(f.name for f in TRAIN_FIELDS if f.metadata["searchable"])


class _TrainBase(_Strict):
    """Training recipe: the fields of ``trainer.TrainConfig`` (but ``seed``, the spec's
    top-level one). Any field in SEARCHABLE_TRAIN may be a list or a range, searched like an
    architecture choice (its column in trials.csv is ``train.<field>``). ``recipe`` names a
    preset (``trainer.RECIPES``) whose values fill every field not given here."""

    recipe: str | None = Field(None, description=f"a named recipe filling the fields not given: {', '.join(RECIPES)}")

    _searched: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _split_searched(cls, data: Any, handler):
        """Pull out the searched fields; check each of their values as the field would."""
        if not isinstance(data, dict):
            return handler(data)
        if "seed" in data:
            raise ValueError("train.seed: the seed is the spec's top-level 'seed', not a training field")
        name = data.get("recipe")
        if name is not None:
            if not isinstance(name, str) or name not in RECIPES:
                raise ValueError(f"train.recipe: {name!r} is not a recipe; known: {', '.join(RECIPES)}")
            data = {**RECIPES[name], **data}  # the spec's own values win
        searched = {k: v for k, v in data.items() if isinstance(v, list) or (isinstance(v, dict) and "low" in v)}
        fixed = {k: v for k, v in data.items() if k not in searched}
        firsts = {}
        for key, raw in searched.items():
            if key not in SEARCHABLE_TRAIN:
                if key not in cls.model_fields:
                    handler({**fixed, key: raw})  # reports the unknown key
                raise ValueError(f"train.{key}: cannot be searched; searchable: {', '.join(SEARCHABLE_TRAIN)}")
            if isinstance(raw, list):
                if not raw:
                    raise ValueError(f"train.{key}: the choice list is empty; give at least one value")
                values = raw
            else:
                try:
                    rng = Range.model_validate(raw)
                except ValidationError as err:
                    raise ValueError(f"train.{key}: {_clean(err.errors()[0]['msg'])} (got {raw})") from None
                if cls.model_fields[key].annotation not in (int, float):
                    raise ValueError(f"train.{key}: a range {raw} needs a numeric field")
                values = [rng.low, rng.high]
            for value in values:
                handler({**fixed, key: value})  # raises the field's own error for a bad value
            firsts[key] = values[0]
        model = handler({**fixed, **firsts})
        model._searched = searched
        return model

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        return {**handler(self), **self._searched}

    def values(self) -> dict[str, Any]:
        """Every training field's value (the recipe's filled in), as ``TrainConfig`` takes them;
        a searched field holds its first value (a trial overrides it)."""
        return {f.name: getattr(self, f.name) for f in TRAIN_FIELDS}

    def dimensions(self) -> list[Dimension]:
        """The searched training fields, named ``train.<field>``."""
        dims = []
        for key, raw in self._searched.items():
            kind = type(self).model_fields[key].annotation
            name = f"train.{key}"
            if isinstance(raw, list):
                values = tuple(getattr(type(self).model_validate({key: v}), key) for v in raw)
                if len(set(values)) != len(values):
                    raise ValueError(f"train.{key}: the choice list {raw} repeats a value")
                dims.append(Dimension(name, "choice" if len(values) > 1 else "fixed", values))
            else:
                rng = Range.model_validate(raw)
                is_int = kind is int
                if is_int and not rng.is_int:
                    raise ValueError(f"train.{key}: an integer field needs integer low/high/step (got {raw})")
                low, high = (int(rng.low), int(rng.high)) if is_int else (float(rng.low), float(rng.high))
                dims.append(Dimension(name, "int" if is_int else "float", (), low, high, rng.step, rng.log))
        return dims


def _train_field(f: dataclasses.Field, annotation: type) -> tuple[Any, Any]:
    """A TrainConfig field as a pydantic field: its choices become a Literal, its bounds Field's."""
    meta = f.metadata
    if meta["choices"]:
        annotation = Literal[meta["choices"]]  # type: ignore[valid-type]
    bounds = {k: meta[k] for k in ("ge", "gt", "le", "lt") if k in meta}
    return annotation, Field(f.default, description=meta["doc"], **bounds)


_TRAIN_TYPES = typing.get_type_hints(TrainConfig)
TrainSpec = create_model("TrainSpec", __base__=_TrainBase, __module__=__name__, __doc__=_TrainBase.__doc__,
                         **{f.name: _train_field(f, _TRAIN_TYPES[f.name]) for f in TRAIN_FIELDS})


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0, description="CPU cores per trial; also the trial's torch threads")
    gpu: float | str = Field(
        "auto", description="GPUs per trial: a fraction below 1 shares one GPU, 'auto' sizes the fraction from "
                            "the measured peak memory of one training step (0 where the cluster has no GPU)")

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, value: Any) -> float | str:
        allowed = "allowed: 'auto', a fraction in [0, 1] (several trials share one GPU) or a whole number of GPUs"
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"gpu {value!r} is not allowed; {allowed}")
        if value < 0 or (value > 1 and value != int(value)):
            raise ValueError(f"gpu {value!r} is not allowed; {allowed}")
        return float(value)


class AshaSpec(_Strict):
    """Asynchronous successive halving (Ray Tune's ASHAScheduler) on validation accuracy.
    The last rung is ``train.epochs``: a trial that is never stopped trains its full schedule."""

    grace_period: int = Field(1, ge=1, description="epochs every trial trains before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1, description="at each rung, trials below the top 1/reduction_factor stop")


ADDRESS = re.compile(r"^(auto|ray://[^\s:/]+:\d+|[^\s:/]+:\d+)$")


class CoefficientsStage(_Strict):
    """Stage 1 of a compound-scaling search: (alpha, beta, gamma) at a fixed phi."""

    sampler: Literal["tpe", "nsga2", "random", "grid"] = "grid"
    num_trials: int | None = Field(None, ge=1, description="default: every grid point (grid), else search.num_trials")
    phi: float = Field(1.0, gt=0, le=8, description="phi at which the coefficients are compared")


class PhiSweepStage(_Strict):
    """Stage 2: the best (alpha, beta, gamma) of stage 1, scaled by every phi of a list."""

    phi: list[float] = Field(..., min_length=1, description="values of phi, e.g. [0, 1, 2, 3]")
    compare_single_dimension: bool = Field(False, description="also scale depth only, width only and resolution "
                                           "only to the same MACs multiplier, for scaling.png")

    @field_validator("phi")
    @classmethod
    def _phis(cls, value: list[float]) -> list[float]:
        for phi in value:
            if not 0 <= phi <= 8:
                raise ValueError(f"phi {phi} is out of range; allowed: 0 <= phi <= 8")
        if len(set(value)) != len(value):
            raise ValueError(f"the list {value} repeats a value")
        return value


class Stages(_Strict):
    """``search.stages`` of the ``efficientnet`` family: stage 1 then stage 2, one run."""

    coefficients: CoefficientsStage = Field(default_factory=CoefficientsStage)
    phi_sweep: PhiSweepStage


class SearchSpec(_Strict):
    sampler: Literal["tpe", "nsga2", "random", "grid", "gp"] = "gp"
    num_trials: int = Field(10, ge=1)
    objectives: list[str] = Field(default_factory=lambda: ["val_accuracy:max"], min_length=1, max_length=3)
    max_concurrent: int = Field(2, ge=1)
    resources_per_trial: Resources = Field(default_factory=Resources)
    constraints: bool = Field(False, description="also tell over-budget configurations to tpe, nsga2 and gp as "
                              "Optuna constraints (Trial.set_constraint), not only as 0 accuracy")
    scheduler: Literal["none", "asha"] = Field("none", description="asha: stop weak trials early on val_accuracy")
    asha: AshaSpec = Field(default_factory=AshaSpec)
    max_failures: int = Field(1, ge=0, description="retries of a trial whose worker died or ran out of GPU memory")
    time_budget_s: float | None = Field(None, gt=0, description="wall-clock seconds for this invocation; unfinished "
                                                                "trials are stopped and rerun by --resume")
    address: str | None = Field(None, description="Ray cluster: null starts Ray here; 'auto', 'HOST:PORT' (the GCS) "
                                                  "or 'ray://HOST:PORT' (Ray Client) joins an existing cluster")
    resource_wait_s: float = Field(0.0, ge=0, description="a cluster that grows (Ray's autoscaler): seconds to "
                                   "wait at start for a node that can hold one trial; 0 takes the cluster as it is "
                                   "(a trial no node can hold is refused at once)")
    store: str | None = Field(None, description="results store: a SQLite file shared between runs; a configuration "
                                                "already trained under the same key is read from it, not trained")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not ADDRESS.match(value):
            raise ValueError(f"address {value!r} is not allowed; allowed: null (start Ray here), 'auto', "
                             "'HOST:PORT' or 'ray://HOST:PORT'")
        return value

    reference_point: dict[str, float] | None = Field(
        None, description="hypervolume reference point, metric -> value (default: the worst completed value)")

    @field_validator("reference_point")
    @classmethod
    def _reference(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if not value:  # a run's spec.yaml writes null: checked without importing pareto (pandas)
            return value
        from archscale.analysis.pareto import METRICS

        for metric in value:
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
        return value
    stages: Stages | None = Field(None, description="two-stage compound scaling (family efficientnet); "
                                  "replaces sampler and num_trials")

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        seen = set()
        for item in value:
            metric, _, mode = item.partition(":")
            if metric not in OBJECTIVES:
                raise ValueError(f"unknown objective {metric!r} in {item!r}; allowed: {', '.join(OBJECTIVES)} "
                                 "(test_accuracy is reported, never optimised)")
            if mode not in ("max", "min"):
                raise ValueError(f"objective {item!r} needs a direction ':max' or ':min'")
            if metric in seen:
                raise ValueError(f"objective {metric!r} is given twice")
            seen.add(metric)
        return value

    def objective_pairs(self) -> list[tuple[str, str]]:
        return [tuple(o.split(":")) for o in self.objectives]  # type: ignore[misc]


class Spec(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", description="names the run directory")
    seed: int = 0
    data: DataSpec = Field(default_factory=DataSpec)
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)

    @model_validator(mode="after")
    def _grid(self) -> "Spec":
        self.train.dimensions()  # raises for bad train choices
        stages = self.search.stages
        if stages is not None:
            if self.space.family != "efficientnet":
                raise ValueError(f"search.stages: two-stage compound scaling needs space.family 'efficientnet', "
                                 f"not {self.space.family!r}")
            if "phi" in self.space.params:
                raise ValueError("space.params.phi: set by search.stages (coefficients.phi, phi_sweep.phi), "
                                 "not in space.params, when search.stages is given")
            searched_train = [d.name for d in self.train.dimensions() if d.kind != "fixed"]
            if searched_train:
                raise ValueError(f"{searched_train[0]}: training fields cannot be searched with search.stages "
                                 "(a compound-scaling run compares networks under one recipe); give one value")
            if (self.search.address or "").startswith("ray://"):
                raise ValueError(f"search.address: {self.search.address!r} (Ray Client) is not supported with "
                                 "search.stages; allowed: null, 'auto' or 'HOST:PORT'")
            if self.search.scheduler != "none":
                raise ValueError(f"search.scheduler: {self.search.scheduler!r} is not used with search.stages "
                                 "(every stage-2 point trains in full); allowed: none")
        sampler, where = (stages.coefficients.sampler, "search.stages.coefficients.sampler") if stages else (
            self.search.sampler, "search.sampler")
        if sampler == "grid":
            for d in self.searched():
                if d.size == math.inf:
                    raise ValueError(f"{where}: 'grid' needs finite choices, but space.params.{d.name} "
                                     "is a float range without step")
        return self

    @model_validator(mode="after")
    def _asha(self) -> "Spec":
        if self.search.scheduler != "asha":
            return self
        if "val_accuracy" not in [m for m, _ in self.search.objective_pairs()]:
            raise ValueError(f"search.scheduler: 'asha' stops trials on val_accuracy, which is not among the "
                             f"objectives {self.search.objectives}; add val_accuracy:max or use scheduler: none")
        if self.train.epochs < 2:
            raise ValueError("search.scheduler: 'asha' stops trials between epochs, but train.epochs is 1; "
                             "train for 2 or more epochs or use scheduler: none")
        if self.search.asha.grace_period >= self.train.epochs:
            raise ValueError(f"search.asha.grace_period: {self.search.asha.grace_period} is not below train.epochs "
                             f"({self.train.epochs}), so ASHA could stop no trial; allowed: 1 to {self.train.epochs - 1}")
        return self

    def searched(self) -> list[Dimension]:
        """Every searched dimension: the architecture's, then the training recipe's (``train.*``)."""
        return self.space.searched() + [d for d in self.train.dimensions() if d.kind != "fixed"]

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------- errors


def _clean(msg: str) -> str:
    return re.sub(r"^(Value error|Assertion failed), ", "", msg)


def _unwrap(annotation: Any) -> Any:
    """``Model | None`` -> ``Model`` (the optional sub-models of the spec)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return annotation


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: Any = Spec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def format_validation_error(err: ValidationError) -> str:
    """One line for the first error: the field, the value and what is allowed."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    where = ".".join(str(x) for x in loc) or "spec"
    if first["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see `archscale spaces`"
        return f"{where}: unknown key {loc[-1]!r}; allowed keys here: {allowed}"
    if first["type"] == "missing":
        return f"{where}: required field is missing"
    msg = _clean(first["msg"])
    # Our own validators already name the sub-field ("params.x: ...", "train.x: ..."); keep that path.
    head = msg.split(": ", 1)[0] if re.match(r"^[\w.]+: ", msg) else ""
    if head and (where == "spec" or head.startswith(where + ".")):
        return msg
    if head.startswith("params.") and where == "space":
        return f"space.{msg}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) or f"{value!r}" in msg or str(value) in msg else f" (got {value!r})"
    return f"{where}: {msg}{shown}"


# --------------------------------------------------------------------------- loading


def read_yaml(path: str | Path) -> dict:
    """The mapping a YAML spec file holds; SpecError naming the file, and the line where
    there is one, when it is missing, not a file, not text, not YAML or not a mapping."""
    from archscale.analysis.files import FileError, read_text, yaml_error

    path = Path(path)
    expected = "a YAML spec (a text file: name, data, space, train, search)"
    if not path.exists():
        raise SpecError(f"spec file {str(path)!r} does not exist")
    try:
        text = read_text(path, expected)
    except FileError as err:
        raise SpecError(str(err)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(yaml_error(path, err)) from None
    if raw is None:
        raise SpecError(f"{path}: the spec is empty")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a mapping of keys (name, data, space, train, search), got {type(raw).__name__}")
    return raw


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``key.path=value`` (value parsed as YAML) to the raw spec dict."""
    key, eq, text = assignment.partition("=")
    if not eq or not key:
        raise SpecError(f"--set {assignment!r}: expected key.path=value")
    parts = key.split(".")
    model: Any = Spec
    for i, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        if fields is None:
            # Below a free mapping (space.params): the family validates the names.
            if model is not dict and not (getattr(model, "__origin__", None) is dict):
                raise SpecError(f"--set {key}: {'.'.join(parts[:i])} has no sub-fields")
            model = Any
            continue
        if part not in fields:
            where = ".".join(parts[:i]) or "the spec"
            raise SpecError(f"--set {key}: no field {part!r} in {where}; allowed: {', '.join(fields)}")
        model = _unwrap(fields[part].annotation)
        if hasattr(model, "__origin__") and model.__origin__ is dict:
            model = dict
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def parse_spec(raw: dict, source: str = "spec") -> Spec:
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(format_validation_error(err)) from None
    except (ValueError, SpaceError) as err:
        raise SpecError(str(err)) from None


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read, override and validate a spec file; raise SpecError with one clear line."""
    raw = read_yaml(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    return parse_spec(raw, str(path))
