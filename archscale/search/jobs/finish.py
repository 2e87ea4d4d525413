"""What a search leaves once its trials are done: ``pareto.csv``, ``pareto.png``,
``hypervolume.png``, the winner in ``best/``, and the front printed. (``study.db`` is
written as trials finish: :mod:`archscale.search.sampling.studydb`.)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import pandas as pd

from archscale.analysis.export import export_trial
from archscale.analysis.hypervolume import summarise
from archscale.analysis.pareto import best_trial, pareto_front, plot_pareto
from archscale.analysis.proxyrank import describe, proxy_ranking, recorded
from archscale.analysis.reference import reference_point
from archscale.analysis.records import read_trials
from archscale.search.jobs.profile import phase
from archscale.spec import Spec


def finalize(run_dir: Path, spec: Spec, out: TextIO | None = None) -> pd.DataFrame:
    """Write pareto.csv, pareto.png, hypervolume.png and best/; print the front."""
    out = out or sys.stdout
    with phase("finish: front"):
        trials = read_trials(run_dir)
        objectives = spec.search.objective_pairs()
        front = pareto_front(trials, objectives)
        front.to_csv(run_dir / "pareto.csv", index=False)
        best = best_trial(trials, objectives)
    with phase("finish: plots"):
        plot_pareto(trials, objectives, run_dir / "pareto.png", title=f"{spec.name}: Pareto front")
        hv_line = summarise(trials, objectives, reference_point(spec, objectives), run_dir / "hypervolume.png",
                            spec.name)
    if best is not None:
        with phase("finish: export"):
            export_trial(run_dir, best["trial_id"], run_dir / "best",
                         extra={"spec": spec.name, "objectives": spec.search.objectives}, strict=False)
    print(format_front(trials, front, objectives, [d.name for d in spec.searched()]), file=out)
    if hv_line:
        print(hv_line, file=out)
    if recorded(trials):  # search.proxies: which ranks this space as training does
        print(f"proxies: {describe(proxy_ranking(trials), prescreened=spec.search.prescreen is not None)} "
              "(archscale report: the table)", file=out)
    if best is not None:
        print(f"\nwinner: trial {best['trial_id']} -> {run_dir / 'best'}\n  {best['arch']}", file=out)
    else:
        print("\nno trial completed: nothing to export", file=out)
    return front


def format_front(trials: pd.DataFrame, front: pd.DataFrame, objectives, choices: list[str]) -> str:
    """The trials' counts by status and the front as a table."""
    counts = trials["status"].value_counts().to_dict()
    summary = ", ".join(f"{counts[s]} {s}" for s in ("completed", "pruned", "infeasible", "failed") if s in counts)
    if front.empty:
        return f"trials: {summary}\nPareto front: empty (no completed trial)"
    cols = ["trial_id", *dict.fromkeys([m for m, _ in objectives] + ["params", "macs", "val_accuracy", "test_accuracy"]),
            *[c for c in choices if c in front.columns]]
    table = front[cols].copy()
    for col in ("params", "macs"):  # counts, even where a failed trial left the column with gaps
        if col in table and table[col].notna().all():
            table[col] = table[col].astype("int64")
    table = table.rename(columns={"macs": "macs(mult-adds)"})
    return (f"trials: {summary}\nPareto front under {', '.join(f'{m}:{d}' for m, d in objectives)} "
            f"({len(front)} trials):\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
