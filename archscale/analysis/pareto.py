"""Non-dominated sorting over any objectives, Pareto tables and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from archscale.analysis.figures import pyplot, save_figure
from archscale.space import Arch, build
from archscale.spec.objectives import METRICS, PICKS, UNITS, Objective, parse_objectives  # noqa: F401 - re-exported


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


def pareto_levels(points: np.ndarray) -> np.ndarray:
    """Non-dominated sorting of ``points`` (every column to be maximised): 0 for the front, 1 for
    the front of the rest, and so on."""
    level = np.full(len(points), -1)
    rank_ = 0
    while (level < 0).any():
        left = np.flatnonzero(level < 0)
        others = points[left]
        for i in left:
            if not ((others >= points[i]).all(axis=1) & (others > points[i]).any(axis=1)).any():
                level[i] = rank_
        rank_ += 1
    return level


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row of ``points`` (one front; every column to be
    maximised): the sum over objectives of the gap between its two neighbours, over that
    objective's range; inf for the extremes of each objective (Deb et al., "A fast and elitist
    multiobjective genetic algorithm: NSGA-II", IEEE TEVC 2002, section III-B)."""
    points = np.asarray(points, dtype=float)
    n = len(points)
    out = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for column in points.T:
        order = np.argsort(column, kind="stable")
        span = column[order[-1]] - column[order[0]]
        out[order[0]] = out[order[-1]] = np.inf
        if span > 0 and np.isfinite(span):
            out[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return out


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


def axis_label(metric: str) -> str:
    return f"{metric} ({UNITS[metric]})" if metric in UNITS else metric


def short_ids(ids: Sequence[str]) -> list[str]:
    """Trial ids without the prefix they all share (Ray's ``<experiment>_00007`` -> ``00007``),
    when what remains is still unique; else the ids unchanged."""
    ids = [str(i) for i in ids]
    heads = {i.rpartition("_")[0] for i in ids}
    if len(heads) == 1 and all("_" in i for i in ids):
        tails = [i.rpartition("_")[2] for i in ids]
        if len(set(tails)) == len(tails):
            return tails
    return ids


def fill_missing_costs(trials: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``trials`` where rows lacking ``params`` or ``macs`` (a trial that failed
    before reporting) get them measured from their ``arch`` text, when it builds."""
    # here, not at the top: measuring needs torch and fvcore, a front and its table do not
    from archscale.analysis.cost import count_macs, count_params

    out = trials.copy()
    for col in ("params", "macs"):
        if col not in out.columns:
            out[col] = np.nan
    if "arch" not in out.columns:
        return out
    missing = out[["params", "macs"]].isna().any(axis=1) & out["arch"].notna()
    for idx in out.index[missing]:
        try:
            arch = Arch.from_text(str(out.at[idx, "arch"]))
            model = build(arch)
            size = int(arch.params.get("image_size", 32))
            shape = (1, int(arch.params.get("in_channels", 3)), size, size)
            if pd.isna(out.at[idx, "params"]):
                out.at[idx, "params"] = count_params(model)
            if pd.isna(out.at[idx, "macs"]):
                out.at[idx, "macs"] = count_macs(model, shape)
        except Exception:  # noqa: BLE001 - an arch that does not build stays unplaced
            continue
    return out


def pick_trial(trials: pd.DataFrame, pick: str) -> pd.Series | None:
    """A completed trial chosen by ``pick``:

    - ``accuracy``: the highest ``val_accuracy`` (ties: fewer MACs, then fewer params);
    - ``macs``: the fewest MACs (ties: higher ``val_accuracy``);
    - ``knee``: on the front of (val_accuracy:max, macs:min), both scaled to [0, 1], the
      point farthest beyond the straight line through the front's two ends (on the side of
      the ideal point): where giving up accuracy stops buying many MACs. A front of one or two
      points, or one with no point beyond that line, gives its most accurate.
    """
    objectives = [("val_accuracy", "max"), ("macs", "min")]
    done = trials[trials["status"] == "completed"].dropna(subset=["val_accuracy", "macs"])
    if done.empty:
        return None
    if pick == "accuracy":
        return done.sort_values(["val_accuracy", "macs", "params"], ascending=[False, True, True], kind="stable").iloc[0]
    if pick == "macs":
        return done.sort_values(["macs", "val_accuracy"], ascending=[True, False], kind="stable").iloc[0]
    if pick != "knee":
        raise ValueError(f"pick {pick!r} is not one of {', '.join(PICKS)}")
    front = pareto_front(done, objectives).drop_duplicates(subset=["val_accuracy", "macs"])
    if len(front) <= 2:
        return front.iloc[0]
    acc = front["val_accuracy"].to_numpy(dtype=float)
    cost = front["macs"].to_numpy(dtype=float)
    a = (acc - acc.min()) / (acc.max() - acc.min() or 1.0)  # 1 = most accurate
    c = (cost.max() - cost) / (cost.max() - cost.min() or 1.0)  # 1 = cheapest
    # The ends: most accurate (a=1) and cheapest (c=1). Signed distance of each point to the
    # line through them, positive on the side of the ideal point (a=1, c=1).
    (a0, c0), (a1, c1) = (a[np.argmax(a)], c[np.argmax(a)]), (a[np.argmax(c)], c[np.argmax(c)])

    def side(pa, pc):
        return ((a1 - a0) * (pc - c0) - (c1 - c0) * (pa - a0)) / (np.hypot(a1 - a0, c1 - c0) or 1.0)

    dist = side(a, c) * np.sign(side(1.0, 1.0) or 1.0)
    if dist.max() <= 0:
        return front.iloc[int(np.argmax(a))]
    return front.iloc[int(np.argmax(dist))]


def plot_pareto(trials: pd.DataFrame, objectives: Sequence[Objective], path: str | Path, title: str = "") -> Path:
    """Scatter of the first two objectives (the third, if any, as colour). The front is drawn
    red and joined by a line, dominated completed trials grey, and infeasible (x), failed (v)
    and pruned (s) trials black; a trial without a value for the y objective sits on a strip
    below the others. Every point is labelled with its trial id (the shared prefix dropped).
    With one objective, the objective is drawn against the order trials finished in."""
    plt = pyplot()
    front = pareto_front(trials, objectives)
    labels = dict(zip(trials.index, short_ids(trials["trial_id"].tolist())))
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    done = trials[trials["status"] == "completed"]
    if len(objectives) == 1:
        metric = objectives[0][0]
        order = pd.Series(np.arange(1, len(trials) + 1), index=trials.index)
        ax.scatter(order[done.index], done[metric], c="tab:blue", label="completed")
        best = front.iloc[:1]
        ax.scatter(order[best.index], best[metric], s=120, facecolors="none", edgecolors="tab:red", linewidths=2,
                   label="best")
        for idx in done.index:
            ax.annotate(labels[idx], (order[idx], done.at[idx, metric]), textcoords="offset points", xytext=(3, 3), fontsize=6)
        ax.set_xlabel("trial (order finished)")
        ax.set_ylabel(axis_label(metric))
    else:
        xm, ym = objectives[1][0], objectives[0][0]  # x: cost-like, y: first objective
        placed = fill_missing_costs(trials) if xm in ("params", "macs") else trials
        dominated = done.drop(front.index)
        ax.scatter(dominated[xm], dominated[ym], c="lightgray", edgecolors="gray", label=f"dominated ({len(dominated)})")
        if len(objectives) == 3:
            sc = ax.scatter(front[xm], front[ym], s=60, edgecolors="tab:red", linewidths=1.5,
                            c=front[objectives[2][0]], cmap="viridis", label=f"Pareto front ({len(front)})", zorder=3)
            fig.colorbar(sc, ax=ax, label=axis_label(objectives[2][0]))
        else:
            ax.scatter(front[xm], front[ym], s=60, c="tab:red", label=f"Pareto front ({len(front)})", zorder=3)
        line = front.sort_values(xm)
        ax.plot(line[xm], line[ym], c="tab:red", lw=1, drawstyle="steps-post" if len(objectives) == 2 else "default")
        for idx in done.index:
            ax.annotate(labels[idx], (done.at[idx, xm], done.at[idx, ym]), textcoords="offset points",
                        xytext=(4, 3), fontsize=6, color="tab:red" if idx in front.index else "dimgray")
        yvals = placed[ym].dropna() if ym in placed else pd.Series(dtype=float)  # every plotted y, any status
        span = (yvals.max() - yvals.min()) if len(yvals) > 1 else (abs(yvals.iloc[0]) if len(yvals) else 1.0)
        strip = (yvals.min() if len(yvals) else 0.0) - 0.08 * (span or 1.0)
        markers = {"infeasible": "x", "failed": "v", "pruned": "s"}
        for status, marker in markers.items():
            part = placed[placed["status"] == status]
            if part.empty:
                continue
            has_x = part[xm].notna() if xm in part else pd.Series(False, index=part.index)
            drawn = part[has_x]
            y = drawn[ym].where(drawn[ym].notna(), strip) if ym in drawn else pd.Series(strip, index=drawn.index)
            unplaced = f", {int((~has_x).sum())} without {xm}" if (~has_x).any() else ""
            ax.scatter(drawn[xm], y, marker=marker, c="black", s=30, label=f"{status} ({len(part)}{unplaced})")
            for idx in drawn.index:
                ax.annotate(labels[idx], (drawn.at[idx, xm], y[idx]), textcoords="offset points", xytext=(4, -8),
                            fontsize=6, color="black")
        if (placed["status"] != "completed").any():
            ax.axhline(strip, color="black", lw=0.4, ls=":")
            ax.annotate(f"no {ym}", (0.005, strip), xycoords=("axes fraction", "data"), fontsize=6,
                        textcoords="offset points", xytext=(0, 3))
        ax.set_xlabel(axis_label(xm))
        ax.set_ylabel(axis_label(ym))
        log_x_if_wide(ax, xm, placed[xm] if xm in placed else pd.Series(dtype=float))
    ids = trials["trial_id"].astype(str).tolist()
    short = short_ids(ids)
    prefix = ids[0][: len(ids[0]) - len(short[0])] if ids and short != ids else ""
    ax.set_title((title or "Pareto front") + (f"\n(labels: trial ids after {prefix!r})" if prefix else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def log_x_if_wide(ax, metric: str, values: pd.Series, ratio: float = 20) -> None:
    """A log x axis for a count (MACs, params) whose positive values span more than ``ratio``."""
    xs = pd.Series(values, dtype=float).dropna()
    if metric in ("macs", "params") and len(xs) and (xs > 0).all() and xs.max() / max(xs.min(), 1) > ratio:
        ax.set_xscale("log")
