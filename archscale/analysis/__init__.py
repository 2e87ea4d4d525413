"""Analysis: cost of models, Pareto fronts, plots, trials.csv, export and reload of architectures.

Each name is imported from its module when first used (PEP 562), so that reading a file
(:mod:`archscale.analysis.files`) loads neither torch (:mod:`~archscale.analysis.cost`,
:mod:`~archscale.analysis.export`) nor pandas (:mod:`~archscale.analysis.records`)."""

from __future__ import annotations

import importlib

_MODULE_OF = {
    **dict.fromkeys(("Cost", "activation_mb", "count_macs", "count_params", "measure"), "cost"),
    **dict.fromkeys(("export_trial", "load_exported", "read_exported"), "export"),
    **dict.fromkeys(("best_trial", "non_dominated", "pareto_front", "parse_objectives", "plot_pareto"), "pareto"),
    "read_trials": "records",
}

__all__ = [
    "Cost", "activation_mb", "count_macs", "count_params", "measure",
    "export_trial", "load_exported", "read_exported",
    "best_trial", "non_dominated", "pareto_front", "parse_objectives", "plot_pareto",
    "read_trials",
]


def __getattr__(name: str):
    """``archscale.analysis.NAME``: imported from its module on first use, then kept here."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
