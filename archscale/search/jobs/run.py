"""``archscale run`` of a one-stage spec: an Optuna-sampled search dispatched by Ray Tune.

The pieces are elsewhere, each once: what a configuration costs (:mod:`.evaluate`), what
Optuna is told (:mod:`.searcher`), the Tune run (:mod:`.launch`), what is recorded
(:mod:`.recorder`), early stopping (:mod:`.asha`), the run directory on ``--resume``
(:mod:`.rundir`), the results store (:mod:`.store`) and the files written at the end
(:mod:`.finish`).
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

import pandas as pd

from archscale.analysis.records import TRIALS_FILE, TrialsCSV, proxy_columns, read_trials
from archscale.search.dispatch.asha import make_scheduler, replay
from archscale.search.dispatch.launch import sigterm_interrupts
from archscale.search.jobs.check import require_feasible
from archscale.search.configs.context import REJECTED_SUFFIX, counted, trial_context
from archscale.search.configs.evaluate import Evaluator, Verdict
from archscale.search.jobs.finish import finalize
from archscale.search.jobs.profile import PROFILE, phase
from archscale.analysis.status import running
from archscale.search.dispatch.recorder import Progress, Verbosity, duration
from archscale.search.jobs.job import Job, read_data, verbosity
from archscale.search.jobs.rundir import best_recorded, planned_total, recorded_trials, unfinished
from archscale.search.sampling.prescreen import SEVERAL, ProxyScorer, Scored, Scorer, minibatch_source
from archscale.search.sampling.searcher import make_searcher
from archscale.search.track.writer import Watchers
from archscale.spec import Dimension, Spec
from archscale.spec.objectives import COSTS
from archscale.search.configs.runstore import RunStore


def planned_trials(spec: Spec, dims: list[Dimension], out: TextIO | None = None) -> int:
    """``num_trials``, or the size of the grid when that is smaller (said on ``out``)."""
    total = planned_total(spec)
    if total < spec.search.num_trials and out is not None:
        print(f"note: the grid has {total} points; running {total} trials, not {spec.search.num_trials}", file=out)
    return total


def run_search(spec: Spec, run_dir: Path, resume: bool = False, quiet: bool = False, out: TextIO | None = None,
               verbose: bool = False) -> Path:
    """Run (or resume) the search of ``spec`` in ``run_dir``; write the run directory's files.

    ``quiet``: no progress lines, only the final front; ``verbose``: a line per trial
    start, per epoch and per retry as well. Raises KeyboardInterrupt after a Ctrl-C or SIGTERM, once
    what finished is written.
    """
    PROFILE.add("imports and spec", max(0.0, time.time() - PROFILE.start) - sum(PROFILE.phases.values()))
    PROFILE.concurrency = spec.search.max_concurrent
    out = out or sys.stdout
    total = planned_trials(spec, spec.searched(), out)
    recorded = recorded_trials(run_dir) if resume else pd.DataFrame()
    if resume and counted(recorded) >= total:
        print(f"{run_dir}: the run is complete ({counted(recorded)} of {total} trials); nothing to resume", file=out)
        return run_dir
    # RUN/process.json: `archscale status` tells a live run from a killed one; SIGTERM marks it interrupted
    with sigterm_interrupts(run_dir, out), running(run_dir, spec):
        return _search(spec, run_dir, recorded, total, resume, verbosity(quiet, verbose), out)


def _search(spec: Spec, run_dir: Path, recorded: pd.DataFrame, total: int, resume: bool, loudness: Verbosity,
            out: TextIO) -> Path:
    """:func:`run_search` once it has trials to run (``recorded``: the rows a resumed run holds)."""
    data, splits = read_data(spec, progress=loudness != "quiet")
    if not resume:
        # as `archscale check` judges: a latency budget is measured here too (the trials measure it again on
        # their own device)
        with phase("feasibility"):
            require_feasible(spec, Evaluator(trial_context(spec, run_dir, data.context), device=spec.train.device,
                                             latency=spec.space.max_latency_ms is not None))
    job = Job(spec, run_dir, data, splits, resume=resume, out=out)
    job.begin_records()
    objectives = spec.search.objective_pairs()
    progress = job.progress(total, objectives, loudness, already=counted(recorded),
                            best=best_recorded(recorded, objectives[0]))
    with job.watching(spec.searched()):  # RUN/study.db and search.track's trackers as trials run
        search_alg, scheduler, rerun = _sampling(job, recorded, progress, total)
        asha = (f", ASHA (grace {spec.search.asha.grace_period}, reduction {spec.search.asha.reduction_factor:g}, "
                f"judged on {' and '.join(m for m, _ in objectives)})" if scheduler is not None else "")
        how = (f"resuming ({len(recorded)} trials told to the sampler, {len(rerun)} unfinished to rerun)"
               if resume else "starting")
        progress.note(f"archscale: {how}: {total} trials of family {spec.space.family!r} on {spec.data.dataset} "
                      f"({len(splits.y_train)} train / {len(splits.y_val)} val / {len(splits.y_test)} test images), "
                      f"sampler {spec.search.sampler}{asha}, up to {spec.search.max_concurrent} at once, each "
                      f"{job.launcher.worker_text}{job.launcher.resources.cpu:g} CPU and {job.launcher.gpu_text}, on "
                      f"{'Ray at ' + spec.search.address if spec.search.address else 'local Ray'} -> {run_dir}")
        with phase("search"):
            job.launcher.fit(choices=[d.name for d in spec.searched()], progress=progress,
                             num_samples=max(0, total - counted(recorded)), search_alg=search_alg, scheduler=scheduler)
    if getattr(search_alg, "served", 0):
        progress.note(f"archscale: {search_alg.served} trial(s) read from the results store {spec.search.store}, "
                      "not trained")
    if getattr(search_alg, "twins", 0):
        progress.note(f"archscale: the sampler proposed {search_alg.twins} configuration(s) already trained; told "
                      "their results again instead of training them")
    done = counted(read_trials(run_dir)) if (run_dir / TRIALS_FILE).is_file() else 0
    if job.stopped and done < total:
        job.say_stopped(f"with {done} of {total} trials finished; `archscale run SPEC --resume` runs the rest")
    if (run_dir / TRIALS_FILE).is_file():
        finalize(run_dir, spec, out=out)
    job.raise_if_interrupted()
    return run_dir


def _sampling(job: Job, recorded: pd.DataFrame, progress: Progress, total: int):
    """(the searcher, ASHA's scheduler, the unfinished configurations to rerun) of a one-stage run."""
    spec, run_dir, launcher = job.spec, job.run_dir, job.launcher
    scheduler = make_scheduler(spec)
    if scheduler is not None and not recorded.empty:
        replay(scheduler, run_dir, recorded)
    dims = spec.searched()
    rerun = unfinished(run_dir, recorded) if job.resume else []
    if not dims:
        return None, scheduler, rerun
    choices, objectives = [d.name for d in dims], spec.search.objective_pairs()
    # Over-budget configurations are measured on the driver and recorded before they cost
    # a trial (a grid tries every point once; over-budget points are trials). Not on a Ray
    # Client, whose searcher runs on the cluster, away from the run directory.
    skip = job.evaluator.restricts and spec.search.sampler != "grid" and not launcher.client
    # The results store is read here, on the driver, before a configuration is dispatched:
    # a stored one costs no Ray trial, actor or model build (not on a Ray Client either).
    extra = proxy_columns(spec.search.proxies)
    serve = (_server(run_dir, choices, progress, launcher.store, launcher.watchers, extra)
             if launcher.store is not None and not launcher.client else None)
    searcher = make_searcher(spec, dims, objectives, recorded=recorded, unfinished=rerun,
                             evaluator=job.evaluator if skip else None,
                             reject=_rejecter(run_dir, choices, progress, launcher.store, launcher.watchers, extra)
                             if skip else None,
                             serve=serve, trials=max(0, total - counted(recorded)) if serve else None,
                             scorer=_scorer(job, progress.note, launcher.stopper), note=progress.note)
    return searcher, scheduler, rerun


def _scorer(job: Job, note, stopper) -> ScoringProgress | None:
    """search.prescreen's scorer: the driver's evaluator and the trial's minibatch of the
    training split, saying how far it is and ending at a Ctrl-C or the time budget (None
    without a prescreen)."""
    pre = job.spec.search.prescreen
    if pre is None:
        return None
    data = minibatch_source(job.splits.x_train, job.splits.y_train, job.spec.search.proxy_batch, job.spec.seed)
    # not on a Ray Client, whose searcher scores on the cluster, away from the run directory
    record = None if job.launcher.client else PrescreenFile(
        job.run_dir / PRESCREEN_FILE, [d.name for d in job.spec.searched()], SEVERAL.get(pre.proxy, (pre.proxy,))).add
    return ScoringProgress(ProxyScorer(job.evaluator, pre.proxy, data), pre.pool, note, stopper, record=record)


PRESCREEN_PROGRESS_S = 10.0  # seconds between a prescreen's progress lines
PRESCREEN_HINT_S = 300.0  # a prescreen with more left than this says how to skip or shorten it, once
PRESCREEN_FILE = "prescreen.csv"  # RUN/prescreen.csv: each candidate a prescreen drew, as it was scored


class PrescreenFile:
    """``RUN/prescreen.csv``: a row per candidate the prescreen drew, appended as it is scored
    (a run stopped while it scores keeps what it scored): ``candidate`` (the draw's number),
    the searched values, ``scored`` (false: over a budget, refused by the family or not
    buildable), ``params``, ``macs``, ``proxy_NAME`` for each proxy the prescreen ranks by
    (the baselines are ``params`` and ``macs``), ``proxy_seconds`` (their time) and ``error``
    (why it was not scored, or why a proxy has no value). A resumed run scores its pool again
    and writes the file anew."""

    def __init__(self, path: Path, choices: Sequence[str], proxies: Sequence[str]):
        self.path, self.choices = Path(path), list(choices)
        self.proxies = [n for n in proxies if n not in COSTS]
        self.columns = ["candidate", *self.choices, "scored", "params", "macs",
                        *(f"proxy_{n}" for n in self.proxies), "proxy_seconds", "error"]
        self.count = 0

    def add(self, config: dict, result: Scored | None, why: str = "") -> None:
        row: dict = {"candidate": self.count + 1, **{k: config.get(k) for k in self.choices}, "scored": result is not None,
                     "error": why or None}
        if result is not None:
            row.update({k: result.costs.get(k) for k in ("params", "macs")})
            values = dict(result.values) if result.values else {n: result.value for n in self.proxies}  # several, or one
            row.update({f"proxy_{n}": v for n, v in values.items() if n in self.proxies and math.isfinite(v)})
            row["proxy_seconds"] = round(result.seconds, 6)
        with open(self.path, "w" if self.count == 0 else "a", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if self.count == 0:
                writer.writeheader()
            writer.writerow(row)
        self.count += 1


class ScoringProgress:
    """A prescreen's scorer that says, every :data:`PRESCREEN_PROGRESS_S` seconds while it
    scores its pool, how many candidates it has scored and how long the rest will take: the
    driver builds and scores them one at a time, which takes minutes where the networks or
    images are large, before the first trial starts. Once ``stopper`` (the search's
    :class:`~archscale.search.dispatch.recorder.SearchStopper`) says stop (Ctrl-C, the time
    budget), it scores nothing more, so that the prescreen ends with what it has. ``record``:
    called with each candidate, its score (None: not scored) and why it has none or lacks a
    proxy's value (a scorer with a ``judge`` method, as :class:`ProxyScorer`, says), as
    :class:`PrescreenFile` is."""

    def __init__(self, scorer: Scorer, pool: int, note, stopper=None, record=None):
        self.scorer, self.pool, self.note, self.stopper, self.record = scorer, pool, note, stopper, record
        self.drawn = self.scored = 0
        self.start = self.last = None
        self.hinted = self.stopped = False

    def __call__(self, config: dict) -> Scored | None:
        if self.stopped or (self.stopper is not None and self.stopper.stop_all()):
            if not self.stopped:
                self.stopped = True
                self.note(f"prescreen: stopped ({self.stopper.reason}) after {self.scored} of {self.pool} "
                          "candidates; a resumed run scores its pool again")
            return None
        now = time.perf_counter()
        if self.start is None:
            self.start = self.last = now
        judge = getattr(self.scorer, "judge", None)
        result, why = judge(config) if judge is not None else (self.scorer(config), "")
        if self.record is not None:
            self.record(config, result, why)
        self.drawn += 1
        self.scored += result is not None
        now = time.perf_counter()
        if now - self.last >= PRESCREEN_PROGRESS_S and 0 < self.scored < self.pool:
            self.last = now
            elapsed = now - self.start
            left = elapsed / self.scored * (self.pool - self.scored)
            hint = ""
            if left > PRESCREEN_HINT_S and not self.hinted:
                self.hinted = True
                hint = ("; search.prescreen: null skips it, a smaller search.prescreen.pool or search.proxy_batch "
                        "shortens it")
            self.note(f"prescreen: {self.scored} of {self.pool} candidates scored ({self.drawn} drawn), "
                      f"{duration(elapsed)} elapsed, ~{duration(left)} left{hint}")
        return result


def _rejecter(run_dir: Path, choices: list[str], progress: Progress, store: RunStore | None = None,
              watchers: Watchers | None = None, extra=()):
    """What the searcher calls for a configuration refused before dispatch: its
    ``infeasible`` row in trials.csv (and in the results store and study.db) and a progress line."""
    csv = TrialsCSV(run_dir / TRIALS_FILE, choices, extra=extra)

    def reject(row_id: str, config: dict, verdict: Verdict) -> None:
        row = {"trial_id": f"{row_id}{REJECTED_SUFFIX}", "status": "infeasible", **{k: config.get(k) for k in choices},
               **verdict.metrics(), "epochs": 0, "error": verdict.why, "source": "trained"}
        if csv.append(row):
            if store is not None:
                store.record(row, {k: config.get(k) for k in choices}, run_dir)
            if watchers is not None:
                watchers.add(row)
        progress.note(f"[skipped] infeasible configuration, not trained: {verdict.why}")

    return reject


def _server(run_dir: Path, choices: list[str], progress: Progress, store: RunStore, watchers: Watchers | None = None,
            extra=()):
    """What the searcher calls for each configuration before it is dispatched: when the
    results store holds it, its row (``source`` = ``store``) in trials.csv and study.db, its
    files in ``trials/<id>/`` and a progress line; returns the result the trial would have reported
    (None: not stored, train it)."""
    csv = TrialsCSV(run_dir / TRIALS_FILE, choices, extra=extra)

    def serve(row_id: str, config: dict) -> dict | None:
        stored = store.lookup(config)
        if stored is None:
            return None
        row, reported = store.serve(stored, {k: config.get(k) for k in choices}, row_id, run_dir)
        if csv.append(row):
            progress.finished(row)
            if watchers is not None:
                watchers.add(row)
        return reported

    return serve
