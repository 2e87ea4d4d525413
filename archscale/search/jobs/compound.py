"""The plan of a two-stage compound-scaling run (``search.stages``, family ``efficientnet``):
what each stage trains, what is left of a sweep, ``archscale check`` of both stages, and the
phi sweep's table and plot. Imports neither ray nor optuna (``check`` and ``pareto`` use it);
:mod:`.stages` runs the plan.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from archscale.analysis.records import read_trials
from archscale.analysis.scaling import (best_of_stage_one, format_scaling, network_key, plot_scaling, scaling_table,
                                        sweep_candidates, sweep_points)
from archscale.search.jobs.check import grid_configs, sample_configs
from archscale.search.configs.context import TrialContext, native, resolve_arch, trial_context
from archscale.search.configs.evaluate import Evaluator, Verdict
from archscale.spec import Dimension, Spec, SpecError, parse_spec
from archscale.space import get_space
from archscale.space.efficientnet import net_config
from archscale.trainer import dataset_context, resolve_device

STAGE_DIRS = {1: "tune_stage1", 2: "tune_stage2"}
SCALING_PLOT = "scaling.png"
SCALING_PARAMS = ("alpha", "beta", "gamma", "phi")  # always in a staged trial's config (and trials.csv)


# --------------------------------------------------------------------------- the stages as plain searches


def stage_one_total(spec: Spec) -> int:
    """Trials of stage 1: every grid point (or ``num_trials`` of them), else ``num_trials``."""
    stage = spec.search.stages.coefficients
    if stage.sampler == "grid":
        dims = spec.space.searched()
        size = int(math.prod(d.size for d in dims)) if dims else 1
        return min(stage.num_trials or size, size)
    return stage.num_trials or spec.search.num_trials


def stage_one_spec(spec: Spec) -> Spec:
    """Stage 1 as a single-stage spec: phi fixed, the stage's sampler and trial count."""
    raw = spec.model_dump(mode="json")
    stage = raw["search"]["stages"]["coefficients"]
    raw["search"].update(sampler=stage["sampler"], num_trials=stage_one_total(spec), stages=None)
    raw["space"]["params"]["phi"] = stage["phi"]
    return parse_spec(raw)



def stage_dims(spec: Spec) -> list[Dimension]:
    """What a staged trial's config holds: the searched parameters, alpha, beta and gamma
    even where fixed (stage 2 changes them), and phi (one value in stage 1)."""
    dims = spec.space.searched()
    names = {d.name for d in dims}
    family, fixed = get_space(spec.space.family), spec.space.fixed()
    for name in SCALING_PARAMS[:3]:
        if name not in names:
            dims.append(Dimension(name, "choice", (float(fixed.get(name, family.param(name).default)),)))
    return [*dims, Dimension("phi", "choice", (float(spec.search.stages.coefficients.phi),))]


def study_dims(spec: Spec) -> list[Dimension]:
    """:func:`stage_dims` with every value a trial of either stage may hold (phi: stage 1's and
    the sweep's; stage 2 takes alpha, beta and gamma from stage 1): the study's distributions."""
    stages = spec.search.stages
    phis = tuple(sorted({float(stages.coefficients.phi), *(float(p) for p in stages.phi_sweep.phi)}))
    return [d if d.name != "phi" else Dimension("phi", "choice", phis) for d in stage_dims(spec)]


def stage_context(spec: Spec, run_dir: Path, data_context: dict, provenance: dict | None = None,
                  classes: tuple[str, ...] | None = None) -> TrialContext:
    """The trials' context: stage 1's, with alpha, beta, gamma and phi left to each config."""
    ctx = trial_context(stage_one_spec(spec), run_dir, data_context, provenance, classes)
    return replace(ctx, fixed={k: v for k, v in ctx.fixed.items() if k not in SCALING_PARAMS})


