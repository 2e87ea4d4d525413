"""``archscale`` command line: run | check | spaces | pareto | report | export | compare | store | status.

Exit status: 0 success, 2 invalid input (spec, arguments, paths, a file that is not what it should
be), 1 a failure while running.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

# light modules only: `archscale --help` loads no torch, pandas, pydantic, ray or optuna
from archscale import api
from archscale.files import FileError, read_json_object
from archscale.search.jobs.profile import PROFILE, format_table
from archscale.space import CONTEXT_PARAMS, SpaceError, get_space, list_spaces
from archscale.spec import SpecError
from archscale.trainer.config import DataError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_GRACE_S = 15.0  # after SIGTERM, the seconds the exit may take (as search.dispatch.launch.STOP_GRACE_S)


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
    sub.add_parser("status", help="where a run stands (finished, running or killed): trials finished, running and "
                                  "left, the best and the front, time, whether it is alive").add_argument("run_dir")
    store = sub.add_parser("store", help="print what a results store (search.store) holds")
    store.add_argument("path", help="the store's SQLite file")
    store.add_argument("--best", type=int, default=10, help="completed rows to list, most accurate first (default 10)")
    return parser


# --------------------------------------------------------------------------- commands


def _set_overrides(assignments: list[str]) -> dict:
    """``--set key.path=value`` items as the overrides of :func:`archscale.run`: each checked and
    its value parsed (as YAML) by :func:`~archscale.spec.apply_override`, in order."""
    from archscale.spec import apply_override  # the spec's model: pydantic, loaded once a command runs

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
    # not archscale.run, whose quiet prints nothing: --quiet prints errors and the final front
    done = api.run_with_output(args.spec, args.out, args.resume, quiet=args.quiet, verbose=args.verbose, stream=None,
                               overrides=_set_overrides(args.overrides))
    if args.profile:
        path = PROFILE.write(done.path)
        print(f"\nwhere the time went (seconds; also in {path}):\n{format_table(PROFILE.summary())}")
    return EXIT_OK


def cmd_check(args) -> int:
    try:
        result = api.check(args.spec, samples=args.samples, **_set_overrides(args.overrides))
    except SpecError as err:  # a CheckError carries what was found before it (exit 2)
        print(getattr(err, "output", ""), end="")
        raise
    print(result, end="")
    return EXIT_OK


def cmd_ablate(args) -> int:
    out = api.ablate(args.spec, args.techniques, args.seeds, args.combos, args.out, quiet=args.quiet,
                     **_set_overrides(args.overrides))
    print(f"wrote {out / 'ablation.csv'} and {out / 'ablation.png'}")
    return EXIT_OK


def cmd_repeat(args) -> int:
    out = api.repeat(_run(args.run_dir).path, args.trial, args.seeds, args.out, quiet=args.quiet)
    print(f"wrote {out / 'repeat.csv'}")
    return EXIT_OK


def cmd_spaces(args) -> int:
    for name in [args.family] if args.family else list_spaces():
        family = get_space(name)
        print(f"{family.name}: {family.description}")
        width = max(14, *(len(p.name) for p in family.params))
        for p in family.params:
            default = str(p.default).lower() if isinstance(p.default, bool) else p.default
            print(f"  {p.name:<{width}} default {default!s:<9} {p.allowed():<40} {p.doc}")
        print("  (from the dataset: " + ", ".join(p.name for p in CONTEXT_PARAMS) + ")")
    return EXIT_OK


def _run(path: str) -> api.Run:
    """The run directory ``path`` names (with its trials.csv), its spec read and checked."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        what = "is a file" if run_dir.exists() else "does not exist"
        raise SpecError(f"{run_dir} {what}; expected a run directory (holding spec.yaml and trials.csv)")
    if not (run_dir / "trials.csv").exists():
        raise SpecError(f"{run_dir} is not a run directory (no trials.csv)")
    return api.load_run(run_dir)


