"""Budget-aware sampling: a configuration over a budget is caught before it becomes a trial.

:class:`FeasibleSearch` wraps a Ray Tune searcher (OptunaSearch). Each suggestion is built
and measured on the driver (params, MACs: milliseconds for small models); one over a
budget is recorded ``infeasible`` in trials.csv, told to the sampler as a worst-accuracy
point so it learns to avoid the region, and the searcher is asked again. So
``num_trials`` counts configurations that train, and no trial slot is spent on one that
could never be trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from archscale.analysis.cost import measure
from archscale.analysis.records import TrialsCSV
from archscale.search.trial import REJECTED_SUFFIX, TrialContext, batch_memory, budget_violation, has_constraint, resolve_arch
from archscale.space import SpaceError, build, get_space

MAX_REDRAWS = 100  # after this many infeasible draws in a row, let the next one through as a trial


class FeasibleSearch(Searcher):
    def __init__(self, searcher: Searcher, ctx: TrialContext, csv_path: str | Path, choices: list[str],
                 objectives: list[tuple[str, str]], quiet: bool = False):
        self.searcher = searcher
        self.ctx = ctx
        self.csv_path = str(csv_path)
        self.choices = list(choices)
        self.objectives = list(objectives)
        self.quiet = quiet
        self.rejected = 0
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def _violation(self, config: dict) -> tuple[str | None, dict]:
        ctx = self.ctx
        budgets = ctx.max_params is not None or ctx.max_macs is not None or ctx.max_memory_mb is not None
        if not budgets and not has_constraint(ctx.family):
            return None, {}
        try:
            arch = resolve_arch(ctx, config)
        except SpaceError as err:
            return (str(err), {}) if budgets else (None, {})  # without budgets the trial itself reports it
        if not budgets:  # only the family's search constraint (efficientnet's alpha*beta^2*gamma^2)
            why = get_space(arch.family).constraint_violation(arch.params)
            return why, ({"arch": arch.text} if why else {})
        shape = (1, ctx.data_context["in_channels"], ctx.data_context["image_size"], ctx.data_context["image_size"])
        model = build(arch)
        cost = measure(model, shape, batch_size=int(ctx.train["batch_size"]))
        memory, source = cost.activation_mb, "cpu_estimate"
        if ctx.max_memory_mb is not None:
            memory, source = batch_memory(ctx, model, shape, ctx.train, str(ctx.train.get("device", "auto")),
                                          cost.activation_mb)
        metrics = {"params": cost.params, "macs": cost.macs, "memory_mb": memory, "memory_source": source,
                   "arch": arch.text}
        return budget_violation(ctx, cost.params, cost.macs, memory_mb=memory, memory_source=source, arch=arch), metrics

    def suggest(self, trial_id: str):
        for draw in range(MAX_REDRAWS):
            config = self.searcher.suggest(trial_id if draw == 0 else f"{trial_id}_x{draw}")
            if config is None or config == Searcher.FINISHED or draw == MAX_REDRAWS - 1:
                return config
            why, metrics = self._violation(config)
            if why is None:
                if draw:  # the accepted draw was asked under another id: move it to this trial's
                    self._rename(f"{trial_id}_x{draw}", trial_id)
                return config
            draw_id = trial_id if draw == 0 else f"{trial_id}_x{draw}"
            self._reject(draw_id, config, why, metrics)
        return None

    def _rename(self, old: str, new: str) -> None:
        trials = getattr(self.searcher, "_ot_trials", None)
        if trials is not None and old in trials:
            trials[new] = trials.pop(old)

    def _reject(self, draw_id: str, config: dict, why: str, metrics: dict) -> None:
        self.rejected += 1
        row_id = f"{draw_id}{REJECTED_SUFFIX}"
        TrialsCSV(self.csv_path, self.choices).append({
            "trial_id": row_id, "status": "infeasible", **{k: config.get(k) for k in self.choices},
            **metrics, "epochs": 0, "error": why})
        penalty = {m: (0.0 if d == "max" else float("inf")) for m, d in self.objectives}
        penalty.update({k: metrics[k] for k in ("params", "macs", "memory_mb") if k in metrics})
        self.searcher.on_trial_complete(draw_id, result=penalty, error=False)
        if not self.quiet:
            print(f"[skipped] infeasible configuration, not trained: {why}", flush=True)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def add_evaluated_point(self, *args: Any, **kwargs: Any):
        return self.searcher.add_evaluated_point(*args, **kwargs)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def get_state(self) -> dict:
        return {"rejected": self.rejected}

    def set_state(self, state: dict) -> None:
        self.rejected = state.get("rejected", 0)
