"""archscale from Python: run a search, open a run directory, look at its trials and front,
export a model and load it back. The ``archscale`` command calls these same functions.

    >>> import archscale
    >>> run = archscale.run("examples/quickstart.yaml", **{"search.num_trials": 4})
    >>> run.front()            # the Pareto front, a pandas DataFrame
    >>> run.export("winner")   # arch.yaml, weights.pt, metrics.json, model.py

Heavy libraries (torch, ray, optuna) are imported inside the functions that need them.
Bad input (a spec, an override, a path, an objective) raises
:class:`archscale.spec.SpecError` with one line naming what is wrong; a file that is
not what it should be (a damaged ``spec.yaml`` of a run, ``arch.yaml``, ``weights.pt``, ...)
raises :class:`archscale.files.FileError`, one line naming the file, the problem and
what was expected. Damaged lines of a run's ``trials.csv`` are left out with a warning.
"""

from __future__ import annotations

import copy
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TextIO, Union

from archscale.spec import SpecError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from archscale.spec import Spec
    from archscale.space import SearchSpace

__all__ = ["Check", "CheckError", "Run", "ablate", "build", "check", "load_exported", "load_run", "repeat", "run", "spaces"]

SpecLike = Union[str, "os.PathLike[str]", Mapping[str, Any], "Spec"]
ObjectivesLike = Union[str, Sequence[str], Sequence[Sequence[str]], None]



# --------------------------------------------------------------------------- specs and overrides


def _override_key(key: str) -> str:
    """``search__num_trials`` -> ``search.num_trials`` (a keyword argument cannot hold a dot)."""
    return key.replace("__", ".")


def apply_overrides(raw: dict, overrides: Mapping[str, Any]) -> dict:
    """Set each ``key.path`` of ``overrides`` to its (Python) value in the raw spec dict ``raw``,
    in order; a key may also be written ``key__path``. Raises SpecError for a key that names no
    field of the spec."""
    from archscale.spec import apply_override

    for key, value in overrides.items():
        path = _override_key(str(key))
        try:
            apply_override(raw, f"{path}=null")  # checks the key path against the spec's fields
        except SpecError as err:
            raise SpecError(str(err).replace("--set ", "override ", 1)) from None
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[last] = copy.deepcopy(value)
    return raw


def resolve_spec(spec: SpecLike, overrides: Mapping[str, Any] | None = None) -> Spec:
    """A validated :class:`~archscale.spec.Spec` from a YAML path, a dict or a Spec,
    with ``overrides`` (``{"search.num_trials": 4}``) applied."""
    from archscale.spec import Spec, parse_spec, read_yaml
    from archscale.spec.load import DEFAULT_PATHS
    from archscale.spec.paths import anchor_defaults, anchor_paths, anchor_spec_file, overridden_paths

    overrides = overrides or {}
    if isinstance(spec, Spec):
        if not overrides:
            return spec
        raw = spec.to_dict()
    elif isinstance(spec, (str, os.PathLike)):
        raw = anchor_spec_file(read_yaml(spec), spec)  # relative paths: against the spec file's folder
    elif isinstance(spec, Mapping):
        raw = anchor_paths(copy.deepcopy(dict(spec)), Path.cwd())  # a dict: against the current folder
    else:
        raise SpecError(f"spec: a {type(spec).__name__} is not allowed; give a path to a YAML file, a dict "
                        "or an archscale.spec.Spec")
    raw = apply_overrides(raw, overrides)
    anchor_paths(raw, Path.cwd(), overridden_paths(_override_key(str(k)) for k in overrides))  # the current folder
    return parse_spec(anchor_defaults(raw, DEFAULT_PATHS))


# --------------------------------------------------------------------------- run