def _reference_arg(text: str | None) -> dict[str, float]:
    """``--reference macs=1e6,val_accuracy=0.1`` as metric -> value (metrics checked by the API)."""
    out: dict[str, float] = {}
    for item in filter(None, (text or "").split(",")):
        metric, eq, value = item.partition("=")
        if not eq:
            raise SpecError(f"--reference: {item!r} must be METRIC=VALUE")
        try:
            out[metric.strip()] = float(value)
        except ValueError:
            raise SpecError(f"--reference: {metric.strip()}={value!r} is not a number") from None
    return out


def cmd_pareto(args) -> int:
    run = _run(args.run_dir)
    print(run.pareto(args.objectives, _reference_arg(args.reference), args.plot, where="--objectives"))
    return EXIT_OK


def cmd_report(args) -> int:
    run = _run(args.run_dir)
    print(f"report: {run.report(args.out, args.objectives, where='--objectives')}")
    return EXIT_OK


def cmd_export(args) -> int:
    from archscale.analysis.export import read_exported  # torch

    out = _run(args.run_dir).export(args.out, pick=args.pick, trial=args.trial, onnx=args.onnx)
    metrics = read_json_object(out / "metrics.json", "the metrics.json export just wrote",
                               keys=("trial_id", "picked_by", "val_accuracy", "macs", "files"))
    print(f"exported trial {metrics['trial_id']} ({metrics['picked_by']}; val_accuracy {metrics['val_accuracy']:.4f}, "
          f"macs {int(metrics['macs']):,}) -> {out}")
    print(f"  {read_exported(out)['text']}")
    print(f"  files: {' '.join(metrics['files'])}")
    return EXIT_OK


def cmd_compare(args) -> int:
    runs = [_run(d) for d in args.run_dirs]  # each must hold a valid spec
    text, files = api.compare(runs, args.objectives, _reference_arg(args.reference), args.out, where="--objectives")
    print(text)
    print("wrote " + ", ".join(str(p) for p in files))
    return EXIT_OK


def cmd_status(args) -> int:
    print(api.status(args.run_dir))
    return EXIT_OK


def cmd_store(args) -> int:
    print(api.describe_store(args.path, best=args.best))
    return EXIT_OK


COMMANDS = {"store": cmd_store, "run": cmd_run, "check": cmd_check, "ablate": cmd_ablate, "repeat": cmd_repeat,
            "spaces": cmd_spaces, "pareto": cmd_pareto, "report": cmd_report, "export": cmd_export,
            "compare": cmd_compare, "status": cmd_status}


def main(argv: list[str] | None = None) -> int:
    PROFILE.reset()
    PROFILE.add("interpreter", max(0.0, time.time() - PROFILE.start))
    args = build_parser().parse_args(argv)  # --help and argument errors end here, before torch is loaded
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # output piped into `head` and the like
        return EXIT_OK
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM while a search runs (search.dispatch.launch.stop_signals)
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"archscale: interrupted{' by SIGTERM' if signum == signal.SIGTERM else ''}", file=sys.stderr)
        return 128 + signum
    except Exception as err:
        if isinstance(err, (SpecError, SpaceError, DataError, FileError)):
            print(f"archscale: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        # a failure while running: one line, traceback only on request
        if os.environ.get("ARCHSCALE_DEBUG"):
            raise
        print(f"archscale: failed: {type(err).__name__}: {err} (set ARCHSCALE_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


def entry() -> None:
    """The ``archscale`` command: :func:`main`'s exit status. A Ray started here is shut down by
    Ray's own exit hook; after a SIGTERM, the exit is given :data:`EXIT_GRACE_S` seconds (that
    hook may wait on Ray's processes, which a SIGTERM to the process group ended)."""
    status = main()
    if status == 128 + signal.SIGTERM:
        deadline = threading.Timer(EXIT_GRACE_S, os._exit, args=(status,))
        deadline.daemon = True
        deadline.start()
    sys.exit(status)


if __name__ == "__main__":
    entry()
