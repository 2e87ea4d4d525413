"""Hypervolume of a Pareto front and its growth over trials.

The hypervolume is the volume of objective space that the front dominates, bounded by a
reference point: what the spec implies (:mod:`archscale.analysis.reference`: its
``search.reference_point``, chance accuracy, a budget, the largest cost in the space), else
the worst value of an objective over the completed trials. Raw hypervolumes multiply units (accuracy x MACs), so
we also report it normalised: divided by the volume of the box between the ideal point (the
best value of every objective) and the reference point, a number in [0, 1] that two runs can
be compared on when they share the reference and ideal points (``archscale compare`` sees to
that by computing both over all the runs it compares).

Exact for 1, 2 and 3 objectives (a sweep in 2D; slices of 2D sweeps in 3D). The analysis
layer does not import Optuna, so this is ours; ``tests/analysis/test_hypervolume.py`` checks
it against ``optuna._hypervolume.compute_hypervolume`` on random fronts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from archscale.analysis.figures import pyplot
from archscale.analysis.pareto import Objective, non_dominated


def _to_min(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    signs = np.array([1.0 if m == "min" else -1.0 for m in modes])
    return np.asarray(points, dtype=float).reshape(-1, len(modes)) * signs


def _hv2(pts: np.ndarray, ref: np.ndarray) -> float:
    """Area dominated by minimisation points (n, 2) below ``ref``."""
    area, best_y = 0.0, ref[1]
    for x, y in pts[np.lexsort((pts[:, 1], pts[:, 0]))]:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


def hypervolume_min(points: np.ndarray, reference: Sequence[float]) -> float:
    """Hypervolume of minimisation ``points`` (n, k), k <= 3, bounded by ``reference``.
    Points not strictly better than the reference in every objective add nothing."""
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[~np.isnan(pts).any(axis=1)]
    pts = pts[(pts < ref).all(axis=1)]
    if len(pts) == 0:
        return 0.0
    k = len(ref)
    if k == 1:
        return float(ref[0] - pts[:, 0].min())
    if k == 2:
        return float(_hv2(pts, ref))
    if k == 3:
        pts = pts[np.argsort(pts[:, 2], kind="stable")]
        volume = 0.0
        for i in range(len(pts)):
            top = pts[i + 1, 2] if i + 1 < len(pts) else ref[2]
            if top > pts[i, 2]:
                volume += _hv2(pts[: i + 1, :2], ref[:2]) * (top - pts[i, 2])
        return float(volume)
    raise ValueError(f"hypervolume of {k} objectives is not supported (1 to 3)")


def hypervolume(points: np.ndarray, reference: Sequence[float], modes: Sequence[str]) -> float:
    """Hypervolume of ``points`` (n, k) under objectives ``modes`` ("max" | "min") and ``reference``."""
    return hypervolume_min(_to_min(points, modes), _to_min(np.asarray(reference, dtype=float), modes)[0])


# --------------------------------------------------------------------------- over trials


@dataclass(frozen=True)
class Bounds:
    """The reference point (worst) and ideal point (best) of each objective, and where the
    reference came from ("spec" or "worst completed" per objective)."""

    objectives: tuple[Objective, ...]
    reference: tuple[float, ...]
    ideal: tuple[float, ...]
    reference_source: tuple[str, ...]  # per objective: "search.reference_point", "space.max_macs", ...

    @property
    def box_volume(self) -> float:
        return float(np.prod([abs(r - i) for r, i in zip(self.reference, self.ideal)]))

    def describe(self) -> str:
        parts = [f"{m}={_num(r)} ({src})" for (m, _), r, src in zip(self.objectives, self.reference, self.reference_source)]
        ideal = ", ".join(f"{m}={_num(v)}" for (m, _), v in zip(self.objectives, self.ideal))
        return f"reference point {', '.join(parts)}; ideal point {ideal}"


def _num(value: float) -> str:
    return f"{value:.6g}" if abs(value) < 1e6 else f"{value:,.0f}"


def completed(trials: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """Completed trials with a value for every objective."""
    done = trials[trials["status"] == "completed"]
    return done.dropna(subset=[m for m, _ in objectives])


def bounds(trials: pd.DataFrame | Sequence[pd.DataFrame], objectives: Sequence[Objective],
           reference: Mapping[str, float | tuple[float, str]] | None = None) -> Bounds:
    """Reference and ideal points over the completed trials of one run or of several.
    ``reference`` (metric -> value, or (value, where it comes from): what
    :func:`~archscale.analysis.reference.reference_point` gives) overrides the worst completed
    value per objective."""
    frames = [trials] if isinstance(trials, pd.DataFrame) else list(trials)
    done = pd.concat([completed(t, objectives) for t in frames], ignore_index=True)
    if done.empty:
        raise ValueError("no completed trial has a value for every objective: the hypervolume is undefined")
    reference = dict(reference or {})
    ref, ideal, source = [], [], []
    for metric, mode in objectives:
        values = done[metric].astype(float)
        worst, best = (values.min(), values.max()) if mode == "max" else (values.max(), values.min())
        if metric in reference:
            given = reference[metric]
            value, src = given if isinstance(given, tuple) else (given, "given")
            ref.append(float(value))
            source.append(src)
        else:
            ref.append(float(worst))
            source.append("worst completed")
        ideal.append(float(best))
    return Bounds(tuple(objectives), tuple(ref), tuple(ideal), tuple(source))


def front_hypervolume(trials: pd.DataFrame, objectives: Sequence[Objective], b: Bounds) -> tuple[float, float]:
    """(raw, normalised) hypervolume of the completed trials' front under ``b``'s reference."""
    done = completed(trials, objectives)
    if done.empty:
        return 0.0, 0.0
    modes = [d for _, d in objectives]
    pts = done[[m for m, _ in objectives]].to_numpy(dtype=float)
    pts = pts[non_dominated(pts, modes)]
    raw = hypervolume(pts, b.reference, modes)
    box = b.box_volume
    return raw, (raw / box if box > 0 else 0.0)


def hypervolume_history(trials: pd.DataFrame, objectives: Sequence[Objective], b: Bounds) -> pd.DataFrame:
    """Hypervolume after each trial, in the order trials finished (trials.csv's row order):
    columns ``trial`` (1-based count of trials finished, any status), ``trial_id``,
    ``hypervolume`` and ``hypervolume_normalised``."""
    modes = [d for _, d in objectives]
    metrics = [m for m, _ in objectives]
    rows, pts = [], np.empty((0, len(objectives)))
    box = b.box_volume
    raw = 0.0
    for n, (_, row) in enumerate(trials.iterrows(), start=1):
        values = row[metrics].to_numpy(dtype=float)
        if row["status"] == "completed" and not np.isnan(values).any():
            pts = np.vstack([pts, values])
            pts = pts[non_dominated(pts, modes)]
            raw = hypervolume(pts, b.reference, modes)
        rows.append({"trial": n, "trial_id": row["trial_id"], "hypervolume": raw,
                     "hypervolume_normalised": raw / box if box > 0 else 0.0})
    return pd.DataFrame(rows, columns=["trial", "trial_id", "hypervolume", "hypervolume_normalised"])


def plot_hypervolume(histories: Mapping[str, pd.DataFrame], path: str | Path, title: str = "", note: str = "") -> Path:
    """Normalised hypervolume against trials finished, one line per run (label -> history)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, hist in histories.items():
        if hist.empty:
            continue
        final = hist["hypervolume_normalised"].iloc[-1]
        ax.step(hist["trial"], hist["hypervolume_normalised"], where="post", marker="o", ms=3,
                label=f"{label} (final {final:.4f})")
    ax.set_xlabel("trials finished (any status)")
    ax.set_ylabel("hypervolume, normalised")
    ax.set_ylim(bottom=0)
    ax.set_title(title or "Hypervolume over trials")
    if note:
        fig.text(0.01, 0.01, note, fontsize=6, color="dimgray", wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def summarise(trials: pd.DataFrame, objectives: Sequence[Objective], reference: Mapping[str, float] | None,
              plot: str | Path | None = None, label: str = "run") -> str | None:
    """One line on the front's hypervolume (and ``plot``: its growth over trials), or None
    when no trial completed with a value for every objective."""
    if completed(trials, objectives).empty:
        return None
    b = bounds(trials, objectives, reference)
    raw, norm = front_hypervolume(trials, objectives, b)
    if plot is not None:
        plot_hypervolume({label: hypervolume_history(trials, objectives, b)}, plot, note=b.describe())
    return f"hypervolume: {norm:.4f} normalised, {raw:.6g} raw; {b.describe()}"
