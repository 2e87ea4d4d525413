"""The adapter from a validated spec to a Ray Tune run with an Optuna sampler.

The only module (with :mod:`search.trial`) that touches ray and optuna; both are
imported inside the functions that need them, so ``archscale check`` stays fast.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import yaml

from analysis.cost import measure
from analysis.export import export_trial, trial_dir
from analysis.pareto import best_trial, pareto_front, plot_pareto
from analysis.records import TRIALS_FILE, TrialsCSV, read_trials
from search.spec import Dimension, Spec, SpecError
from search.trial import ERROR_FILE, TrialContext, budget_violation, resolve_arch, run_trial
from space import SpaceError, build
from trainer import dataset_context, load_dataset, split

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
        old = yaml.safe_load(spec_file.read_text())
        new = spec.model_dump(mode="json")
        if old != new:
            key = _first_difference(old, new)
            raise SpecError(f"--resume: the spec differs from the run's spec.yaml at {key}; "
                            f"resume with the same spec, or use --out DIR for a new run")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SpecError(f"{run_dir} already holds a run; use --resume to continue it, or --out DIR for a new run")
    return run_dir


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


def feasibility(spec: Spec, samples: int = 64) -> Feasibility:
    """Build sampled configurations (no training) and count those within the budgets."""
    context = dataset_context(spec.data.dataset, spec.data.root)
    ctx = _trial_context(spec, Path("."), context)
    dims = spec.space.searched()
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
        cost = measure(build(arch), shape, spec.train.batch_size)
        why = budget_violation(ctx, cost.params, cost.macs, cost.activation_mb, arch)
        rows.append({**config, "params": cost.params, "macs": cost.macs, "feasible": why is None, "why": why or ""})
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
        train=spec.train.model_dump(),
        max_params=spec.space.max_params,
        max_macs=spec.space.max_macs,
        max_memory_mb=spec.space.max_memory_mb,
        cpus=spec.search.resources_per_trial.cpu,
        seed=spec.seed,
    )


# --------------------------------------------------------------------------- optuna


def optuna_space(dims: list[Dimension]) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = {}
    for d in dims:
        if d.kind == "choice":
            space[d.name] = CategoricalDistribution(list(d.values))
        elif d.kind == "int":
            space[d.name] = IntDistribution(int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        else:
            space[d.name] = FloatDistribution(float(d.low), float(d.high), step=d.step, log=d.log)
    return space


def make_sampler(spec: Spec, dims: list[Dimension]):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n, seed = spec.search.num_trials, spec.seed
    if spec.search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, n // 3)), multivariate=True)
    if spec.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, min(50, n // 3)))
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler({d.name: d.grid() for d in dims}, seed=seed)


def _searcher(spec: Spec, dims: list[Dimension], objectives: list[tuple[str, str]], recorded: pd.DataFrame):
    """OptunaSearch over ``dims``; ``recorded`` trials (completed or infeasible) are told to
    the study as already evaluated, so a resumed search does not sample from scratch."""
    if not dims:
        return None
    from ray.tune.search.optuna import OptunaSearch

    metrics, modes = [m for m, _ in objectives], [d for _, d in objectives]
    points, rewards = [], []
    if not recorded.empty:
        usable = recorded[recorded["status"].isin(["completed", "infeasible"])]
        for _, row in usable.iterrows():
            values = [0.0 if (m == "val_accuracy" and row["status"] == "infeasible") else float(row[m]) for m in metrics]
            if any(math.isnan(v) for v in values):
                continue
            points.append({d.name: _native(row[d.name]) for d in dims})
            rewards.append(values if len(values) > 1 else values[0])
    return OptunaSearch(
        space=optuna_space(dims),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        sampler=make_sampler(spec, dims),
        seed=spec.seed,
        points_to_evaluate=points or None,
        evaluated_rewards=rewards or None,
    )


def _native(value: Any) -> Any:
    """numpy scalars from a DataFrame back to Python ones (Optuna compares choices by value)."""
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------- progress and records


def _fmt_metric(name: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{name}=-"
    if name in ("params", "macs"):
        return f"{name}={_human(value)}"
    if isinstance(value, float):
        return f"{name}={value:.4f}"
    return f"{name}={value}"


def _human(n: float) -> str:
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _error_line(trial) -> str:
    try:
        err = trial.get_error()
    except Exception:  # Ray's error files may be missing after a crash
        err = None
    text = str(err) if err is not None else "trial failed"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "trial failed"


def make_recorder(run_dir: Path, ctx: TrialContext, choices: list[str], objectives: list[tuple[str, str]],
                  total: int, quiet: bool, stage: int | None = None):
    """A Ray Tune callback (driver side) that appends to trials.csv and prints progress;
    with ``stage``, every row gets a ``stage`` column (staged runs, :mod:`search.stages`)."""
    from ray.tune import Callback

    class TrialRecorder(Callback):
        def setup(self, **info):
            self.csv = TrialsCSV(run_dir / TRIALS_FILE, choices, staged=stage is not None)
            self.done = len(self.csv.trial_ids())
            self.start = time.monotonic()
            self.started_with = self.done
            self.best: float | None = None

        def _row(self, trial, status: str, error: str = "") -> dict:
            result = dict(trial.last_result or {})
            config = {k: trial.config.get(k) for k in choices}
            if "arch" not in result:
                try:
                    result["arch"] = resolve_arch(ctx, config).text
                except SpaceError as err:
                    error = error or str(err)
            row = {"trial_id": trial.trial_id, "status": status, **config, **result, "error": error or result.get("error", "")}
            if stage is not None:
                row["stage"] = stage
            if status == "infeasible":
                row["val_accuracy"] = row["test_accuracy"] = None
                row["train_seconds"] = None
            return row

        def _record(self, row: dict) -> None:
            if not self.csv.append(row):
                return
            self.done += 1
            metric, mode = objectives[0]
            value = row.get(metric)
            if row["status"] == "completed" and value is not None:
                if self.best is None or (value > self.best if mode == "max" else value < self.best):
                    self.best = value
            if quiet:
                return
            elapsed = time.monotonic() - self.start
            new = self.done - self.started_with
            eta = elapsed / new * max(0, total - self.done) if new else 0.0
            shown = [m for m, _ in objectives] + [k for k in ("params", "macs", "test_accuracy") if k not in dict(objectives)]
            metrics = " ".join(_fmt_metric(k, row.get(k)) for k in shown)
            extra = f" ({row['error']})" if row["status"] in ("failed", "infeasible") and row.get("error") else ""
            best = f" | best {metric}={self.best:.4f}" if isinstance(self.best, float) else ""
            print(f"[{self.done}/{total}] trial {str(row['trial_id'])} {row['status']}: {metrics}{extra}{best} "
                  f"| {_duration(elapsed)} elapsed, ~{_duration(eta)} left", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            status = (trial.last_result or {}).get("status", "failed")
            self._record(self._row(trial, "pruned" if status == "running" else status))

        def on_trial_error(self, iteration, trials, trial, **info):
            written = trial_dir(run_dir, trial.trial_id) / ERROR_FILE
            message = written.read_text().strip() if written.is_file() else _error_line(trial)
            self._record(self._row(trial, "failed", message))

    return TrialRecorder()


# --------------------------------------------------------------------------- the run


def _init_ray() -> None:
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # save Tune's state often: resume loses little
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)


def run_search(spec: Spec, run_dir: Path, resume: bool = False, quiet: bool = False, out: TextIO | None = None) -> Path:
    """Run (or resume) the search of ``spec`` in ``run_dir``; write the run directory's files."""
    out = out or sys.stdout
    dims = spec.space.searched()
    total = spec.search.num_trials
    if spec.search.sampler == "grid":
        grid_size = int(math.prod(d.size for d in dims)) if dims else 1
        if total > grid_size:
            print(f"note: the grid has {grid_size} points; running {grid_size} trials, not {total}", file=out)
            total = grid_size
    if resume and (run_dir / TRIALS_FILE).is_file():
        done = len(read_trials(run_dir))
        if done >= total:
            print(f"{run_dir}: the run is complete ({done} of {total} trials); nothing to resume", file=out)
            return run_dir
    data = load_dataset(spec.data.dataset, spec.data.root)
    splits = split(data, spec.data.val_fraction, spec.data.subset, seed=spec.seed)
    if not resume:
        check = feasibility(spec, samples=32)
        if check.feasible == 0:
            small = check.smallest
            raise SpecError(f"space: no sampled configuration meets the budgets (max_params={spec.space.max_params}, "
                            f"max_macs={spec.space.max_macs}); the smallest of {check.sampled} has "
                            f"params={small.get('params')}, macs={small.get('macs')}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "spec.yaml").write_text(spec.to_yaml())

    _init_ray()
    from ray import tune

    ctx = _trial_context(spec, run_dir, data.context)
    objectives = spec.search.objective_pairs()
    recorder = make_recorder(run_dir, ctx, [d.name for d in dims], objectives, total, quiet)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, ctx=ctx, splits=splits),
        {"cpu": spec.search.resources_per_trial.cpu, "gpu": spec.search.resources_per_trial.gpu},
    )
    storage = str(run_dir.resolve())
    tune_path = run_dir.resolve() / TUNE_DIR
    if resume and tune.Tuner.can_restore(str(tune_path)):
        # Tune's own restore: finished trials stay finished, unfinished ones rerun, and the
        # searcher (with the Optuna study inside it) comes back from its checkpoint.
        tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
        how = "resuming from Tune's checkpoint"
    else:
        # A fresh Tuner; on a resume whose Tune state was never checkpointed (killed in the
        # first seconds), the trials already in trials.csv seed the sampler's history.
        recorded = read_trials(run_dir) if (run_dir / TRIALS_FILE).is_file() else pd.DataFrame()
        how = f"resuming from trials.csv ({len(recorded)} trials told to the sampler)" if resume else "starting"
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=_searcher(spec, dims, objectives, recorded),
                                        num_samples=max(0, total - len(recorded)),
                                        max_concurrent_trials=spec.search.max_concurrent),
            run_config=tune.RunConfig(name=TUNE_DIR, storage_path=storage, verbose=0, callbacks=[recorder],
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
    if not quiet:
        print(f"archscale: {how}: {total} trials of family {spec.space.family!r} on {spec.data.dataset} "
              f"({len(splits.y_train)} train / {len(splits.y_val)} val / {len(splits.y_test)} test images), "
              f"sampler {spec.search.sampler}, up to {spec.search.max_concurrent} at once -> {run_dir}", file=out, flush=True)
    tuner.fit()
    finalize(run_dir, spec, out=out)
    return run_dir


def finalize(run_dir: Path, spec: Spec, out: TextIO | None = None) -> pd.DataFrame:
    """Write pareto.csv, pareto.png and best/; print the front."""
    out = out or sys.stdout
    trials = read_trials(run_dir)
    objectives = spec.search.objective_pairs()
    front = pareto_front(trials, objectives)
    front.to_csv(run_dir / "pareto.csv", index=False)
    plot_pareto(trials, objectives, run_dir / "pareto.png", title=f"{spec.name}: Pareto front")
    best = best_trial(trials, objectives)
    if best is not None:
        export_trial(run_dir, best["trial_id"], run_dir / "best", extra={"spec": spec.name, "objectives": spec.search.objectives})
    print(format_front(trials, front, objectives, [d.name for d in spec.space.searched()]), file=out)
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
    table = table.rename(columns={"macs": "macs(mult-adds)"})
    return (f"trials: {summary}\nPareto front under {', '.join(f'{m}:{d}' for m, d in objectives)} "
            f"({len(front)} trials):\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
