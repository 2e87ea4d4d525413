"""Training throughput: archscale's trainer against a plain DataLoader + torchvision loop.

Same model, batch size, optimizer, augmentation and number of images; images per second
of training (evaluation excluded). On CPU: MNIST (ARCHSCALE_DATA/mnist.npz, else mnist-5k)
with a small budgeted model. With a GPU: CIFAR-10 with the ResNet-9 of seed 003.

    python benchmarks/trainer_throughput.py [--epochs 2] [--images 20000] [--workers 0 2]

The DataLoader loop is timed with each --workers value and the fastest is the baseline.
Last line: ``trainer_throughput_ratio: X`` (archscale images/s over the best loop's).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from PIL import Image

from space import build, get_space
from trainer import TrainConfig, load_dataset, split, train
from trainer.train import channel_stats


class ImageDataset(torch.utils.data.Dataset):
    """uint8 images as PIL images through torchvision transforms, as tutorials do it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x = x.permute(0, 2, 3, 1).squeeze(-1).numpy() if x.shape[1] == 1 else x.permute(0, 2, 3, 1).numpy()
        self.y = y
        self.transform = transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def dataloader_loop(model, x, y, cfg: TrainConfig, workers: int, device: torch.device, mean, std) -> float:
    size = x.shape[-1]
    augment = [T.RandomCrop(size, padding=cfg.crop_padding)] if cfg.crop_padding else []
    if cfg.flip:
        augment.append(T.RandomHorizontalFlip())
    transform = T.Compose([*augment, T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(ImageDataset(x, y, transform), batch_size=cfg.batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)
    model.to(device).train()
    images = 0
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            images += len(yb)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=20000, help="training images used")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        data = load_dataset("cifar10")
        arch = get_space("davidnet").resolve({}, data.context)
        cfg = TrainConfig(epochs=args.epochs, batch_size=512, lr=0.4, crop_padding=4, flip=True, schedule="constant",
                          channels_last=True)
    else:
        try:
            data = load_dataset("mnist")
        except Exception:
            data = load_dataset("mnist-5k")
        arch = get_space("budgeted").resolve(
            {"c1_width": 8, "c1_convs": 1, "c2_width": 12, "c2_convs": 2, "c2_conv": "depthwise", "c3_width": 16,
             "c3_convs": 1, "c3_conv": "depthwise", "c4_width": 16, "c4_convs": 1, "c4_conv": "depthwise",
             "downsample": "maxpool"}, data.context)
        cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.1, crop_padding=2, schedule="constant")
    splits = split(data, 0.0001, seed=0)
    n = min(args.images, len(splits.y_train))
    splits = type(splits)(splits.x_train[:n], splits.y_train[:n], splits.x_val, splits.y_val, splits.x_test[:256],
                          splits.y_test[:256], splits.num_classes)
    mean, std = channel_stats(splits.x_train)

    torch.manual_seed(0)
    result = train(build(arch), splits, cfg, device=device)
    steps = (n // cfg.batch_size) * cfg.epochs
    ours = steps * cfg.batch_size / result.train_seconds

    rows = [("archscale trainer (data on device, batched augmentation)", ours)]
    for workers in args.workers:
        torch.manual_seed(0)
        rows.append((f"DataLoader + torchvision transforms, num_workers={workers}",
                     dataloader_loop(build(arch), splits.x_train, splits.y_train, cfg, workers, device, mean, std)))
    best_loop = max(rate for _, rate in rows[1:])
    print(f"device: {device}; {arch.family} model; {n} images x {cfg.epochs} epochs; batch {cfg.batch_size}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'loop':<62} {'images/s':>10}")
    for name, rate in rows:
        print(f"{name:<62} {rate:>10.0f}")
    print(f"trainer_throughput_ratio: {ours / best_loop:.2f}")


if __name__ == "__main__":
    main()
