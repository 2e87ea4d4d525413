"""Two-stage compound scaling in one run (``search.stages``, family ``efficientnet``).

Stage 1 searches (alpha, beta, gamma) at a fixed phi (``stages.coefficients``: the grid
sampler by default) like any search: Optuna proposes, Ray Tune trains. Stage 2 takes the
best stage-1 trial (the run's winner rule: on the Pareto front of the spec's objectives,
best in the first) and trains its coefficients at every phi of ``stages.phi_sweep.phi``,
plus single-dimension scaling when asked (:mod:`analysis.scaling`); these points are
fixed, so stage 2 hands them to Tune's ``BasicVariantGenerator`` as a list.

Both stages append to one ``trials.csv`` with a ``stage`` column (and ``started.jsonl``);
each has its own Tune experiment (``tune_stage1/``, ``tune_stage2/``). ``--resume`` works
as for :func:`~archscale.search.jobs.run.run_search`, across the stage boundary: a grid or a sweep
runs the points not yet recorded; a sampled stage 1 tells its sampler the recorded trials
and reruns the unfinished ones first.
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

from archscale.analysis.records import TRIALS_FILE, TrialsCSV, read_trials
from archscale.analysis.scaling import (best_of_stage_one, format_scaling, network_key, plot_scaling, scaling_table,
                                        stage_rows, sweep_candidates, sweep_points)
from archscale.search.jobs.check import grid_configs, sample_configs
from archscale.search.configs.context import TrialContext, native, resolve_arch, trial_context
from archscale.search.configs.evaluate import Evaluator, Verdict
from archscale.search.jobs.finish import finalize
from archscale.search.dispatch.launch import Launcher, spec_text, write_spec
from archscale.search.jobs.provenance import driver_provenance
from archscale.search.dispatch.recorder import Progress
from archscale.search.jobs.rundir import best_recorded, recorded_trials, repair_records, unfinished
from archscale.spec import Dimension, Spec, SpecError, parse_spec
from archscale.search.dispatch.session import start_ray_early
from archscale.space import get_space
from archscale.space.efficientnet import net_config
from archscale.trainer import dataset_context, load_dataset, resolve_device, split

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


# --------------------------------------------------------------------------- run


def run_staged(spec: Spec, run_dir: Path, resume: bool = False, quiet: bool = False, verbose: bool = False,
               out: TextIO | None = None) -> Path:
    """Run (or resume) both stages of ``spec`` in ``run_dir``; write the run directory's
    files, ``scaling.png`` included. Ctrl-C and ``search.time_budget_s`` stop it as they stop
    :func:`~archscale.search.jobs.run.run_search`: what finished is kept and ``--resume`` runs the
    rest (of stage 1, then stage 2). Raises KeyboardInterrupt after a Ctrl-C."""
    out = out or sys.stdout
    n1 = stage_one_total(spec)
    recorded = recorded_trials(run_dir) if resume else pd.DataFrame()
    if resume and len(stage_rows(recorded, 1)) >= n1 and not remaining_sweep(spec, recorded):
        print(f"{run_dir}: the run is complete (stage 1: {n1} trials, stage 2: {len(stage_rows(recorded, 2))}); "
              "nothing to resume", file=out)
        return run_dir
    start_ray_early(spec)  # Ray comes up while the data is read and stage 1 judged (begun already unless resumed)
    data = load_dataset(spec.data.dataset, spec.data.root, spec.data.image_size)
    evaluator = Evaluator(stage_context(spec, run_dir, data.context), device=spec.train.device)
    grid = ([evaluator(config, full=True) for config in stage_one_configs(spec)]
            if spec.search.stages.coefficients.sampler == "grid" else None)
    if not resume:
        candidates = grid if grid is not None else [evaluator(c, full=True) for c in stage_one_configs(spec, 32)]
        if not any(v.feasible for v in candidates):
            raise SpecError("space: no stage-1 configuration is feasible (see `archscale check`): widen "
                            "space.params.alpha/beta/gamma, space.params.tolerance or the budgets")
    staged = StagedRun(spec, run_dir, data, out, "quiet" if quiet else "verbose" if verbose else "normal", resume)
    if not resume:
        write_spec(run_dir, spec)  # once Ray has started and can give each trial what it asks
    else:  # every input read and checked: now the damaged lines of trials.csv may move aside
        repair_records(run_dir, out)
    if not staged.stage_one(grid, resume) and not staged.stage_two():
        finalize_staged(run_dir, spec, out=out)
    return run_dir


class StagedRun:
    """The two stages of one invocation on one :class:`~archscale.search.dispatch.launch.Launcher`
    (one clock and one Ctrl-C for both)."""

    def __init__(self, spec: Spec, run_dir: Path, data, out: TextIO, verbosity: str, resume: bool):
        self.spec, self.run_dir, self.out, self.verbosity = spec, run_dir, out, verbosity
        self.splits = split(data, spec.data.val_fraction, spec.data.subset, seed=spec.seed)
        ctx = stage_context(spec, run_dir, data.context, driver_provenance(spec_text(run_dir, spec, resume)), data.classes)
        self.launcher = Launcher(spec, run_dir, ctx, self.splits, Evaluator(ctx, device=spec.train.device), out=out)
        self.dims = stage_dims(spec)
        self.choices = [d.name for d in self.dims]
        self.objectives = spec.search.objective_pairs()
        self.trials_path = run_dir / TRIALS_FILE

    def fit(self, stage: int, total: int, already: int, how: str, **experiment) -> None:
        here = stage_rows(read_trials(self.run_dir), stage) if self.trials_path.is_file() else pd.DataFrame()
        progress = Progress(total, self.objectives, already=already, verbosity=self.verbosity, out=self.out,
                            epochs=self.spec.train.epochs, time_budget_s=self.spec.search.time_budget_s,
                            best=best_recorded(here, self.objectives[0]))
        progress.note(how)
        self.launcher.fit(choices=self.choices, progress=progress, name=STAGE_DIRS[stage], stage=stage, **experiment)

    def stopped(self) -> bool:
        """After a stage: True (and the run's files written) when Ctrl-C or the time budget ended it."""
        reason = self.launcher.stopper.reason
        if reason is None:
            return False
        print(f"archscale: stopped ({reason}) before both stages finished; "
              "`archscale run SPEC --resume` runs the rest", file=self.out, flush=True)
        if self.trials_path.is_file():
            finalize_staged(self.run_dir, self.spec, out=self.out)
        if reason == "interrupted":
            raise KeyboardInterrupt
        return True

    def stage_one(self, grid: list[Verdict] | None, resume: bool) -> bool:
        """(alpha, beta, gamma) at a fixed phi: the grid's feasible points as a list (its
        infeasible ones recorded here), or a sampled search. True when the run was stopped."""
        spec, n1 = self.spec, stage_one_total(self.spec)
        done1 = stage_rows(recorded_trials(self.run_dir), 1)
        if len(done1) >= n1:
            return False
        s1 = stage_one_spec(spec)
        s = self.splits
        what = (f"archscale: stage 1 of 2: {n1} trials of (alpha, beta, gamma) at phi = "
                f"{spec.search.stages.coefficients.phi:g}, sampler {s1.search.sampler}, up to "
                f"{spec.search.max_concurrent} at once, on {spec.data.dataset} ({len(s.y_train)} train / "
                f"{len(s.y_val)} val / {len(s.y_test)} test images) -> {self.run_dir}")
        if grid is not None:
            csv = TrialsCSV(self.trials_path, self.choices, staged=True)
            seen = set(done1["arch"]) if len(done1) else set()
            infeasible = [v for v in grid if not v.feasible]
            for v in infeasible:
                csv.append(infeasible_row(v))
            todo = [v.config for v in grid if v.feasible and v.arch.text not in seen]
            if todo:
                self.fit(1, n1, len(stage_rows(read_trials(self.run_dir), 1)),
                         f"{what}\n{len(infeasible)} of {len(grid)} grid points are infeasible: recorded, not "
                         f"trained; training {len(todo)}", **listed(todo))
        else:
            from archscale.search.sampling.searcher import make_searcher

            rerun = unfinished(self.run_dir, done1, stage=1) if resume else []
            note = (f" (resuming: {len(done1)} recorded trials told to the sampler, {len(rerun)} unfinished "
                    "to rerun)") if resume else ""
            searcher = make_searcher(s1, self.dims, self.objectives, recorded=done1, unfinished=rerun)
            self.fit(1, n1, len(done1), what + note, search_alg=searcher, num_samples=max(0, n1 - len(done1)))
        return self.stopped()

    def stage_two(self) -> bool:
        """The best coefficients of stage 1 at every phi of the sweep. True when the run was stopped."""
        trials = read_trials(self.run_dir)
        best = best_of_stage_one(trials, self.objectives)
        if best is None:
            print("stage 2 of 2: skipped, stage 1 completed no trial", file=self.out)
            return False
        todo = remaining_sweep(self.spec, trials)
        if not todo:
            return False
        coefficients = ", ".join(f"{k}={native(best[k]):g}" for k in ("alpha", "beta", "gamma"))
        done2 = len(stage_rows(trials, 2))
        self.fit(2, done2 + len(todo), done2,
                 f"\narchscale: stage 2 of 2: phi in {[float(p) for p in self.spec.search.stages.phi_sweep.phi]} "
                 f"with {coefficients} (trial {best['trial_id']}); {len(todo)} trials to run", **listed(todo))
        return self.stopped()


def listed(configs: list[dict]) -> dict:
    """The experiment that runs exactly ``configs``, in order (Tune's BasicVariantGenerator)."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    space = {k: tune.choice(sorted({c[k] for c in configs}, key=repr)) for k in configs[0]}
    return {"search_alg": BasicVariantGenerator(points_to_evaluate=configs), "num_samples": len(configs),
            "param_space": space}


def finalize_staged(run_dir: Path, spec: Spec, out: TextIO | None = None) -> pd.DataFrame:
    """The files of :func:`archscale.search.jobs.finish.finalize`, then the phi sweep's table and ``scaling.png``."""
    out = out or sys.stdout
    finalize(run_dir, spec, out=out, choices=[d.name for d in stage_dims(spec)])
    return write_scaling(run_dir, spec, out=out)


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
