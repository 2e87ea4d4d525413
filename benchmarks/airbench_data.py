"""CIFAR-10 from ``$ARCHSCALE_DATA/cifar10.npz`` in the files airbench's scripts cache.

airbench94.py (KellerJordan/cifar10-airbench, not part of this project) reads
``cifar10/train.pt`` and ``cifar10/test.pt`` under its working directory and downloads
CIFAR-10 through torchvision only when they are missing. Writing them here lets its public
script run unchanged on a machine with no network, on the same images archscale trains on:

    ARCHSCALE_DATA=../shared/data python benchmarks/airbench_data.py OUT_DIR
    cd OUT_DIR && python airbench94.py

Each file is ``{"images": uint8 (N, 32, 32, 3), "labels": int64 (N,), "classes": [...]}``,
the layout of torchvision's ``CIFAR10.data`` / ``.targets`` that airbench saves.
Last line: ``airbench_data_images: N`` (train + test images written).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_airbench_files(npz: Path, out_dir: Path) -> dict[str, int]:
    """``out_dir/cifar10/{train,test}.pt`` from an npz of uint8 HWC images; images per split."""
    target = out_dir / "cifar10"
    target.mkdir(parents=True, exist_ok=True)
    counts = {}
    with np.load(npz) as data:
        for split in ("train", "test"):
            images = data[f"x_{split}"]
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
                raise ValueError(f"{npz}: x_{split} is {images.dtype} {images.shape}; expected uint8 (N, 32, 32, 3)")
            record = {"images": torch.from_numpy(np.ascontiguousarray(images)),
                      "labels": torch.from_numpy(data[f"y_{split}"].astype(np.int64)), "classes": list(CLASSES)}
            torch.save(record, target / f"{split}.pt")
            counts[split] = len(images)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="airbench's working directory (cifar10/ is made in it)")
    args = parser.parse_args()
    root = os.environ.get("ARCHSCALE_DATA")
    if not root or not (Path(root) / "cifar10.npz").is_file():
        raise SystemExit("set ARCHSCALE_DATA to a folder holding cifar10.npz")
    counts = write_airbench_files(Path(root) / "cifar10.npz", args.out_dir)
    for split, n in counts.items():
        print(f"{args.out_dir / 'cifar10' / (split + '.pt')}: {n} images")
    print(f"airbench_data_images: {sum(counts.values())}")


if __name__ == "__main__":
    main()
