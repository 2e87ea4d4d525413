"""``python -m archscale.trainer.folder DATASET DIR``: write a dataset archscale loads
(``mnist-5k``, ``npz:PATH``, ...) as an image folder of PNG files in torchvision's
``ImageFolder`` layout, which ``imagefolder:DIR`` then reads (:mod:`archscale.trainer.imagefolder`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchvision.io import write_png

from archscale.trainer.config import DataError
from archscale.trainer.data import load_dataset


def write_folder(dataset: str, out: str | Path, root: str | Path = "data") -> dict[str, int]:
    """Write a dataset archscale loads (``mnist-5k``, ``npz:PATH``, ...) as an image folder of
    PNG files, ``out/{train,test}/<label>/<index>.png``; returns the images per split."""
    data = load_dataset(dataset, root)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: not empty; expected a new or empty folder to write the images into")
    width = len(str(data.num_classes - 1))
    counts = {}
    for name, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        for label in range(data.num_classes):
            (out / name / f"{label:0{width}d}").mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(x, y.tolist())):
            write_png(image, str(out / name / f"{label:0{width}d}" / f"{i:05d}.png"))
        counts[name] = len(y)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m archscale.trainer.folder",
        description="Write a dataset as an image folder of PNG files (torchvision's ImageFolder layout: "
                    "DIR/train/<class>/, DIR/test/<class>/).")
    parser.add_argument("dataset", help="mnist-5k | mnist | fashion-mnist | cifar10 | cifar100 | npz:PATH")
    parser.add_argument("out", help="the folder to write (new or empty)")
    parser.add_argument("--root", default="data", help="where named datasets are looked for (as data.root)")
    args = parser.parse_args(argv)
    try:
        counts = write_folder(args.dataset, args.out, args.root)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {counts['train']} train and {counts['test']} test PNG images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