def run(spec: SpecLike, out: str | os.PathLike | None = None, resume: bool = False, *, quiet: bool = False,
        verbose: bool = False, **overrides: Any) -> Run:
    """Run (or with ``resume``, continue) the search of ``spec`` and return its :class:`Run`.

    ``spec``: a path to a YAML spec, a dict of the same keys, or a
    :class:`~archscale.spec.Spec`. ``out``: the run directory (default
    ``runs/<spec name>``); it must be empty unless ``resume``. ``overrides`` set spec fields,
    as ``--set`` does: ``run("s.yaml", **{"search.num_trials": 4})`` or
    ``run("s.yaml", search__num_trials=4)``. ``quiet``: nothing is printed (the front, the
    notes and the decoding bar included: the returned Run and the run directory hold it all);
    ``verbose``: a line per trial start, epoch and retry too.

    Raises SpecError for invalid input (nothing is written), KeyboardInterrupt after a
    Ctrl-C (what finished is kept: ``resume=True`` runs the rest).
    """
    return run_with_output(spec, out, resume, quiet=quiet, verbose=verbose,
                           stream=io.StringIO() if quiet else None, overrides=overrides)


def run_with_output(spec: SpecLike, out: str | os.PathLike | None, resume: bool, *, quiet: bool, verbose: bool,
                    stream: TextIO | None, overrides: Mapping[str, Any]) -> Run:
    """:func:`run`, its printed lines written to ``stream`` (default stdout). ``archscale run
    --quiet`` gives stdout: its quiet prints the final front still."""
    if quiet and verbose:
        raise SpecError("quiet and verbose: give one of them, not both")
    resolved = resolve_spec(spec, overrides)
    from archscale.search.jobs.rundir import default_run_dir, prepare_run_dir

    require_paths(resolved, {"--out": (out if out is not None else default_run_dir(resolved), "folder")})
    _before_ray(resolved)
    run_dir = prepare_run_dir(resolved, out, resume)
    if resolved.search.stages is not None:
        from archscale.search.jobs.stages import run_staged

        run_staged(resolved, run_dir, resume=resume, quiet=quiet, verbose=verbose, out=stream)
    else:
        from archscale.search.jobs.run import run_search

        run_search(resolved, run_dir, resume=resume, quiet=quiet, verbose=verbose, out=stream)
    return Run(run_dir, resolved)


def require_paths(spec: Spec, outputs: Mapping[str, tuple[Any, str]] | None = None) -> None:
    """Every path of ``spec`` and of ``outputs`` (input name -> (path, "folder" | "file") that a
    command will write) checked before anything is written: the dataset's file or folder
    exists, ``data.root`` is a folder (or can be created), ``search.store`` is a file that can
    be written or created, each output can be written. Raises SpecError naming the input and
    the absolute path."""
    from archscale.files import FileError, require_existing, require_writable
    from archscale.trainer.config import TORCHVISION

    dataset, root = spec.data.dataset, spec.data.root
    try:
        if dataset.startswith("npz:"):
            require_existing(dataset[len("npz:"):], "data.dataset npz:", "file")
        elif dataset.startswith("imagefolder:"):
            require_existing(dataset[len("imagefolder:"):], "data.dataset imagefolder:", "folder")
        if dataset.startswith("imagefolder:") or dataset in TORCHVISION:  # the decoded cache, the download
            require_writable(root, "data.root", "folder", existing_may_be_read_only=True)
        if spec.search.store:
            require_writable(spec.search.store, "search.store", "file")
        for what, (path, kind) in (outputs or {}).items():
            require_writable(path, what, kind)
    except FileError as err:
        raise SpecError(str(err)) from None


def _require_output(path: Any, what: str, kind: str) -> None:
    """SpecError naming ``what`` and the absolute path when ``path`` cannot be written as a ``kind``."""
    from archscale.files import FileError, require_writable

    try:
        require_writable(path, what, kind)
    except FileError as err:
        raise SpecError(str(err)) from None


def _before_ray(spec: Spec) -> None:
    """What is said before the data loads and Ray is imported: a cluster that cannot be joined
    (its authentication mode set as Ray reads it on import), a trial too big for this machine."""
    from archscale.search.dispatch.cluster import prepare_address
    from archscale.search.dispatch.session import require_cores

    prepare_address(spec.search.address)
    require_cores(spec)


