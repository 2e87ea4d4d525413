"""MkDocs hook: the spec reference and the families' parameters, generated from the code.

``mkdocs build`` calls :func:`on_page_markdown` for every page; a page that holds the marker
``<!-- spec-reference -->`` gets :func:`spec_reference` in its place (one table per section
of :class:`archscale.spec.Spec`, the ``train`` section read from
:class:`archscale.trainer.config.TrainConfig`), and ``<!-- family-parameters -->`` gets
:func:`family_parameters` (every built-in family's parameters, as ``archscale spaces`` lists
them). Nothing here is written by hand, so the pages cannot drift from the code;
``tests/test_docs.py`` checks that every field appears.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Literal

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the docs describe the checkout they are built from
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

SPEC_MARKER = "<!-- spec-reference -->"
FAMILY_MARKER = "<!-- family-parameters -->"

# pydantic's constraint names (annotated_types) -> how a bound reads
_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' signature)
    # in a <div class="generated"> (md_in_html): docs/stylesheets/extra.css keeps its key paths on one line
    if SPEC_MARKER in markdown:
        markdown = markdown.replace(SPEC_MARKER, _generated(spec_reference()))
    if FAMILY_MARKER in markdown:
        markdown = markdown.replace(FAMILY_MARKER, _generated(family_parameters()))
    return markdown


def _generated(text: str) -> str:
    return f'<div class="generated" markdown>\n\n{text}\n</div>\n'



# --------------------------------------------------------------------------- walking the models


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``Stages | None`` -> ``Stages``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def sections(model: type[BaseModel] | None = None, path: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """``(key path, model)`` of the spec and every section nested in it, depth first:
    ``("", Spec)``, ``("data", DataSpec)``, ..., ``("search.stages.phi_sweep", PhiSweepStage)``."""
    if model is None:
        from archscale.spec import Spec

        model = Spec
    yield path, model
    for name, info in model.model_fields.items():
        nested = _model_in(info.annotation)
        if nested is not None:
            yield from sections(nested, f"{path}.{name}" if path else name)


def _type(annotation: Any) -> str:
    """An annotation as a reader writes it: ``float | None``, ``list[float]``, ``str``."""
    if typing.get_origin(annotation) is Literal:
        kinds = sorted({type(v).__name__ for v in typing.get_args(annotation)})
        return " | ".join(kinds)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " | ".join("null" if a is type(None) else _type(a) for a in typing.get_args(annotation))
    origin = typing.get_origin(annotation)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type(a) for a in typing.get_args(annotation))}]"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _yaml(value: Any) -> str:
    """A value as it is written in a spec."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value or "''"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return f"{value:.1f}"
    return str(value)


def _default(info) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()
        return "(section)" if isinstance(value, BaseModel) else f"`{_yaml(value)}`"
    return f"`{_yaml(info.default)}`"


def _allowed(info) -> str:
    """Literal values, then pydantic's bounds, lengths and pattern."""
    parts = []
    if typing.get_origin(info.annotation) is Literal:
        parts.append(", ".join(f"`{_yaml(v)}`" for v in typing.get_args(info.annotation)))
    for meta in info.metadata:
        for name, sign in _BOUNDS.items():
            bound = getattr(meta, name, None)
            if bound is not None:
                parts.append(f"{sign} {_yaml(bound)}")
        if getattr(meta, "min_length", None) is not None:
            parts.append(f"at least {meta.min_length} item(s)")
        if getattr(meta, "max_length", None) is not None:
            parts.append(f"at most {meta.max_length} item(s)")
        if getattr(meta, "pattern", None):
            parts.append(f"matches `{meta.pattern}`")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _anchor(path: str) -> str:
    return "spec-" + (path.replace(".", "-").replace("_", "-") or "top")


def _train_meta() -> dict[str, dict]:
    from archscale.trainer.config import TrainConfig

    return {f.name: dict(f.metadata) for f in dataclasses.fields(TrainConfig)}


def field_rows(model: type[BaseModel], path: str) -> list[dict[str, str]]:
    """One row per field of a section: key, type, default, allowed, description (and for the
    ``train`` section whether the field may be searched)."""
    from archscale.spec import TrainSpec

    train = _train_meta() if model is TrainSpec else None
    rows = []
    for name, info in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        nested = _model_in(info.annotation)
        description = info.description or ""
        if nested is not None:
            link = f"[`{key}`](#{_anchor(key)})"
            description = f"{description}; see {link}" if description else f"see {link}"
        row = {"key": f"`{key}`", "type": _type(info.annotation), "default": _default(info),
               "allowed": _allowed(info), "description": description}
        if train is not None:
            meta = train.get(name)
            row["searchable"] = "yes" if meta and meta["searchable"] else "no"
        rows.append(row)
    return rows


def _intro(model: type[BaseModel]) -> str:
    """A section's docstring as one paragraph; none for ``train``, whose table says what its
    docstring says (and which fields are searchable) and for models without one of their own."""
    from archscale.spec import TrainSpec

    doc = model.__dict__.get("__doc__") or ""
    if not doc or model is TrainSpec:
        return ""
    return " ".join(line.strip() for line in doc.strip().splitlines())


def spec_reference() -> str:
    """Markdown: one table per section of the spec, generated from the models."""
    out = []
    for path, model in sections():
        rows = field_rows(model, path)
        title = f"`{path}`" if path else "Top level"
        out.append(f"### {title} {{#{_anchor(path)}}}\n")
        intro = _intro(model) if path else ""
        if intro:
            out.append(intro.replace("``", "`") + "\n")
        columns = ["key", "type", "default", "allowed", "description"]
        if rows and "searchable" in rows[0]:
            columns.insert(4, "searchable")
        out.append("| " + " | ".join(columns) + " |")
        out.append("|" + "---|" * len(columns))
        for row in rows:
            out.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- families


def builtin_families() -> list:
    """The families archscale ships (a user's entry-point families are left out)."""
    from archscale.space import get_space, list_spaces

    return [f for f in map(get_space, list_spaces()) if type(f).__module__.startswith("archscale.")]


def family_parameters() -> str:
    """Markdown: one table per built-in family, its parameters as ``archscale spaces`` lists them."""
    from archscale.space import CONTEXT_PARAMS

    out = []
    for family in builtin_families():
        out.append(f"### `{family.name}` {{#family-{family.name}}}\n")
        out.append(f"{family.description}.\n")
        out.append("| parameter | default | allowed | description |")
        out.append("|---|---|---|---|")
        for p in family.params:
            out.append(f"| `{p.name}` | `{_yaml(p.default)}` | {_cell(p.allowed())} | {_cell(p.doc)} |")
        out.append("")
    context = ", ".join(f"`{p.name}`" for p in CONTEXT_PARAMS)
    out.append(f"Every family also gets {context} from the dataset; a spec does not set them.\n")
    return "\n".join(out)
