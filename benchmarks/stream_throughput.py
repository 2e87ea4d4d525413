"""Training throughput when the data does not fit on the device: batches streamed from host
memory against the splits kept on the device.

Same model, recipe, seed and images; ``train(..., stream=False)`` normalises the splits onto
the device once, ``stream=True`` keeps them uint8 on the host and gathers, copies and
normalises each batch (pinned host memory when the device is CUDA). The two train the same
weights (tests/trainer/test_train.py checks it); this measures what streaming costs.
Images per second of training (``TrainResult.train_seconds``: evaluation excluded, the
streamed batches' gathering and normalising included), best of ``--repeats`` runs, the two
paths alternating.

    python benchmarks/stream_throughput.py [--device cpu] [--epochs 2] [--repeats 3] [--threads 2]

Datasets: mnist-5k (1x28x28) and, to weigh the copy against the compute at a larger side,
4,000 random 3x64x64 images. Last line: ``stream_throughput_ratio: X`` (streamed images/s over
resident images/s, on the larger images).
"""

from __future__ import annotations

import argparse

import torch

from archscale.space import build, get_space
from archscale.trainer import Splits, TrainConfig, load_dataset, split, train


def random_splits(n: int, side: int, channels: int = 3, classes: int = 10) -> Splits:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    cut = n // 10
    return Splits(x[2 * cut:], y[2 * cut:], x[:cut], y[:cut], x[cut:2 * cut], y[cut:2 * cut], classes)


def model_for(splits: Splits):
    arch = get_space("budgeted").resolve(
        {"c1_width": 8, "c2_width": 16, "c3_width": 16, "c4_width": 32, **{f"c{i}_convs": 1 for i in range(1, 5)},
         "downsample": "maxpool"},
        {"in_channels": int(splits.x_train.shape[1]), "num_classes": splits.num_classes,
         "image_size": int(splits.x_train.shape[-1])})
    torch.manual_seed(0)
    return build(arch)


def images_per_second(splits: Splits, cfg: TrainConfig, stream: bool) -> tuple[float, float]:
    """Images/s of one training run, and its validation accuracy."""
    result = train(model_for(splits), splits, cfg, stream=stream)
    assert result.streamed == stream
    images = len(splits.y_train) // cfg.batch_size * cfg.batch_size * cfg.epochs  # full batches only
    return images / result.train_seconds, result.val_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch's intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, crop_padding=2, flip=True, device=args.device)
    datasets = {"mnist-5k 1x28x28": split(load_dataset("mnist-5k"), 0.1, seed=0),
                "random 3x64x64": random_splits(4000, 64)}
    pinned = "pinned " if torch.device(args.device).type == "cuda" else ""
    print(f"device {args.device}, {args.threads} thread(s), {args.epochs} epochs, batch {cfg.batch_size}, "
          f"crop+flip on the device, best of {args.repeats}")
    print(f"{'dataset':<20} {'path':<34} {'images/s':>10} {'val acc':>8}")
    ratio = float("nan")
    paths = ((False, "kept on the device"), (True, f"streamed from {pinned}host memory"))
    for name, splits in datasets.items():
        rates = {stream: 0.0 for stream, _ in paths}
        accuracy = {}
        for _ in range(args.repeats):  # the two paths alternate: a shared machine's drift falls on both
            for stream, _ in paths:
                rate, accuracy[stream] = images_per_second(splits, cfg, stream)
                rates[stream] = max(rates[stream], rate)
        for stream, label in paths:
            print(f"{name:<20} {label:<34} {rates[stream]:>10.0f} {accuracy[stream]:>8.3f}")
        ratio = rates[True] / rates[False]
        print(f"{name:<20} {'streamed / kept':<34} {ratio:>10.2f}")
    print(f"stream_throughput_ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
