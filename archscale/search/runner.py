"""The adapter from a validated spec to a Ray Tune run with an Optuna sampler.

The only module (with :mod:`search.trial`) that touches ray and optuna; both are
imported inside the functions that need them, so ``archscale check`` stays fast.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import yaml

from archscale.analysis.cost import measure
from archscale.analysis.export import export_trial
from archscale.analysis.hypervolume import summarise
from archscale.analysis.pareto import best_trial, pareto_front, plot_pareto
from archscale.analysis.records import TRIALS_FILE, drop_partial_row, read_trials
from archscale.search.recorder import STARTED_FILE, Progress, Relay, RunFiles, drain, make_recorder, make_stopper
from archscale.search.resources import TrialResources
from archscale.search.spec import Dimension, Spec, SpecError
from archscale.search.trial import (TrialContext, batch_memory, budget_violation, counted, describe_error, has_constraint,
                          measure_latency, resolve_arch, run_trial)
from archscale.space import SpaceError, build
from archscale.trainer import dataset_context, load_dataset, split

TUNE_DIR = "tune"


class RunError(RuntimeError):
    """A failure while running (exit status 1)."""


# --------------------------------------------------------------------------- run directory


def default_run_dir(spec: Spec) -> Path:
    return Path("runs") / spec.name


def prepare_run_dir(spec: Spec, out: str | Path | None, resume: bool) -> Path:
    """Check the run directory against ``--resume`` before anything is written."""
    run_dir = Path(out) if out else default_run_dir(spec)
    spec_file = run_dir / "spec.yaml"
    if resume:
        if not spec_file.is_file():
            raise SpecError(f"--resume: {run_dir} holds no run (no spec.yaml); start one without --resume")
        old = _without_execution(yaml.safe_load(spec_file.read_text()))
        new = _without_execution(spec.model_dump(mode="json"))
        if old != new:
            key = _first_difference(old, new)
            raise SpecError(f"--resume: the spec differs from the run's spec.yaml at {key}; "
                            f"resume with the same spec, or use --out DIR for a new run")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SpecError(f"{run_dir} already holds a run; use --resume to continue it, or --out DIR for a new run")
    return run_dir


# How a search runs, not what it searches: these may change on --resume (a new time budget,
# another cluster, more trials at once).
EXECUTION_FIELDS = ("time_budget_s", "address", "max_concurrent", "resources_per_trial", "max_failures")


def _without_execution(raw: Any) -> Any:
    if not isinstance(raw, dict) or not isinstance(raw.get("search"), dict):
        return raw
    return {**raw, "search": {k: v for k, v in raw["search"].items() if k not in EXECUTION_FIELDS}}


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
    return f"{prefix or 'spec'} ({a!r} in the run, {b!r} now)"


# --------------------------------------------------------------------------- feasibility


@dataclass
class Feasibility:
    size: float  # number of distinct configurations (inf with continuous ranges)
    sampled: int
    feasible: int
    smallest: dict  # params/macs of the cheapest sampled configuration
    rows: list[dict]


def sample_configs(dims: list[Dimension], n: int, seed: int) -> list[dict]:
    """The low corner of the space, then ``n - 1`` uniform random configurations."""
    rng = np.random.default_rng(seed)

    def low(d: Dimension):
        return d.values[0] if d.kind == "choice" else d.low

    def draw(d: Dimension):
        if d.kind == "choice":
            return d.values[rng.integers(len(d.values))]
        if d.kind == "int" or d.step:
            grid = d.grid()
            return grid[rng.integers(len(grid))]
        if d.log:
            return float(np.exp(rng.uniform(np.log(d.low), np.log(d.high))))
        return float(rng.uniform(d.low, d.high))

    configs = [{d.name: low(d) for d in dims}]
    configs += [{d.name: draw(d) for d in dims} for _ in range(max(0, n - 1))]
    return configs


def feasibility(spec: Spec, samples: int = 64, until_feasible: bool = False) -> Feasibility:
    """Build sampled configurations (no training) and count those within the budgets;
    ``until_feasible``: stop at the first one that fits (all a run needs to know)."""
    context = dataset_context(spec.data.dataset, spec.data.root)
    ctx = _trial_context(spec, Path("."), context)
    dims = spec.searched()
    size = math.prod(d.size for d in dims) if dims else 1
    n = int(min(samples, size)) if size != math.inf else samples
    configs = _grid_configs(dims) if size <= samples else sample_configs(dims, n, spec.seed)
    shape = (1, context["in_channels"], context["image_size"], context["image_size"])
    rows = []
    for config in configs:
        try:
            arch = resolve_arch(ctx, config)
        except SpaceError as err:
            rows.append({**config, "params": None, "macs": None, "feasible": False, "why": str(err)})
            continue
        try:
            model = build(arch)
            cost = measure(model, shape, spec.train.batch_size)
            memory, source = (batch_memory(ctx, model, shape, ctx.train, spec.train.device, cost.activation_mb)
                              if spec.space.max_memory_mb else (cost.activation_mb, "cpu_estimate"))
            latency = (measure_latency(model, shape, ctx, with_batch=False)["latency_ms"]
                       if spec.space.max_latency_ms else None)
        except (RuntimeError, ValueError) as err:  # e.g. memory the host refuses: the trial will fail too
            rows.append({**config, "params": None, "macs": None, "feasible": False, "why": describe_error(err)})
            continue
        why = budget_violation(ctx, cost.params, cost.macs, latency, memory_mb=memory, memory_source=source, arch=arch)
        rows.append({**config, "params": cost.params, "macs": cost.macs, "latency_ms": latency,
                     "feasible": why is None, "why": why or ""})
        if until_feasible and why is None:
            break
    measured = [r for r in rows if r["params"] is not None]
    smallest = min(measured, key=lambda r: (r["params"], r["macs"])) if measured else {}
    return Feasibility(size, len(rows), sum(r["feasible"] for r in rows), smallest, rows)


def _grid_configs(dims: list[Dimension]) -> list[dict]:
    configs: list[dict] = [{}]
    for d in dims:
        configs = [{**c, d.name: v} for c in configs for v in d.grid()]
    return configs


def _trial_context(spec: Spec, run_dir: Path, data_context: dict) -> TrialContext:
    return TrialContext(
        run_dir=str(run_dir.resolve()),
        family=spec.space.family,
        fixed=spec.space.fixed(),
        data_context=data_context,
        data_info={"dataset": spec.data.dataset, "root": spec.data.root, "val_fraction": spec.data.val_fraction,
                   "subset": spec.data.subset, "seed": spec.seed},
        train=spec.train.values(),
        max_params=spec.space.max_params,
        max_macs=spec.space.max_macs,
        max_latency_ms=spec.space.max_latency_ms,
        max_memory_mb=spec.space.max_memory_mb,
        cpus=spec.search.resources_per_trial.cpu,
        seed=spec.seed,
    )


# --------------------------------------------------------------------------- optuna, ASHA, resources


def optuna_space(dims: list[Dimension]) -> dict:
    """Optuna distributions of the searched dimensions (see :mod:`search.searcher`)."""
    from archscale.search.searcher import optuna_space as space

    return space(dims)


def make_sampler(spec: Spec, dims: list[Dimension], told: int = 0):
    """The spec's Optuna sampler (see :func:`search.searcher.make_sampler`)."""
    from archscale.search.searcher import make_sampler as sampler

    return sampler(spec, dims, told)


