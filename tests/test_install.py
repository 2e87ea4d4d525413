"""The project installs under one import name, ``archscale``: a fresh virtual environment gets
no top-level ``space``, ``trainer``, ``search`` or ``analysis`` from it, and PyPI's ``trainer``
(Coqui's) installs and imports beside it.

Each venv sees the system's site-packages (torch, ray, ... are not installed again) through a
``.pth`` line naming those folders: like ``--system-site-packages``, but the import hooks that
the system's own ``.pth`` files install are not run, so an editable install of some other
checkout on the machine (say one from before the rename, which maps a top-level ``space``)
cannot leak into what is checked here. Imports run with the venv's python, from a temporary
folder, without ``PYTHONPATH``.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OLD_NAMES = ("space", "trainer", "search", "analysis")

pytestmark = pytest.mark.slow


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: list, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of what the project installs from (not the checkout: its build/ and egg-info stay untouched)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "archscale", src / "archscale", ignore=shutil.ignore_patterns("__pycache__"))
    return src


@pytest.fixture
def venv(tmp_path, source):
    """A fresh venv with this project installed (non-editable, no dependencies fetched);
    returns (its python, its site-packages, a scratch cwd)."""
    root = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=tmp_path)  # pip and setuptools: the system's
    python = root / "bin" / "python"
    venv_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          cwd=tmp_path).stdout.strip())
    system = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (venv_site / "_system_site.pth").write_text("\n".join(system) + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", source], cwd=tmp_path)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return python, venv_site, cwd


def _probe(python: Path, cwd: Path, code: str) -> dict:
    return json.loads(_run([python, "-c", textwrap.dedent(code)], cwd=cwd).stdout.strip().splitlines()[-1])


def test_installs_only_the_archscale_package(venv):
    python, venv_site, cwd = venv
    found = _probe(python, cwd, f"""
        import importlib.metadata, importlib.util, json, sys
        import archscale, archscale.cli, archscale.space, archscale.trainer, archscale.spec, archscale.analysis
        files = importlib.metadata.distribution("archscale").files
        print(json.dumps({{
            "archscale": archscale.__file__,
            "old": {{n: importlib.util.find_spec(n) is not None for n in {OLD_NAMES!r}}},
            "top": sorted({{f.parts[0] for f in files if not f.parts[0].startswith("..")}}),
        }}))""")
    assert Path(found["archscale"]).is_relative_to(venv_site), found["archscale"]
    assert found["old"] == {name: False for name in OLD_NAMES}
    assert found["top"] == ["archscale", "archscale-0.1.0.dist-info"]
    script = python.parent / "archscale"
    done = _run([script, "spaces", "budgeted"], cwd=cwd)
    assert done.stdout.startswith("budgeted:")
    done = _run([python, "-m", "archscale", "check", "/nonexistent.yaml"], cwd=cwd, check=False)
    assert done.returncode == 2 and "'/nonexistent.yaml' does not exist" in done.stderr


def test_pypi_trainer_imports_beside_archscale(venv, tmp_path):
    python, venv_site, cwd = venv
    wheels = tmp_path / "wheels"
    # Coqui's trainer imports coqpit (one of its dependencies) on import: both are fetched.
    done = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", wheels,
                 "trainer", "coqpit"], cwd=tmp_path, check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"PyPI's trainer package could not be downloaded: {reason}")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", *sorted(wheels.glob("*.whl"))], cwd=tmp_path)
    found = _probe(python, cwd, """
        import json
        import trainer
        import archscale.trainer
        from archscale.trainer import load_dataset
        print(json.dumps({"trainer": trainer.__file__, "ours": archscale.trainer.__file__,
                          "coqui": hasattr(trainer, "Trainer") and hasattr(trainer, "TrainerArgs"),
                          "version": trainer.__version__, "load_dataset": load_dataset.__module__}))""")
    assert Path(found["trainer"]).is_relative_to(venv_site / "trainer")
    assert Path(found["ours"]).is_relative_to(venv_site / "archscale" / "trainer")
    assert found["coqui"] and found["version"].lstrip("v")[0].isdigit()
    assert found["load_dataset"] == "archscale.trainer.data"
    assert _run([python.parent / "archscale", "spaces"], cwd=cwd).stdout.count(":") >= 3
