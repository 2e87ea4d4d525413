"""Figures: matplotlib on the Agg backend (image files, no window).

matplotlib is imported when the first figure is drawn (:func:`pyplot`), not when an analysis
module is: reading a run, its front and its hypervolume need no matplotlib, and a user's own
backend (a notebook's) is left as it is until archscale draws.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot``, its backend set to Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write and close a matplotlib figure; returns its path."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    pyplot().close(fig)
    return path
