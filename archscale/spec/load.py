"""Loading a spec: reading the YAML, ``--set`` overrides, and one readable line for the first
validation error."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from archscale.files import FileError, read_text, yaml_error
from archscale.space import SpaceError
from archscale.spec.errors import SpecError
from archscale.spec.model import Spec
from archscale.spec.paths import anchor_defaults, anchor_paths, anchor_spec_file, overridden_paths
from archscale.spec.sections import _clean

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
    raw = anchor_spec_file(read_yaml(path), path)  # relative paths: against the spec file's folder
    for assignment in overrides:
        apply_override(raw, assignment)
    anchor_paths(raw, Path.cwd(), overridden_paths(a.partition("=")[0] for a in overrides))  # --set: the current folder
    return parse_spec(anchor_defaults(raw, DEFAULT_PATHS), str(path))


DEFAULT_PATHS = {"data.root": "data"}  # path fields with a default, resolved against the current folder
