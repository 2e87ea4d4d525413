"""Analysis: cost of models, Pareto fronts, plots, trials.csv, export and reload of architectures."""

from analysis.cost import Cost, activation_mb, count_macs, count_params, cuda_peak_mb, measure, training_memory_mb
from analysis.export import export_trial, load_exported, read_exported
from analysis.pareto import best_trial, non_dominated, pareto_front, parse_objectives, plot_pareto
from analysis.records import read_trials

__all__ = [
    "Cost", "activation_mb", "count_macs", "count_params", "cuda_peak_mb", "measure", "training_memory_mb",
    "export_trial", "load_exported", "read_exported",
    "best_trial", "non_dominated", "pareto_front", "parse_objectives", "plot_pareto",
    "read_trials",
]
