"""Where a trained result came from, recorded when it is trained (never at export time).

The driver knows the code (archscale's version, git commit and whether the tree was dirty)
and the spec; the worker that trains knows its libraries and its device. A trial's
``result.json`` gets both as one ``provenance`` object with the keys of :data:`KEYS`.
"""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

KEYS = ("archscale", "commit", "dirty", "torch", "torchvision", "ray", "optuna", "fvcore", "spec_sha256", "seed",
        "device")
LIBRARIES = ("torch", "torchvision", "ray", "optuna", "fvcore")


def version(dist: str) -> str | None:
    """The installed version of a distribution as its metadata reports it, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def archscale_version() -> str:
    import archscale

    return version("archscale") or archscale.__version__


def git_state(folder: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding archscale's code, or (None, None) where the
    code is not in a git checkout (an installed wheel) or git is missing."""
    folder = Path(folder or Path(__file__).resolve().parents[2])  # archscale/
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=5)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=folder,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit.stdout.strip() or None, bool(status.stdout.strip()) if status.returncode == 0 else None


def driver_provenance(spec_yaml: str) -> dict[str, Any]:
    """The driver's part: archscale's version, the code's commit and dirtiness, and the
    SHA-256 of the run's ``spec.yaml`` (``spec_yaml``: its text, as written or to be written)."""
    commit, dirty = git_state()
    return {"archscale": archscale_version(), "commit": commit, "dirty": dirty,
            "spec_sha256": hashlib.sha256(spec_yaml.encode()).hexdigest()}


def trial_provenance(driver: dict[str, Any], seed: int, device: str) -> dict[str, Any]:
    """The whole provenance of a trial trained here: ``driver``'s part, this process's
    library versions, the trial's seed and the device it trained on."""
    out = {key: driver.get(key) for key in ("archscale", "commit", "dirty", "spec_sha256")}
    out.update({lib: version(lib) for lib in LIBRARIES})
    out.update(seed=int(seed), device=device)
    return {key: out[key] for key in KEYS}
