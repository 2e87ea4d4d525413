"""The spec's sections that describe the data, the search space and the training recipe.

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

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model, field_validator,
                      model_serializer, model_validator)

from archscale.space import CONTEXT_PARAMS, SpaceError, get_space, user
from archscale.spec.errors import SpecError
from archscale.trainer.config import DATASETS, RECIPES, TrainConfig

OBJECTIVES = ("val_accuracy", "params", "macs", "memory_mb", "latency_ms", "train_seconds")
SAMPLERS = ("auto", "tpe", "nsga2", "random", "grid", "gp")


def _clean(msg: str) -> str:
    """A pydantic message without its "Value error, " prefix."""
    return re.sub(r"^(Value error|Assertion failed), ", "", msg)


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
                      "image folders are cached (ROOT/imagefolder-cache/); a relative path is relative to the spec "
                      "file's folder (the default: to the current folder)")
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

    def context(self) -> dict[str, int]:
        """``in_channels``, ``num_classes`` and ``image_size`` of the dataset
        (:func:`archscale.trainer.dataset_context`: an npz file is loaded, an image folder
        decoded into its cache when it was not before); raises DataError."""
        from archscale.trainer import dataset_context  # torch: only when asked

        return dataset_context(self.dataset, self.root, self.image_size)

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