def remaining_sweep(spec: Spec, trials: pd.DataFrame) -> list[dict]:
    """The configs of stage 2 still to run, in sweep order, one per distinct network: not
    recorded in stage 2, and not a network stage 1 completed. Empty when stage 1 completed
    no trial."""
    best = best_of_stage_one(trials, spec.search.objective_pairs())
    if best is None:
        return []
    done = set(sweep_candidates(trials)["arch"].map(lambda t: network_key(t) if isinstance(t, str) and t else ""))
    ctx = stage_context(spec, Path("."), dataset_context(spec.data.dataset, spec.data.root, spec.data.image_size))
    sweep = spec.search.stages.phi_sweep
    winner = {d.name: native(best[d.name]) for d in stage_dims(spec)}
    todo = []
    for _, _, params in sweep_points(winner, sweep.phi, sweep.compare_single_dimension):
        key = network_key(resolve_arch(ctx, params))
        if key not in done:
            done.add(key)
            todo.append(params)
    return todo


# --------------------------------------------------------------------------- stage 1 without training


def infeasible_row(verdict: Verdict) -> dict:
    """The trials.csv row of a stage-1 grid point that may not train (its id is stable across resumes)."""
    text = verdict.arch.text if verdict.arch is not None else repr(sorted(verdict.config.items()))
    return {"trial_id": "g" + hashlib.sha1(text.encode()).hexdigest()[:7], "stage": 1, "status": "infeasible",
            **verdict.config, **verdict.metrics(), "epochs": 0, "error": verdict.why}


def stage_one_configs(spec: Spec, samples: int | None = None) -> list[dict]:
    """Stage 1's configurations when its sampler is the grid: every grid point, or a seeded
    random ``num_trials`` of them. With another sampler: ``samples`` random ones (for check)."""
    dims = stage_dims(spec)
    if spec.search.stages.coefficients.sampler != "grid":
        return sample_configs(dims, samples or 64, spec.seed)
    grid = grid_configs(dims)
    n = stage_one_total(spec)
    if n < len(grid):
        keep = sorted(np.random.default_rng(spec.seed).choice(len(grid), size=n, replace=False))
        grid = [grid[i] for i in keep]
    return grid


# --------------------------------------------------------------------------- check


def stage_one_rows(spec: Spec, samples: int = 64) -> tuple[list[dict], str]:
    """Stage 1's configurations (the grid, or ``samples`` of a sampled space) as table rows:
    measured params, MACs and batch memory, and whether they are feasible. Also returns how
    the memory was obtained (``cuda_peak`` or ``cpu_estimate``)."""
    evaluator = Evaluator(stage_context(spec, Path("."), dataset_context(spec.data.dataset, spec.data.root, spec.data.image_size)),
                          device=spec.train.device)
    rows, source = [], ""
    for e in (evaluator(config, full=True) for config in stage_one_configs(spec, samples)):
        row = {k: v for k, v in e.config.items() if k != "phi"}
        if e.arch is None:
            rows.append({**row, "feasible": False, "why": e.why})
            continue
        a, b, g = (float(e.arch[k]) for k in ("alpha", "beta", "gamma"))
        source = e.memory_source
        rows.append({**row, "a*b^2*g^2": a * b * b * g * g, "res(px)": net_config(e.arch.params).resolution,
                     "params": e.params, "macs": e.macs, "memory_mb": e.memory_mb, "feasible": e.feasible, "why": e.why})
    return rows, source


