"""Writing a family's network as plain PyTorch source (the ``model.py`` of an export).

A family that can write itself returns a :class:`ModelSource` from
:meth:`SearchSpace.model_source`: Python that defines ``Net(num_classes)`` from ``torch.nn``
layers with its widths, strides and kernels as numbers, plus the few custom layers it uses,
each written once. The custom layers are the family's own classes, taken with
:func:`inspect.getsource`, so the file runs the same ``forward`` as archscale does; they may
refer only to ``torch``, ``nn``, ``F``, ``math``, ``OrderedDict`` and each other.

The helpers here format the parts: :func:`call` a constructor call with literal arguments,
:func:`definitions` the source of the custom layers, :func:`act` and :func:`norm` one layer.
Each family's ``model_source`` lives beside its network in :mod:`space.nets`; like them, this
module imports torch (the custom layers of :mod:`space.blocks`), and a family's declaration
names only :class:`ModelSource`, for its type.
"""

from __future__ import annotations

import functools
import inspect
import json
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from archscale.space.blocks import GhostBatchNorm2d
from archscale.space.choices import ACTIVATION_LAYERS


@dataclass(frozen=True)
class ModelSource:
    """``code`` defines ``Net(num_classes: int = <trained>)`` (and what it uses); its state dict
    has the built model's keys. ``classifier`` is the dotted name of the last layer, the one
    ``load(num_classes=N)`` re-initialises."""

    code: str
    classifier: str


def literal(value: Any) -> str:
    """A Python literal for a constructor argument (a string already holding source is not one:
    pass it wrapped in :class:`Code`)."""
    if isinstance(value, Code):
        return value.text
    if isinstance(value, str):
        return json.dumps(value)  # a double-quoted Python literal
    if isinstance(value, (bool, int, float, type(None))):
        return repr(value)
    raise TypeError(f"{value!r} is not a literal a model.py can hold")


@dataclass(frozen=True)
class Code:
    """Source text to be written as is (a nested call, a variable)."""

    text: str


def call(name: str, *args: Any, **kwargs: Any) -> Code:
    """``name(arg, ..., key=value, ...)`` with every argument written as a literal."""
    parts = [literal(a) for a in args] + [f"{k}={literal(v)}" for k, v in kwargs.items()]
    return Code(f"{name}({', '.join(parts)})")


def act(name: str) -> Code:
    """The activation layer of ``name`` (a key of ``choices.ACTIVATION_LAYERS``): ``nn.ReLU()``."""
    return Code(f"nn.{ACTIVATION_LAYERS[name]}()")


def norm(kind: str, channels: str | int, groups: int = 2, ghost_batch: int = 32) -> Code:
    """The source of ``blocks.norm2d(kind, channels, groups, ghost_batch)``; ``channels`` may be
    a variable name of the generated code (then GroupNorm's divisor is computed there)."""
    c = channels if isinstance(channels, str) else str(channels)
    if kind == "batch":
        return Code(f"nn.BatchNorm2d({c})")
    if kind == "ghost":
        return Code(f"GhostBatchNorm2d({c}, {ghost_batch})")
    if kind == "group":
        return Code(f"nn.GroupNorm(math.gcd({groups}, {c}), {c})")
    if kind == "layer":
        return Code(f"nn.GroupNorm(1, {c})")
    if kind == "none":
        return Code("nn.Identity()")
    raise ValueError(f"unknown norm {kind!r}")


def norm_classes(kind: str) -> list[Callable]:
    """The custom classes a norm's source needs."""
    return [GhostBatchNorm2d] if kind == "ghost" else []


ACTIVATIONS_SOURCE = (
    "ACTIVATIONS = {" + ", ".join(f"{literal(k)}: nn.{v}" for k, v in ACTIVATION_LAYERS.items()) + "}\n\n\n"
    "def activation(name: str) -> nn.Module:\n    \"\"\"A new activation layer by name.\"\"\"\n    return ACTIVATIONS[name]()\n"
)


def definitions(*objects: Callable | str) -> str:
    """The source of each class or function once, in the given order, two blank lines apart
    (a string is taken as source already)."""
    seen: dict[str, None] = {}
    for obj in objects:
        text = obj if isinstance(obj, str) else _source_of(obj)
        seen.setdefault(text.strip("\n") + "\n", None)
    return "\n\n".join(seen)


@functools.cache
def _source_of(obj: Callable) -> str:
    return textwrap.dedent(inspect.getsource(obj))


def method(fn: Callable) -> str:
    """The source of a method, to be placed in a class body (indented four spaces)."""
    return textwrap.indent(_source_of(fn), "    ").rstrip("\n") + "\n"


def net_class(doc: str, init_lines: list[str], forward: Callable, num_classes: int) -> str:
    """``class Net(nn.Module)`` with ``init_lines`` (indented eight spaces by the caller's
    nesting, given unindented) after ``super().__init__()``, and ``forward``'s source."""
    body = textwrap.indent("\n".join(init_lines), " " * 8)
    return (f"class Net(nn.Module):\n    \"\"\"{doc}\"\"\"\n\n"
            f"    def __init__(self, num_classes: int = {num_classes}) -> None:\n"
            f"        super().__init__()\n{body}\n\n{method(forward)}")


def sequential(items: list[str], notes: list[str] | None = None, width: int = 88) -> str:
    """``nn.Sequential(...)`` of ``items`` (source, maybe several lines each): on one line when it
    fits in ``width`` and nothing is annotated, else one item a line, each with its ``notes``
    entry as a comment."""
    notes = notes or [""] * len(items)
    one = f"nn.Sequential({', '.join(items)})"
    if len(one) <= width and "\n" not in one and not any(notes):
        return one
    lines = []
    for item, note in zip(items, notes):
        first, *rest = (item + ",").split("\n")
        comment = f"  # {note}" if note else ""
        lines += [first[:-1] + "," + comment] if not rest else [first + comment, *rest]
    return "nn.Sequential(\n" + textwrap.indent("\n".join(lines), "    ") + "\n)"
