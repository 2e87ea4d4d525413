"""``archscale`` command line: run | check | spaces | pareto | report | export | compare | store.

Exit status: 0 success, 2 invalid input (spec, arguments, paths, a file that is not what it should
be), 1 a failure while running.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from archscale.spec import SpecError  # imports nothing: `archscale --help` loads no torch

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: exit 2 with usage, as usual
        self.print_usage(sys.stderr)
        print(f"archscale: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="archscale", description="Neural architecture and scaling search from a YAML spec.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run (or resume) the search of a spec")
    run.add_argument("spec")
    run.add_argument("--out", help="run directory (default runs/<spec name>)")
    run.add_argument("--resume", action="store_true", help="continue the interrupted run in the run directory")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a spec field (repeatable), e.g. --set search.num_trials=4")
    loudness = run.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", action="store_true", help="print only errors and the final front")
    loudness.add_argument("--verbose", action="store_true", help="also a line per trial start, epoch and retry")
    run.add_argument("--profile", action="store_true",
                     help="print where the time went (start-up, each trial's dispatch, finishing); "
                          "also written as RUN_DIR/profile.json")

    check = sub.add_parser("check", help="validate a spec; size of the space; how many configs fit the budgets")
    check.add_argument("spec")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    check.add_argument("--samples", type=int, default=64, help="configurations to build and measure (default 64)")

    ablate = sub.add_parser("ablate", help="train the base architecture with no, each and all techniques, over seeds")
    ablate.add_argument("spec")
    ablate.add_argument("--techniques", required=True,
                        help="comma-separated, each optionally =VALUE, e.g. blurpool,cutout,mixup=0.4,label_smoothing,swa,sam")
    ablate.add_argument("--seeds", type=int, default=2, help="seeds per variant (default 2)")
    ablate.add_argument("--combos", action="store_true", help="also every pair of techniques")
    ablate.add_argument("--out", help="directory to write (default runs/<spec name>-ablation)")
    ablate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    ablate.add_argument("--quiet", action="store_true")

    repeat = sub.add_parser("repeat", help="retrain a run's winner (or --trial) with several seeds")
    repeat.add_argument("run_dir")
    repeat.add_argument("--trial", help="trial id, as in trials.csv (default: the winner)")
    repeat.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    repeat.add_argument("--out", help="directory to write (default RUN_DIR-repeat)")
    repeat.add_argument("--quiet", action="store_true")

    spaces = sub.add_parser("spaces", help="list the families and their parameters")
    spaces.add_argument("family", nargs="?")

    pareto = sub.add_parser("pareto", help="print the Pareto front of a run and plot it")
    pareto.add_argument("run_dir")
    pareto.add_argument("--objectives", help="e.g. val_accuracy:max,macs:min (default: the spec's)")
    pareto.add_argument("--plot", help="where to write the plot (default RUN_DIR/pareto.png)")
    pareto.add_argument("--reference", metavar="METRIC=VALUE,...",
                        help="hypervolume reference point (default: what the spec implies: search.reference_point, "
                              "chance accuracy, a budget, the largest cost in the space; else the worst completed)")

    report = sub.add_parser("report", help="write RUN_DIR/report.html, one self-contained page about the run")
    report.add_argument("run_dir")
    report.add_argument("--out", help="file to write (default RUN_DIR/report.html)")
    report.add_argument("--objectives", help="e.g. val_accuracy:max,macs:min (default: the spec's)")

    export = sub.add_parser("export", help="export a trial (default: the winner) as arch.yaml + weights.pt + "
                                           "metrics.json + a standalone model.py")
    export.add_argument("run_dir")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--trial", help="trial id, as in trials.csv")
    which.add_argument("--pick", metavar="accuracy|macs|knee", help="accuracy: highest val_accuracy; macs: fewest MACs; "
                                                    "knee: the knee of the val_accuracy/macs front")
    export.add_argument("--out", help="directory to write (default RUN_DIR/best)")
    export.add_argument("--onnx", action="store_true", help="also write model.onnx")

    compare = sub.add_parser("compare", help="fronts of several runs on one plot and their hypervolumes in a table")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--objectives", help="e.g. val_accuracy:max,macs:min (default: the first run's)")
    compare.add_argument("--reference", metavar="METRIC=VALUE,...",
                         help="hypervolume reference point (default: what the specs imply and agree on, as for "
                              "pareto, so runs of one spec need none; else the worst completed values over all runs)")
    compare.add_argument("--out", default=".", help="directory for compare_fronts.png, compare_hypervolume.png "
                                                    "and compare.csv (default: the current directory)")
    store = sub.add_parser("store", help="print what a results store (search.store) holds")
    store.add_argument("path", help="the store's SQLite file")
    store.add_argument("--best", type=int, default=10, help="completed rows to list, most accurate first (default 10)")
    return parser


# --------------------------------------------------------------------------- commands


def _set_overrides(assignments: list[str]) -> dict:
    """``--set key.path=value`` items as the overrides of :func:`archscale.run`: each checked and
    its value parsed (as YAML) by :func:`~archscale.spec.apply_override`, in order."""
    from archscale.spec import apply_override

    overrides: dict = {}
    for assignment in assignments:
        parsed: dict = {}
        apply_override(parsed, assignment)  # raises SpecError naming --set, the key and what is allowed
        key = assignment.partition("=")[0]
        value = parsed
        for part in key.split("."):
            value = value[part]
        overrides.pop(key, None)  # the last --set of a key wins, in its place in the order
        overrides[key] = value
    return overrides


def cmd_run(args) -> int:
    from archscale.api import run_with_output

    # not archscale.run, whose quiet prints nothing: --quiet prints errors and the final front
    done = run_with_output(args.spec, args.out, args.resume, quiet=args.quiet, verbose=args.verbose, stream=None,
                           overrides=_set_overrides(args.overrides))
    if args.profile:
        from archscale.search.jobs.profile import PROFILE, format_table

        path = PROFILE.write(done.path)
        print(f"\nwhere the time went (seconds; also in {path}):\n{format_table(PROFILE.summary())}")
    return EXIT_OK


def cmd_check(args) -> int:
    from archscale.api import CheckError, check

    try:
        result = check(args.spec, samples=args.samples, **_set_overrides(args.overrides))
    except CheckError as err:  # what was found before the error, then the error (exit 2)
        print(err.output, end="")
        raise
    print(result, end="")
    return EXIT_OK


def cmd_ablate(args) -> int:
    from archscale.api import ablate

    out = ablate(args.spec, args.techniques, args.seeds, args.combos, args.out, quiet=args.quiet,
                 **_set_overrides(args.overrides))
    print(f"wrote {out / 'ablation.csv'} and {out / 'ablation.png'}")
    return EXIT_OK


def cmd_repeat(args) -> int:
    from archscale.api import repeat

    out = repeat(_run_dir(args.run_dir), args.trial, args.seeds, args.out, quiet=args.quiet)
    print(f"wrote {out / 'repeat.csv'}")
    return EXIT_OK


def cmd_spaces(args) -> int:
    from archscale.space import CONTEXT_PARAMS, get_space, list_spaces

    names = [args.family] if args.family else list_spaces()
    for name in names:
        family = get_space(name)
        print(f"{family.name}: {family.description}")
        width = max(14, *(len(p.name) for p in family.params))
        for p in family.params:
            default = str(p.default).lower() if isinstance(p.default, bool) else p.default
            print(f"  {p.name:<{width}} default {default!s:<9} {p.allowed():<40} {p.doc}")
        print("  (from the dataset: " + ", ".join(p.name for p in CONTEXT_PARAMS) + ")")
    return EXIT_OK


def _run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not run_dir.is_dir():
        what = "is a file" if run_dir.exists() else "does not exist"
        raise SpecError(f"{run_dir} {what}; expected a run directory (holding spec.yaml and trials.csv)")
    if not (run_dir / "trials.csv").exists():
        raise SpecError(f"{run_dir} is not a run directory (no trials.csv)")
    return run_dir


def _writable(path, what: str, kind: str) -> None:
    """Before anything is written: ``path`` can be written as a ``kind`` (FileError: exit 2)."""
    from archscale.files import require_writable

    require_writable(path, what, kind)


def _run_spec(run_dir: Path):
    from archscale.analysis.runspec import load_run_spec

    return load_run_spec(run_dir)


def _objectives_arg(text: str | None, default, flag: str = "--objectives"):
    from archscale.api import objective_pairs

    return objective_pairs(text, default, where=flag)


def _reference_arg(text: str | None) -> dict[str, float]:
    from archscale.analysis.pareto import METRICS

    out: dict[str, float] = {}
    for item in filter(None, (text or "").split(",")):
        metric, eq, value = item.partition("=")
        metric = metric.strip()
        if not eq or metric not in METRICS:
            raise SpecError(f"--reference: {item!r} must be METRIC=VALUE with METRIC one of {', '.join(METRICS)}")
        try:
            out[metric] = float(value)
        except ValueError:
            raise SpecError(f"--reference: {metric}={value!r} is not a number") from None
    return out


def _check_columns(trials, objectives, run_dir: Path) -> None:
    missing = [m for m, _ in objectives if m not in trials.columns]
    if missing:
        raise SpecError(f"--objectives: {run_dir}'s trials.csv has no column {missing[0]!r} "
                        "(a run made before that metric was measured)")


def cmd_pareto(args) -> int:
    from archscale.analysis.hypervolume import summarise
    from archscale.analysis.pareto import pareto_front, plot_pareto, short_ids
    from archscale.analysis.records import read_trials
    from archscale.search.jobs.finish import format_front

    run_dir = _run_dir(args.run_dir)
    spec = _run_spec(run_dir)
    plot = Path(args.plot) if args.plot else run_dir / "pareto.png"
    _writable(plot, "--plot", "file")
    _writable(plot.with_name("hypervolume.png"), "--plot", "file")
    objectives = _objectives_arg(args.objectives, spec.search.objective_pairs())
    from archscale.analysis.reference import reference_point

    reference = {**reference_point(spec, objectives),
                 **{m: (v, "--reference") for m, v in _reference_arg(args.reference).items()}}
    trials = read_trials(run_dir)
    _check_columns(trials, objectives, run_dir)
    front = pareto_front(trials, objectives)
    print(format_front(trials, front, objectives, [d.name for d in spec.searched()]))
    labels = dict(zip(trials["trial_id"].astype(str), short_ids(trials["trial_id"].tolist())))
    for _, row in front.iterrows():
        print(f"  {labels[str(row['trial_id'])]}: {row['arch']}")
    plot_pareto(trials, objectives, plot, title=f"{spec.name}: Pareto front")
    print(f"plot: {plot}")
    hv_plot = plot.with_name("hypervolume.png")
    line = summarise(trials, objectives, reference, hv_plot, spec.name)
    if line:
        print(f"{line}\nhypervolume over trials: {hv_plot}")
    if spec.search.stages is not None:  # a two-stage compound-scaling run: the phi sweep and scaling.png
        from archscale.search.jobs.compound import SCALING_PLOT, write_scaling

        write_scaling(run_dir, spec, path=plot.parent / SCALING_PLOT)
    return EXIT_OK


def cmd_report(args) -> int:
    from archscale.analysis.records import read_trials
    from archscale.api import load_run

    run_dir = _run_dir(args.run_dir)
    spec = _run_spec(run_dir)
    objectives = _objectives_arg(args.objectives, spec.search.objective_pairs())
    _check_columns(read_trials(run_dir), objectives, run_dir)
    print(f"report: {load_run(run_dir).report(args.out, objectives)}")
    return EXIT_OK


def cmd_export(args) -> int:
    from archscale.analysis.export import read_exported
    from archscale.files import read_json_object
    from archscale.api import load_run

    run = load_run(_run_dir(args.run_dir))
    out = run.export(args.out, pick=args.pick, trial=args.trial, onnx=args.onnx)
    metrics = read_json_object(out / "metrics.json", "the metrics.json export just wrote",
                               keys=("trial_id", "picked_by", "val_accuracy", "macs", "files"))
    print(f"exported trial {metrics['trial_id']} ({metrics['picked_by']}; val_accuracy {metrics['val_accuracy']:.4f}, "
          f"macs {int(metrics['macs']):,}) -> {out}")
    print(f"  {read_exported(out)['text']}")
    print(f"  files: {' '.join(metrics['files'])}")
    return EXIT_OK


def cmd_compare(args) -> int:
    from archscale.analysis.compare import compare_runs, format_comparison, write_comparison

    dirs = [_run_dir(d) for d in args.run_dirs]
    specs = [_run_spec(d) for d in dirs]  # each must hold a valid spec
    _writable(args.out, "--out", "folder")
    objectives = _objectives_arg(args.objectives, specs[0].search.objective_pairs())
    try:
        summaries, b = compare_runs(dirs, objectives, _reference_arg(args.reference))
    except KeyError as err:
        raise SpecError(f"--objectives: {err.args[0]}") from None
    except ValueError as err:
        raise SpecError(f"compare: {err}") from None
    print(format_comparison(summaries, objectives, b))
    files = write_comparison(summaries, objectives, b, args.out)
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return EXIT_OK


def cmd_store(args) -> int:
    from archscale.search.configs.store import describe

    print(describe(args.path, best=args.best))
    return EXIT_OK


COMMANDS = {"store": cmd_store, "run": cmd_run, "check": cmd_check, "ablate": cmd_ablate, "repeat": cmd_repeat, "spaces": cmd_spaces, "pareto": cmd_pareto, "report": cmd_report,
            "export": cmd_export, "compare": cmd_compare}


def _input_errors() -> tuple[type[Exception], ...]:
    """The errors that mean bad input (exit 2), imported once one is raised: a command that
    needs none of their packages (``spaces`` needs no pandas) does not load them."""
    from archscale.files import FileError
    from archscale.space import SpaceError
    from archscale.trainer.config import DataError  # torch-free: an input error's line comes at once

    return SpecError, SpaceError, DataError, FileError


def main(argv: list[str] | None = None) -> int:
    from archscale.search.jobs.profile import PROFILE  # imports nothing heavy

    PROFILE.reset()
    PROFILE.add("interpreter", max(0.0, time.time() - PROFILE.start))
    args = build_parser().parse_args(argv)  # --help and argument errors end here, before torch is loaded
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # output piped into `head` and the like
        return EXIT_OK
    except KeyboardInterrupt:
        print("archscale: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, _input_errors()):
            print(f"archscale: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        # a failure while running: one line, traceback only on request
        if os.environ.get("ARCHSCALE_DEBUG"):
            raise
        print(f"archscale: failed: {type(err).__name__}: {err} (set ARCHSCALE_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


def entry() -> None:
    """The ``archscale`` command: :func:`main`'s exit status. A Ray started here is shut down by
    Ray's own exit hook."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
