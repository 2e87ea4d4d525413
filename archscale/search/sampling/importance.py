"""Optuna's parameter importances for a finished run, from its trials.csv.

The study is rebuilt from the recorded trials (each completed trial added with its sampled
values under the spec's distributions and its validation accuracy), so this works for any run,
resumed or not, and whatever sampler produced it; Optuna's default evaluator (fANOVA) then
apportions the variance of the accuracy among the searched choices.
"""

from __future__ import annotations

import math

import optuna
import pandas as pd

from archscale.search.configs.context import native
from archscale.search.sampling.asktell import optuna_space
from archscale.spec import Spec


def param_importances(spec: Spec, trials: pd.DataFrame, metric: str = "val_accuracy",
                      seed: int = 0) -> tuple[dict[str, float] | None, str]:
    """(importances, note): choice -> importance for ``metric`` over the completed trials, or
    None and the reason they cannot be computed."""

    dims = spec.searched()
    if not dims:
        return None, "the spec searches no choice"
    done = trials[trials["status"] == "completed"].dropna(subset=[metric])
    if len(done) < 2:
        return None, f"{len(done)} completed trial(s); at least 2 are needed"
    if done[metric].nunique() < 2:
        return None, f"every completed trial has the same {metric}"

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = optuna_space(dims)
    study = optuna.create_study(direction="maximize")
    for _, row in done.iterrows():
        params = {d.name: native(row[d.name]) for d in dims if d.name in row and not _missing(row[d.name])}
        if len(params) != len(dims):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(row[metric])))
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as err:
        return None, f"Optuna could not compute them: {err}"
    return dict(importances), f"fANOVA over {len(study.trials)} completed trials"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