def _searcher(spec: Spec, dims: list[Dimension], objectives: list[tuple[str, str]], recorded: pd.DataFrame,
              unfinished: list[dict]):
    """An :class:`~search.searcher.ArchscaleSearch` over ``dims``, told the ``recorded``
    trials of an interrupted run, with its ``unfinished`` configurations enqueued first."""
    if not dims:
        return None
    from archscale.search.searcher import ArchscaleSearch

    metrics, modes = [m for m, _ in objectives], [d for _, d in objectives]
    searcher = ArchscaleSearch(
        space=optuna_space(dims),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        sampler=make_sampler(spec, dims, told=len(recorded)),
        seed=spec.seed,
    )
    if not recorded.empty or unfinished:
        searcher.tell_history(recorded, unfinished, dims)
    return searcher


def _scheduler(spec: Spec):
    """Ray Tune's ASHA on validation accuracy per epoch, or None (every trial runs its epochs)."""
    if spec.search.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epochs", metric="val_accuracy", mode="max", max_t=spec.train.epochs,
                         grace_period=spec.search.asha.grace_period,
                         reduction_factor=spec.search.asha.reduction_factor, brackets=1)


def seed_rungs(scheduler, run_dir: Path, recorded: pd.DataFrame) -> int:
    """Give a resumed ASHA the validation accuracies the recorded trials had at its rungs
    (completed trials: their per-epoch history in ``trials/<id>/result.json``; pruned ones:
    the accuracy they were stopped with), so its cutoffs are those of the interrupted run.
    Returns how many values were given. Uses ASHA's bracket internals (Ray 2.x)."""
    per_trial: dict[str, dict[int, float]] = {}
    for row in recorded.itertuples():
        if row.status == "completed":
            path = run_dir / "trials" / str(row.trial_id) / "result.json"
            if path.is_file():
                history = json.loads(path.read_text()).get("history", [])
                per_trial[str(row.trial_id)] = {int(h["epoch"]): float(h["val_accuracy"]) for h in history}
        elif row.status == "pruned" and not pd.isna(row.val_accuracy):
            per_trial[str(row.trial_id)] = {int(row.epochs): float(row.val_accuracy)}
    given = 0
    for bracket in scheduler._brackets:
        for milestone, rung in bracket._rungs:
            epoch = math.ceil(milestone)  # ASHA records a trial at the first epoch >= the milestone
            for trial_id, values in per_trial.items():
                if epoch in values:
                    rung[trial_id] = scheduler._metric_op * values[epoch]
                    given += 1
    return given


