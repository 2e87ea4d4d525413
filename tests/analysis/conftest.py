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


# (c1_width, train.lr, val_accuracy) of the four completed trials of every run write_run writes.
ROWS = [(4, 0.05, 0.61), (8, 0.05, 0.72), (4, 0.1, 0.66), (8, 0.1, 0.80)]


@pytest.fixture
def write_run(tmp_path, tiny_spec):
    """``write_run(name, **search)``: a run directory written by hand (nothing trained) of the
    tiny spec searching ``train.lr`` too, with ``search`` fields overridden; four completed trials."""
    from archscale.analysis.records import TrialsCSV
    from archscale.spec import Spec

    def write(name: str = "run", **search) -> Path:
        run_dir = tmp_path / name
        run_dir.mkdir()
        raw = {**tiny_spec, "name": name, "train": {**tiny_spec["train"], "lr": [0.05, 0.1]},
               "search": {**tiny_spec["search"], **search}}
        spec = Spec.model_validate(raw)
        (run_dir / "spec.yaml").write_text(spec.to_yaml())
        csv = TrialsCSV(run_dir / "trials.csv", [d.name for d in spec.searched()])
        for i, (width, lr, acc) in enumerate(ROWS):
            csv.append({"trial_id": f"t{i}", "status": "completed", "c1_width": width, "c3_width": 8, "c4_width": 8,
                        "c3_conv": "regular", "train.lr": lr, "params": 1000 + 500 * (width // 8),
                        "macs": 10_000 * width, "val_accuracy": acc, "test_accuracy": acc - 0.01,
                        "train_seconds": 1.0 + i, "epochs": 1, "arch": f"budgeted:c1_width={width}"})
        return run_dir

    return write
