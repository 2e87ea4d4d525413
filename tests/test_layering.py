"""Packages stay layered: space knows nothing of the others; only search imports ray and
optuna, and the entry points (``import archscale``, ``--help``, ``spaces``, ``check``) load
neither."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "archscale"
ALLOWED = {  # archscale.files (reading a user's file) and archscale.pixels (one image to the network's
    # input: the loader's and an export's preprocess) are leaves every layer may use
    "space": {"space"},
    "trainer": {"space", "trainer", "files", "pixels"},
    "spec": {"space", "trainer", "spec", "files", "pixels"},
    "analysis": {"space", "spec", "analysis", "files", "pixels"},
    "search": {"space", "trainer", "spec", "analysis", "search", "files", "pixels"},
}
HEAVY = {"ray", "optuna"}


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Dotted names a module imports (``archscale.x`` as ``x``); only its module-level
    statements with ``top_level_only``."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "archscale" and len(parts) > 1 else None


def modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package):
    for path in (PACKAGE / package).rglob("*.py"):
        names = imports(path)
        layers = {layer_of(n) for n in names} - {None}
        assert layers <= ALLOWED[package], f"{path.relative_to(ROOT)} imports {sorted(layers - ALLOWED[package])}"
        roots = {n.split(".")[0] for n in names}
        if package != "search":
            assert not roots & HEAVY, f"{path.relative_to(ROOT)} imports {sorted(roots & HEAVY)}"


# what runs before Ray is needed: every module outside search, and the search modules a run
# uses before it starts Ray (the run directory, the cluster's address, the cores, the checks)
BEFORE_RAY = ("archscale.search.jobs.rundir", "archscale.search.jobs.check", "archscale.search.jobs.provenance",
              "archscale.search.jobs.profile", "archscale.search.dispatch.cluster", "archscale.search.dispatch.session")


def test_importing_what_runs_before_ray_loads_neither_ray_nor_optuna():
    """Each such module, imported in a fresh interpreter; the modules that run a search import
    ray and optuna at their top, as any module imports what it uses."""
    light = [m for m in modules() if not m.startswith("archscale.search.") or m in BEFORE_RAY
             or m.count(".") == 2 and m.endswith(("jobs", "configs", "sampling", "dispatch"))]
    assert "archscale.api" in light and "archscale.cli" in light and "archscale.search.dispatch.session" in light
    code = ("import importlib, sys\n"
            f"for name in {light!r}:\n"
            "    importlib.import_module(name)\n"
            "    heavy = sorted(m for m in ('ray', 'optuna') if m in sys.modules)\n"
            "    assert not heavy, (name, heavy)\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_trial_s_worker_reads_no_spec():
    """What a worker imports for its trials (archscale.search.dispatch.trial) leaves the spec
    reader and the sampler to the driver: trials get plain data. (pydantic comes with ray.tune.)"""
    code = ("import sys\n"
            "import archscale.search.dispatch.trial\n"
            "print(sorted(m for m in ('archscale.spec.model', 'archscale.spec.load', 'optuna') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


CHECKED = [  # one spec of each kind: a budgeted search, a searched recipe, a two-stage compound scaling
    ("examples/quickstart.yaml", ["--samples", "4"]),
    ("examples/mnist_1p5k_techniques.yaml", ["--samples", "4"]),
    ("examples/mnist_compound_scaling_small.yaml", ["--set", "space.params.alpha=[1.2]", "--set",
                                                    "space.params.beta=[1.1]"]),
]


@pytest.mark.parametrize("spec, extra", CHECKED, ids=[s for s, _ in CHECKED])
def test_check_of_every_kind_of_spec_loads_neither_ray_nor_optuna(spec, extra):
    code = ("import sys\nfrom archscale.cli import main\n"
            f"status = main(['check', {spec!r}, *{extra!r}])\n"
            "print('heavy:', sorted(m for m in ('ray', 'optuna') if m in sys.modules), status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip().splitlines()[-1] == "heavy: [] 0", done.stdout[-2000:] + done.stderr[-2000:]


def _fresh(code: str) -> list[str]:
    """The lines ``code`` prints in a fresh interpreter (its stderr in the message when it prints none)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-2000:]
    return lines


def _cli_loads(argv: list[str], heavy: tuple[str, ...]) -> str:
    """``loaded: [modules of heavy imported] exit-status`` after ``archscale ARGV`` in a fresh interpreter."""
    code = ("import sys\nfrom archscale.cli import main\n"
            f"try:\n    status = main({argv!r})\nexcept SystemExit as done:\n    status = done.code\n"
            f"print('loaded:', sorted(m for m in {heavy!r} if m in sys.modules), status)")
    return _fresh(code)[-1]


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["check", "--help"], ["export", "--help"],
                                  ["frobnicate"]])
def test_help_and_argument_errors_load_no_torch(argv):
    """`archscale --help` answers before torch, pandas, pydantic, ray or optuna are imported."""
    expected = 2 if argv == ["frobnicate"] else 0
    heavy = ("torch", "pandas", "pydantic", "ray", "optuna", "matplotlib")
    assert _cli_loads(argv, heavy) == f"loaded: [] {expected}"


@pytest.mark.parametrize("argv", [["spaces"], ["spaces", "efficientnet"]])
def test_spaces_loads_nothing_heavy(argv):
    """`archscale spaces` lists the registry: the families' declarations, not their PyTorch networks."""
    heavy = ("torch", "pandas", "pydantic", "ray", "optuna", "matplotlib", "fvcore")
    assert _cli_loads(argv, heavy) == "loaded: [] 0"


