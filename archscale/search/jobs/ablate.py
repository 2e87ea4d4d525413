"""``archscale ablate``: the spec's base architecture trained with no technique, with each
technique alone, and with all of them, over several seeds — seed 000's "isolated vs
combined techniques" as one command. Trials go through the same Ray Tune dispatch as a
search (a grid over variant x seed), so they run in parallel.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import yaml
from ray import tune

from archscale.analysis.figures import pyplot, save_figure
from archscale.analysis.pareto import best_trial
from archscale.analysis.records import read_trials
from archscale.analysis.runspec import load_run_spec
from archscale.search.configs.context import TRAIN_PREFIX, native
from archscale.search.dispatch.trial import run_trial
from archscale.search.jobs.job import Job, read_data, verbosity
from archscale.space import CONTEXT_PARAMS, Arch, get_space
from archscale.spec import Spec, SpecError


@dataclass(frozen=True)
class Technique:
    name: str
    section: str  # "space" (an architecture parameter) or "train" (a recipe field)
    key: str
    on: Any  # value that turns it on (overridable: --techniques mixup=0.4)
    off: Any  # value of the baseline
    doc: str


TECHNIQUES = {t.name: t for t in (
    Technique("blurpool", "space", "blurpool", True, False, "anti-aliased downsampling"),
    Technique("se", "space", "se_ratio", 0.25, 0.0, "squeeze-excite"),
    Technique("ghost_bn", "space", "norm", "ghost", "batch", "ghost BatchNorm"),
    Technique("celu", "space", "activation", "celu", "relu", "CELU activations"),
    Technique("crop", "train", "crop_padding", 2, 0, "random crops"),
    Technique("flip", "train", "flip", True, False, "random flips"),
    Technique("cutout", "train", "cutout", 8, 0, "cutout"),
    Technique("mixup", "train", "mixup", 0.2, 0.0, "mixup"),
    Technique("label_smoothing", "train", "label_smoothing", 0.1, 0.0, "label smoothing"),
    Technique("sam", "train", "sam_rho", 0.05, 0.0, "sharpness-aware minimisation"),
    Technique("swa", "train", "swa", True, False, "stochastic weight averaging"),
    Technique("ema", "train", "ema", 0.999, 0.0, "EMA of weights"),
    Technique("tta", "train", "tta", True, False, "test-time flip augmentation"),
    Technique("onecycle", "train", "schedule", "onecycle", "constant", "one-cycle LR"),
)}


def parse_techniques(text: str) -> list[Technique]:
    """``"blurpool,mixup=0.4"`` -> techniques, with on-values overridden where given."""
    chosen = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, eq, value = item.partition("=")
        if name not in TECHNIQUES:
            raise SpecError(f"--techniques: unknown technique {name!r}; allowed: {', '.join(TECHNIQUES)}")
        tech = TECHNIQUES[name]
        if eq:
            tech = Technique(tech.name, tech.section, tech.key, yaml.safe_load(value), tech.off, tech.doc)
        chosen.append(tech)
    if not chosen:
        raise SpecError("--techniques: name at least one technique")
    if len({t.name for t in chosen}) != len(chosen):
        raise SpecError("--techniques: a technique is named twice")
    return chosen


def base_values(spec: Spec) -> dict[str, Any]:
    """The spec's base architecture: fixed values, and each searched choice at its first value."""
    values = spec.space.fixed()
    for d in spec.space.searched():
        values[d.name] = d.values[0] if d.kind == "choice" else d.low
    return values


def variants(techniques: list[Technique], combos: bool) -> dict[str, list[Technique]]:
    """baseline, each alone, (with ``combos``: every pair,) and all together."""
    out: dict[str, list[Technique]] = {"baseline": []}
    out.update({t.name: [t] for t in techniques})
    if combos and len(techniques) > 2:
        out.update({"+".join(t.name for t in pair): list(pair) for pair in itertools.combinations(techniques, 2)})
    if len(techniques) > 1:
        out["all"] = list(techniques)
    return out


def overrides(on: list[Technique], techniques: list[Technique]) -> dict[str, Any]:
    """Configuration of one variant: every listed technique off except those in ``on``."""
    config = {}
    for t in techniques:
        value = t.on if t in on else t.off
        config[t.key if t.section == "space" else TRAIN_PREFIX + t.key] = value
    return config


def variant_trial(config: dict, ctx, splits, table: dict) -> None:
    """Ray Tune trainable: expand ``variant`` into its overrides, then train as a search trial."""
    run_trial({**table[config["variant"]], "variant": config["variant"], "seed": config["seed"]}, ctx, splits)


def run_ablation(spec: Spec, techniques: list[Technique], seeds: int, combos: bool, run_dir: Path,
                 quiet: bool = False, out: TextIO | None = None) -> pd.DataFrame:
    """Train the base architecture with no, each (each pair) and all techniques over ``seeds``."""
    family = get_space(spec.space.family)
    names = set(family.param_names())
    for t in techniques:
        if t.section == "space" and t.key not in names:
            raise SpecError(f"--techniques: {t.name} needs a family with a {t.key!r} parameter; "
                            f"{family.name!r} has none")
    table = {name: overrides(on, techniques) for name, on in variants(techniques, combos).items()}
    return run_variants(spec, base_values(spec), table, seeds, run_dir, "ablation",
                        f"{spec.name}: techniques on {spec.data.dataset}", quiet, out)


