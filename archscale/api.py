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
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO, Union

from archscale.spec import SpecError

if TYPE_CHECKING:
    from archscale.analysis.status import Status
    from archscale.runs import ObjectivesLike, Run
    from torch import nn

    from archscale.search.jobs.checked import Check, CheckError
    from archscale.space import SearchSpace
    from archscale.spec import Spec

__all__ = ["Check", "CheckError", "Run", "ablate", "build", "check", "compare", "describe_store", "load_exported",
           "load_run", "repeat", "run", "spaces", "status"]

SpecLike = Union[str, "os.PathLike[str]", Mapping[str, Any], "Spec"]



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
    from archscale.spec.model import section_of
    from archscale.spec.paths import anchor_defaults, anchor_paths, anchor_spec_file, overridden_paths

    overrides = overrides or {}
    if isinstance(spec, Spec):
        if not overrides:
            return spec
        raw = spec.to_dict()
        for key in spec._defaulted:  # left to its default, which the overrides may change
            section, leaf = section_of(raw, key)
            section.pop(leaf, None)
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
    Ctrl-C or a SIGTERM (its ``signum`` says which; what finished is kept: ``resume=True`` runs
    the rest).
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
    from archscale.search.jobs.rundir import as_run_began, default_run_dir, prepare_run_dir, undo_unstarted

    require_paths(resolved, {"--out": (out if out is not None else default_run_dir(resolved), "folder")})
    _before_ray(resolved)
    if resume:
        resolved, kept = as_run_began(resolved, out)
        if kept and not quiet:
            print(kept, file=stream)
    run_dir = prepare_run_dir(resolved, out, resume)
    existed = run_dir.exists()
    try:
        if resolved.search.stages is not None:
            from archscale.search.jobs.stages import run_staged

            run_staged(resolved, run_dir, resume=resume, quiet=quiet, verbose=verbose, out=stream)
        else:
            from archscale.search.jobs.run import run_search

            run_search(resolved, run_dir, resume=resume, quiet=quiet, verbose=verbose, out=stream)
    except BaseException:
        if not resume:  # failed before its first trial: nothing left that blocks a plain rerun
            undo_unstarted(run_dir, existed)
        raise
    from archscale.runs import Run

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


def _before_ray(spec: Spec) -> None:
    """What is said before the data loads and Ray is imported: a cluster that cannot be joined
    (its authentication mode set as Ray reads it on import), a trial too big for this machine;
    then Ray imported (:func:`~archscale.search.dispatch.session.import_ray`)."""
    from archscale.search.dispatch.cluster import prepare_address
    from archscale.search.dispatch.session import import_ray, require_cores

    prepare_address(spec.search.address)
    require_cores(spec)
    import_ray()


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
    from archscale.runs import Run, load_run_spec

    return Run(run_dir, load_run_spec(run_dir))


def status(path: str | os.PathLike) -> Status:
    """``archscale status``: where the run in ``path`` stands, read from its directory alone
    (finished, running or killed): its trials finished, running and left, the best so far and
    the front, the time and an estimate, and whether it is alive. ``str()`` of it is what the
    command prints. Raises SpecError naming ``path`` when it holds no run."""
    return load_run(path).status()


def compare(runs: Sequence[Run | str | os.PathLike], objectives: ObjectivesLike = None,
            reference: Mapping[str, float] | None = None, out: str | os.PathLike | None = None,
            where: str = "objectives") -> tuple[str, list[Path]]:
    """``archscale compare``: the runs' fronts and hypervolumes on one scale, as text, and the
    files written (a table and a plot, in ``out``). ``objectives``: default the first run's."""
    from archscale.analysis.compare import compare_runs, format_comparison, write_comparison
    from archscale.runs import Run, objective_pairs, require_output

    if out is not None:
        require_output(out, "--out", "folder")
    runs = [r if isinstance(r, Run) else load_run(r) for r in runs]
    pairs = objective_pairs(objectives, runs[0].spec.search.objective_pairs(), where=where)
    try:
        summaries, b = compare_runs([r.path for r in runs], pairs, dict(reference or {}))
    except KeyError as err:
        raise SpecError(f"{where}: {err.args[0]}") from None
    except ValueError as err:
        raise SpecError(f"compare: {err}") from None
    files = write_comparison(summaries, pairs, b, out)
    return format_comparison(summaries, pairs, b), list(files.values())


def describe_store(path: str | os.PathLike, best: int = 10) -> str:
    """``archscale store PATH``: what a results store holds, with its ``best`` most accurate rows."""
    from archscale.search.configs.store import describe

    return describe(path, best=best)


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


def check(spec: SpecLike, samples: int = 64, **overrides: Any) -> Check:
    """Validate ``spec`` (a path, a dict or a Spec; ``overrides`` as in :func:`run`), and build
    and measure up to ``samples`` configurations (nothing is trained) to count those within
    the budgets and those that cannot be built. A two-stage spec: stage 1's grid and what
    stage 2 will run. Raises SpecError for an invalid spec, :class:`CheckError` when no
    configuration fits."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise SpecError(f"samples: {samples!r} is not allowed; give a whole number of 1 or more")
    resolved = resolve_spec(spec, overrides)
    require_paths(resolved)
    from archscale.search.jobs.checked import check_spec

    return check_spec(resolved, samples)


def __getattr__(name: str):
    """``Check`` and ``CheckError`` (their module builds networks with torch), ``Run`` and
    ``objective_pairs`` (pandas and the analysis), imported on first use."""
    if name in ("Check", "CheckError"):
        from archscale.search.jobs import checked as module

        return getattr(module, name)
    if name in ("Run", "objective_pairs"):
        from archscale import runs

        return getattr(runs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
