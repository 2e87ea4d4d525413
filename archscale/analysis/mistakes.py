"""What a trained trial gets wrong on the test split: accuracy per class, the confusion
matrix, and the test images it is most confident about and wrong on. Users of their own
photos look at these first (a class that is never learnt, two that are confused, labels
that are wrong in the folder).

:meth:`archscale.runs.Run.mistakes` makes a :class:`Mistakes`: the trial's weights loaded into
its architecture and run on the run's test split, read again from the spec's dataset and
normalised with the mean and std the trial trained with, as the trainer did (this layer reads
no dataset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from archscale.analysis.figures import pyplot

@dataclass
class Mistakes:
    """A trial's predictions on the test split: ``labels`` and ``predicted`` (N,), ``confidence``
    (N,: the softmax probability of the predicted class), ``images`` (N, C, H, W uint8) and
    the class names by label."""

    trial_id: str
    classes: list[str]
    labels: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    images: Any  # a torch.Tensor
    recorded_accuracy: float | None = None  # test_accuracy as the trial recorded it

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predicted).mean()) if len(self.labels) else float("nan")

    def confusion(self) -> np.ndarray:
        """Counts, rows: the true class, columns: the predicted one."""
        k = len(self.classes)
        return np.bincount(self.labels * k + self.predicted, minlength=k * k).reshape(k, k)

    def per_class(self) -> list[tuple[str, int, int, float]]:
        """(class, test images, right, accuracy) per class, worst first (classes with no test image left out)."""
        matrix = self.confusion()
        rows = [(name, int(matrix[i].sum()), int(matrix[i, i])) for i, name in enumerate(self.classes)]
        return sorted(((n, total, right, right / total) for n, total, right in rows if total),
                      key=lambda r: (r[3], r[0]))

    def most_confident_wrong(self, count: int = 16) -> np.ndarray:
        """Indices of the wrong predictions, most confident first."""
        wrong = np.flatnonzero(self.labels != self.predicted)
        return wrong[np.argsort(-self.confidence[wrong], kind="stable")][:count]


def plot_confusion(m: Mistakes):
    """The confusion matrix, each row as shares of its true class (counts written in when few classes)."""
    plt = pyplot()
    matrix = m.confusion()
    k = len(m.classes)
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    side = min(12.0, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    shown = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 40:
        ax.set_xticks(range(k), m.classes, rotation=90 if max(map(len, m.classes)) > 3 else 0)
        ax.set_yticks(range(k), m.classes)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"trial {m.trial_id}: confusion matrix on the test split ({len(m.labels)} images)")
    fig.tight_layout()
    return fig


def plot_wrong(m: Mistakes, count: int = 16):
    """A grid of the test images the trial is most confidently wrong on, true and predicted
    names over each; None when it gets none wrong."""
    picked = m.most_confident_wrong(count)
    if not len(picked):
        return None
    plt = pyplot()
    cols = min(8, len(picked))
    rows = -(-len(picked) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.4 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picked):
        image = m.images[i].permute(1, 2, 0).numpy()
        ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray" if image.shape[2] == 1 else None)
        ax.set_title(f"true {m.classes[m.labels[i]]}\npredicted {m.classes[m.predicted[i]]}\n"
                     f"p={m.confidence[i]:.2f}", fontsize=8)
    return fig
