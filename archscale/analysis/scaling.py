"""The phi sweep of a two-stage compound-scaling run: which architectures it trains, the
table of what they scored, and ``scaling.png`` (accuracy against MACs).

Stage 2 scales the best (alpha, beta, gamma) of stage 1 by every phi of a list. With
``compare_single_dimension`` it also scales one dimension alone to the *same* MACs
multiplier ``c = alpha * beta**2 * gamma**2`` per step of phi (as the paper's Figure 8
compares methods at equal FLOPs): depth only ``(c, 1, 1)``, width only ``(1, sqrt(c), 1)``
and resolution only ``(1, 1, sqrt(c))``. Each point is an ordinary ``efficientnet``
architecture; two points that build the same network (every kind at phi = 0, say) are
trained once, and a point stage 1 already trained is not trained again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from archscale.analysis.figures import pyplot, save_figure
from archscale.analysis.pareto import Objective, best_trial, log_x_if_wide
from archscale.space import Arch, get_space
from archscale.space.efficientnet import net_config

KINDS = ("compound", "depth", "width", "resolution")
COEFFICIENTS = ("alpha", "beta", "gamma")
_NOT_MODEL = ("alpha", "beta", "gamma", "phi", "target", "tolerance")  # what the built network does not depend on


def single_dimension(alpha: float, beta: float, gamma: float, kind: str) -> tuple[float, float, float]:
    """Coefficients that spend the MACs multiplier of (alpha, beta, gamma) on one dimension."""
    c = alpha * beta ** 2 * gamma ** 2
    return {"compound": (alpha, beta, gamma), "depth": (c, 1.0, 1.0), "width": (1.0, math.sqrt(c), 1.0),
            "resolution": (1.0, 1.0, math.sqrt(c))}[kind]


def sweep_points(best: Mapping[str, Any], phis: Sequence[float], compare: bool) -> list[tuple[str, float, dict]]:
    """``(kind, phi, params)`` of every point of the sweep, ``params`` being ``best`` with
    alpha, beta, gamma and phi replaced; compound first, in the order of ``phis``."""
    kinds = KINDS if compare else KINDS[:1]
    a, b, g = (float(best[k]) for k in COEFFICIENTS)
    points = []
    for kind in kinds:
        ka, kb, kg = single_dimension(a, b, g, kind)
        for phi in phis:
            points.append((kind, float(phi), {**best, "alpha": ka, "beta": kb, "gamma": kg, "phi": float(phi)}))
    return points


def network_key(arch: Arch | str) -> str:
    """Identifies the network an architecture builds: the scaled table plus every
    parameter other than the coefficients (so phi = 0 of every kind is one network)."""
    arch = Arch.from_text(arch) if isinstance(arch, str) else arch
    rest = Arch(arch.family, {k: v for k, v in arch.params.items() if k not in _NOT_MODEL})
    return f"{get_space(arch.family).describe(arch)} | {rest.text}"


def stage_rows(trials: pd.DataFrame, stage: int) -> pd.DataFrame:
    """The rows of one stage (all rows of an unstaged run for stage 1)."""
    if "stage" not in trials.columns:
        return trials if stage == 1 else trials.iloc[0:0]
    return trials[pd.to_numeric(trials["stage"], errors="coerce") == stage]


def best_of_stage_one(trials: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series | None:
    """The stage-1 trial whose (alpha, beta, gamma) stage 2 scales: the run's winner rule
    (on the Pareto front, best in the first objective) applied to stage 1's trials."""
    return best_trial(stage_rows(trials, 1), objectives)


