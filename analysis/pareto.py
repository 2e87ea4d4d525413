"""Non-dominated sorting over any objectives, Pareto tables and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

Objective = tuple[str, str]  # (metric, "max" | "min")


def parse_objectives(text: str | Sequence[str]) -> list[Objective]:
    """``"val_accuracy:max,macs:min"`` (or a list of such items) -> [("val_accuracy", "max"), ...]."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        metric, _, mode = item.strip().partition(":")
        if not metric or mode not in ("max", "min"):
            raise ValueError(f"objective {item!r} must be METRIC:max or METRIC:min")
        out.append((metric, mode))
    return out


def non_dominated(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Boolean mask of the rows of ``points`` (n, k) that no other row dominates.

    A row dominates another when it is at least as good in every objective and
    strictly better in one. Equal rows do not dominate each other, so ties stay on
    the front together. Rows with a NaN are never on the front.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != len(modes):
        raise ValueError(f"points of shape {pts.shape} do not match {len(modes)} objectives")
    signs = np.array([1.0 if m == "min" else -1.0 for m in modes])
    cost = pts * signs  # lower is better everywhere
    valid = ~np.isnan(cost).any(axis=1)
    mask = valid.copy()
    idx = np.flatnonzero(valid)
    for i in idx:
        others = cost[idx]
        dominates = (others <= cost[i]).all(axis=1) & (others < cost[i]).any(axis=1)
        mask[i] = not dominates.any()
    return mask


def pareto_front(trials: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The completed trials that are non-dominated under ``objectives``, best first by the first objective."""
    for metric, _ in objectives:
        if metric not in trials.columns:
            raise KeyError(f"objective {metric!r} is not a column of trials.csv; columns: {', '.join(trials.columns)}")
    done = trials[trials["status"] == "completed"]
    if done.empty:
        return done
    mask = non_dominated(done[[m for m, _ in objectives]].to_numpy(dtype=float), [d for _, d in objectives])
    metric, mode = objectives[0]
    return done[mask].sort_values(metric, ascending=(mode == "min"), kind="stable")


def best_trial(trials: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series | None:
    """The winner: on the front, best in the first objective (ties: next objectives)."""
    front = pareto_front(trials, objectives)
    if front.empty:
        return None
    by = [m for m, _ in objectives]
    asc = [d == "min" for _, d in objectives]
    return front.sort_values(by, ascending=asc, kind="stable").iloc[0]


def plot_pareto(trials: pd.DataFrame, objectives: Sequence[Objective], path: str | Path, title: str = "") -> Path:
    """Scatter of the first two objectives (the third, if any, as colour): the front as a
    line, dominated completed trials in grey, infeasible/failed/pruned trials marked apart.
    With one objective, the objective is drawn against the trial's order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_front(trials, objectives)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    if len(objectives) == 1:
        metric = objectives[0][0]
        order = np.arange(len(trials))
        done = trials["status"] == "completed"
        ax.scatter(order[done.to_numpy()], trials.loc[done, metric], c="tab:blue", label="completed")
        best = front.iloc[:1]
        ax.scatter([trials.index.get_loc(i) for i in best.index], best[metric], s=120, facecolors="none",
                   edgecolors="tab:red", linewidths=2, label="best")
        ax.set_xlabel("trial (order finished)")
        ax.set_ylabel(metric)
    else:
        xm, ym = objectives[1][0], objectives[0][0]  # x: cost-like, y: first objective
        done = trials[trials["status"] == "completed"]
        dominated = done.drop(front.index)
        ax.scatter(dominated[xm], dominated[ym], c="lightgray", edgecolors="gray", label="dominated")
        if len(objectives) == 3:
            sc = ax.scatter(front[xm], front[ym], s=60, edgecolors="tab:red", linewidths=1.5,
                            c=front[objectives[2][0]], cmap="viridis", label="Pareto front", zorder=3)
            fig.colorbar(sc, ax=ax, label=objectives[2][0])
        else:
            ax.scatter(front[xm], front[ym], s=60, c="tab:red", label="Pareto front", zorder=3)
        line = front.sort_values(xm)
        ax.plot(line[xm], line[ym], c="tab:red", lw=1, drawstyle="steps-post" if len(objectives) == 2 else "default")
        for _, row in front.iterrows():
            ax.annotate(str(row["trial_id"]), (row[xm], row[ym]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
        others = trials[trials["status"].isin(["infeasible", "failed", "pruned"])]
        markers = {"infeasible": "x", "failed": "v", "pruned": "s"}
        ybottom = done[ym].min() if not done.empty else 0.0
        for status, marker in markers.items():
            part = others[others["status"] == status]
            if part.empty:
                continue
            yvals = part[ym].where(part[ym].notna(), ybottom) if ym in part else ybottom
            xvals = part[xm] if xm in part and part[xm].notna().all() else np.zeros(len(part))
            ax.scatter(xvals, yvals, marker=marker, c="black", label=f"{status} ({len(part)})")
        ax.set_xlabel(xm + (" (multiply-adds per image, fvcore)" if xm == "macs" else ""))
        ax.set_ylabel(ym)
        if xm in ("macs", "params") and done[xm].gt(0).all() and len(done) and done[xm].max() / max(done[xm].min(), 1) > 20:
            ax.set_xscale("log")
    ax.set_title(title or "Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
