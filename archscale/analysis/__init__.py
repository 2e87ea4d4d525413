"""Analysis: cost of models, Pareto fronts, plots, trials.csv, export and reload of architectures.

Each name is imported from its module when first used (PEP 562), so that reading a file
(:mod:`archscale.files`) loads neither torch (:mod:`~archscale.analysis.cost`,
:mod:`~archscale.analysis.export`) nor pandas (:mod:`~archscale.analysis.records`)."""

from __future__ import annotations

from archscale import lazy_exports

_MODULE_OF = {
    **dict.fromkeys(("Cost", "activation_mb", "count_macs", "count_params", "measure"), "cost"),
    **dict.fromkeys(("export_trial", "load_exported", "read_exported"), "export"),
    **dict.fromkeys(("best_trial", "non_dominated", "pareto_front", "parse_objectives", "plot_pareto"), "pareto"),
    "read_trials": "records",
    "load_run_spec": "runspec",
}

__all__ = [
    "Cost", "activation_mb", "count_macs", "count_params", "measure",
    "export_trial", "load_exported", "read_exported",
    "best_trial", "non_dominated", "pareto_front", "parse_objectives", "plot_pareto",
    "read_trials", "load_run_spec",
]

__getattr__, __dir__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _MODULE_OF.items()},
                                   globals())
