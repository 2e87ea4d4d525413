"""Analysis: cost of models, Pareto fronts, plots, trials.csv, export and reload of architectures."""

from archscale.analysis.cost import Cost, activation_mb, count_macs, count_params, measure
from archscale.analysis.export import export_trial, load_exported, read_exported
from archscale.analysis.pareto import best_trial, non_dominated, pareto_front, parse_objectives, plot_pareto
from archscale.analysis.records import read_trials

__all__ = [
    "Cost", "activation_mb", "count_macs", "count_params", "measure",
    "export_trial", "load_exported", "read_exported",
    "best_trial", "non_dominated", "pareto_front", "parse_objectives", "plot_pareto",
    "read_trials",
]
