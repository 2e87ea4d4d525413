"""The docs' generated pages: the spec reference lists every field of every section, from the
models themselves (docs/hooks/spec_reference.py, run by `mkdocs build`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from archscale.spec import SearchSpec, Spec, TrainSpec
from archscale.trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hook():
    spec = importlib.util.spec_from_file_location("spec_reference_hook", ROOT / "docs" / "hooks" / "spec_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nested(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_nested, typing.get_args(annotation))), None)


def spec_fields(model: type[BaseModel] = Spec, path: str = "") -> dict[str, object]:
    """Every key path of the spec -> its FieldInfo, sections included (walked here, not by the hook)."""
    out = {}
    for name, info in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        out[key] = info
        if _nested(info.annotation) is not None:
            out.update(spec_fields(_nested(info.annotation), key))
    return out


def table_rows(markdown: str) -> dict[str, list[str]]:
    """First cell (a `key`) -> the row's cells, over every table of the page."""
    rows = {}
    for line in markdown.splitlines():
        match = re.match(r"^\| `([^`]+)` \|", line)
        if match:
            rows[match.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    return rows


def test_every_spec_field_has_a_row(hook):
    rows = table_rows(hook.spec_reference())
    fields = spec_fields()
    assert {"name", "data.dataset", "search.asha.grace_period", "search.stages.phi_sweep.phi",
            "search.resources_per_trial.gpu", "train.recipe", "train.epochs"} <= set(fields)
    missing = sorted(set(fields) - set(rows))
    assert not missing, f"fields missing from the spec reference: {missing}"
    assert not set(rows) - set(fields), "the reference lists keys the spec does not have"


def test_every_training_field_is_in_the_train_table(hook):
    rows = table_rows(hook.spec_reference())
    for f in dataclasses.fields(TrainConfig):
        if f.name == "seed":  # the spec's top-level seed
            assert "train.seed" not in rows
            continue
        cells = rows[f"train.{f.name}"]
        assert cells[4] == ("yes" if f.metadata["searchable"] else "no"), f.name
        assert f.metadata["doc"].replace("|", "\\|") in cells[5], f.name
        for choice in f.metadata["choices"] or ():
            assert f"`{choice}`" in cells[3], (f.name, choice)


def test_defaults_and_bounds_come_from_the_models(hook):
    rows = table_rows(hook.spec_reference())
    assert rows["search.num_trials"][2] == "`10`" and rows["search.num_trials"][3] == ">= 1"
    assert rows["name"][2] == "required"
    assert rows["train.lr"][2] == f"`{TrainSpec.model_fields['lr'].default}`"
    default = SearchSpec.model_fields["sampler"].default
    assert "`gp`" in rows["search.sampler"][3] and rows["search.sampler"][2] == f"`{default}`"
    assert rows["data.val_fraction"][3] == "> 0; < 1"


def test_every_field_that_is_not_a_section_says_what_it_is():
    undocumented = [key for key, info in spec_fields().items()
                    if _nested(info.annotation) is None and not (info.description or "").strip()]
    assert not undocumented, f"give these fields a description= (the docs print it): {undocumented}"


def test_every_builtin_family_parameter_is_listed(hook):
    text = hook.family_parameters()
    families = hook.builtin_families()
    assert {f.name for f in families} >= {"budgeted", "davidnet", "efficientnet"}
    for family in families:
        section = text.split(f"### `{family.name}`", 1)[1].split("\n### ", 1)[0]
        for p in family.params:
            assert f"| `{p.name}` |" in section, (family.name, p.name)


def test_the_markers_are_on_the_pages_and_replaced(hook):
    spec_page = (ROOT / "docs" / "spec.md").read_text()
    spaces_page = (ROOT / "docs" / "spaces.md").read_text()
    assert hook.SPEC_MARKER in spec_page and hook.FAMILY_MARKER in spaces_page
    out = hook.on_page_markdown(spec_page, None, None, None)
    assert hook.SPEC_MARKER not in out and "| `search.asha.reduction_factor` |" in out
    assert "docs/hooks/spec_reference.py" in (ROOT / "mkdocs.yml").read_text()


def test_the_site_builds_strictly(tmp_path):
    """`mkdocs build --strict` (a few seconds; skipped without the docs extra: pip install -e ".[docs]")."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module)
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    spec_page = (tmp_path / "site" / "spec" / "index.html").read_text()
    assert "search.stages.phi_sweep.compare_single_dimension" in spec_page
    assert "archscale.runs.Run" in (tmp_path / "site" / "api" / "index.html").read_text()


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))])
def test_every_whole_spec_in_the_docs_is_valid(page):
    """A YAML block of the README or the docs that has a `name:` is a whole spec: it must validate."""
    import yaml

    from archscale.spec import parse_spec

    for block in re.findall(r"```yaml\n(.*?)```", (ROOT / page).read_text(), re.S):
        raw = yaml.safe_load(block)
        if isinstance(raw, dict) and "name" in raw:
            parse_spec(raw)
