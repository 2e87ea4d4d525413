"""archscale: neural architecture and scaling search from a YAML spec.

The Python API (what the ``archscale`` command calls too), loaded on first use so that
``import archscale`` imports neither torch, ray nor optuna:

- ``run(spec, out=None, resume=False, *, quiet=False, verbose=False, **overrides) -> Run``
- ``load_run(path) -> Run``: ``.path``, ``.spec``, ``.trials``, ``.front()``, ``.hypervolume()``,
  ``.best``, ``.export()``, ``.report()``
- ``load_exported(path)``, ``build(arch_text)``, ``spaces()``, ``check(spec, samples=64)``

See :mod:`archscale.api`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it (PEP 562: imported when the name is first used)
_LAZY = {name: "archscale.api" for name in
         ("run", "load_run", "Run", "load_exported", "build", "spaces", "check", "Check", "CheckError")}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from archscale.api import Check, CheckError, Run, build, check, load_exported, load_run, run, spaces


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'archscale' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