def _resources(spec: Spec, ctx: TrialContext, splits) -> TrialResources:
    """What each trial asks Ray for; ``gpu: auto`` means no GPU where the cluster has none."""
    import ray

    r = spec.search.resources_per_trial
    if r.gpu != "auto":
        return TrialResources(ctx, r.cpu, r.gpu, batch_size=spec.train.batch_size)
    if ray.cluster_resources().get("GPU", 0) == 0 or spec.train.device == "cpu":
        return TrialResources(ctx, r.cpu, 0.0, batch_size=spec.train.batch_size)
    from archscale.search.resources import gpu_measurer
    from archscale.trainer.memory import dataset_mb

    images = len(splits.y_train) + len(splits.y_val) + len(splits.y_test)
    total_mb, measure_fn = gpu_measurer(ctx)
    return TrialResources(ctx, r.cpu, "auto", batch_size=spec.train.batch_size,
                          data_mb=dataset_mb(images, tuple(splits.x_train.shape[1:])),
                          gpu_total_mb=total_mb, measure=measure_fn)


# --------------------------------------------------------------------------- resume


def _unfinished(run_dir: Path, recorded: pd.DataFrame, stage: int | None = None) -> list[dict]:
    """Configurations of trials that started (``started.jsonl``) but were never recorded
    (with ``stage``: those of that stage of a two-stage run)."""
    path = run_dir / STARTED_FILE
    if not path.is_file():
        return []
    done = set(recorded["trial_id"].astype(str)) if not recorded.empty else set()
    pending: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if str(item["trial_id"]) not in done and (stage is None or item.get("stage") == stage):
            pending[str(item["trial_id"])] = item["config"]
    # once each: a configuration rerun by an earlier --resume and cut short again is there twice
    unique = {json.dumps(config, sort_keys=True, default=str): config for config in pending.values()}
    return list(unique.values())


def _best_recorded(recorded: pd.DataFrame, objective: tuple[str, str]) -> float | None:
    metric, mode = objective
    if recorded.empty or metric not in recorded:
        return None
    values = recorded.loc[recorded["status"] == "completed", metric].dropna()
    if values.empty:
        return None
    return float(values.max() if mode == "max" else values.min())


# --------------------------------------------------------------------------- the run


def _init_ray(address: str | None = None) -> None:
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # failed trials report no accuracy
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours (_ctrl_c) stops the search and keeps what finished
    if ray.is_initialized():
        return
    # search.address null starts Ray here, even where `ray start` left a cluster running that a
    # bare ray.init() would join (and share with whatever else runs there); RAY_ADDRESS, when
    # set, is taken as the user's choice.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        return
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            return
        except ConnectionError as err:
            # A Ray Client's server starts a process per client; on a busy head that start can
            # fail ("Initialization failure from server") where the next one succeeds.
            if not address.startswith("ray://") or attempt == CLIENT_ATTEMPTS:
                raise
            print(f"archscale: connecting to {address} failed ({' '.join(str(err).split())[:200]}); "
                  f"trying again ({attempt + 1} of {CLIENT_ATTEMPTS})", file=sys.stderr, flush=True)
            ray.shutdown()  # whatever the failed connection left behind
            time.sleep(5 * attempt)


CLIENT_ATTEMPTS = 3  # connections to a Ray Client server (ray://) before giving up


