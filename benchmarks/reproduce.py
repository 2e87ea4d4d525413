"""The seeds' claims next to archscale's own figures: writes ``benchmarks/seeds.md``.

Every row comes from a run this script performs (``archscale run`` of the row's example spec,
timed, with the hardware and date recorded) or from a run directory it is pointed at
(``--from-run ROW=DIR``; then the hardware is what that run recorded, or "not recorded").
Rows whose spec needs a GPU say "not run" on a machine without CUDA; rows whose example spec is
not in this checkout yet say so. Results accumulate in ``benchmarks/seeds.json``, so a later
run on a GPU fills its rows without re-running the others.

    ARCHSCALE_DATA=../shared/data python benchmarks/reproduce.py --only mnist_1p5k,mnist_1p5k_blurpool
    python benchmarks/reproduce.py --quick          # CI-sized: 2 tiny trials, not the claims' setting
    python benchmarks/reproduce.py --from-run mnist_1p5k=runs/mnist_1p5k

Prints the table and ends with one line ``name: value`` (the headline: seed 000's MNIST test
accuracy where that row has a figure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archscale.analysis.records import read_spec, read_trials  # noqa: E402

RESULTS = ROOT / "benchmarks" / "seeds.json"
TABLE = ROOT / "benchmarks" / "seeds.md"
RECORD = "reproduce.json"  # written into each run directory this script performs


# --------------------------------------------------------------------------- figures read from a run


def winner_figure(run_dir: Path) -> tuple[str, dict]:
    """Test accuracy, params and MACs of the run's exported winner (best/metrics.json)."""
    metrics = json.loads((run_dir / "best" / "metrics.json").read_text())
    trials = read_trials(run_dir)
    counts = trials["status"].value_counts().to_dict()
    text = (f"test {100 * metrics['test_accuracy']:.2f}% (val {100 * metrics['val_accuracy']:.2f}%), "
            f"{int(metrics['params']):,} params, {int(metrics['macs']):,} MACs; "
            f"{len(trials)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())}), "
            f"{int(metrics.get('epochs', 0))} epochs")
    return text, {"test_accuracy": metrics["test_accuracy"], "val_accuracy": metrics["val_accuracy"],
                  "params": int(metrics["params"]), "macs": int(metrics["macs"]), "trial_id": metrics["trial_id"]}


def scaling_figure(run_dir: Path) -> tuple[str, dict]:
    """alpha, beta, gamma of the most accurate completed trial that carries them."""
    from archscale.analysis.report import scaling_table

    table = scaling_table(read_trials(run_dir)).dropna(subset=["alpha", "beta", "gamma", "val_accuracy"])
    if table.empty:
        raise ValueError(f"{run_dir}: no completed trial carries alpha, beta and gamma")
    best = table.sort_values("val_accuracy", ascending=False).iloc[0]
    values = {k: float(best[k]) for k in ("alpha", "beta", "gamma")}
    product = values["alpha"] * values["beta"] ** 2 * values["gamma"] ** 2
    return (f"alpha={values['alpha']:g}, beta={values['beta']:g}, gamma={values['gamma']:g} "
            f"(alpha*beta^2*gamma^2={product:.3f}), val {100 * best['val_accuracy']:.2f}% at phi={best['phi']:g}",
            {**values, "val_accuracy": float(best["val_accuracy"])})


@dataclass(frozen=True)
class Row:
    key: str
    seed: str
    claim: str
    spec: str  # example spec, relative to the repository root
    needs_gpu: bool
    figure: Callable[[Path], tuple[str, dict]] = winner_figure
    quick: tuple[str, ...] = field(default=())  # --set overrides for --quick (empty: not in --quick)