def ablate(spec: SpecLike, techniques: str, seeds: int = 2, combos: bool = False,
           out: str | os.PathLike | None = None, *, quiet: bool = False, **overrides: Any) -> Path:
    """``archscale ablate``: the spec's base architecture trained with no technique, each
    (``combos``: each pair) and all of ``techniques`` (``"blurpool,mixup=0.4"``) over ``seeds``
    seeds, in ``out`` (default ``runs/<spec name>-ablation``); returns that folder, which
    holds ``ablation.csv`` and ``ablation.png``."""
    resolved = resolve_spec(spec, overrides)
    if seeds < 1:
        raise SpecError(f"--seeds: {seeds} is not allowed; give 1 or more")
    folder = Path(out) if out is not None else Path("runs") / f"{resolved.name}-ablation"
    require_paths(resolved, {"--out": (folder, "folder")})
    _before_ray(resolved)
    from archscale.search.jobs.ablate import parse_techniques, run_ablation

    chosen = parse_techniques(techniques)
    run_ablation(resolved, chosen, seeds, combos, folder, quiet=quiet)
    return folder


def repeat(path: str | os.PathLike, trial: str | None = None, seeds: int = 3, out: str | os.PathLike | None = None,
           *, quiet: bool = False) -> Path:
    """``archscale repeat``: retrain a run's winner (or ``trial``) with ``seeds`` seeds in
    ``out`` (default ``RUN-repeat``); returns that folder, which holds ``repeat.csv``."""
    if seeds < 1:
        raise SpecError(f"--seeds: {seeds} is not allowed; give 1 or more")
    done = load_run(path)
    folder = Path(out) if out is not None else done.path.parent / f"{done.path.name}-repeat"
    require_paths(done.spec, {"--out": (folder, "folder")})
    _before_ray(done.spec)
    from archscale.search.jobs.ablate import run_repeat

    run_repeat(done.path, trial, seeds, folder, quiet=quiet)
    return folder


def load_run(path: str | os.PathLike) -> Run:
    """The :class:`Run` in a run directory, finished or interrupted (its ``spec.yaml`` is read
    and validated now). Raises SpecError naming ``path`` when it holds no run."""
    run_dir = Path(path)
    if not (run_dir / "spec.yaml").exists():
        what = "does not exist" if not run_dir.exists() else "is not a run directory (no spec.yaml)"
        raise SpecError(f"{run_dir} {what}")
    from archscale.analysis.runspec import load_run_spec

    return Run(run_dir, load_run_spec(run_dir))