def sweep_candidates(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials a point of the sweep may be read from: stage 2's, and stage 1's completed
    ones (a stage-1 trial found infeasible was so for its coefficients, not its network)."""
    return pd.concat([stage_rows(trials, 2), stage_rows(trials, 1).query("status == 'completed'")])


def _keys(trials: pd.DataFrame) -> pd.Series:
    return trials["arch"].map(lambda text: network_key(text) if isinstance(text, str) and text else "")


def scaling_table(trials: pd.DataFrame, objectives: Sequence[Objective], phis: Sequence[float],
                  compare: bool) -> pd.DataFrame:
    """One row per point of the sweep: the coefficients, the scaled network's depth
    (blocks), width (stem channels) and input side, and the trial that trained it
    (a completed one where there is one), or status ``missing`` when none has run yet."""
    best = best_of_stage_one(trials, objectives)
    if best is None:
        return pd.DataFrame()
    best_arch = Arch.from_text(best["arch"])
    trials = sweep_candidates(trials)
    keys = _keys(trials)
    rank = trials["status"].map({"completed": 0, "infeasible": 1, "pruned": 2, "failed": 3}).fillna(4)
    rows = []
    for kind, phi, params in sweep_points(dict(best_arch.params), phis, compare):
        arch = Arch(best_arch.family, params)
        net = net_config(arch.params)
        match = trials[keys == network_key(arch)]
        row = {"kind": kind, "phi": phi, "alpha": params["alpha"], "beta": params["beta"], "gamma": params["gamma"],
               "blocks": net.blocks, "stem": net.stem, "resolution": net.resolution}
        if match.empty:
            row.update(status="missing")
        else:
            hit = match.loc[rank[match.index].sort_values(kind="stable").index[0]]
            row.update({k: hit.get(k) for k in ("status", "params", "macs", "val_accuracy", "test_accuracy",
                                                 "trial_id", "stage") if k in hit})
        rows.append(row)
    return pd.DataFrame(rows)


def format_scaling(table: pd.DataFrame) -> str:
    """The sweep as a fixed-width table (``macs``: multiply-adds per image, fvcore)."""
    if table.empty:
        return "phi sweep: no completed stage-1 trial to scale"
    cols = [c for c in ("kind", "phi", "alpha", "beta", "gamma", "blocks", "stem", "resolution", "params", "macs",
                        "val_accuracy", "test_accuracy", "status", "trial_id", "stage") if c in table.columns]
    shown = table[cols].copy()
    for col in ("params", "macs", "stage"):  # counts, shown as such where points are still missing
        if col in shown:
            shown[col] = pd.to_numeric(shown[col], errors="coerce").map(lambda v: "-" if pd.isna(v) else str(int(v)))
    shown = shown.rename(columns={"macs": "macs(mult-adds)", "resolution": "res(px)"})
    return "phi sweep:\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


def plot_scaling(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Validation accuracy against MACs, one line per kind of scaling, each point labelled with its phi."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    styles = {"compound": ("tab:red", "-", "o"), "depth": ("tab:blue", "--", "s"),
              "width": ("tab:green", "--", "^"), "resolution": ("tab:purple", "--", "D")}
    done = table[table.get("status", pd.Series(dtype=str)) == "completed"] if not table.empty else table
    for kind in KINDS:
        part = done[done["kind"] == kind].sort_values("phi") if not done.empty else done
        if part.empty:
            continue
        colour, line, marker = styles[kind]
        label = "compound (alpha, beta, gamma)" if kind == "compound" else f"{kind} only"
        ax.plot(part["macs"].astype(float), part["val_accuracy"].astype(float), line, marker=marker, c=colour,
                lw=2.0 if kind == "compound" else 1.2, label=label)
        for _, row in part.iterrows():
            ax.annotate(f"phi={row['phi']:g}", (float(row["macs"]), float(row["val_accuracy"])),
                        textcoords="offset points", xytext=(4, -10 if kind != "compound" else 4), fontsize=7, color=colour)
    log_x_if_wide(ax, "macs", done["macs"] if not done.empty else pd.Series(dtype=float), ratio=4)
    ax.set_xlabel("macs (multiply-adds per image, fvcore)")
    ax.set_ylabel("val_accuracy")
    ax.set_title(title or "compound scaling: accuracy against MACs")
    ax.grid(alpha=0.3)
    if not done.empty:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no completed point of the phi sweep", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)