ROWS = (
    Row("mnist_1p5k", "000", "MNIST, <= 1.5k params: 98.35% test", "examples/mnist_1p5k.yaml", False,
        quick=("data.dataset=mnist-5k", "data.subset=0.1", "search.num_trials=2", "train.epochs=1",
               "search.max_concurrent=2")),
    Row("mnist_1p5k_blurpool", "000", "MNIST, <= 1.5k params, BlurPool: 99.21% test",
        "examples/mnist_1p5k_blurpool.yaml", False),
    Row("cifar10_140k", "000", "CIFAR-10, 140k params: 79.9% baseline -> 86.76% with BlurPool + cutout + mixup + "
        "label smoothing + SWA + SAM", "examples/cifar10_140k_techniques.yaml", True),
    Row("cifar10_200k", "004", "CIFAR-10, < 200k params, dilated + depthwise convs: > 85% test",
        "examples/cifar10_200k.yaml", True),
    Row("davidnet", "003", "DavidNet (ResNet-9): 94% test at 24 epochs", "examples/cifar10_davidnet_placements.yaml",
        True),
    Row("compound_scaling", "002", "Compound scaling grid search: alpha=1.2, beta=1.1, gamma=1.15 "
        "(alpha*beta^2*gamma^2 ~ 2)", "examples/cifar10_compound_scaling.yaml", True, figure=scaling_figure),
)


# --------------------------------------------------------------------------- hardware and runs


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name(0)}"
        else:
            text += ", no GPU"
    except ImportError:
        pass
    return text


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def perform(row: Row, runs_dir: Path, quick: bool) -> dict:
    """Run the row's spec with ``archscale run`` (as ``python -m archscale``) and record it."""
    run_dir = runs_dir / row.key
    try:
        out_arg = str(run_dir.resolve().relative_to(ROOT))  # the command as run from the repository root
    except ValueError:
        out_arg = str(run_dir.resolve())
    cmd = [sys.executable, "-m", "archscale", "run", row.spec, "--out", out_arg, "--quiet"]
    for override in row.quick if quick else ():
        cmd += ["--set", override]
    shown = " ".join(["archscale", *[shlex.quote(c) for c in cmd[3:]]])
    if os.environ.get("ARCHSCALE_DATA"):
        shown = f"ARCHSCALE_DATA={os.environ['ARCHSCALE_DATA']} {shown}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # A fresh local Ray instance: ray.init() would otherwise join any cluster `ray start` left on
    # this machine (and on a shared machine, trials then die before they start).
    env.setdefault("RAY_ADDRESS", "local")
    start = time.perf_counter()
    started = datetime.now(timezone.utc)
    print(f"running: {shown}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{shown} exited {proc.returncode}: {tail[0]}")
    record = {"command": shown, "hardware": hardware(), "date": started.isoformat(timespec="seconds"),
              "wall_seconds": round(wall, 1), "quick": quick}
    (run_dir / RECORD).write_text(json.dumps(record, indent=1))
    return record


def read_record(run_dir: Path) -> dict:
    """What a run directory says about how it was made."""
    if (run_dir / RECORD).is_file():
        return json.loads((run_dir / RECORD).read_text())
    spec = read_spec(run_dir)
    metrics_file = run_dir / "best" / "metrics.json"
    date = json.loads(metrics_file.read_text()).get("exported_at") if metrics_file.is_file() else None
    return {"command": f"archscale run <spec {spec.get('name')!r}> (run directory read, command not recorded)",
            "hardware": "not recorded", "date": date, "wall_seconds": None, "quick": False}


def measure_row(row: Row, runs_dir: Path, from_run: Path | None, quick: bool) -> dict:
    base = {"key": row.key, "seed": row.seed, "claim": row.claim}
    if from_run is not None:
        record = read_record(from_run)
        text, values = row.figure(from_run)
        return {**base, **record, "figure": text, "values": values, "source": f"read run directory {from_run}"}
    if not (ROOT / row.spec).is_file():
        return {**base, "figure": f"not run: {row.spec} is not in this checkout yet", "source": "not run"}
    if row.needs_gpu and not gpu_available():
        return {**base, "figure": "not run: needs a GPU (none on this machine)", "source": "not run",
                "command": f"archscale run {row.spec}"}
    if quick and not row.quick:
        return {**base, "figure": "not run: not part of --quick", "source": "not run"}
    record = perform(row, runs_dir, quick)
    text, values = row.figure(runs_dir / row.key)
    if quick:
        text = "QUICK CHECK, not the claim's setting: " + text
    return {**base, **record, "figure": text, "values": values, "source": f"performed: {runs_dir / row.key}"}