def objective_pairs(objectives: ObjectivesLike, default: Sequence[tuple[str, str]],
                    where: str = "objectives") -> list[tuple[str, str]]:
    """``"val_accuracy:max,macs:min"``, ``["val_accuracy:max", ...]`` or ``[("val_accuracy", "max"), ...]``
    as checked (metric, direction) pairs; ``default`` when None. ``where`` starts each error
    message (``--objectives`` for the command line)."""
    from archscale.analysis.pareto import METRICS

    if objectives is None or (isinstance(objectives, str) and not objectives.strip()):
        return [tuple(o) for o in default]  # type: ignore[misc]
    items = objectives.split(",") if isinstance(objectives, str) else list(objectives)
    pairs = []
    for item in items:
        if isinstance(item, str):
            metric, _, mode = item.strip().partition(":")
        elif isinstance(item, Sequence) and len(item) == 2:
            metric, mode = str(item[0]), str(item[1])
        else:
            raise SpecError(f"{where}: {item!r} is not allowed; give 'METRIC:max' or ('METRIC', 'max')")
        if metric not in METRICS:
            raise SpecError(f"{where}: unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
        if mode not in ("max", "min"):
            raise SpecError(f"{where}: {metric!r} needs the direction 'max' or 'min', not {mode!r}")
        pairs.append((metric, mode))
    names = [m for m, _ in pairs]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: {objectives!r} names a metric twice")
    if not 1 <= len(pairs) <= 3:
        raise SpecError(f"{where}: {objectives!r} has {len(pairs)} objectives; give 1 to 3")
    return pairs


class Run:
    """A run directory: its spec, its trials (read afresh from ``trials.csv`` at each access,
    so a run still going shows its latest rows), its front, and what can be exported from it."""

    def __init__(self, path: str | os.PathLike, spec: Spec | None = None):
        self.path = Path(path)
        self._spec = spec

    def __repr__(self) -> str:
        trials = self.trials
        counts = trials["status"].value_counts().to_dict() if "status" in trials else {}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no trials"
        return f"Run({str(self.path)!r}: {summary})"

    @property
    def spec(self) -> Spec:
        """The run's resolved spec (``spec.yaml``)."""
        if self._spec is None:
            from archscale.analysis.runspec import load_run_spec

            self._spec = load_run_spec(self.path)
        return self._spec

    @property
    def trials(self) -> pd.DataFrame:
        """``trials.csv``: one row per finished trial, any status (empty before the first)."""
        import pandas as pd

        from archscale.analysis.records import TRIALS_FILE, read_trials

        if not (self.path / TRIALS_FILE).exists():
            return pd.DataFrame(columns=["trial_id", "status"])
        return read_trials(self.path)

    def _trials_with(self, objectives: list[tuple[str, str]]) -> pd.DataFrame:
        trials = self.trials
        missing = [m for m, _ in objectives if m not in trials.columns]
        if missing and len(trials):
            raise SpecError(f"objectives: {self.path}'s trials.csv has no column {missing[0]!r} "
                            "(a run made before that metric was measured)")
        for metric in missing:  # no trial yet: an empty front
            trials[metric] = []
        return trials

    def front(self, objectives: ObjectivesLike = None) -> pd.DataFrame:
        """The completed trials no other dominates, best first by the first objective.
        ``objectives``: ``"val_accuracy:max,macs:min"`` or ``[("val_accuracy", "max"), ...]``
        (1 to 3; default the spec's)."""
        from archscale.analysis.pareto import pareto_front

        pairs = objective_pairs(objectives, self.spec.search.objective_pairs())
        return pareto_front(self._trials_with(pairs), pairs)

    def hypervolume(self, objectives: ObjectivesLike = None, reference: Mapping[str, float] | None = None) -> float:
        """The front's hypervolume normalised by the box between the ideal point and the
        reference point, as ``archscale pareto`` prints it. ``reference`` (metric -> value)
        overrides what the spec implies (:mod:`archscale.analysis.reference`: its
        ``search.reference_point``, chance accuracy, a budget, the largest cost in the space),
        which overrides the worst completed value of each objective. NaN when no trial completed with every objective."""
        from archscale.analysis.hypervolume import bounds, completed, front_hypervolume

        pairs = objective_pairs(objectives, self.spec.search.objective_pairs())
        names = [m for m, _ in pairs]
        for metric, value in (reference or {}).items():
            if metric not in names:
                raise SpecError(f"reference: {metric!r} is not an objective here; allowed: {', '.join(names)}")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                raise SpecError(f"reference: {metric}={value!r} is not a number")
        trials = self._trials_with(pairs)
        if completed(trials, pairs).empty:
            return math.nan
        from archscale.analysis.reference import reference_point

        b = bounds(trials, pairs, {**reference_point(self.spec, pairs), **(reference or {})})
        return float(front_hypervolume(trials, pairs, b)[1])

    @property
    def best(self) -> pd.Series | None:
        """The winner's row (on the front of the spec's objectives, best in the first), or
        None when no trial completed."""
        from archscale.analysis.pareto import best_trial

        pairs = self.spec.search.objective_pairs()
        return best_trial(self._trials_with(pairs), pairs)

    def _choose(self, pick: str | None, trial: str | None) -> tuple[pd.Series, str]:
        """The row to export and how it was chosen."""
        from archscale.analysis.pareto import PICKS, pick_trial

        trials = self.trials
        if trial is not None and pick is not None:
            raise SpecError(f"export: give trial ({trial!r}) or pick ({pick!r}), not both")
        if trial is not None:
            ids = trials["trial_id"].astype(str)
            match = trials[ids == str(trial)]
            if match.empty:
                raise SpecError(f"--trial {trial!r}: no such trial in {self.path}; trials: {', '.join(ids) or 'none'}")
            row = match.iloc[0]
            if row["status"] != "completed":
                raise SpecError(f"--trial {trial!r}: the trial is {row['status']}; only completed trials can be exported")
            return row, "trial"
        if pick is not None:
            if pick not in PICKS:
                raise SpecError(f"--pick {pick!r}: not allowed; allowed: {', '.join(PICKS)}")
            row = pick_trial(trials, pick) if len(trials) else None
            if row is None:
                raise SpecError(f"{self.path}: no completed trial with val_accuracy and macs to pick from")
            return row, f"--pick {pick}"
        row = self.best
        if row is None:
            raise SpecError(f"{self.path}: no completed trial to export")
        return row, "the winner"

    def export(self, out: str | os.PathLike | None = None, pick: str | None = None, trial: str | None = None,
               onnx: bool = False) -> Path:
        """Write a trial's ``arch.yaml``, ``weights.pt``, ``metrics.json`` and standalone
        ``model.py`` (``onnx``: ``model.onnx`` too) into ``out`` (default ``RUN/best``) and
        return that folder. The trial: ``trial`` (an id of ``trials.csv``), else ``pick``
        (``accuracy``, ``macs`` or ``knee``), else the winner (:attr:`best`).
        ``metrics.json`` records the trial id and how it was picked (``picked_by``)."""
        from archscale.analysis.export import export_trial

        row, how = self._choose(pick, trial)
        folder = Path(out) if out is not None else self.path / "best"
        _require_output(folder, "--out", "folder")
        spec = self.spec
        return export_trial(self.path, str(row["trial_id"]), folder, onnx=onnx,
                            extra={"spec": spec.name, "objectives": spec.search.objectives, "picked_by": how})

    def report(self, out: str | os.PathLike | None = None, objectives: ObjectivesLike = None) -> Path:
        """Write the run's one-page ``report.html`` (default ``RUN/report.html``), as
        ``archscale report`` does, and return its path. ``objectives``: the front's (default: the spec's)."""
        from archscale.analysis.report import write_report
        from archscale.search.sampling.importance import param_importances

        spec = self.spec
        if out is not None:
            _require_output(out, "--out", "file")
        trials = self.trials
        importances, note = param_importances(spec, trials)
        return write_report(self.path, out, objectives=objective_pairs(objectives, spec.search.objective_pairs()),
                            choices=[d.name for d in spec.searched()], reference=None,
                            importances=importances, importance_note=note)


# --------------------------------------------------------------------------- models and families


def load_exported(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """The model of an export directory (``arch.yaml`` + ``weights.pt``, as ``Run.export`` or a
    run's ``best/`` writes them), weights loaded, in eval mode, on ``device``.
    Its inputs: ``(x / 255 - mean) / std`` per channel, mean and std from ``arch.yaml``."""
    from archscale.analysis.export import load_exported as load

    folder = Path(path)
    for name in ("arch.yaml", "weights.pt"):
        if not (folder / name).exists():
            raise SpecError(f"{folder} is not an export directory (no {name})")
    return load(folder, device=device)


def build(arch: str) -> nn.Module:
    """A freshly initialised ``nn.Module`` from an architecture's one-line text form
    (``budgeted:c1_width=8,...``, the ``arch`` column of ``trials.csv``)."""
    from archscale.space import build as build_model

    try:
        return build_model(arch)
    except ValueError as err:  # ArchTextError, SpaceError: the text does not describe a model
        raise SpecError(f"arch {_short(arch)}: {err}") from None


def _short(text: Any, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[:limit - 4] + "...'"


def spaces(details: bool = False) -> list[str] | dict[str, SearchSpace]:
    """The registered families' names, or with ``details`` a dict name -> family object
    (``.description``, ``.params``: each with ``.name``, ``.default``, ``.allowed()``, ``.doc``)."""
    from archscale.space import get_space, list_spaces

    names = list_spaces()
    return {name: get_space(name) for name in names} if details else names


# --------------------------------------------------------------------------- check


class CheckError(SpecError):
    """``check`` found the spec unusable (no configuration fits the budgets, say); ``output``
    holds what ``archscale check`` prints before the error."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


@dataclass
class Check:
    """What ``archscale check`` finds: ``size`` of the space (``inf`` with continuous ranges),
    configurations ``sampled`` (built and measured, not trained), how many are ``feasible``,
    and ``rows`` (one dict per configuration: its choices, params, macs, feasible, why).
    ``str(check)`` is the text ``archscale check`` prints."""

    spec: Spec
    text: str
    _counts: Callable[[], tuple[float, list[dict]]] = field(repr=False)
    _cache: tuple[float, list[dict]] | None = field(default=None, repr=False)

    def _get(self) -> tuple[float, list[dict]]:
        if self._cache is None:
            self._cache = self._counts()
        return self._cache

    @property
    def size(self) -> float:
        return self._get()[0]

    @property
    def rows(self) -> list[dict]:
        return self._get()[1]

    @property
    def sampled(self) -> int:
        return len(self.rows)

    @property
    def feasible(self) -> int:
        return sum(bool(r["feasible"]) for r in self.rows)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        if self._cache is None:  # a staged check measures its counts only when asked
            return f"Check({self.spec.name!r}: print() it for the report; .size, .sampled, .feasible, .rows)"
        size = "inf" if self.size == math.inf else f"{int(self.size):,}"
        return f"Check({self.spec.name!r}: {self.feasible} of {self.sampled} sampled feasible; size {size})"

    def __format__(self, format_spec: str) -> str:
        return format(self.text, format_spec)


def check(spec: SpecLike, samples: int = 64, **overrides: Any) -> Check:
    """Validate ``spec`` (a path, a dict or a Spec; ``overrides`` as in :func:`run`), and build
    and measure up to ``samples`` configurations (nothing is trained) to count those within
    the budgets. A two-stage spec: stage 1's grid and what stage 2 will run.
    Raises SpecError for an invalid spec, :class:`CheckError` when no configuration fits."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise SpecError(f"samples: {samples!r} is not allowed; give a whole number of 1 or more")
    resolved = resolve_spec(spec, overrides)
    require_paths(resolved)
    if resolved.search.stages is not None:
        return _check_staged(resolved, samples)
    from archscale.search.jobs.check import feasibility

    report = feasibility(resolved, samples=samples)
    text = _check_text(resolved, report)
    result = Check(resolved, text, lambda: (report.size, report.rows))
    if report.feasible == 0:
        small = report.smallest
        raise CheckError(f"space: no configuration meets the budgets; the smallest sampled has "
                         f"params={small.get('params')}, macs={small.get('macs')}", output=text)
    return result


def _check_text(spec: Spec, report) -> str:
    lines = [f"spec {spec.name!r}: valid",
             f"family {spec.space.family}; dataset {spec.data.dataset}; sampler {spec.search.sampler}; "
             f"{spec.search.num_trials} trials; objectives {', '.join(spec.search.objectives)}"]
    for d in spec.space.dimensions() + spec.train.dimensions():
        if d.kind == "fixed":
            desc = f"fixed {d.values[0]!r}"
        elif d.kind == "choice":
            desc = "choice of " + ", ".join(map(repr, d.values))
        else:
            desc = (f"{d.kind} range [{d.low}, {d.high}]" + (f" step {d.step}" if d.step else "")
                    + (" log" if d.log else ""))
        lines.append(f"  {d.name}: {desc}")
    size = "infinite (continuous ranges)" if report.size == math.inf else f"{int(report.size):,}"
    lines.append(f"size of the space: {size} configurations")
    budgets = ", ".join(f"{k}={v:,}" for k, v in (("max_params", spec.space.max_params),
                                                   ("max_macs", spec.space.max_macs),
                                                   ("max_latency_ms", spec.space.max_latency_ms)) if v)
    what = "configurations" if report.sampled == report.size else "sampled configurations"
    lines.append(f"{report.feasible} of {report.sampled} {what} fit the budgets ({budgets or 'no budgets'})")
    measured = [r for r in report.rows if r["params"] is not None]
    if measured:
        params = sorted(r["params"] for r in measured)
        macs = sorted(r["macs"] for r in measured)
        lines.append(f"params {params[0]:,} .. {params[-1]:,}; macs (multiply-adds per image) "
                     f"{macs[0]:,} .. {macs[-1]:,}")
    return "\n".join(lines) + "\n"


def _check_staged(spec: Spec, samples: int) -> Check:
    from archscale.search.jobs.compound import check_staged, stage_one_rows

    buffer = io.StringIO()
    try:
        check_staged(spec, samples=samples, out=buffer)
    except SpecError as err:
        raise CheckError(str(err), output=buffer.getvalue()) from None

    def counts() -> tuple[float, list[dict]]:
        # Stage 1's grid (or sample) measured again: only when the counts are asked for.
        rows, _ = stage_one_rows(spec, samples)
        size = math.prod(d.size for d in spec.space.searched()) if spec.space.searched() else 1
        return size, rows

    return Check(spec, buffer.getvalue(), counts)
