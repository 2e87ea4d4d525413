"""The paths a spec holds, and what relative ones mean.

A relative path written in a spec file is relative to the folder that holds the spec file,
as docker compose reads its files: ``data.root``, the ``PATH`` of ``data.dataset: npz:PATH``
and ``imagefolder:PATH``, ``space.family_path`` and ``search.store``. A path given by ``--set``
(or as an override in the Python API), or in a spec given as a dict, is relative to the
current folder. A default the spec does not write (``data.root: data``) is relative to the
current folder. Either way the resolved spec (a run's ``spec.yaml``) holds the absolute path,
so later commands find the same files from any folder. ``~`` is expanded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

PATH_FIELDS = ("data.root", "data.dataset", "space.family_path", "search.store")
DATASET_PREFIXES = ("npz:", "imagefolder:")  # data.dataset values that hold a path


def _absolute(value: str, base: Path) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def anchor_paths(raw: Any, base: str | os.PathLike, fields: Iterable[str] = PATH_FIELDS) -> Any:
    """Make the relative paths of ``fields`` (dotted keys) in the raw spec dict absolute
    against ``base``, in place; a value of another type is left for validation to report."""
    if not isinstance(raw, dict):
        return raw
    base = Path(os.path.abspath(base))
    for key in fields:
        section, _, name = key.partition(".")
        node = raw.get(section)
        if not isinstance(node, dict) or not isinstance(node.get(name), str) or not node[name]:
            continue
        value = node[name]
        if key == "data.dataset":
            prefix = next((p for p in DATASET_PREFIXES if value.startswith(p)), None)
            if prefix is None or value == prefix:
                continue
            node[name] = prefix + _absolute(value[len(prefix):], base)
        else:
            node[name] = _absolute(value, base)
    return raw


def overridden_paths(keys: Iterable[str]) -> list[str]:
    """The path fields among override keys (``data.root``, ...)."""
    return [k for k in keys if k in PATH_FIELDS]


def anchor_spec_file(raw: Any, spec_file: str | os.PathLike) -> Any:
    """A spec file's raw dict with its relative paths made absolute against the file's folder;
    a family of the user's own (``package.module:ClassName``) with no ``family_path`` is also
    looked for in that folder (after the current folder and PYTHONPATH)."""
    base = Path(os.path.abspath(spec_file)).parent
    anchor_paths(raw, base)
    space = raw.get("space") if isinstance(raw, dict) else None
    family = space.get("family") if isinstance(space, dict) else None
    if isinstance(family, str) and ":" in family and space.get("family_path") is None:
        space["family_path"] = str(base)
    return raw


def anchor_defaults(raw: Any, defaults: dict[str, str]) -> Any:
    """Path fields the raw spec leaves out, set to their ``defaults`` (dotted key -> relative
    path) made absolute against the current folder, so that a resolved spec holds no relative
    path (its ``spec.yaml``, read again from the run directory, means the same folders)."""
    if not isinstance(raw, dict):
        return raw
    for key, default in defaults.items():
        section, _, name = key.partition(".")
        node = raw.setdefault(section, {})
        if isinstance(node, dict) and name not in node:
            node[name] = _absolute(default, Path.cwd())
    return raw
