"""The source of some functions and classes and of everything they use, as one module.

An export's ``model.py`` carries the network's own classes (and the loader's own image
functions) rather than a second copy written for it: :func:`closure` takes objects of
archscale's modules (or of a user's family module), reads each one's source with
:func:`inspect.getsource`, finds the global names it uses (:mod:`ast`), and follows them:

- a function or class of an owned module (``owned``: archscale's, the user's): its source, once;
- a constant of an owned module (``ACTIVATIONS = {...}``, a type alias): its top-level
  assignment statement, from the module that assigns it;
- a module or an object of any other module (torch, typing, dataclasses, ...): an import line.

Definitions come before their users; two different objects under one name raise
:class:`ClosureError`, as does a name that cannot be found. Annotations count as uses: the
written module evaluates them (without ``from __future__ import annotations`` a dataclass
needs no entry in ``sys.modules``, so a file loaded by path still defines one).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import inspect
import sys
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable


class ClosureError(RuntimeError):
    """An object whose source, or a name it uses, cannot be written out."""


@dataclass
class Closure:
    """Import lines and definitions (in dependency order), and what each name is bound to."""

    imports: dict[str, None] = field(default_factory=dict)
    definitions: list[str] = field(default_factory=list)
    names: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n\n".join(self.definitions) + "\n"


def closure(objects: Iterable[Any], owned: Callable[[str], bool], into: Closure | None = None) -> Closure:
    """The source of ``objects`` (functions and classes of modules ``owned`` says yes to) and of
    what they use, added to ``into`` (a new :class:`Closure` by default)."""
    out = into if into is not None else Closure()
    for obj in objects:
        _add_object(out, getattr(obj, "__name__", None), obj, owned)
    return out


# --------------------------------------------------------------------------- one definition


def _claim(out: Closure, name: str, value: Any) -> bool:
    """Record ``name`` as ``value``; False when it already was; raise when it is another object."""
    if name in out.names:
        if out.names[name] is value or (_is_constant(value) and out.names[name] == value):
            return False
        raise ClosureError(f"two different objects are called {name!r} ({out.names[name]!r} and {value!r}); "
                           "rename one of them")
    out.names[name] = value
    return True


def _is_constant(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, tuple, type(None)))


def _add_object(out: Closure, name: str | None, obj: Any, owned: Callable[[str], bool]) -> None:
    if name is None or not _claim(out, name, obj):
        return
    module = sys.modules.get(getattr(obj, "__module__", ""))
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as err:
        raise ClosureError(f"the source of {obj!r} cannot be read ({err})") from None
    _add_uses(out, source, module, owned)
    if obj.__name__ != name:  # bound under another name (from m import f as g)
        source += f"\n\n{name} = {obj.__name__}"
    out.definitions.append(source.strip("\n"))


def _add_constant(out: Closure, name: str, value: Any, module: types.ModuleType, owned: Callable[[str], bool]) -> None:
    if not _claim(out, name, value):
        return
    home, statement = _assignment(module, name)
    _add_uses(out, statement, home, owned)
    out.definitions.append(statement)


def _assignment(module: types.ModuleType, name: str) -> tuple[types.ModuleType, str]:
    """The module that assigns ``name`` at its top level (following ``from x import name``) and
    that statement's source."""
    source = inspect.getsource(module)
    for node in ast.parse(source).body:
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return module, ast.get_source_segment(source, node)
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name and alias.name == name:
                    base = importlib.import_module(node.module if not node.level else
                                                   importlib.util.resolve_name("." * node.level + (node.module or ""),
                                                                               module.__package__))
                    return _assignment(base, name)
    raise ClosureError(f"{module.__name__}.{name} is not assigned at the top of its module; its source cannot be "
                       "written out")


# --------------------------------------------------------------------------- the names a source uses


