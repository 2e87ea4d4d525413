"""Packages stay layered: space knows nothing of the others; only search imports ray/optuna."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "space": {"space"},
    "trainer": {"space", "trainer"},
    "analysis": {"space", "analysis"},
    "search": {"space", "trainer", "analysis", "search"},
}
HEAVY = {"ray", "optuna"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package):
    ours = set(ALLOWED)
    for path in (ROOT / package).rglob("*.py"):
        roots = imported_roots(path)
        assert (roots & ours) <= ALLOWED[package], f"{path.relative_to(ROOT)} imports {sorted(roots & ours)}"
        if package != "search":
            assert not roots & HEAVY, f"{path.relative_to(ROOT)} imports {sorted(roots & HEAVY)}"


def test_importing_the_lower_packages_loads_neither_ray_nor_optuna():
    code = "import sys, space, trainer, analysis, search.spec, search.cli; print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
