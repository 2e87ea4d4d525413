"""Several runs side by side: their fronts on one plot, their hypervolumes in one table.

Hypervolumes are comparable only under one reference point and one ideal point: the reference
is what the runs' specs imply and agree on (:mod:`.reference`; runs of one spec always agree),
else the worst completed value over all the runs; the ideal point is the best over all the runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from archscale.analysis.hypervolume import Bounds, bounds, front_hypervolume, hypervolume_history, plot_hypervolume
from archscale.analysis.figures import pyplot, save_figure
from archscale.analysis.pareto import Objective, axis_label, log_x_if_wide, pareto_front
from archscale.analysis.records import read_trials
from archscale.analysis.reference import reference_point
from archscale.analysis.runspec import load_run_spec
from archscale.spec import Spec


@dataclass
class RunSummary:
    label: str
    run_dir: Path
    spec: Spec
    trials: pd.DataFrame
    front: pd.DataFrame
    hypervolume: float  # raw: product of the objectives' units
    hypervolume_normalised: float  # fraction of the ideal-reference box dominated
    history: pd.DataFrame


def _label(run_dir: Path, spec: Spec, taken: set[str]) -> str:
    sampler = spec.search.sampler
    label = f"{run_dir.name} ({sampler})"
    n = 2
    while label in taken:
        label, n = f"{run_dir.name} ({sampler}, {n})", n + 1
    return label


def common_reference(specs: Sequence[Spec], objectives: Sequence[Objective]) -> dict[str, tuple[float, str]]:
    """The reference-point values every spec implies alike (metric -> (value, where from)):
    all of them for runs of one spec (:func:`~archscale.analysis.reference.reference_point`)."""
    refs = [reference_point(s, objectives) for s in specs]
    if not refs:
        return {}
    return {m: v for m, v in refs[0].items() if all(m in r and r[m][0] == v[0] for r in refs[1:])}


def compare_runs(run_dirs: Sequence[str | Path], objectives: Sequence[Objective],
                 reference: Mapping[str, float] | None = None) -> tuple[list[RunSummary], Bounds]:
    """Fronts and hypervolumes of ``run_dirs`` under shared ``objectives`` ((metric, "max" |
    "min") pairs, e.g. the first run's ``spec.search.objective_pairs()``) and a shared
    reference point (``reference``, else what the specs agree on, else the worst completed
    value over all runs). Each run's ``spec.yaml`` is read as the typed spec
    (:func:`~archscale.analysis.runspec.load_run_spec`)."""
    dirs = [Path(d) for d in run_dirs]
    specs = [load_run_spec(d) for d in dirs]
    trials = [read_trials(d) for d in dirs]
    objectives = list(objectives)
    for d, t in zip(dirs, trials):
        missing = [m for m, _ in objectives if m not in t.columns]
        if missing:
            raise KeyError(f"{d}: trials.csv has no column {missing[0]!r}")
    ref = {**common_reference(specs, objectives), **{m: (v, "--reference") for m, v in (reference or {}).items()}}
    b = bounds(trials, objectives, ref)
    summaries, taken = [], set()
    for d, spec, t in zip(dirs, specs, trials):
        label = _label(d, spec, taken)
        taken.add(label)
        raw, norm = front_hypervolume(t, objectives, b)
        summaries.append(RunSummary(label, d, spec, t, pareto_front(t, objectives), raw, norm,
                                    hypervolume_history(t, objectives, b)))
    return summaries, b


def comparison_table(summaries: Sequence[RunSummary], objectives: Sequence[Objective]) -> pd.DataFrame:
    """One row per run: trials by status, front size, best of each objective, hypervolumes."""
    rows = []
    for s in summaries:
        status = s.trials["status"].value_counts()
        done = s.trials[s.trials["status"] == "completed"]
        row = {"run": s.label, "sampler": s.spec.search.sampler, "trials": len(s.trials),
               "completed": int(status.get("completed", 0)), "front": len(s.front)}
        for metric, mode in objectives:
            values = done[metric].dropna()
            row[f"best {metric}"] = (values.max() if mode == "max" else values.min()) if len(values) else float("nan")
        row["hypervolume"] = s.hypervolume
        row["hypervolume_normalised"] = s.hypervolume_normalised
        rows.append(row)
    return pd.DataFrame(rows)


def format_comparison(summaries: Sequence[RunSummary], objectives: Sequence[Objective], b: Bounds) -> str:
    table = comparison_table(summaries, objectives)
    datasets = {s.spec.data.dataset for s in summaries}
    families = {s.spec.space.family for s in summaries}
    note = ""
    if len(datasets) > 1 or len(families) > 1:
        note = (f"\nnote: the runs differ in dataset ({', '.join(sorted(datasets))}) or family "
                f"({', '.join(sorted(families))}): their hypervolumes measure different problems")
    body = table.to_string(index=False, float_format=lambda v: f"{v:.6g}")
    return (f"Runs compared under {', '.join(f'{m}:{d}' for m, d in objectives)}; {b.describe()}.\n"
            f"hypervolume: raw (product of the objectives' units); hypervolume_normalised: the fraction of "
            f"the ideal-reference box dominated\n{body}{note}")


def plot_fronts(summaries: Sequence[RunSummary], objectives: Sequence[Objective], path: str | Path,
                title: str = "") -> Path:
    """The runs' fronts on one plot (first objective against the second): each run's front as
    a step line with markers, its other completed trials as faint dots of the same colour."""
    plt = pyplot()
    if len(objectives) < 2:
        raise ValueError("a front plot needs at least two objectives")
    (ym, _), (xm, _) = objectives[0], objectives[1]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    markers = "osD^v<>p*h"
    for i, s in enumerate(summaries):
        colour = f"C{i}"
        done = s.trials[s.trials["status"] == "completed"]
        ax.scatter(done[xm], done[ym], s=14, color=colour, alpha=0.25)
        line = s.front.sort_values(xm)
        ax.plot(line[xm], line[ym], drawstyle="steps-post" if len(objectives) == 2 else "default", color=colour,
                marker=markers[i % len(markers)], ms=6, lw=1.4,
                label=f"{s.label}: front {len(s.front)}, HV {s.hypervolume_normalised:.4f}")
    log_x_if_wide(ax, xm, pd.concat([s.trials.loc[s.trials["status"] == "completed", xm] for s in summaries]))
    ax.set_xlabel(axis_label(xm))
    ax.set_ylabel(axis_label(ym))
    extra = f" (third objective {objectives[2][0]} not drawn)" if len(objectives) == 3 else ""
    ax.set_title((title or "Pareto fronts") + extra, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def write_comparison(summaries: Sequence[RunSummary], objectives: Sequence[Objective], b: Bounds,
                     out_dir: str | Path) -> dict[str, Path]:
    """Write ``compare_fronts.png``, ``compare_hypervolume.png`` and ``compare.csv`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "compare.csv", "hypervolume": out / "compare_hypervolume.png"}
    comparison_table(summaries, objectives).to_csv(files["table"], index=False)
    if len(objectives) >= 2:
        files["fronts"] = plot_fronts(summaries, objectives, out / "compare_fronts.png")
    plot_hypervolume({s.label: s.history for s in summaries}, files["hypervolume"],
                     title="Hypervolume over trials", note=b.describe())
    return files
