"""Architectures as data, with a lossless text form.

An :class:`Arch` is a family name plus a flat, immutable mapping of scalar
parameters (int, float, bool or str). Its text form is one line::

    budgeted:activation=relu,blurpool=true,c1_conv=regular,c1_width=8,...

Keys are sorted; ints print as ``8``, floats always carry a ``.`` or an
exponent (``0.25``, ``1e-05``), bools as ``true``/``false`` and strings bare.
``Arch.from_text(a.text) == a`` holds for every architecture a family emits.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

Scalar = int | float | bool | str

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STR_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.+\-]*$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+|inf|nan)$")


class ArchTextError(ValueError):
    """A text form that cannot be parsed into an :class:`Arch`."""


def format_value(value: Scalar) -> str:
    """Format one parameter value for the text form (inverse of :func:`parse_value`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return repr(value)
        text = repr(value)  # shortest repr that round-trips exactly
        return text if ("." in text or "e" in text) else text + ".0"
    if isinstance(value, str):
        if not _STR_VALUE.match(value) or value in ("true", "false") or _FLOAT.match(value):
            raise ArchTextError(f"string value {value!r} cannot be written in the text form")
        return value
    raise ArchTextError(f"value {value!r} of type {type(value).__name__} is not a scalar")


def parse_value(text: str) -> Scalar:
    """Parse one value of the text form (inverse of :func:`format_value`)."""
    if text == "true":
        return True
    if text == "false":
        return False
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if _STR_VALUE.match(text):
        return text
    raise ArchTextError(f"cannot parse value {text!r}")


@dataclass(frozen=True)
class Arch:
    """A concrete architecture: a family and its resolved parameters."""

    family: str
    params: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.family):
            raise ArchTextError(f"bad family name {self.family!r}")
        for key, value in self.params.items():
            if not _NAME.match(key):
                raise ArchTextError(f"bad parameter name {key!r}")
            format_value(value)  # raises on values the text form cannot hold
        frozen = MappingProxyType(dict(sorted(self.params.items())))
        object.__setattr__(self, "params", frozen)

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and self.text == other.text

    def __getitem__(self, key: str) -> Scalar:
        return self.params[key]

    @property
    def text(self) -> str:
        body = ",".join(f"{k}={format_value(v)}" for k, v in self.params.items())
        return f"{self.family}:{body}"

    def __str__(self) -> str:
        return self.text

    def replace(self, **changes: Scalar) -> "Arch":
        """A new architecture with some parameters changed (this one is unchanged)."""
        return Arch(self.family, {**self.params, **changes})

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "params": dict(self.params), "text": self.text}

    @classmethod
    def from_text(cls, text: str) -> "Arch":
        family, sep, body = text.strip().partition(":")
        if not sep:
            raise ArchTextError(f"architecture text {text!r} has no 'family:' prefix")
        params: dict[str, Scalar] = {}
        for item in filter(None, body.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise ArchTextError(f"item {item!r} in {text!r} is not key=value")
            if key in params:
                raise ArchTextError(f"parameter {key!r} appears twice in {text!r}")
            params[key] = parse_value(value)
        return cls(family, params)