def check_staged(spec: Spec, samples: int = 64, out: TextIO | None = None) -> int:
    """``archscale check`` of a staged spec: stage 1's grid with what is feasible and its
    MACs, and what stage 2 will run. Builds and measures; trains nothing."""
    out = out or sys.stdout
    start = time.perf_counter()
    stages = spec.search.stages
    fixed = spec.space.fixed()
    context = dataset_context(spec.data.dataset, spec.data.root, spec.data.image_size)
    print(f"spec {spec.name!r}: valid", file=out)
    print(f"family efficientnet, base {fixed.get('base', get_space('efficientnet').param('base').default)}; dataset "
          f"{spec.data.dataset} ({context['in_channels']}x{context['image_size']}x{context['image_size']}); "
          f"objectives {', '.join(spec.search.objectives)}", file=out)
    for d in spec.space.dimensions():
        desc = f"fixed {d.values[0]!r}" if d.kind == "fixed" else (
            "choice of " + ", ".join(map(repr, d.values)) if d.kind == "choice" else f"{d.kind} range [{d.low}, {d.high}]")
        print(f"  {d.name}: {desc}", file=out)
    rows, source = stage_one_rows(spec, samples)
    family = get_space("efficientnet")
    target = float(fixed.get("target", family.param("target").default))
    tolerance = float(fixed.get("tolerance", family.param("tolerance").default))
    budgets = ", ".join(f"{k}={v:,}" for k, v in (("max_params", spec.space.max_params), ("max_macs", spec.space.max_macs),
                                                   ("max_memory_mb", spec.space.max_memory_mb)) if v) or "no budgets"
    n1 = stage_one_total(spec)
    print(f"\nstage 1: {stages.coefficients.sampler} sampler over {', '.join(d.name for d in spec.space.searched())} "
          f"at phi = {stages.coefficients.phi:g}; {n1} trials", file=out)
    print(f"  constraint: alpha*beta^2*gamma^2 within {target:g} +- {tolerance:.0%}; budgets: {budgets}", file=out)
    device = resolve_device(spec.train.device)
    how = ("measured: torch.cuda.max_memory_allocated over one training step" if source == "cuda_peak" else
           f"estimated from activation sizes, fp32 (no CUDA device {'here' if device.type == 'cpu' else 'in use'})")
    print(f"  memory_mb of one batch of {spec.train.batch_size}: {how}", file=out)
    table = pd.DataFrame(rows)
    shown = table.assign(feasible=table["feasible"].map({True: "yes", False: "no"}))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}",
                          formatters={"params": "{:,}".format, "macs": "{:,}".format}), file=out)
    feasible = int(table["feasible"].sum())
    if stages.coefficients.sampler == "grid":
        print(f"  {feasible} of {len(table)} grid points are feasible (trained); the rest are recorded infeasible, "
              "never trained", file=out)
    else:
        print(f"  {feasible} of {len(table)} sampled configurations are feasible (the sampler proposes {n1})", file=out)
    sweep = stages.phi_sweep
    per_phi = 4 if sweep.compare_single_dimension else 1
    extra = " and depth-only, width-only, resolution-only scaling to the same MACs multiplier" if per_phi > 1 else ""
    print(f"\nstage 2: phi in {[float(p) for p in sweep.phi]} with the best (alpha, beta, gamma) of stage 1{extra}: "
          f"up to {len(sweep.phi) * per_phi} trials (a network already trained is not trained again)", file=out)
    print(f"\nchecked in {time.perf_counter() - start:.1f}s (built and measured, nothing trained)", file=out)
    if feasible == 0:
        raise SpecError("space: no stage-1 configuration is feasible: widen space.params.alpha/beta/gamma, "
                        "space.params.tolerance or the budgets")
    return 0


def write_scaling(run_dir: Path, spec: Spec, out: TextIO | None = None, path: Path | None = None) -> pd.DataFrame:
    """Print the phi sweep of a staged run and draw its ``scaling.png``."""
    out = out or sys.stdout
    trials = read_trials(run_dir)
    sweep = spec.search.stages.phi_sweep
    objectives = spec.search.objective_pairs()
    best = best_of_stage_one(trials, objectives)
    if best is not None:
        print(f"\nstage 1 best (alpha, beta, gamma) under {', '.join(spec.search.objectives)}: "
              + ", ".join(f"{k}={native(best[k]):g}" for k in ("alpha", "beta", "gamma"))
              + f" (trial {best['trial_id']}, val_accuracy {float(best['val_accuracy']):.4f})", file=out)
    table = scaling_table(trials, objectives, sweep.phi, sweep.compare_single_dimension)
    print(format_scaling(table), file=out)
    plot = path or run_dir / SCALING_PLOT
    plot_scaling(table, plot, title=f"{spec.name}: compound scaling (phi sweep)")
    print(f"scaling plot: {plot}", file=out)
    return table
