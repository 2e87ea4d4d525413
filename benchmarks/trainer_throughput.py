"""Training throughput: archscale's trainer against a plain DataLoader + torchvision loop.

Same model (and memory format), batch size, optimizer, augmentation and number of images;
images per second of training (evaluation excluded). On CPU: MNIST
(ARCHSCALE_DATA/mnist.npz, else mnist-5k) with a small budgeted model. With a GPU:
CIFAR-10 with the ResNet-9 of seed 003.

    python benchmarks/trainer_throughput.py [--epochs 2] [--images 20000] [--workers 0 2] [--threads 1 2] [--repeats 3]

Both loops are timed at every --threads value (torch's intra-op threads), the DataLoader
loop with each --workers value too; each side's fastest configuration is its figure. On a
CPU the DataLoader's workers compete with the training threads for the same cores, so no
single setting is fair to both: the best of each is. Every configuration's figure is printed,
the best of ``--repeats`` runs (a shared machine's noise only ever slows a run down). Every
run is a fresh process, as a trial is: nothing one loop sets up (threads, the allocator's
settings, warmed kernels) carries into another's figure.
Last line: ``trainer_throughput_ratio: X`` (archscale's best images/s over the loop's best).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from PIL import Image

from archscale.space import build, get_space
from archscale.trainer import TrainConfig, load_dataset, split, train
from archscale.trainer.batches import channel_stats


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
    """Images per second of a tutorial-style loop: PIL images through torchvision transforms
    in a DataLoader (``workers`` processes), then to the device, forward, backward, step."""
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
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    images = 0
    first = iter(loader)
    # the clock starts once the workers are up and the first batch is ready: their start is not
    # timed (nor is archscale's copy of the data to the device); a batch or two ahead, in the loop's favour
    batches = [next(first)]
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        for xb, yb in itertools.chain(batches, first) if epoch == 0 else loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            images += len(yb)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def setup(args) -> tuple:
    """(arch, cfg, splits, device) of the benchmark: the same in every process."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        data = load_dataset("cifar10")
        arch = get_space("davidnet").resolve({}, data.context)
        cfg = TrainConfig(epochs=args.epochs, batch_size=512, lr=0.4, crop_padding=4, flip=True, schedule="constant",
                          channels_last=not args.contiguous)
    else:
        try:
            data = load_dataset("mnist")
        except Exception:
            data = load_dataset("mnist-5k")
        arch = get_space("budgeted").resolve(
            {"c1_width": 8, "c1_convs": 1, "c2_width": 12, "c2_convs": 2, "c2_conv": "depthwise", "c3_width": 16,
             "c3_convs": 1, "c3_conv": "depthwise", "c4_width": 16, "c4_convs": 1, "c4_conv": "depthwise",
             "downsample": "maxpool"}, data.context)
        cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.1, crop_padding=2, schedule="constant",
                          channels_last=not args.contiguous)
    splits = split(data, 0.0001, seed=0)
    n = min(args.images, len(splits.y_train))
    splits = type(splits)(splits.x_train[:n], splits.y_train[:n], splits.x_val, splits.y_val, splits.x_test[:256],
                          splits.y_test[:256], splits.num_classes)
    return arch, cfg, splits, device


def measure(args, loop: str, threads: int, workers: int = 0) -> float:
    """Images per second of one training run: ``loop`` is ``archscale`` or ``dataloader``."""
    torch.set_num_threads(threads)
    arch, cfg, splits, device = setup(args)
    torch.manual_seed(0)
    if loop == "archscale":
        result = train(build(arch), splits, cfg, device=device)
        steps = (len(splits.y_train) // cfg.batch_size) * cfg.epochs
        return steps * cfg.batch_size / result.train_seconds
    mean, std = channel_stats(splits.x_train)
    return dataloader_loop(build(arch), splits.x_train, splits.y_train, cfg, workers, device, mean, std)


def _measure_star(job: tuple) -> float:
    return measure(*job)


def at_once(args, loop: str, threads: int, workers: int, jobs: int) -> float:
    """Summed images per second of ``jobs`` runs at the same time, each in a new process
    (``jobs`` > 1: as a search runs trials side by side)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # not multiprocessing.Pool: its processes are daemonic and may not start DataLoader workers
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return sum(pool.map(_measure_star, [(args, loop, threads, workers)] * jobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=20000, help="training images used")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, torch.get_num_threads()}),
                        help="torch threads to time both loops at (default: 1 and all)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="also time this many runs at once, 1 thread each (default: one per CPU on a CPU)")
    parser.add_argument("--contiguous", action="store_true", help="NCHW for both loops (default: channels_last)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; the fastest is its figure")
    args = parser.parse_args()
    arch, cfg, splits, device = setup(args)
    jobs = args.jobs or (os.cpu_count() if device.type == "cpu" else 1)

    def best(run, *job) -> float:
        return max(run(args, *job) for _ in range(args.repeats))

    ours, loops = [], []
    for threads in args.threads:
        ours.append((f"archscale trainer, {threads} thread(s)", best(at_once, "archscale", threads, 0, 1)))
        for workers in args.workers:
            loops.append((f"DataLoader + torchvision, {threads} thread(s), num_workers={workers}",
                          best(at_once, "dataloader", threads, workers, 1)))
    best_ours, best_loop = max(rate for _, rate in ours), max(rate for _, rate in loops)
    print(f"device: {device}; {arch.family} model; {len(splits.y_train)} images x {cfg.epochs} epochs; batch "
          f"{cfg.batch_size}; {'channels_last' if cfg.channels_last else 'NCHW'}; {os.cpu_count()} CPUs; "
          f"best of {args.repeats} run(s) each")
    print(f"{'one run at a time':<72} {'images/s':>10}")
    for name, rate in ours + loops:
        print(f"{name:<72} {rate:>10.0f}")
    for threads in args.threads:  # the same settings side by side
        same = [rate for name, rate in loops if name.startswith(f"DataLoader + torchvision, {threads} thread(s)")]
        mine = next(rate for name, rate in ours if name == f"archscale trainer, {threads} thread(s)")
        print(f"at {threads} thread(s): archscale / best DataLoader = {mine / max(same):.2f}")
    print(f"one run: archscale's best / DataLoader's best = {best_ours / best_loop:.2f}")
    if jobs > 1:
        print(f"\n{f'{jobs} runs at once, 1 thread each (summed)':<72} {'images/s':>10}")
        ours_n = best(at_once, "archscale", 1, 0, jobs)
        print(f"{'archscale trainer':<72} {ours_n:>10.0f}")
        loops_n = []
        for workers in sorted({0, *(w for w in args.workers if w < os.cpu_count())}):
            loops_n.append(best(at_once, "dataloader", 1, workers, jobs))
            print(f"{f'DataLoader + torchvision, num_workers={workers}':<72} {loops_n[-1]:>10.0f}")
        best_machine = max([best_loop, *loops_n])  # the DataLoader's best use of the machine, one run or several
        print(f"{jobs} at once: archscale / best DataLoader (one run or {jobs} at once) = {ours_n / best_machine:.2f}")
    print(f"trainer_throughput_ratio: {best_ours / best_loop:.2f}")


if __name__ == "__main__":
    main()