@contextmanager
def _ctrl_c(stopper, out: TextIO):
    """First Ctrl-C: stop the search cleanly (finished trials kept, the rest rerun by
    ``--resume``). A second one: stop at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stopper.reason == "interrupted":
            raise KeyboardInterrupt
        stopper.interrupt()
        print("archscale: stopping after Ctrl-C; finished trials are kept (Ctrl-C again to stop at once)",
              file=out, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def planned_trials(spec: Spec, dims: list[Dimension], out: TextIO | None = None) -> int:
    """``num_trials``, or the size of the grid when that is smaller."""
    total = spec.search.num_trials
    if spec.search.sampler == "grid":
        grid_size = int(math.prod(d.size for d in dims)) if dims else 1
        if total > grid_size:
            if out is not None:
                print(f"note: the grid has {grid_size} points; running {grid_size} trials, not {total}", file=out)
            total = grid_size
    return total


def run_search(spec: Spec, run_dir: Path, resume: bool = False, quiet: bool = False, out: TextIO | None = None,
               verbose: bool = False) -> Path:
    """Run (or resume) the search of ``spec`` in ``run_dir``; write the run directory's files.

    ``quiet``: no progress lines, only the final front; ``verbose``: a line per trial
    start, per epoch and per retry as well. Raises KeyboardInterrupt after a Ctrl-C, once
    what finished is written.
    """
    out = out or sys.stdout
    verbosity = "quiet" if quiet else "verbose" if verbose else "normal"
    dims = spec.searched()
    total = planned_trials(spec, dims, out)
    recorded = pd.DataFrame()
    if resume and (run_dir / TRIALS_FILE).is_file():
        drop_partial_row(run_dir / TRIALS_FILE)
        recorded = read_trials(run_dir)
        if counted(recorded) >= total:
            print(f"{run_dir}: the run is complete ({counted(recorded)} of {total} trials); nothing to resume", file=out)
            return run_dir
    data = load_dataset(spec.data.dataset, spec.data.root)
    splits = split(data, spec.data.val_fraction, spec.data.subset, seed=spec.seed)
    if not resume:
        check = feasibility(spec, samples=32, until_feasible=True)
        if check.feasible == 0:
            small = check.smallest
            raise SpecError(f"space: no sampled configuration meets the budgets (max_params={spec.space.max_params}, "
                            f"max_macs={spec.space.max_macs}); the smallest of {check.sampled} has "
                            f"params={small.get('params')}, macs={small.get('macs')}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ".spec.yaml.tmp").write_text(spec.to_yaml())
        (run_dir / ".spec.yaml.tmp").replace(run_dir / "spec.yaml")  # whole, even if killed while writing

    _init_ray(spec.search.address)
    from ray import tune

    ctx = _trial_context(spec, run_dir, data.context)
    objectives = spec.search.objective_pairs()
    unfinished = _unfinished(run_dir, recorded) if resume else []
    progress = Progress(total, objectives, already=counted(recorded), verbosity=verbosity, out=out,
                        epochs=spec.train.epochs, time_budget_s=spec.search.time_budget_s,
                        best=_best_recorded(recorded, objectives[0]))
    scheduler = _scheduler(spec)
    if scheduler is not None and not recorded.empty:
        seed_rungs(scheduler, run_dir, recorded)
    choices = [d.name for d in dims]
    files = RunFiles(run_dir, choices, progress)
    client = (spec.search.address or "").startswith("ray://")
    if client:
        # Ray Client runs Tune's loop on the cluster: its recorder relays to this process,
        # which writes the run directory; Ctrl-C travels the other way.
        from ray.util.queue import Queue

        queue, flag = Queue(actor_options={"num_cpus": 0}), Queue(actor_options={"num_cpus": 0})
        sink, stopper = Relay(queue), make_stopper(spec.search.time_budget_s, flag)
        relayed = threading.Event()
        drainer = threading.Thread(target=drain, args=(queue, files, relayed), daemon=True)
        drainer.start()
    else:
        sink, stopper = files, make_stopper(spec.search.time_budget_s)
    resources = _resources(spec, ctx, splits)
    recorder = make_recorder(sink, ctx, choices, stopper, resources)
    search_alg = _searcher(spec, dims, objectives, recorded, unfinished)
    budgets = (spec.space.max_params is not None or spec.space.max_macs is not None
               or spec.space.max_memory_mb is not None or has_constraint(spec.space.family))
    if search_alg is not None and budgets and spec.search.sampler != "grid" and not client:
        # Over-budget configurations are measured on the driver and skipped before they
        # cost a trial (a grid tries every point once; over-budget points are trials).
        from archscale.search.feasible import FeasibleSearch

        search_alg = FeasibleSearch(search_alg, ctx, run_dir / TRIALS_FILE, choices, objectives, quiet)
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx, splits=splits), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search_alg,
                                    scheduler=scheduler,
                                    num_samples=max(0, total - counted(recorded)),
                                    max_concurrent_trials=spec.search.max_concurrent,
                                    reuse_actors=resources.gpu != "auto"),
        # Tune's own state: in the run directory; on a Ray Client, in Ray's default place on the cluster
        run_config=tune.RunConfig(name=f"archscale-{spec.name}-{uuid.uuid4().hex[:8]}" if client else TUNE_DIR,
                                  storage_path=None if client else str(run_dir.resolve()), verbose=0,
                                  callbacks=[recorder], stop=stopper,
                                  failure_config=tune.FailureConfig(max_failures=spec.search.max_failures)),
    )
    how = (f"resuming ({len(recorded)} trials told to the sampler, {len(unfinished)} unfinished to rerun)"
           if resume else "starting")
    gpu = resources.gpu
    gpu_text = "a GPU share sized from its memory" if gpu == "auto" else f"{gpu:g} GPU" if gpu else "no GPU"
    asha = (f", ASHA (grace {spec.search.asha.grace_period}, reduction {spec.search.asha.reduction_factor:g})"
            if spec.search.scheduler == "asha" else "")
    progress.note(f"archscale: {how}: {total} trials of family {spec.space.family!r} on {spec.data.dataset} "
                  f"({len(splits.y_train)} train / {len(splits.y_val)} val / {len(splits.y_test)} test images), "
                  f"sampler {spec.search.sampler}{asha}, up to {spec.search.max_concurrent} at once, each "
                  f"{resources.cpu:g} CPU and {gpu_text}, on "
                  f"{'Ray at ' + spec.search.address if spec.search.address else 'local Ray'} -> {run_dir}")
    try:
        with _ctrl_c(stopper, out):
            tuner.fit()
    finally:
        if client:
            relayed.set()
            drainer.join()
    if client:
        stopper.stop_all()  # the time budget was counted on the cluster: name it here too
    twins = getattr(getattr(search_alg, "searcher", search_alg), "twins", 0)
    if twins:
        progress.note(f"archscale: the sampler proposed {twins} configuration(s) already trained; told their "
                      "results again instead of training them")
    done = counted(read_trials(run_dir)) if (run_dir / TRIALS_FILE).is_file() else 0
    if stopper.reason and done < total:
        print(f"archscale: stopped ({stopper.reason}) with {done} of {total} trials finished; "
              f"`archscale run SPEC --resume` runs the rest", file=out, flush=True)
    if (run_dir / TRIALS_FILE).is_file():
        finalize(run_dir, spec, out=out)
    if stopper.reason == "interrupted":
        raise KeyboardInterrupt
    return run_dir


def finalize(run_dir: Path, spec: Spec, out: TextIO | None = None) -> pd.DataFrame:
    """Write pareto.csv, pareto.png and best/; print the front."""
    out = out or sys.stdout
    trials = read_trials(run_dir)
    objectives = spec.search.objective_pairs()
    front = pareto_front(trials, objectives)
    front.to_csv(run_dir / "pareto.csv", index=False)
    plot_pareto(trials, objectives, run_dir / "pareto.png", title=f"{spec.name}: Pareto front")
    hv_line = summarise(trials, objectives, spec.search.reference_point, run_dir / "hypervolume.png", spec.name)
    best = best_trial(trials, objectives)
    if best is not None:
        export_trial(run_dir, best["trial_id"], run_dir / "best", extra={"spec": spec.name, "objectives": spec.search.objectives},
                     strict=False)
    print(format_front(trials, front, objectives, [d.name for d in spec.searched()]), file=out)
    if hv_line:
        print(hv_line, file=out)
    if best is not None:
        print(f"\nwinner: trial {best['trial_id']} -> {run_dir / 'best'}\n  {best['arch']}", file=out)
    else:
        print("\nno trial completed: nothing to export", file=out)
    return front


def format_front(trials: pd.DataFrame, front: pd.DataFrame, objectives, choices: list[str]) -> str:
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