@pytest.mark.parametrize("argv", [["run", "no-such-spec.yaml"], ["check", "no-such-spec.yaml"],
                                  ["run", "examples/quickstart.yaml", "--set", "search.num_trials=0"]])
def test_an_input_error_is_said_before_torch_is_loaded(argv):
    """A missing spec or an invalid field: the one line and exit 2 come before torch, ray or
    optuna are imported (the command line tells input errors apart with torch-free classes)."""
    heavy = ("torch", "ray", "optuna", "matplotlib")
    assert _cli_loads(argv, heavy) == "loaded: [] 2"


FAMILIES = ("budgeted", "davidnet", "efficientnet")


def test_declaring_and_validating_the_families_loads_no_torch_and_building_does():
    """`import archscale.space`, `archscale spaces`, and resolving, checking and describing an
    architecture of each built-in family leave torch unimported (`archscale run` starts Ray
    before torch); ``build`` then imports each family's network and torch."""
    mnist = {"in_channels": 1, "num_classes": 10, "image_size": 28}
    code = ("import contextlib, io, sys\n"
            "import archscale.space\n"
            "from archscale.cli import main\n"
            "from archscale.space import SpaceError, build, get_space\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['spaces']) == 0\n"
            "archs = []\n"
            f"for name in {FAMILIES!r}:\n"
            "    space = get_space(name)\n"
            f"    arch = space.resolve({{}}, {mnist!r})\n"
            "    space.constraint_violation(arch.params), space.input_mismatch(arch.params), space.describe(arch)\n"
            "    try:\n"
            "        space.resolve({'no_such_param': 1})\n"
            "    except SpaceError:\n"
            "        archs.append(arch)\n"
            "print('torch before build:', 'torch' in sys.modules)\n"
            "built = [type(build(arch.text)).__name__ for arch in archs]\n"
            "print('torch after build:', 'torch' in sys.modules, built)")
    assert _fresh(code)[-2:] == ["torch before build: False",
                                 "torch after build: True ['BudgetedNet', 'DavidNet', 'CompoundNet']"]


SPEC_PATH = ("torch", "pandas", "ray", "optuna")  # none before `archscale run` starts Ray


def test_resolving_a_spec_and_checking_its_run_directory_load_no_torch(tmp_path):
    """What `archscale run` does before it starts Ray: importing the API and the modules of
    that path, resolving every example spec, checking the address, the cores and the run
    directory (new, and resumed from the spec.yaml a run writes) leave torch, pandas, ray and
    optuna unimported, so Ray's start does not wait for them."""
    code = ("import sys\nfrom pathlib import Path\n"
            "import archscale.api, archscale.spec, archscale.search.jobs.rundir, archscale.search.dispatch.session\n"
            f"loaded = lambda: sorted(m for m in {SPEC_PATH!r} if m in sys.modules)\n"
            "print('imported:', loaded())\n"
            "from archscale.api import resolve_spec\n"
            "from archscale.search.dispatch.cluster import prepare_address\n"
            "from archscale.search.jobs.rundir import prepare_run_dir\n"
            "from archscale.spec import SpecError\n"
            "from archscale.search.dispatch.session import require_cores\n"
            "paths = sorted(Path('examples').glob('*.yaml'))\n"
            "specs = [resolve_spec(path, {}) for path in paths]\n"
            "print('resolved:', len(specs), loaded())\n"
            f"run_dir = Path({str(tmp_path / 'run')!r})\n"
            "for spec in specs:\n"
            "    prepare_address(spec.search.address)\n"
            "    try:\n"
            "        require_cores(spec)\n"
            "    except SpecError:\n"
            "        pass  # more CPUs per trial than this machine has: refused, by the same code\n"
            "    prepare_run_dir(spec, run_dir, resume=False)\n"
            "run_dir.mkdir()\n"
            "(run_dir / 'spec.yaml').write_text(specs[0].to_yaml())\n"
            "prepare_run_dir(specs[0], run_dir, resume=True)\n"
            "print('run directory:', loaded())")
    examples = len(list((ROOT / "examples").glob("*.yaml")))
    assert examples >= 10
    assert _fresh(code)[-3:] == ["imported: []", f"resolved: {examples} []", "run directory: []"]


def test_the_trainer_and_analysis_names_are_imported_on_first_use():
    """``archscale.trainer`` and ``archscale.analysis`` export their names lazily: each is its
    module's own object, listed by ``dir``; the torch-free config alone loads no torch."""
    code = ("import sys\nimport archscale.analysis, archscale.trainer\n"
            "from archscale.trainer import DATASETS, RECIPES, TrainConfig\n"
            "print('config:', 'torch' in sys.modules, TrainConfig.__module__)\n"
            "import archscale.trainer.loop\n"
            "for package in (archscale.trainer, archscale.analysis):\n"
            "    for name in package.__all__:\n"
            "        value = getattr(package, name)\n"
            "        home = sys.modules[getattr(value, '__module__', None) or package.__name__]\n"
            "        assert name in dir(package) and getattr(home, name) is value, (package.__name__, name)\n"
            "print('train:', type(archscale.trainer.train).__name__, archscale.trainer.loop.__name__)\n"
            "try:\n    archscale.trainer.no_such_name\nexcept AttributeError as err:\n    print(err)")
    assert _fresh(code)[-3:] == ["config: False archscale.trainer.config", "train: function archscale.trainer.loop",
                                 "module 'archscale.trainer' has no attribute 'no_such_name'"]
