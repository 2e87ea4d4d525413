"""`gpu_session.sh smoke`: every step of the GPU session at toy size on this CPU, in a Python
that lacks what the GPU image lacks (benchmarks/gpu_image/sitecustomize.py refuses ray,
optuna, fvcore, pydantic and mlxtend), writing to $OUT as a GPU run does."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_session_runs_every_step_with_the_gpu_images_packages(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ARCHSCALE_DATA", "ARCHSCALE_PYDEPS")}
    env.update(OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"),
               PYTHONPATH=str(ROOT / "benchmarks" / "gpu_image"))
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), "smoke"], env=env,
                          capture_output=True, text=True, timeout=1500)
    figures = (tmp_path / "out" / "figures.txt").read_text()
    assert done.returncode == 0, figures + done.stderr[-2000:]
    for step in ("davidnet: ok", "airbench: ok", "gputests: ok", "throughput: ok"):
        assert step in figures, figures
    assert "davidnet_94_mean_test_accuracy:" in figures and "trainer_throughput_ratio:" in figures
    assert "search: skipped, ray" in figures  # refused, as on the GPU image without carried wheels
    assert "dispatch: skipped, ray" in figures
    assert "workers: skipped, ray" in figures
    assert "### done" in (tmp_path / "out" / "session.log").read_text()