def run_repeat(run_dir: Path, trial_id: str | None, seeds: int, out_dir: Path, quiet: bool = False,
               out: TextIO | None = None) -> pd.DataFrame:
    """Retrain one trial of a run (default: its winner) with ``seeds`` seeds."""

    spec = load_run_spec(run_dir)
    trials = read_trials(run_dir)
    if trial_id is None:
        row = best_trial(trials, spec.search.objective_pairs())
        if row is None:
            raise SpecError(f"{run_dir}: no completed trial to repeat")
    else:
        match = trials[trials["trial_id"].astype(str) == trial_id]
        if match.empty:
            raise SpecError(f"--trial {trial_id!r}: no such trial in {run_dir}")
        row = match.iloc[0]
    context = {p.name for p in CONTEXT_PARAMS}
    arch = {k: v for k, v in Arch.from_text(row["arch"]).params.items() if k not in context}
    recipe = {c: native(row[c]) for c in trials.columns if c.startswith(TRAIN_PREFIX)}
    (out or sys.stdout).write(f"repeating trial {row['trial_id']} of {run_dir} over {seeds} seeds: {row['arch']}"
                              + (f" with {recipe}" if recipe else "") + "\n")
    return run_variants(spec, arch, {"repeat": recipe}, seeds, out_dir, "repeat",
                        f"{spec.name}: trial {row['trial_id']} over seeds", quiet, out)


def run_variants(spec: Spec, base: dict[str, Any], table: dict[str, dict], seeds: int, run_dir: Path, kind: str,
                 title: str, quiet: bool = False, out: TextIO | None = None) -> pd.DataFrame:
    """Train ``base`` with each variant's overrides over ``seeds`` seeds (a Ray Tune grid);
    write ``<kind>.csv`` and ``<kind>.png``, print the table."""
    out = out or sys.stdout
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SpecError(f"{run_dir} already holds a run; use --out DIR for a new one")
    data, splits = read_data(spec, progress=not quiet)
    job = Job(spec, run_dir, data, splits, out=out, fixed=base, trainable=variant_trial, table=table)
    job.begin_records()
    total = len(table) * seeds
    progress = job.progress(total, [("val_accuracy", "max")], verbosity(quiet))
    progress.note(f"archscale {kind}: {len(table)} variants x {seeds} seeds = {total} trials of "
                  f"{spec.space.family} on {spec.data.dataset} -> {run_dir}")
    seed_values = [spec.seed + i for i in range(seeds)]
    job.launcher.fit(choices=["variant", "seed"], progress=progress, num_samples=1, max_failures=0,
                     param_space={"variant": tune.grid_search(list(table)), "seed": tune.grid_search(seed_values)})
    if job.stopped:
        job.say_stopped("; the table covers the trials that finished")
    trials = read_trials(run_dir)
    summary = summarise(trials, list(table))
    summary.to_csv(run_dir / f"{kind}.csv", index=False)
    plot_ablation(summary, run_dir / f"{kind}.png", title=title)
    print(format_ablation(summary, trials), file=out)
    return summary


def summarise(trials: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Mean and spread over seeds per variant; deltas against the baseline, in points."""
    rows = []
    done = trials[trials["status"] == "completed"]
    base = done[done["variant"] == "baseline"]
    base_test = base["test_accuracy"].mean() if not base.empty else float("nan")
    for name in order:
        part = done[done["variant"] == name]
        everything = trials[trials["variant"] == name]
        rows.append({
            "variant": name,
            "seeds": len(part),
            "failed": int((everything["status"] != "completed").sum()),
            "params": int(everything["params"].dropna().iloc[0]) if everything["params"].notna().any() else None,
            "macs": int(everything["macs"].dropna().iloc[0]) if everything["macs"].notna().any() else None,
            "val_mean": part["val_accuracy"].mean(),
            "test_mean": part["test_accuracy"].mean(),
            "test_std": part["test_accuracy"].std(ddof=1) if len(part) > 1 else 0.0,
            "test_min": part["test_accuracy"].min(),
            "test_max": part["test_accuracy"].max(),
            "delta_test_pp": 100 * (part["test_accuracy"].mean() - base_test),
            "train_seconds": part["train_seconds"].mean(),
        })
    return pd.DataFrame(rows)


def format_ablation(summary: pd.DataFrame, trials: pd.DataFrame) -> str:
    cols = ["variant", "seeds", "params", "val_mean", "test_mean", "test_std", "test_min", "test_max",
            "delta_test_pp", "train_seconds"]
    table = summary[cols].copy()
    for c in ("val_mean", "test_mean", "test_std", "test_min", "test_max"):
        table[c] = (100 * table[c]).map(lambda v: f"{v:.2f}%")
    table["delta_test_pp"] = table["delta_test_pp"].map(lambda v: f"{v:+.2f}")
    table["train_seconds"] = table["train_seconds"].map(lambda v: f"{v:.1f}")
    done = trials[trials["status"] == "completed"].sort_values(["variant", "seed"])
    per_seed = "; ".join(f"{v} seed {s}: {100 * a:.2f}%" for v, s, a in zip(done["variant"], done["seed"], done["test_accuracy"]))
    return ("test accuracy over seeds (the test split is only reported, never chosen on):\n" + table.to_string(index=False)
            + f"\nper seed: {per_seed}")


def plot_ablation(summary: pd.DataFrame, path: Path, title: str) -> Path:
    fig, ax = pyplot().subplots(figsize=(max(5, 0.8 * len(summary) + 2), 4), dpi=110)
    colors = ["gray" if v == "baseline" else ("tab:green" if d >= 0 else "tab:red")
              for v, d in zip(summary["variant"], summary["delta_test_pp"].fillna(0))]
    ax.bar(summary["variant"], summary["delta_test_pp"], yerr=100 * summary["test_std"].fillna(0), color=colors,
           capsize=4)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("test accuracy vs baseline (points; bars: std over seeds)")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    return save_figure(fig, path)
