"""``archscale`` command line: run | check | spaces | pareto | export.

Exit status: 0 success, 2 invalid input (spec, arguments, paths), 1 a failure while running.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from search.spec import SpecError, load_spec

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
    run.add_argument("--quiet", action="store_true", help="print only errors and the final front")

    check = sub.add_parser("check", help="validate a spec; size of the space; how many configs fit the budgets")
    check.add_argument("spec")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    check.add_argument("--samples", type=int, default=64, help="configurations to build and measure (default 64)")

    spaces = sub.add_parser("spaces", help="list the families and their parameters")
    spaces.add_argument("family", nargs="?")

    pareto = sub.add_parser("pareto", help="print the Pareto front of a run and plot it")
    pareto.add_argument("run_dir")
    pareto.add_argument("--objectives", help="e.g. val_accuracy:max,macs:min (default: the spec's)")
    pareto.add_argument("--plot", help="where to write the plot (default RUN_DIR/pareto.png)")

    export = sub.add_parser("export", help="export a trial (default: the winner) as arch.yaml + weights.pt + metrics.json")
    export.add_argument("run_dir")
    export.add_argument("--trial", help="trial id, as in trials.csv")
    export.add_argument("--out", help="directory to write (default RUN_DIR/best)")
    return parser


# --------------------------------------------------------------------------- commands


def cmd_run(args) -> int:
    from search.runner import prepare_run_dir, run_search

    spec = load_spec(args.spec, args.overrides)
    run_dir = prepare_run_dir(spec, args.out, args.resume)
    if spec.search.stages is not None:
        from search.stages import run_staged

        run_staged(spec, run_dir, resume=args.resume, quiet=args.quiet)
        return EXIT_OK
    run_search(spec, run_dir, resume=args.resume, quiet=args.quiet)
    return EXIT_OK


def cmd_check(args) -> int:
    from search.runner import feasibility

    spec = load_spec(args.spec, args.overrides)
    if spec.search.stages is not None:
        from search.stages import check_staged

        return check_staged(spec, samples=args.samples)
    dims = spec.space.dimensions()
    print(f"spec {spec.name!r}: valid")
    print(f"family {spec.space.family}; dataset {spec.data.dataset}; sampler {spec.search.sampler}; "
          f"{spec.search.num_trials} trials; objectives {', '.join(spec.search.objectives)}")
    for d in dims:
        if d.kind == "fixed":
            desc = f"fixed {d.values[0]!r}"
        elif d.kind == "choice":
            desc = "choice of " + ", ".join(map(repr, d.values))
        else:
            desc = f"{d.kind} range [{d.low}, {d.high}]" + (f" step {d.step}" if d.step else "") + (" log" if d.log else "")
        print(f"  {d.name}: {desc}")
    report = feasibility(spec, samples=args.samples)
    size = "infinite (continuous ranges)" if report.size == math.inf else f"{int(report.size):,}"
    print(f"size of the space: {size} configurations")
    budgets = ", ".join(f"{k}={v:,}" for k, v in (("max_params", spec.space.max_params), ("max_macs", spec.space.max_macs)) if v)
    print(f"{report.feasible} of {report.sampled} {'configurations' if report.sampled == report.size else 'sampled configurations'} "
          f"fit the budgets ({budgets or 'no budgets'})")
    measured = [r for r in report.rows if r["params"] is not None]
    if measured:
        params = sorted(r["params"] for r in measured)
        macs = sorted(r["macs"] for r in measured)
        print(f"params {params[0]:,} .. {params[-1]:,}; macs (multiply-adds per image) {macs[0]:,} .. {macs[-1]:,}")
    if report.feasible == 0:
        small = report.smallest
        raise SpecError(f"space: no configuration meets the budgets; the smallest sampled has "
                        f"params={small.get('params')}, macs={small.get('macs')}")
    return EXIT_OK


def cmd_spaces(args) -> int:
    from space import CONTEXT_PARAMS, get_space, list_spaces

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
    if not (run_dir / "trials.csv").is_file():
        raise SpecError(f"{run_dir} is not a run directory (no trials.csv)")
    return run_dir


def _run_spec(run_dir: Path):
    from search.spec import parse_spec, read_yaml

    return parse_spec(read_yaml(run_dir / "spec.yaml"))


def cmd_pareto(args) -> int:
    from analysis.pareto import pareto_front, parse_objectives, plot_pareto
    from analysis.records import read_trials
    from search.runner import format_front

    run_dir = _run_dir(args.run_dir)
    spec = _run_spec(run_dir)
    try:
        objectives = parse_objectives(args.objectives) if args.objectives else spec.search.objective_pairs()
    except ValueError as err:
        raise SpecError(f"--objectives: {err}") from None
    trials = read_trials(run_dir)
    missing = [m for m, _ in objectives if m not in trials.columns]
    if missing:
        raise SpecError(f"--objectives: unknown metric {missing[0]!r}; allowed: params, macs, memory_mb, "
                        "val_accuracy, test_accuracy, train_seconds")
    front = pareto_front(trials, objectives)
    print(format_front(trials, front, objectives, [d.name for d in spec.space.searched()]))
    plot = Path(args.plot) if args.plot else run_dir / "pareto.png"
    plot_pareto(trials, objectives, plot, title=f"{spec.name}: Pareto front")
    print(f"plot: {plot}")
    if spec.search.stages is not None:  # a two-stage compound-scaling run: the phi sweep and scaling.png
        from search.stages import SCALING_PLOT, write_scaling

        write_scaling(run_dir, spec, path=plot.parent / SCALING_PLOT)
    return EXIT_OK


def cmd_export(args) -> int:
    from analysis.export import export_trial
    from analysis.pareto import best_trial
    from analysis.records import read_trials

    run_dir = _run_dir(args.run_dir)
    spec = _run_spec(run_dir)
    trials = read_trials(run_dir)
    if args.trial:
        ids = trials["trial_id"].astype(str)
        match = trials[ids == args.trial]
        if match.empty:
            raise SpecError(f"--trial {args.trial!r}: no such trial in {run_dir}; trials: {', '.join(ids)}")
        row = match.iloc[0]
        if row["status"] != "completed":
            raise SpecError(f"--trial {args.trial!r}: the trial is {row['status']}; only completed trials can be exported")
    else:
        row = best_trial(trials, spec.search.objective_pairs())
        if row is None:
            raise SpecError(f"{run_dir}: no completed trial to export")
    out = Path(args.out) if args.out else run_dir / "best"
    export_trial(run_dir, row["trial_id"], out, extra={"spec": spec.name, "objectives": spec.search.objectives})
    print(f"exported trial {row['trial_id']} ({row['arch']}) -> {out}")
    return EXIT_OK


COMMANDS = {"run": cmd_run, "check": cmd_check, "spaces": cmd_spaces, "pareto": cmd_pareto, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    from space import SpaceError
    from trainer import DataError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (SpecError, SpaceError, DataError) as err:
        print(f"archscale: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and the like
        return EXIT_OK
    except KeyboardInterrupt:
        print("archscale: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a failure while running: one line, traceback only on request
        if os.environ.get("ARCHSCALE_DEBUG"):
            raise
        print(f"archscale: failed: {type(err).__name__}: {err} (set ARCHSCALE_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
