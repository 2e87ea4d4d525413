"""Datasets and a fast training/evaluation loop. Imports space and torch only."""

from archscale.trainer.data import DATASETS, DataError, Dataset, Splits, dataset_context, load_dataset, split
from archscale.trainer.train import RECIPES, TrainConfig, TrainingDiverged, TrainResult, evaluate, normalise, resolve_device, train

__all__ = [
    "DATASETS", "DataError", "Dataset", "Splits", "dataset_context", "load_dataset", "split",
    "RECIPES", "TrainConfig", "TrainingDiverged", "TrainResult", "evaluate", "normalise", "resolve_device", "train",
]
