"""``report.html``: one self-contained page about a run (every image inlined as a data URI).

Sections: the run at a glance, the spec, the Pareto front (table and plot), hypervolume over
trials, learning curves of the front's trials, what the winner gets wrong on the test split
(accuracy per class, confusion matrix, most confident mistakes), the effect of each searched choice on accuracy
(values against accuracy, and Optuna's parameter importances when the caller computed them:
this layer does not import Optuna), the compound-scaling plot for runs whose architectures
carry ``phi``, and every trial.
"""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from archscale.analysis.export import RESULT_FILE, read_history, trial_dir
from archscale.analysis.figures import pyplot
from archscale.analysis.mistakes import Mistakes, plot_confusion, plot_wrong
from archscale.analysis.hypervolume import bounds, front_hypervolume, hypervolume_history, plot_hypervolume
from archscale.analysis.pareto import Objective, axis_label, pareto_front, plot_pareto, short_ids
from archscale.analysis.proxyrank import describe, proxy_ranking, recorded
from archscale.analysis.records import read_trials
from archscale.analysis.runspec import load_run_spec
from archscale.files import read_json_object
from archscale.space import Arch
from archscale.spec import Spec

REPORT_FILE = "report.html"
# Architecture parameters that mark a compound-scaling run (EfficientNet: d = alpha^phi,
# w = beta^phi, r = gamma^phi). ``phi`` is required; the others group the curves.
SCALING_PARAMS = ("phi", "alpha", "beta", "gamma")


