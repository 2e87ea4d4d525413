"""A user's own family: a :class:`SearchSpace` subclass in the user's module, named
``package.module:ClassName``, or by name through the ``archscale.spaces`` entry points.

The module is found as Python finds it (``PYTHONPATH``, installed packages) and in the
folder the command runs from, as ``uvicorn module:app`` finds its app; a run records the
folder it was found in (``space.family_path``), so later commands find it from anywhere.
Loading registers the family under its ``name``, so ``build(arch)`` and the text form
work as for a built-in family. Nothing is imported from the user's module until a spec,
a run or an export names it.

A family needs no registration::

    from archscale.space import Param, SearchSpace

    class TinyNet(SearchSpace):
        name = "tinynet"
        description = "two convs and a linear head"
        params = (Param("width", 16, "channels of both convs", low=1, high=512),)

        def build_model(self, arch):
            p = arch.params  # width, and in_channels, num_classes, image_size from the dataset
            ...
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from archscale.space.arch import _NAME
from archscale.space.registry import Param, SearchSpace, SpaceError, register_space, registered

ENTRY_POINTS = "archscale.spaces"  # entry-point group: name = "package.module:ClassName"
_REFERENCE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
API = ("a family subclasses archscale.space.SearchSpace and declares name, description, params "
       "(a tuple of Param) and build_model(self, arch)")


@dataclass(frozen=True)
class UserFamily:
    """Where a user's family came from: its reference and the folder its module was found in."""

    reference: str  # "package.module:ClassName"
    folder: str  # the folder on sys.path that holds the module's top-level package or file
    ship: str  # what a Ray job ships for it: the top-level package folder or the module file


_LOADED: dict[str, UserFamily] = {}  # family name -> where it came from


def is_reference(family: str) -> bool:
    """``package.module:ClassName`` rather than a family's name."""
    return ":" in family


def load_family(reference: str, folder: str | Path | None = None) -> SearchSpace:
    """Import ``package.module:ClassName``, check it is a family and register it under its
    ``name``; the same class loaded again is returned as it was (a module reloaded since
    registers its new class). The module is looked for in the current folder, then on
    ``sys.path``, then in ``folder`` (where a run found it).
    Raises SpaceError (field ``family``) naming the module and what is wrong."""
    if not _REFERENCE.match(reference):
        raise SpaceError("family", f"{reference!r} is not a family reference; expected package.module:ClassName "
                                   "(a module importable from the current folder or PYTHONPATH)")
    module_name, class_name = reference.split(":")
    module = _import(module_name, reference, folder)
    cls = getattr(module, class_name, None)
    where = f"module {module_name!r} ({getattr(module, '__file__', None) or 'no file'})"
    if cls is None:
        raise SpaceError("family", f"{reference}: {where} has no attribute {class_name!r}; {API}")
    if not (isinstance(cls, type) and issubclass(cls, SearchSpace)):
        what = "a class that does not subclass" if isinstance(cls, type) else f"a {type(cls).__name__}, not a subclass of"
        raise SpaceError("family", f"{reference}: {class_name} in {where} is {what} archscale.space.SearchSpace; {API}")
    _check_class(cls, reference)
    known, canonical = registered(cls.name), f"{cls.__module__}:{cls.__qualname__}"
    reloaded = cls.name in _LOADED and _LOADED[cls.name].reference == canonical  # the module imported anew
    if known is not None and type(known) is cls:
        return known
    if known is not None and not reloaded:
        raise SpaceError("family", f"{reference}: name {cls.name!r} is already the family of "
                                   f"{type(known).__module__}.{type(known).__qualname__}; give the class another name")
    try:
        register_space(cls, replace=reloaded)  # makes the family's instance: the user's constructor runs here
    except Exception as err:  # noqa: BLE001 - the user's constructor, any error
        raise SpaceError("family", f"{reference}: {class_name}() failed: {type(err).__name__}: {err}") from None
    _LOADED[cls.name] = UserFamily(canonical, *_location(module))
    return registered(cls.name)


def origin(name: str) -> UserFamily | None:
    """Where the loaded family ``name`` came from; None for archscale's own families."""
    return _LOADED.get(name)


def entry_point_names() -> list[str]:
    """Names of the families that installed packages declare in the ``archscale.spaces`` group."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)})


def from_entry_point(name: str) -> SearchSpace | None:
    """The family an installed package declares as ``name`` in ``archscale.spaces``, or None."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS, name=name):
        space = load_family(ep.value)
        if space.name != name:
            raise SpaceError("family", f"entry point {name!r} of group {ENTRY_POINTS} ({ep.value}) names a family "
                                       f"called {space.name!r}; the entry point's name must be the family's name")
        return space
    return None


def _import(module_name: str, reference: str, folder: str | Path | None) -> ModuleType:
    """The module, looked for as Python does, then in the current folder, then in ``folder``."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `uvicorn module:app` and `python -m` do
    if folder is not None and str(folder) not in sys.path:
        sys.path.append(str(folder))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not (module_name == err.name or module_name.startswith(err.name + ".")):
            raise SpaceError("family", f"{reference}: importing module {module_name!r} failed: "
                                       f"ModuleNotFoundError: {err}") from None
        looked = f"{cwd}{', ' + str(folder) if folder is not None else ''} and PYTHONPATH"
        raise SpaceError("family", f"{reference}: no module named {err.name!r} in {looked}; "
                                   "run from the folder that holds it, or add that folder to PYTHONPATH") from None
    except Exception as err:  # noqa: BLE001 - the user's module, any error at import
        line = f" (line {err.lineno})" if isinstance(err, SyntaxError) and err.lineno else ""
        raise SpaceError("family", f"{reference}: importing module {module_name!r} failed{line}: "
                                   f"{type(err).__name__}: {' '.join(str(err).split())[:300]}") from None


def _check_class(cls: type, reference: str) -> None:
    for attr, kind in (("name", str), ("description", str), ("params", tuple)):
        value = getattr(cls, attr, None)
        if value is None:
            raise SpaceError("family", f"{reference}: the class does not declare {attr}; {API}")
        if not isinstance(value, kind):
            raise SpaceError("family", f"{reference}: {attr} is a {type(value).__name__}; expected a {kind.__name__}; {API}")
    if not _NAME.match(cls.name):
        raise SpaceError("family", f"{reference}: name {cls.name!r} is not allowed; expected letters, digits and _, "
                                   "not starting with a digit")
    bad = [p for p in cls.params if not isinstance(p, Param)]
    if bad:
        raise SpaceError("family", f"{reference}: params holds {bad[0]!r}; expected a tuple of archscale.space.Param")
    for p in cls.params:
        problem = p.default_problem()
        if problem:
            raise SpaceError("family", f"{reference}: family {cls.name!r}, parameter {p.name!r}: {problem}")
    if cls.build_model is SearchSpace.build_model:
        raise SpaceError("family", f"{reference}: build_model is not defined; {API}")


def _location(module: ModuleType) -> tuple[str, str]:
    """(the folder on sys.path that holds ``module``'s top-level package or file, that package
    folder or file itself)."""
    top = sys.modules[module.__name__.split(".")[0]]
    paths = list(getattr(top, "__path__", []))
    if paths:
        ship = Path(paths[0]).resolve()
    elif getattr(top, "__file__", None):
        ship = Path(top.__file__).resolve()
    else:
        raise SpaceError("family", f"module {top.__name__!r} has no file or folder; a family's module must be "
                                   "a .py file or a package folder")
    return str(ship.parent), str(ship)