# --------------------------------------------------------------------------- table


def render(results: dict[str, dict]) -> str:
    lines = [
        "# The seeds' claims and archscale's figures",
        "",
        "Generated by `benchmarks/reproduce.py` (do not edit by hand). Each figure comes from the run",
        "named in its row: performed by the script (command, hardware, date and wall time recorded) or",
        "read from a run directory. \"not run\" rows have no archscale figure yet.",
        "",
        "| seed | claim | archscale | command | hardware | date | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        r = results.get(row.key, {"seed": row.seed, "claim": row.claim, "figure": "not run yet"})
        wall = r.get("wall_seconds")
        wall_text = f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) else ""
        cells = [r.get("seed", row.seed), r.get("claim", row.claim), r.get("figure", ""),
                 f"`{r['command']}`" if r.get("command") else "", r.get("hardware", ""), (r.get("date") or "")[:10],
                 wall_text]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def headline(results: dict[str, dict]) -> str:
    values = results.get("mnist_1p5k", {}).get("values")
    if values and not results["mnist_1p5k"].get("quick"):
        return f"seed000_mnist_1p5k_test_accuracy: {values['test_accuracy']:.4f}"
    measured = sum(1 for r in results.values() if r.get("values"))
    return f"rows_measured: {measured}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated row keys: " + ", ".join(r.key for r in ROWS))
    parser.add_argument("--from-run", action="append", default=[], metavar="ROW=RUN_DIR",
                        help="take a row's figure from an existing run directory (repeatable)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "seeds"), help="where performed runs go")
    parser.add_argument("--quick", action="store_true", help="CI-sized runs of the rows that have a quick form")
    parser.add_argument("--results", default=None, help="results JSON (default benchmarks/seeds.json; "
                                                        "with --quick: RUNS_DIR/seeds.quick.json)")
    parser.add_argument("--out", default=None, help="table (default benchmarks/seeds.md; with --quick: "
                                                    "RUNS_DIR/seeds.quick.md)")
    args = parser.parse_args(argv)

    keys = {r.key for r in ROWS}
    from_run: dict[str, Path] = {}
    for item in args.from_run:
        key, eq, path = item.partition("=")
        if not eq or key not in keys or not (Path(path) / "trials.csv").is_file():
            parser.error(f"--from-run {item!r}: expected ROW=RUN_DIR with ROW one of {', '.join(sorted(keys))} "
                         "and RUN_DIR a run directory")
        from_run[key] = Path(path)
    only = set(args.only.split(",")) if args.only else keys
    if only - keys:
        parser.error(f"--only: unknown rows {', '.join(sorted(only - keys))}; known: {', '.join(r.key for r in ROWS)}")
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    results_path = Path(args.results) if args.results else (runs_dir / "seeds.quick.json" if args.quick else RESULTS)
    out = Path(args.out) if args.out else (runs_dir / "seeds.quick.md" if args.quick else TABLE)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for row in ROWS:
        if row.key not in only and row.key not in from_run:
            continue
        if row.key in results and results[row.key].get("values") and row.key not in from_run and args.only is None:
            continue  # keep a measured row unless asked for it by name
        try:
            result = measure_row(row, runs_dir, from_run.get(row.key), args.quick)
        except (RuntimeError, FileNotFoundError, ValueError, KeyError) as err:
            result = {"key": row.key, "seed": row.seed, "claim": row.claim, "figure": f"failed: {err}", "source": "failed"}
        print(f"{row.key}: {result['figure']}", flush=True)
        if result.get("values") or not results.get(row.key, {}).get("values"):
            results[row.key] = result  # a "not run" never replaces a measured row
    results_path.write_text(json.dumps(results, indent=1, default=str))
    table = render(results)
    out.write_text(table)
    print(table)
    print(headline(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
