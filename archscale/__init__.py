"""archscale: neural architecture and scaling search from a YAML spec.

The Python API (what the ``archscale`` command calls too), loaded on first use so that
``import archscale`` imports neither torch, ray nor optuna:

- ``run(spec, out=None, resume=False, *, quiet=False, verbose=False, **overrides) -> Run``
- ``load_run(path) -> Run``: ``.path``, ``.spec``, ``.trials``, ``.front()``, ``.hypervolume()``,
  ``.best``, ``.export()``, ``.report()``
- ``status(path)``: where a run stands (finished, running or killed), from its directory alone
- ``load_exported(path)``, ``build(arch_text)``, ``spaces()``, ``check(spec, samples=64)``

See :mod:`archscale.api`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

__version__ = "0.1.0"


def lazy_exports(package: str, module_of: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` (PEP 562) for the names of ``module_of``
    (name -> the module defining it): each is imported on first use and kept in ``namespace``
    (the package's globals), so later look-ups skip ``__getattr__``. What ``archscale``,
    :mod:`archscale.trainer` and :mod:`archscale.analysis` export, loaded only when used."""
    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *module_of})

    return __getattr__, __dir__


# name -> module that defines it (PEP 562: imported when the name is first used)
_LAZY = {name: "archscale.api" for name in
         ("run", "ablate", "repeat", "compare", "load_run", "Run", "load_exported", "build", "spaces", "check", "Check",
          "CheckError", "status")}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from archscale.api import Check, CheckError, Run, build, check, load_exported, load_run, run, spaces, status

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
