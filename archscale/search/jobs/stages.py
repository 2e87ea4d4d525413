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
and reruns the unfinished ones first. The plan (what each stage trains, the check, the
phi sweep's table) is :mod:`.compound`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import pandas as pd
from ray import tune
from ray.tune.search import BasicVariantGenerator

from archscale.analysis.records import TRIALS_FILE, TrialsCSV, proxy_columns, read_trials
from archscale.analysis.status import running
from archscale.analysis.scaling import best_of_stage_one, stage_rows
from archscale.search.configs.context import native
from archscale.search.configs.evaluate import Evaluator, Verdict
from archscale.search.dispatch.recorder import Verbosity
from archscale.search.dispatch.launch import sigterm_interrupts
from archscale.search.jobs.compound import (STAGE_DIRS, infeasible_row, remaining_sweep, stage_context, stage_dims,
                                            stage_one_configs, stage_one_spec, stage_one_total, study_dims,
                                            write_scaling)
from archscale.search.jobs.finish import finalize
from archscale.search.jobs.job import Job, read_data, verbosity
from archscale.search.jobs.rundir import best_recorded, recorded_trials, unfinished
from archscale.search.sampling.searcher import make_searcher
from archscale.spec import Spec, SpecError


# --------------------------------------------------------------------------- run


def run_staged(spec: Spec, run_dir: Path, resume: bool = False, quiet: bool = False, verbose: bool = False,
               out: TextIO | None = None) -> Path:
    """Run (or resume) both stages of ``spec`` in ``run_dir``; write the run directory's
    files, ``scaling.png`` included. Ctrl-C and ``search.time_budget_s`` stop it as they stop
    :func:`~archscale.search.jobs.run.run_search`: what finished is kept and ``--resume`` runs the
    rest (of stage 1, then stage 2). Raises KeyboardInterrupt after a Ctrl-C or SIGTERM."""
    out = out or sys.stdout
    n1 = stage_one_total(spec)
    recorded = recorded_trials(run_dir) if resume else pd.DataFrame()
    if resume and len(stage_rows(recorded, 1)) >= n1 and not remaining_sweep(spec, recorded):
        print(f"{run_dir}: the run is complete (stage 1: {n1} trials, stage 2: {len(stage_rows(recorded, 2))}); "
              "nothing to resume", file=out)
        return run_dir
    # RUN/process.json: `archscale status` tells a live run from a killed one; SIGTERM marks it interrupted
    with sigterm_interrupts(run_dir, out), running(run_dir, spec):
        data, splits = read_data(spec, progress=not quiet)
        evaluator = Evaluator(stage_context(spec, run_dir, data.context), device=spec.train.device)
        grid = ([evaluator(config, full=True) for config in stage_one_configs(spec)]
                if spec.search.stages.coefficients.sampler == "grid" else None)
        if not resume:
            candidates = grid if grid is not None else [evaluator(c, full=True) for c in stage_one_configs(spec, 32)]
            if not any(v.feasible for v in candidates):
                raise SpecError("space: no stage-1 configuration is feasible (see `archscale check`): widen "
                                "space.params.alpha/beta/gamma, space.params.tolerance or the budgets")
        staged = StagedRun(Job(spec, run_dir, data, splits, resume=resume, out=out, context=stage_context),
                           verbosity(quiet, verbose))
        staged.job.begin_records()
        with staged.job.watching(study_dims(spec)):  # RUN/study.db and the trackers as trials run
            stopped = staged.stage_one(grid, resume) or staged.stage_two()
        if not stopped:
            finalize_staged(run_dir, spec, out=out)
    return run_dir


class StagedRun:
    """The two stages of one invocation on one :class:`~archscale.search.dispatch.launch.Launcher`
    (one clock and one Ctrl-C for both)."""

    def __init__(self, job: Job, verbosity: Verbosity):
        self.job, self.verbosity = job, verbosity
        self.spec, self.run_dir, self.out, self.splits, self.launcher = job.spec, job.run_dir, job.out, job.splits, job.launcher
        self.dims = stage_dims(self.spec)
        self.choices = [d.name for d in self.dims]
        self.objectives = self.spec.search.objective_pairs()
        self.trials_path = self.run_dir / TRIALS_FILE

    def fit(self, stage: int, total: int, already: int, how: str, **experiment) -> None:
        here = stage_rows(read_trials(self.run_dir), stage) if self.trials_path.is_file() else pd.DataFrame()
        progress = self.job.progress(total, self.objectives, self.verbosity, already=already,
                                     best=best_recorded(here, self.objectives[0]))
        progress.note(how)
        self.launcher.fit(choices=self.choices, progress=progress, name=STAGE_DIRS[stage], stage=stage, **experiment)

    def stopped(self) -> bool:
        """After a stage: True (and the run's files written) when Ctrl-C or the time budget ended it."""
        if self.job.stopped is None:
            return False
        self.job.say_stopped("before both stages finished; `archscale run SPEC --resume` runs the rest")
        if self.trials_path.is_file():
            finalize_staged(self.run_dir, self.spec, out=self.out)
        self.job.raise_if_interrupted()
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
            csv = TrialsCSV(self.trials_path, self.choices, staged=True, extra=proxy_columns(self.spec.search.proxies))
            seen = set(done1["arch"]) if len(done1) else set()
            infeasible = [v for v in grid if not v.feasible]
            for v in infeasible:
                row = infeasible_row(v)
                if csv.append(row) and self.launcher.watchers is not None:
                    self.launcher.watchers.add(row)
            todo = [v.config for v in grid if v.feasible and v.arch.text not in seen]
            if todo:
                self.fit(1, n1, len(stage_rows(read_trials(self.run_dir), 1)),
                         f"{what}\n{len(infeasible)} of {len(grid)} grid points are infeasible: recorded, not "
                         f"trained; training {len(todo)}", **listed(todo))
        else:
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
    space = {k: tune.choice(sorted({c[k] for c in configs}, key=repr)) for k in configs[0]}
    return {"search_alg": BasicVariantGenerator(points_to_evaluate=configs), "num_samples": len(configs),
            "param_space": space}


def finalize_staged(run_dir: Path, spec: Spec, out: TextIO | None = None) -> pd.DataFrame:
    """The files of :func:`archscale.search.jobs.finish.finalize`, then the phi sweep's table and ``scaling.png``."""
    out = out or sys.stdout
    finalize(run_dir, spec, out=out)
    return write_scaling(run_dir, spec, out=out)