# --------------------------------------------------------------------------- figures


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _png_of(draw: Callable[[Path], object]) -> str:
    """Base64 PNG of a plotting function that writes to a path."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "figure.png"
        draw(path)
        return base64.b64encode(path.read_bytes()).decode("ascii")


def trained_provenance(run_dir: str | Path, trials: pd.DataFrame) -> dict:
    """The provenance the first completed trial recorded when it trained ({} when none did)."""
    for trial_id in trials.loc[trials["status"] == "completed", "trial_id"].astype(str):
        path = trial_dir(run_dir, trial_id) / RESULT_FILE
        if path.is_file():
            prov = read_json_object(path, "a trial's result.json written by archscale").get("provenance")
            if prov:
                return prov
    return {}


def history_of(run_dir: str | Path, trial_id: str) -> list[dict]:
    """Per-epoch metrics a completed trial saved (empty when none were)."""
    path = trial_dir(run_dir, trial_id) / RESULT_FILE
    if not path.is_file():
        return []
    return read_history(path)


def plot_learning_curves(run_dir: str | Path, trials: pd.DataFrame, labels: Mapping[str, str]):
    """Validation accuracy and training loss per epoch of ``trials`` (a figure), or None."""
    plt = pyplot()
    curves = {str(t): history_of(run_dir, str(t)) for t in trials["trial_id"]}
    curves = {t: h for t, h in curves.items() if h}
    if not curves:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for i, (trial_id, hist) in enumerate(curves.items()):
        epochs = [h.get("epoch", n + 1) for n, h in enumerate(hist)]
        label = labels.get(trial_id, trial_id)
        left.plot(epochs, [h.get("val_accuracy") for h in hist], marker="o", ms=3, color=f"C{i % 10}", label=label)
        right.plot(epochs, [h.get("train_loss") for h in hist], marker="o", ms=3, color=f"C{i % 10}", label=label)
    left.set_xlabel("epoch")
    left.set_ylabel("val_accuracy")
    right.set_xlabel("epoch")
    right.set_ylabel("train_loss (cross-entropy)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, title="trial", title_fontsize=7)
    fig.tight_layout()
    return fig


def plot_choice_effects(trials: pd.DataFrame, choices: Sequence[str], metric: str = "val_accuracy"):
    """One panel per searched choice: ``metric`` of every completed trial against the
    choice's value (jittered dots and the mean per value for categories), or None."""
    plt = pyplot()
    done = trials[trials["status"] == "completed"].dropna(subset=[metric])
    choices = [c for c in choices if c in done.columns]
    if done.empty or not choices:
        return None
    cols = min(3, len(choices))
    rows = math.ceil(len(choices) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), dpi=110, squeeze=False)
    rng = np.random.default_rng(0)
    for ax, choice in zip(axes.flat, choices):
        values = done[choice]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        levels = sorted(values.dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
        if numeric and len(levels) > 6:
            ax.scatter(values, done[metric], s=14, alpha=0.7)
        else:
            pos = {v: i for i, v in enumerate(levels)}
            x = values.map(pos).to_numpy(dtype=float) + rng.uniform(-0.12, 0.12, len(values))
            ax.scatter(x, done[metric], s=14, alpha=0.7)
            means = done.groupby(choice)[metric].mean()
            ax.scatter([pos[v] for v in means.index], means.to_numpy(), marker="_", s=400, c="tab:red", label="mean")
            ax.set_xticks(range(len(levels)), [str(v) for v in levels], fontsize=7)
            ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_title(choice, fontsize=9)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(choices):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_importances(importances: Mapping[str, float], title: str):
    plt = pyplot()
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(items) + 1.2), dpi=110)
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.annotate(f"{v:.3f}", (v, i), textcoords="offset points", xytext=(3, -3), fontsize=7)
    ax.set_xlabel("importance (fraction of the variance explained)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def scaling_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed trials with their compound-scaling parameters (from the trial's columns or
    its architecture text), or an empty frame when the run is not a compound-scaling run."""
    done = trials[trials["status"] == "completed"]
    rows = []
    for _, row in done.iterrows():
        params: dict = {}
        if isinstance(row.get("arch"), str):
            try:
                params = dict(Arch.from_text(row["arch"]).params)
            except ValueError:
                params = {}
        values = {p: row[p] if p in row and pd.notna(row[p]) else params.get(p) for p in SCALING_PARAMS}
        if values["phi"] is None:
            continue
        rows.append({"trial_id": row["trial_id"], **values, "val_accuracy": row.get("val_accuracy"),
                     "macs": row.get("macs"), "params": row.get("params")})
    return pd.DataFrame(rows)


def plot_scaling(table: pd.DataFrame):
    """Accuracy and MACs against phi, one line per (alpha, beta, gamma); the MACs panel also
    draws the growth compound scaling predicts, (alpha * beta^2 * gamma^2)^phi, from each
    group's smallest phi."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)

    def known(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and not pd.isna(v)

    groups: dict[tuple, list[int]] = {}
    for idx, row in table.iterrows():
        key = tuple(row[c] if known(row.get(c)) else None for c in ("alpha", "beta", "gamma"))
        groups.setdefault(key, []).append(idx)
    for i, (key, rows) in enumerate(groups.items()):
        part = table.loc[rows].sort_values("phi")
        label = ", ".join(f"{n}={v:g}" for n, v in zip(("alpha", "beta", "gamma"), key) if v is not None) or "all trials"
        colour = f"C{i % 10}"
        left.plot(part["phi"], part["val_accuracy"], marker="o", color=colour, label=label)
        right.plot(part["phi"], part["macs"], marker="o", color=colour, label=f"{label}: measured")
        if all(v is not None for v in key) and len(part) > 1:
            a, b, g = key
            phi0, macs0 = float(part["phi"].iloc[0]), float(part["macs"].iloc[0])
            grid = np.linspace(float(part["phi"].min()), float(part["phi"].max()), 50)
            right.plot(grid, macs0 * (a * b * b * g * g) ** (grid - phi0), ls="--", color=colour, alpha=0.7,
                       label=f"{label}: (alpha*beta^2*gamma^2)^phi")
    left.set_xlabel("phi")
    left.set_ylabel("val_accuracy")
    right.set_xlabel("phi")
    right.set_ylabel(axis_label("macs"))
    right.set_yscale("log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- page


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f2f2f2; }
td.arch, th.arch { text-align: left; font-family: monospace; font-size: 0.85em; word-break: break-all; min-width: 24em; }
pre { background: #f7f7f7; border: 1px solid #e2e2e2; padding: 0.8em; overflow-x: auto; font-size: 0.82em; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #666; font-size: 0.88em; } .muted { color: #888; }
"""


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else (f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}")
        return html.escape(str(v))

    head = "".join(f'<th class="{"arch" if c == "arch" else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"arch" if c == "arch" else ""}">{fmt(v)}</td>' for c, v in row.items()) + "</tr>"
        for _, row in df.iterrows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(run_dir: str | Path, out: str | Path | None = None, *, objectives: Sequence[Objective],
                 choices: Sequence[str], reference: Mapping[str, float] | None = None,
                 importances: Mapping[str, float] | None = None, importance_note: str = "",
                 mistakes: Mistakes | str | None = None) -> Path:
    """Write the run's ``report.html`` (default ``RUN_DIR/report.html``) and return its path.

    ``objectives`` are (metric, "max" | "min") pairs and ``choices`` the trials.csv columns of
    the searched choices (``train.*`` ones included), both as the validated spec gives them
    (``spec.search.objective_pairs()``, ``[d.name for d in spec.searched()]``);
    ``reference`` (metric -> value) defaults to what the spec implies (:mod:`.reference`);
    ``importances`` (choice -> importance, e.g. Optuna's) are drawn when given, else
    ``importance_note`` says why there are none; ``mistakes`` (the winner's, from
    :meth:`archscale.runs.Run.mistakes`, or why there are none) gets a section. The run's ``spec.yaml`` is read as the
    typed spec (:func:`~archscale.analysis.runspec.load_run_spec`).
    """
    run_dir = Path(run_dir)
    spec = load_run_spec(run_dir)
    trials = read_trials(run_dir)
    objectives, choices = list(objectives), list(choices)
    if reference is None:
        from archscale.analysis.reference import reference_point

        reference = reference_point(spec, objectives)
    reference = dict(reference)
    front = pareto_front(trials, objectives)
    sections = [
        _summary_section(run_dir, spec, trials, objectives),
        "<h2>Spec</h2><pre>" + html.escape(yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None,
                                                          width=100)) + "</pre>",
        *_front_section(trials, front, objectives, spec.name),
        *_hypervolume_section(trials, objectives, reference, spec.name),
        *_curves_section(run_dir, trials, front),
        *(_mistakes_section(mistakes) if mistakes is not None else []),
        *_choices_section(trials, choices, importances, importance_note),
        *_proxies_section(trials, spec),
        *_scaling_section(trials),
        _trials_section(trials, choices),
    ]
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>archscale report: {html.escape(spec.name)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")
    path = Path(out) if out else run_dir / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


def _summary_section(run_dir: Path, spec: Spec, trials: pd.DataFrame, objectives: Sequence[Objective]) -> str:
    """The title and the run at a glance: where, when, trained with what, trials by status."""
    counts = trials["status"].value_counts()
    summary = ", ".join(f"{int(counts[s])} {s}" for s in ("completed", "pruned", "infeasible", "failed") if s in counts)
    prov = trained_provenance(run_dir, trials)
    return (
        f"<h1>archscale report: {html.escape(spec.name)}</h1>"
        f"<p class='note'>{html.escape(str(run_dir.resolve()))} &middot; generated "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} &middot; trained with archscale "
        f"{html.escape(str(prov.get('archscale')))} at commit {html.escape(str(prov.get('commit'))[:12])}"
        f"{' (dirty)' if prov.get('dirty') else ''}, torch {html.escape(str(prov.get('torch')))} on "
        f"{html.escape(str(prov.get('device')))}</p>"
        f"<p>{len(trials)} trials: {summary}. Family <b>{html.escape(spec.space.family)}</b> "
        f"on <b>{html.escape(spec.data.dataset)}</b>, sampler "
        f"<b>{html.escape(spec.search.sampler)}</b>, objectives "
        f"<b>{html.escape(', '.join(f'{m}:{d}' for m, d in objectives))}</b>. "
        f"<span class='muted'>macs: multiply-adds per image (fvcore); latency_ms: median batch-1 inference on the "
        f"trial's device.</span></p>")


def _front_section(trials: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[Objective], name: str) -> list[str]:
    """The front's table (objectives, accuracies, costs, arch) and plot."""
    cols = ["trial_id", *dict.fromkeys([m for m, _ in objectives] + ["val_accuracy", "test_accuracy", "params", "macs",
                                                                      "latency_ms", "memory_mb", "train_seconds"]),
            "arch"]
    cols = [c for c in cols if c in front.columns]
    completed = int(trials["status"].value_counts().get("completed", 0))
    return [f"<h2>Pareto front ({len(front)} of {completed} completed trials)</h2>",
            _table(front[cols]) if not front.empty else "<p>No completed trial: the front is empty.</p>",
            _img(_png_of(lambda p: plot_pareto(trials, objectives, p, title=f"{name}: Pareto front")), "Pareto front")]


def _hypervolume_section(trials: pd.DataFrame, objectives: Sequence[Objective], reference: Mapping[str, float],
                         name: str) -> list[str]:
    """The front's hypervolume and its growth over trials, or why there is none."""
    out = ["<h2>Hypervolume over trials</h2>"]
    try:
        b = bounds(trials, objectives, reference)
        raw, norm = front_hypervolume(trials, objectives, b)
        hist = hypervolume_history(trials, objectives, b)
        out.append(f"<p>Hypervolume of the front: <b>{norm:.4f}</b> normalised ({raw:.6g} raw); "
                   f"{html.escape(b.describe())}.</p>")
        out.append(_img(_png_of(lambda p: plot_hypervolume({name: hist}, p, note=b.describe())),
                        "Hypervolume over trials"))
    except ValueError as err:
        out.append(f"<p class='note'>{html.escape(str(err))}</p>")
    return out


def _curves_section(run_dir: Path, trials: pd.DataFrame, front: pd.DataFrame) -> list[str]:
    """Learning curves of the front's trials, labelled by their short ids."""
    labels = dict(zip(trials["trial_id"].astype(str), short_ids(trials["trial_id"].tolist())))
    fig = plot_learning_curves(run_dir, front, labels) if not front.empty else None
    return ["<h2>Learning curves of the front's trials</h2>",
            _img(_png(fig), "Learning curves") if fig is not None
            else "<p class='note'>No per-epoch history saved for the front's trials.</p>"]


def _mistakes_section(m: Mistakes | str) -> list[str]:
    """Per-class test accuracy, the confusion matrix and the most confident mistakes of the winner."""
    if isinstance(m, str):
        return ["<h2 id='mistakes'>What the winner gets wrong</h2>", f"<p class='note'>Not shown: {html.escape(m[:500])}</p>"]
    head = f"<h2 id='mistakes'>What the winner gets wrong (trial {html.escape(m.trial_id)})</h2>"
    recorded = (f" (recorded when it trained: {m.recorded_accuracy:.4f})" if m.recorded_accuracy is not None else "")
    table = pd.DataFrame(m.per_class(), columns=["class", "test images", "right", "accuracy"])
    wrong = plot_wrong(m)
    return [head,
            f"<p>Test accuracy recomputed from its weights: {m.accuracy:.4f}{recorded}; "
            f"{int((m.labels != m.predicted).sum())} of {len(m.labels)} test images wrong.</p>",
            "<h3>Accuracy per class, worst first</h3>", _table(table),
            "<h3>Confusion matrix</h3>", _img(_png(plot_confusion(m)), "Confusion matrix"),
            "<h3>Most confident mistakes</h3>",
            _img(_png(wrong), "Test images the winner gets most confidently wrong") if wrong is not None
            else "<p class='note'>It gets every test image right.</p>"]


def _choices_section(trials: pd.DataFrame, choices: Sequence[str], importances: Mapping[str, float] | None,
                     importance_note: str) -> list[str]:
    """The searched choices: their importances (when given) and accuracy against each choice's values."""
    out = ["<h2>Effect of each searched choice on accuracy</h2>",
           f"<p>Searched choices: {html.escape(', '.join(choices)) or 'none'}.</p>"]
    if importances:
        title = f"Parameter importances for val_accuracy (Optuna: {importance_note or 'fANOVA'})"
        ranked = ", ".join(f"{k} {v:.3f}" for k, v in sorted(importances.items(), key=lambda kv: -kv[1]))
        out.append(f"<p>{html.escape(title)}: {html.escape(ranked)}. <span class='muted'>With few trials "
                   "these are rough; they apportion the variance of val_accuracy among the choices.</span></p>")
        out.append(_img(_png(plot_importances(importances, "Parameter importances for val_accuracy (Optuna)")),
                        "Parameter importances"))
    else:
        out.append(f"<p class='note'>Parameter importances: {html.escape(importance_note or 'not computed')}.</p>")
    fig = plot_choice_effects(trials, choices)
    out.append(_img(_png(fig), "val_accuracy by choice") if fig is not None
               else "<p class='note'>No searched choice with completed trials.</p>")
    return out


def _proxies_section(trials: pd.DataFrame, spec: Spec) -> list[str]:
    """How each training-free proxy the run recorded (``search.proxies``) ranks its trained
    configurations, against ``params`` and ``macs`` (:mod:`.proxyrank`); a note when none was."""
    out = ["<h2>How the training-free proxies rank this run</h2>"]
    if not recorded(trials):
        return out + ["<p class='note'>No proxy was recorded. <code>search.proxies: [grad_norm, synflow, zico, "
                      "naswot]</code> computes them for every trial (a second or less each), and this section then "
                      "says which ranks your space as training does, before you trust one with "
                      "<code>search.prescreen</code>.</p>"]
    table = proxy_ranking(trials)
    shown = table.assign(**{c: table[c].round(3) for c in ("spearman", "kendall", "seconds")},
                         p=table["p"].map(lambda v: f"{v:.3g}" if v == v else ""))
    return out + [f"<p>{html.escape(describe(table, prescreened=spec.search.prescreen is not None))}</p>",
                  "<p class='muted'>Spearman's rho and Kendall's tau-b between each proxy and val_accuracy over the "
                  "completed trials; p: one-sided, that the proxy ranks with the accuracy. params and macs are the "
                  "baselines a proxy must beat; seconds: the proxy's median time a trial.</p>",
                  _table(shown)]


def _scaling_section(trials: pd.DataFrame) -> list[str]:
    """Accuracy and MACs against phi, for a compound-scaling run; nothing for others."""
    scaling = scaling_table(trials)
    if scaling.empty:
        return []
    return ["<h2>Compound scaling</h2>", _img(_png(plot_scaling(scaling)), "Compound scaling"), _table(scaling)]


def _trials_section(trials: pd.DataFrame, choices: Sequence[str]) -> str:
    """Every trial, folded."""
    every = [c for c in ["trial_id", "status", *choices, "params", "macs", "latency_ms", "val_accuracy",
                         "test_accuracy", "train_seconds", "epochs", "error"] if c in trials.columns]
    return (f"<h2>All trials</h2><details><summary>{len(trials)} trials in the order they finished"
            f"</summary>{_table(trials[every])}</details>")
