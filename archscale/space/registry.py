"""Search-space families: parameter declarations, the base class and a strict registry.

A family is registered by :func:`register_space` only; finding one by name (a user's own
family, an installed package's) and ``build`` are :mod:`space.families`, above this module and
:mod:`space.user`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, TypeVar

from archscale.space.arch import Arch, Scalar

if TYPE_CHECKING:  # torch only names the type of a built model: declaring a family imports none
    from torch import nn


@dataclass(frozen=True)
class Network:
    """How a family builds a model: ``factory(**kwargs)``, a network class (or function) and
    its arguments, plain values (numbers, strings, mappings, tuples, frozen dataclasses).
    :meth:`SearchSpace.build_model` calls it, and an export writes the factory's own source
    and this call into ``model.py`` (:mod:`analysis.standalone`)."""

    factory: Callable[..., Any]
    kwargs: Mapping[str, Any]

    def build(self) -> "nn.Module":
        return self.factory(**self.kwargs)


class SpaceError(ValueError):
    """An invalid family, parameter name or parameter value.

    ``field`` is the dotted name of the offending parameter (e.g. ``c1_conv``), so
    callers can prefix it with where it came from (``space.params.c1_conv``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Param:
    """One declared parameter of a family.

    ``choices`` lists the allowed values of a categorical parameter; ``low``/``high``
    bound a numeric one (inclusive). The type is the type of ``default``.
    """

    name: str
    default: Scalar
    doc: str
    choices: tuple[Scalar, ...] | None = None
    low: float | None = None
    high: float | None = None

    @property
    def kind(self) -> type:
        return type(self.default)

    def allowed(self) -> str:
        """Human-readable description of the allowed values."""
        if self.choices is not None:
            return "one of " + ", ".join(_show(c) for c in self.choices)
        kind = self.kind.__name__
        if self.low is not None and self.high is not None:
            return f"{kind} in [{_show(self.low)}, {_show(self.high)}]"
        if self.low is not None:
            return f"{kind} >= {_show(self.low)}"
        return kind

    def coerce(self, value: Any) -> Scalar:
        """Validate ``value`` and return it with this parameter's type; raise SpaceError."""
        kind = self.kind
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise SpaceError(self.name, f"value {_show(value)} is not allowed; allowed: {self.allowed()}")
        if self.choices is not None and value not in self.choices:
            raise SpaceError(self.name, f"value {_show(value)} is not allowed; allowed: {self.allowed()}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise SpaceError(self.name, f"value {_show(value)} is out of range; allowed: {self.allowed()}")
        return value

    def default_problem(self) -> str | None:
        """Why ``default`` is not one of this parameter's own allowed values, or None."""
        try:
            self.coerce(self.default)
        except SpaceError:
            return f"default {_show(self.default)} is outside its own {'choices' if self.choices else 'range'}; " \
                   f"allowed: {self.allowed()}"
        return None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


# Parameters every family takes from the dataset rather than from the search.
CONTEXT_PARAMS: tuple[Param, ...] = (
    Param("in_channels", 3, "input image channels (from the dataset)", low=1, high=64),
    Param("num_classes", 10, "number of classes (from the dataset)", low=2, high=100_000),
    Param("image_size", 32, "input height and width in pixels (from the dataset)", low=8, high=1024),
)


class SearchSpace:
    """Base class of a family: declared parameters plus ``build_model``."""

    name: ClassVar[str]
    description: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]

    def param(self, name: str) -> Param:
        for p in (*self.params, *CONTEXT_PARAMS):
            if p.name == name:
                return p
        raise SpaceError(name, f"unknown parameter of family {self.name!r}; known: {', '.join(self.param_names())}")

    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def resolve(self, values: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> Arch:
        """Fill defaults, validate every value, and return the architecture."""
        resolved: dict[str, Scalar] = {}
        for p in (*self.params, *CONTEXT_PARAMS):
            source = context if (p in CONTEXT_PARAMS and context and p.name in context) else values
            resolved[p.name] = p.coerce(source[p.name]) if p.name in source else p.default
        for key in values:
            self.param(key)  # raises for unknown names
        self.check(resolved)
        return Arch(self.name, resolved)

    def check(self, params: Mapping[str, Scalar]) -> None:
        """Cross-parameter checks; raise SpaceError. Override where needed."""

    def constraint_violation(self, params: Mapping[str, Scalar]) -> str | None:
        """Why a valid configuration is outside the family's search constraint (a search
        records it ``infeasible`` and never trains it), or None. Override where needed."""
        return None

    def input_mismatch(self, params: Mapping[str, Scalar]) -> SpaceError | None:
        """Why a configuration does not suit the dataset's input (``params`` hold ``image_size``
        and the other context parameters): the parameter at fault and the reason; or None.
        ``archscale check`` and ``run`` refuse a spec that can sample such a configuration
        unless ``space.allow_resolution_mismatch`` is true. Override where needed."""
        return None

    def describe(self, arch: Arch) -> str:
        """A one-line description of the built network (default: the text form)."""
        return arch.text

    def network(self, arch: Arch) -> Network | None:
        """The network class of a resolved ``arch`` and its constructor's arguments (a
        built-in family imports its network module, and torch, here), or None. A family that
        gives one needs no ``build_model``, and its export's ``model.py`` is its classes' own
        source; without one, ``build_model`` builds and torch.fx writes ``model.py``."""
        return None

    def build_model(self, arch: Arch) -> nn.Module:
        """The PyTorch model of a resolved ``arch``: :meth:`network`'s, by default."""
        network = self.network(arch)
        if network is None:
            raise NotImplementedError(f"family {self.name!r} defines neither network() nor build_model()")
        return network.build()


_REGISTRY: dict[str, SearchSpace] = {}  # written by register_space only
S = TypeVar("S", bound=type[SearchSpace])


def register_space(cls: S, *, replace: bool = False) -> S:
    """Class decorator: register a family (its one instance, ``cls()``) under ``cls.name``.
    A duplicate name raises, unless ``replace``: a user's module imported anew registers its
    new class in the old one's place (:func:`space.user.load_family`)."""
    name = cls.name
    if name in _REGISTRY and not replace:
        raise ValueError(f"search space {name!r} is already registered")
    require_defaults(cls)
    _REGISTRY[name] = cls()
    return cls


def require_defaults(cls: type[SearchSpace]) -> None:
    """Raise SpaceError naming the family and the first parameter whose default lies outside
    its own choices or range (every configuration that leaves it unset would be invalid)."""
    for p in cls.params:
        problem = p.default_problem()
        if problem:
            raise SpaceError("", f"family {cls.name!r}: parameter {p.name!r}: {problem}")


def registered(name: str) -> SearchSpace | None:
    """The family registered as ``name``, or None (:func:`space.families.get_space` also
    finds a user's family and an installed package's)."""
    return _REGISTRY.get(name)


def registered_names() -> list[str]:
    """The names of the registered families, sorted."""
    return sorted(_REGISTRY)
