"""Fixtures of the analysis tests: a Python that cannot import archscale, and a headless browser."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Runs in a fresh interpreter (-I: no PYTHONPATH, no user site, no working directory on the
# path) in which importing any archscale package fails, whatever is installed.
NO_ARCHSCALE = r"""
import importlib.abc, importlib.util, json, sys

class NoArchscale(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("space", "trainer", "analysis", "search", "archscale"):
            raise ImportError(f"archscale is not importable here ({name})")
        return None

sys.meta_path.insert(0, NoArchscale())
try:
    import archscale.space  # noqa: F401
    sys.exit("archscale was importable")
except ImportError:
    pass
import torch


def load_model_py(folder):
    spec = importlib.util.spec_from_file_location("exported_model", folder + "/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
"""


@pytest.fixture(scope="session")
def no_archscale_python():
    """``run(script, *args, cwd) -> stdout``: run ``script`` in a fresh ``python -I`` where no
    archscale package can be imported; the script finds ``load_model_py(folder)`` and ``torch``
    defined. A non-zero exit fails the test with the script's stderr."""

    def run(script: str, *args: str, cwd: Path) -> str:
        proc = subprocess.run([sys.executable, "-I", "-c", NO_ARCHSCALE + script, *map(str, args)],
                              capture_output=True, text=True, cwd=cwd, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    return run


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a headless-capable Chromium (CI installs Debian's ``chromium``)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run installs it)")
    return path
