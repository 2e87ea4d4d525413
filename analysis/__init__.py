"""Analysis: cost of models, Pareto fronts, plots, export and reload of architectures."""

from analysis.cost import Cost, activation_mb, count_macs, count_params, measure

__all__ = ["Cost", "activation_mb", "count_macs", "count_params", "measure"]