def _add_uses(out: Closure, source: str, module: types.ModuleType | None, owned: Callable[[str], bool]) -> None:
    if module is None:
        raise ClosureError(f"the module of {source.splitlines()[0]!r} is not imported")
    names = vars(module)
    for name in sorted(_free_names(source)):
        if name not in names:
            if hasattr(builtins, name) or name == "__class__":
                continue
            raise ClosureError(f"{name!r}, used by {module.__name__}, is not one of its globals (an import "
                               "under TYPE_CHECKING? model.py evaluates annotations)")
        _add_name(out, name, names[name], module, owned)


PUBLIC = ("typing", "collections", "dataclasses", "math", "pathlib", "torch", "torch.nn", "torch.nn.functional")


def _add_name(out: Closure, name: str, value: Any, module: types.ModuleType, owned: Callable[[str], bool]) -> None:
    """Define ``name`` (``value`` in ``module``'s globals): an import, or owned source."""
    if isinstance(value, types.ModuleType):
        if owned(value.__name__):
            raise ClosureError(f"{module.__name__} uses the module {value.__name__} as {name!r}; only the objects "
                               "of an owned module can be written out, not the module")
        parent, _, last = value.__name__.rpartition(".")
        line = (f"import {name}" if value.__name__ == name else
                f"from {parent} import {last}" if last == name else f"import {value.__name__} as {name}")
        if _claim(out, name, value):
            out.imports[line] = None
        return
    home = getattr(value, "__module__", None) or ""
    if isinstance(value, (type, types.FunctionType)) and owned(home):
        _add_object(out, name, value, owned)
        return
    line = _import_line(value, name, home, owned)
    if line is not None:
        if _claim(out, name, value):
            out.imports[line] = None
    elif owned(module.__name__):
        _add_constant(out, name, value, module, owned)
    else:
        raise ClosureError(f"{name!r} of {module.__name__} ({value!r}) cannot be written out")


def _import_line(value: Any, name: str, home: str, owned: Callable[[str], bool]) -> str | None:
    """``from M import X [as name]`` for an object of a module that is not owned, or None."""
    for candidate in PUBLIC:
        if _lookup(candidate, name) is value:
            return f"from {candidate} import {name}"
    qualname = getattr(value, "__qualname__", None)
    if home and not owned(home) and isinstance(qualname, str) and _lookup(home, qualname) is value:
        return f"from {home} import {qualname}" + (f" as {name}" if qualname != name else "")
    return None


def _lookup(module_name: str, qualname: str) -> Any:
    try:
        value = importlib.import_module(module_name)
        for part in qualname.split("."):
            value = getattr(value, part)
        return value
    except (ImportError, AttributeError):
        return None


class _Names(ast.NodeVisitor):
    """Names read and names bound anywhere in a source; reads inside annotations apart."""

    def __init__(self) -> None:
        self.read: set[str] = set()
        self.annotation: set[str] = set()
        self.bound: set[str] = set()
        self._in_annotation = 0

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            (self.annotation if self._in_annotation else self.read).add(node.id)
        else:
            self.bound.add(node.id)

    def _annotation(self, node: ast.AST | None) -> None:
        if node is not None:
            self._in_annotation += 1
            self.visit(node)
            self._in_annotation -= 1

    def visit_arg(self, node: ast.arg) -> None:
        self.bound.add(node.arg)
        self._annotation(node.annotation)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.bound.add(node.name)
        for d in node.decorator_list:
            self.visit(d)
        self.visit(node.args)
        self._annotation(node.returns)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        self._annotation(node.annotation)
        if node.value is not None:
            self.visit(node.value)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.bound.add(node.name)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.bound.update((a.asname or a.name).split(".")[0] for a in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.bound.update(a.asname or a.name for a in node.names)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)


def _free_names(source: str) -> set[str]:
    """The global names a source reads, its annotations included (they are evaluated)."""
    names = _Names()
    names.visit(ast.parse(source))
    return (names.read | names.annotation) - names.bound


def archscale_module(module_name: str) -> bool:
    """The default ``owned``: archscale's own modules."""
    return module_name == "archscale" or module_name.startswith("archscale.")
