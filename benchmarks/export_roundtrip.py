"""An export on a user's raw photos: a folder of CIFAR-10 images as a user brings them (JPEG,
PNG and greyscale files, 32 to 64 px), searched with a built-in family and with a family of
the user's own, each winner exported; then, in a clean interpreter that cannot import
archscale (``python -I`` in the export folder), the raw test files go through the export's own
``preprocess`` and ``load()``, and the accuracy is set against the test accuracy the run
recorded. Prints a table and ends with ``export_roundtrip_max_gap_pp: VALUE`` (the larger gap,
in points; the goal is under 1).

    ARCHSCALE_DATA=../shared/data python benchmarks/export_roundtrip.py [--train 1200] [--test 400] [--trials 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
USER_FAMILY = '''
from torch import nn

from archscale.space import Param, SearchSpace


class PhotoNet(SearchSpace):
    name = "photonet"
    description = "two conv-bn-relu-pool blocks and a linear head"
    params = (Param("width", 16, "channels of the first block", low=4, high=64),)

    def build_model(self, arch):
        p = arch.params
        w = p["width"]
        return nn.Sequential(
            nn.Conv2d(p["in_channels"], w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(2 * w, p["num_classes"]))
'''
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SCORE = '''
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))  # python -I adds no folder to the path: model.py's, by hand
import model
net = model.load()
right = total = 0
for path in sorted(Path(sys.argv[1]).rglob("*")):
    if path.is_file():
        with torch.no_grad():
            label = int(net(model.preprocess(path)[None]).argmax())
        right += model.CLASSES[label] == path.parent.name
        total += 1
print(json.dumps({"accuracy": right / total, "images": total, "archscale": "archscale" in sys.modules}))
'''


def write_folder(root: Path, x: np.ndarray, y: np.ndarray, split: str, rng: np.random.Generator) -> None:
    """Each image as a user's file: a third JPEG, a third PNG, a third greyscale PNG, resized to
    a random side in 32..64 px (the search resizes the short side to 32 and centre-crops)."""
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / split / CLASSES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        side = int(rng.integers(32, 65))
        picture = Image.fromarray(image).resize((side, side), Image.BILINEAR)
        kind = i % 3
        if kind == 0:
            picture.save(folder / f"{i}.jpg", quality=90)
        elif kind == 1:
            picture.save(folder / f"{i}.png")
        else:
            picture.convert("L").save(folder / f"{i}.png")


def run(args: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "archscale", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"archscale {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    data = Path(os.environ.get("ARCHSCALE_DATA", ROOT.parent / "shared" / "data")) / "cifar10.npz"
    if not data.is_file():
        sys.exit(f"{data}: no CIFAR-10 here; set ARCHSCALE_DATA to the folder holding cifar10.npz")
    arrays = np.load(data)
    rng = np.random.default_rng(0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        write_folder(home / "photos", arrays["x_train"][:args.train], arrays["y_train"][:args.train], "train", rng)
        write_folder(home / "photos", arrays["x_test"][:args.test], arrays["y_test"][:args.test], "test", rng)
        (home / "photonet.py").write_text(USER_FAMILY)
        families = {"budgeted (built-in)": ("budgeted", {"c1_width": [8, 16], "c2_width": [16, 32]}),
                    "photonet:PhotoNet (user's)": ("photonet:PhotoNet", {"width": [8, 16]})}
        for name, (family, params) in families.items():
            spec = {"name": family.split(":")[0], "seed": 0,
                    "data": {"dataset": "imagefolder:photos", "image_size": 32, "val_fraction": 0.15},
                    "space": {"family": family, "params": params},
                    "train": {"epochs": args.epochs, "batch_size": 64, "lr": 0.05},
                    "search": {"sampler": "grid", "num_trials": args.trials, "max_concurrent": 2,
                               "resources_per_trial": {"cpu": 1}, "objectives": ["val_accuracy:max", "macs:min"]}}
            spec_file = home / f"{spec['name']}.yaml"
            spec_file.write_text(yaml.safe_dump(spec))
            out = home / f"run-{spec['name']}"
            run(["run", spec_file.name, "--out", out.name, "--quiet"], home, env)
            export = out / "best"
            recorded = json.loads((export / "metrics.json").read_text())["test_accuracy"]
            text = (export / "model.py").read_text()
            (export / "score.py").write_text(SCORE)
            scored = subprocess.run([sys.executable, "-I", "score.py", str(home / "photos" / "test")], cwd=export,
                                    capture_output=True, text=True)
            if scored.returncode != 0:
                sys.exit(f"scoring {export} failed:\n{scored.stderr[-3000:]}")
            result = json.loads(scored.stdout.strip().splitlines()[-1])
            head = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, '.'); import model; "
                                   "print(model.load(num_classes=2)(__import__('torch').zeros(1, *model.INPUT_SHAPE))"
                                   ".shape[-1])"],
                                  cwd=export, capture_output=True, text=True)
            rows.append((name, recorded, result["accuracy"], result["images"], result["archscale"],
                         "aten" in text, head.stdout.strip() or head.stderr.strip()[-200:], len(text.splitlines())))
    print(f"{args.train} train / {args.test} test CIFAR-10 photos (JPEG, PNG, grey PNG; 32-64 px), "
          f"{args.trials} trials x {args.epochs} epochs; raw test files through model.py's preprocess in python -I")
    print(f"{'family':<28} {'recorded':>9} {'preprocess':>11} {'gap pp':>7} {'files':>6} {'archscale':>10} "
          f"{'aten':>5} {'2-class head':>13} {'lines':>6}")
    for name, recorded, got, n, leaked, aten, head, lines in rows:
        print(f"{name:<28} {recorded:>9.4f} {got:>11.4f} {100 * abs(got - recorded):>7.2f} {n:>6} {str(leaked):>10} "
              f"{str(aten):>5} {head:>13} {lines:>6}")
    print(f"export_roundtrip_max_gap_pp: {max(100 * abs(got - rec) for _, rec, got, *_ in rows):.2f}")


if __name__ == "__main__":
    main()
