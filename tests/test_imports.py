"""How archscale's modules import each other: no circles, no classes made inside functions,
and few imports inside functions (lazy imports belong at the entry points).

Every module under ``archscale/`` is parsed with :mod:`ast`; each import, at the top or inside a
function, is an edge to the module it loads. ``from archscale.x import name`` goes to
``archscale.x.name`` when that is a module; to the module that defines ``name`` when
``archscale.x`` is a package exporting it lazily (PEP 562, its ``_MODULE_OF`` or ``_LAZY``);
else to ``archscale.x``. A package's own ``__init__``, run by Python before a submodule, is not
an edge: a package importing its submodules is how a package is made. Imports under
``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import importlib
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "archscale"
MAX_IMPORTS_IN_FUNCTIONS = 60


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@cache
def sources() -> dict[str, ast.Module]:
    """Dotted module name -> its parsed source, for every module of the package."""
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def top_package(module: str) -> str:
    """``space`` for ``archscale.space.nets.budgeted``; ``archscale`` for the package's own ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@cache
def lazy_exports(package: str) -> dict[str, str]:
    """Name -> defining module of a package that exports names lazily (``_MODULE_OF``, ``_LAZY``);
    importing such a package runs nothing heavy."""
    init = importlib.import_module(package)
    table = getattr(init, "_MODULE_OF", None) or getattr(init, "_LAZY", None) or {}
    return {name: module if module.startswith("archscale.") else f"{package}.{module}" for name, module in table.items()}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk(tree: ast.AST, in_function: bool = False):
    """(import node, whether it is inside a function) for every import that can run."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking(node):
            for child in node.orelse:  # the else branch runs
                yield from _walk(ast.Module(body=[child], type_ignores=[]), in_function)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        yield from _walk(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def is_package(module: str) -> bool:
    return (ROOT / module.replace(".", "/") / "__init__.py").is_file()


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package(module) else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The archscale modules an import statement of ``module`` loads (see the module docstring)."""
    known = sources()
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    source = _absolute(module, node)
    if source not in known:
        return set()
    found = set()
    for alias in node.names:
        if f"{source}.{alias.name}" in known:
            found.add(f"{source}.{alias.name}")
        elif is_package(source) and alias.name in lazy_exports(source):
            found.add(lazy_exports(source)[alias.name])
        else:
            found.add(source)
    return found


@cache
def graph() -> dict[str, set[str]]:
    """Module -> the archscale modules it imports, at its top or inside its functions."""
    return {module: {t for node, _ in _walk(tree) for t in targets(module, node)} - {module}
            for module, tree in sources().items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def a_circle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One circle through the component's first module, as a -> b -> ... -> a."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return component


def per_package() -> list[str]:
    """One parameter per top-level package or module of archscale."""
    return sorted({top_package(m) for m in sources()})


# --------------------------------------------------------------------------- the tests


def test_the_graph_resolves_lazy_exports_and_submodules():
    """The rules of the module docstring, on imports whose targets are known."""
    edges = graph()
    assert "archscale.space.registry" in edges["archscale.space"]  # from archscale.space.registry import ...
    assert "archscale.trainer.config" in edges["archscale.spec.sections"]  # from archscale.trainer import TrainConfig
    assert "archscale.trainer" not in edges["archscale.spec.sections"]
    assert "archscale.space.nets" not in edges["archscale.space.budgeted"]  # TYPE_CHECKING and the package left out
    assert not cycles({"a": {"b"}, "b": {"c"}, "c": set()})
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", per_package())
def test_no_import_circles(package):
    edges = graph()
    found = [c for c in cycles(edges) if any(top_package(m) == package for m in c)]
    assert not found, "import circles:\n" + "\n".join(" -> ".join(a_circle(c, edges)) for c in found)


def classes_in_functions(module: str) -> list[str]:
    tree = sources()[module]
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and function:
                found.append(f"{module}: class {child.name} in {function}() (line {child.lineno})")
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            visit(child, inner)

    visit(tree, None)
    return found


@pytest.mark.parametrize("package", per_package())
def test_no_class_is_defined_inside_a_function(package):
    found = [line for m in sources() if top_package(m) == package for line in classes_in_functions(m)]
    assert not found, "\n".join(found)


def imports_in_functions() -> Counter:
    """Module -> how many import statements it holds inside functions."""
    return Counter({m: n for m, tree in sources().items() if (n := sum(inside for _, inside in _walk(tree)))})


def test_few_imports_inside_functions():
    counts = imports_in_functions()
    total = sum(counts.values())
    table = "\n".join(f"{n:4d}  {m}" for m, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    assert total <= MAX_IMPORTS_IN_FUNCTIONS, f"{total} imports inside functions (at most {MAX_IMPORTS_IN_FUNCTIONS}):\n{table}"
