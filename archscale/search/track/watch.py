"""The trackers a spec asks for (``search.track``), made for one search."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from archscale.search.sampling.studydb import LiveStudy
from archscale.search.track.options import require_trackers
from archscale.search.track.writer import Watchers
from archscale.spec import Dimension, Spec

def open_watchers(spec: Spec, run_dir: str | Path, dims: Sequence[Dimension]) -> Watchers:
    """``RUN/study.db`` and the trackers of ``search.track``, writing from now on. Raises
    SpecError for a tracker that cannot start (its package missing, an MLflow store that
    cannot be reached), having closed those already made."""
    require_trackers(spec)
    writers = [LiveStudy(run_dir, spec, dims)]
    try:
        if "tensorboard" in spec.search.track:
            from archscale.search.track.tboard import TensorBoardTracker  # optional: archscale[track]

            writers.append(TensorBoardTracker(run_dir, dims))
        if "mlflow" in spec.search.track:
            from archscale.search.track.mlflowrun import MLflowTracker  # optional: archscale[track]

            writers.append(MLflowTracker(run_dir, spec, dims))
    except BaseException:
        Watchers(writers).close()
        raise
    return Watchers(writers)
