"""A run directory from Python: :class:`Run` (its spec, trials, front, hypervolume, the
``pareto`` text, report and export) and :func:`objective_pairs`. Imports pandas and the
analysis; :mod:`archscale.api` imports it when a run is opened, so that ``import archscale``
stays light.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np
import pandas as pd
import torch

from archscale.analysis.export import RESULT_FILE, WEIGHTS_FILE, arch_of, export_trial, read_result, trial_dir
from archscale.analysis.mistakes import Mistakes
from archscale.analysis.hypervolume import bounds, completed, front_hypervolume, summarise
from archscale.analysis.pareto import METRICS, PICKS, best_trial, pareto_front, pick_trial, plot_pareto, short_ids
from archscale.analysis.records import TRIALS_FILE, read_trials
from archscale.analysis.reference import reference_point
from archscale.analysis.runspec import load_run_spec
from archscale.analysis.status import Status, run_status
from archscale.files import FileError, fit_state_dict, load_state_dict, require_writable
from archscale.space import build
from archscale.spec import SpecError
from archscale.trainer import load_dataset
from archscale.trainer.batches import normalise

if TYPE_CHECKING:
    from archscale.spec import Spec

PREDICT_BATCH = 256  # test images a forward pass of Run.mistakes takes
ObjectivesLike = Union[str, Sequence[str], Sequence[Sequence[str]], None]


def objective_pairs(objectives: ObjectivesLike, default: Sequence[tuple[str, str]],
                    where: str = "objectives") -> list[tuple[str, str]]:
    """``"val_accuracy:max,macs:min"``, ``["val_accuracy:max", ...]`` or ``[("val_accuracy", "max"), ...]``
    as checked (metric, direction) pairs; ``default`` when None. ``where`` starts each error
    message (``--objectives`` for the command line)."""
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

            self._spec = load_run_spec(self.path)
        return self._spec

    @property
    def trials(self) -> pd.DataFrame:
        """``trials.csv``: one row per finished trial, any status (empty before the first)."""


        if not (self.path / TRIALS_FILE).exists():
            return pd.DataFrame(columns=["trial_id", "status"])
        return read_trials(self.path)

    def _trials_with(self, objectives: list[tuple[str, str]], where: str = "objectives") -> pd.DataFrame:
        trials = self.trials
        missing = [m for m, _ in objectives if m not in trials.columns]
        if missing and len(trials):
            raise SpecError(f"{where}: {self.path}'s trials.csv has no column {missing[0]!r} "
                            "(a run made before that metric was measured)")
        for metric in missing:  # no trial yet: an empty front
            trials[metric] = []
        return trials

    def front(self, objectives: ObjectivesLike = None) -> pd.DataFrame:
        """The completed trials no other dominates, best first by the first objective.
        ``objectives``: ``"val_accuracy:max,macs:min"`` or ``[("val_accuracy", "max"), ...]``
        (1 to 3; default the spec's)."""
        pairs = objective_pairs(objectives, self.spec.search.objective_pairs())
        return pareto_front(self._trials_with(pairs), pairs)

    def hypervolume(self, objectives: ObjectivesLike = None, reference: Mapping[str, float] | None = None) -> float:
        """The front's hypervolume normalised by the box between the ideal point and the
        reference point, as ``archscale pareto`` prints it. ``reference`` (metric -> value)
        overrides what the spec implies (:mod:`archscale.analysis.reference`: its
        ``search.reference_point``, chance accuracy, a budget, the largest cost in the space),
        which overrides the worst completed value of each objective. NaN when no trial completed with every objective."""
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
        b = bounds(trials, pairs, {**reference_point(self.spec, pairs), **(reference or {})})
        return float(front_hypervolume(trials, pairs, b)[1])

    def pareto(self, objectives: ObjectivesLike = None, reference: Mapping[str, float] | None = None,
               plot: str | os.PathLike | None = None, where: str = "objectives") -> str:
        """What ``archscale pareto`` prints, with its files written: the trials' counts and
        the front (:meth:`front`), ``pareto.png`` (or ``plot``), ``hypervolume.png`` beside it
        (the reference as in :meth:`hypervolume`), and for a two-stage run the phi sweep and
        ``scaling.png``. ``where`` starts each error message (``--objectives`` for the command line)."""
        from archscale.search.jobs.compound import SCALING_PLOT, write_scaling
        from archscale.search.jobs.finish import format_front

        spec = self.spec
        path = Path(plot) if plot else self.path / "pareto.png"
        require_output(path, "--plot", "file")
        require_output(path.with_name("hypervolume.png"), "--plot", "file")
        pairs = objective_pairs(objectives, spec.search.objective_pairs(), where=where)
        for metric in reference or {}:
            if metric not in METRICS:
                raise SpecError(f"--reference: {metric!r} must be METRIC=VALUE with METRIC one of {', '.join(METRICS)}")
        trials = self._trials_with(pairs, where)
        front = self.front(pairs)
        labels = dict(zip(trials["trial_id"].astype(str), short_ids(trials["trial_id"].tolist())))
        lines = [format_front(trials, front, pairs, [d.name for d in spec.searched()])]
        lines += [f"  {labels[str(row['trial_id'])]}: {row['arch']}" for _, row in front.iterrows()]
        plot_pareto(trials, pairs, path, title=f"{spec.name}: Pareto front")
        lines.append(f"plot: {path}")
        hv_plot = path.with_name("hypervolume.png")
        line = summarise(trials, pairs, {**reference_point(spec, pairs),
                                         **{m: (v, "--reference") for m, v in (reference or {}).items()}},
                         hv_plot, spec.name)
        if line:
            lines.append(f"{line}\nhypervolume over trials: {hv_plot}")
        if spec.search.stages is not None:  # a two-stage compound-scaling run: the phi sweep and scaling.png
            sweep = io.StringIO()
            write_scaling(self.path, spec, out=sweep, path=path.parent / SCALING_PLOT)
            lines.append(sweep.getvalue().rstrip())
        return "\n".join(lines)

    def status(self) -> Status:
        """Where the run stands now, from its directory alone (``archscale status``; see
        :mod:`archscale.analysis.status`): trials finished, running and left, the best so far and
        the front under the spec's objectives, the time and an estimate, and whether its
        process is alive (``RUN/process.json``). ``str()`` of it is what the command prints."""
        pairs = self.spec.search.objective_pairs()
        trials = self._trials_with(pairs)
        return run_status(self.path, self.spec, trials, pareto_front(trials, pairs), best_trial(trials, pairs))

    @property
    def best(self) -> pd.Series | None:
        """The winner's row (on the front of the spec's objectives, best in the first), or
        None when no trial completed."""
        pairs = self.spec.search.objective_pairs()
        return best_trial(self._trials_with(pairs), pairs)

    def _choose(self, pick: str | None, trial: str | None) -> tuple[pd.Series, str]:
        """The row to export and how it was chosen."""
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
        row, how = self._choose(pick, trial)
        folder = Path(out) if out is not None else self.path / "best"
        require_output(folder, "--out", "folder")
        spec = self.spec
        return export_trial(self.path, str(row["trial_id"]), folder, onnx=onnx,
                            extra={"spec": spec.name, "objectives": spec.search.objectives, "picked_by": how})

    def report(self, out: str | os.PathLike | None = None, objectives: ObjectivesLike = None,
               where: str = "objectives") -> Path:
        """Write the run's one-page ``report.html`` (default ``RUN/report.html``), as
        ``archscale report`` does, and return its path. ``objectives``: the front's (default: the spec's)."""
        from archscale.search.sampling.importance import param_importances

        spec = self.spec
        if out is not None:
            require_output(out, "--out", "file")
        pairs = objective_pairs(objectives, spec.search.objective_pairs(), where=where)
        trials = self._trials_with(pairs, where)
        importances, note = param_importances(spec, trials)
        winner = self.best
        mistakes = None
        if winner is not None:
            try:
                mistakes = self.mistakes(str(winner["trial_id"]))
            except Exception as err:  # noqa: BLE001: weights or data gone, a family's module missing: said in the page
                mistakes = f"trial {winner['trial_id']}: {type(err).__name__}: {err}"
        from archscale.analysis.report import write_report  # scipy's statistics: only for a report

        return write_report(self.path, out, objectives=pairs,
                            choices=[d.name for d in spec.searched()], reference=None,
                            importances=importances, importance_note=note, mistakes=mistakes)

    def mistakes(self, trial: str | None = None, device: str = "cpu") -> Mistakes:
        """What a trial (default: the winner) gets wrong on the run's test split: its weights
        run on the test images of the spec's dataset, normalised as it trained
        (:class:`~archscale.analysis.mistakes.Mistakes`: per-class accuracy, the confusion
        matrix, the most confident mistakes)."""
        if trial is None:
            row = self.best
            if row is None:
                raise SpecError(f"{self.path}: no completed trial to judge")
            trial = str(row["trial_id"])
        folder = trial_dir(self.path, trial)
        result = read_result(folder / RESULT_FILE)
        model = build(arch_of(result["arch"], folder / RESULT_FILE, "arch"))
        fit_state_dict(model, load_state_dict(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE, arch_from=RESULT_FILE)
        dev = torch.device(device)
        model.eval().to(dev)
        spec = self.spec
        data = load_dataset(spec.data.dataset, spec.data.root, spec.data.image_size, progress=False)
        logits = []
        with torch.no_grad():
            for start in range(0, len(data.y_test), PREDICT_BATCH):
                x = normalise(data.x_test[start:start + PREDICT_BATCH], result["mean"], result["std"], dev)
                logits.append(model(x).float().cpu())
        probs = torch.cat(logits).softmax(1) if logits else torch.zeros(0, data.num_classes)
        confidence, predicted = probs.max(1)
        names = list(data.classes or result.get("classes") or [str(i) for i in range(data.num_classes)])
        recorded = (result.get("metrics") or {}).get("test_accuracy")
        return Mistakes(str(trial), names, data.y_test.numpy().astype(np.int64), predicted.numpy().astype(np.int64),
                        confidence.numpy(), data.x_test, float(recorded) if recorded is not None else None)


def require_output(path: Any, what: str, kind: str) -> None:
    """SpecError naming ``what`` and the absolute path when ``path`` cannot be written as a ``kind``."""
    try:
        require_writable(path, what, kind)
    except FileError as err:
        raise SpecError(str(err)) from None
