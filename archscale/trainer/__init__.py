"""Datasets and a fast training/evaluation loop. Imports space and torch only.

Each name is imported from its module when first used (PEP 562): ``from archscale.trainer
import TrainConfig`` loads :mod:`~archscale.trainer.config` alone, without torch, so that a
spec is validated (and ``archscale run`` starts Ray) before torch is imported; ``train`` or
``load_dataset`` load the training loop or the datasets, and torch with them."""

from __future__ import annotations

from archscale import lazy_exports

_MODULE_OF = {
    **dict.fromkeys(("DATASETS", "DataError", "RECIPES", "TrainConfig"), "config"),
    **dict.fromkeys(("Dataset", "Splits"), "arrays"),
    **dict.fromkeys(("dataset_context", "load_dataset", "split"), "data"),
    "normalise": "batches",
    **dict.fromkeys(("TrainingDiverged", "TrainResult", "evaluate", "resolve_device", "train"), "loop"),
}

__all__ = [
    "DATASETS", "DataError", "Dataset", "Splits", "dataset_context", "load_dataset", "split",
    "RECIPES", "TrainConfig", "TrainingDiverged", "TrainResult", "evaluate", "normalise", "resolve_device", "train",
]

__getattr__, __dir__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _MODULE_OF.items()},
                                   globals())
