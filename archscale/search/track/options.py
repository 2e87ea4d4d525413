"""What ``search.track`` needs, checked without importing a tracker (``archscale check`` stays
free of them): the packages, and the MLflow store a run records."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from archscale.spec import Spec, SpecError

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # tracker -> the package it writes with
INSTALL = 'pip install "archscale[track]"'


def require_trackers(spec: Spec) -> None:
    """Refuse a tracker whose package is missing, with the command that installs it."""
    missing = [name for name in spec.search.track if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise SpecError(f"search.track: {', '.join(missing)} asked for, but the package "
                        f"{', '.join(PACKAGES[m] for m in missing)} is not installed; install it with: {INSTALL} "
                        "(or leave it out of search.track)")


def resolve_tracking(spec: Spec, run_dir: str | Path) -> Spec:
    """``spec`` with its MLflow store named (by default ``sqlite:///RUN/mlflow.db``), as the
    run's ``spec.yaml`` records it."""
    if "mlflow" not in spec.search.track or spec.search.mlflow_uri:
        return spec
    uri = default_mlflow_uri(run_dir)
    return spec.model_copy(update={"search": spec.search.model_copy(update={"mlflow_uri": uri})})


def default_mlflow_uri(run_dir: str | Path) -> str:
    """The MLflow store a run keeps inside its own directory (``search.mlflow_uri`` null)."""
    return f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"
