"""The skeleton every job shares (``run`` of one stage or two, ``ablate``, ``repeat``): the
data read and split, the trials' context, the evaluator, the launcher (Ray and what it can
give a trial), the run directory's records begun, one progress printer per experiment, and
the line said when the search stopped early. Each job adds only what is its own.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO

from archscale.search.configs.context import TrialContext, trial_context
from archscale.search.configs.evaluate import Evaluator
from archscale.search.dispatch.launch import Launcher, spec_text, write_spec
from archscale.search.dispatch.recorder import Interrupted, Progress, Verbosity
from archscale.search.dispatch.trial import run_trial
from archscale.search.jobs.profile import phase
from archscale.search.jobs.provenance import driver_provenance
from archscale.search.jobs.rundir import repair_records
from archscale.search.track.options import resolve_tracking
from archscale.search.track.watch import open_watchers
from archscale.search.track.writer import Watchers
from archscale.spec import Dimension, Spec
from archscale.trainer import Dataset, load_dataset, split

Context = Callable[..., TrialContext]  # (spec, run_dir, data context, provenance, classes) -> the trials' context


def read_data(spec: Spec, progress: bool = True) -> tuple[Dataset, Any]:
    """The spec's dataset and its train / val / test split (seeded by ``spec.seed``);
    ``progress``: a bar while an image folder is decoded the first time."""
    with phase("data"):
        data = load_dataset(spec.data.dataset, spec.data.root, spec.data.image_size, progress=progress)
        return data, split(data, spec.data.val_fraction, spec.data.subset, seed=spec.seed)


def verbosity(quiet: bool, verbose: bool = False) -> Verbosity:
    return "quiet" if quiet else "verbose" if verbose else "normal"


class Job:
    """One invocation's search side: ``data`` and ``splits`` (:func:`read_data`), ``ctx``,
    ``evaluator`` and ``launcher``. ``context`` builds the trials' context (default
    :func:`~archscale.search.configs.context.trial_context`); ``fixed`` adds fixed
    parameters to it; ``trainable`` and its keyword arguments go to the launcher."""

    def __init__(self, spec: Spec, run_dir: Path, data: Dataset, splits, *, resume: bool = False,
                 out: TextIO | None = None, context: Context = trial_context, fixed: dict | None = None,
                 trainable: Callable = run_trial, **trainable_kwargs: Any):
        spec = resolve_tracking(spec, run_dir)  # the MLflow store named, as spec.yaml records it
        self.spec, self.run_dir, self.data, self.splits, self.resume = spec, Path(run_dir), data, splits, resume
        self.out = out or sys.stdout
        provenance = driver_provenance(spec_text(self.run_dir, spec, resume))
        self.ctx = context(spec, self.run_dir, data.context, provenance, data.classes)
        if fixed:
            self.ctx = replace(self.ctx, fixed={**self.ctx.fixed, **fixed})
        self.evaluator = Evaluator(self.ctx, device=spec.train.device)
        self.launcher = Launcher(spec, self.run_dir, self.ctx, splits, self.evaluator, out=self.out,
                                 trainable=trainable, **trainable_kwargs)

    def begin_records(self) -> None:
        """A new run writes its ``spec.yaml`` (once Ray can give each trial what it asks); a
        resumed one, every input read and checked, moves the damaged lines of trials.csv aside."""
        if self.resume:
            repair_records(self.run_dir, self.out)
        else:
            write_spec(self.run_dir, self.spec)

    @contextmanager
    def watching(self, dims: Sequence[Dimension]) -> Iterator[Watchers]:
        """``RUN/study.db`` and the trackers of ``search.track`` written as trials run and are
        recorded while the block runs (``dims``: the sampled dimensions); every queued item
        is written when it ends, however it ends."""
        watchers = open_watchers(self.spec, self.run_dir, dims)
        self.launcher.watchers = watchers
        try:
            yield watchers
        finally:
            self.launcher.watchers = None
            watchers.close()

    def progress(self, total: int, objectives: list[tuple[str, str]], verbosity: Verbosity, already: int = 0,
                 best: float | None = None) -> Progress:
        return Progress(total, objectives, already=already, verbosity=verbosity, out=self.out,
                        epochs=self.spec.train.epochs, time_budget_s=self.spec.search.time_budget_s, best=best)

    @property
    def stopped(self) -> str | None:
        """Why the search stopped early (Ctrl-C or SIGTERM: ``interrupted``; the time budget), or None."""
        return self.launcher.stopper.reason

    def raise_if_interrupted(self) -> None:
        """Raises :class:`Interrupted` (a KeyboardInterrupt) when Ctrl-C or SIGTERM stopped the search."""
        if self.stopped == "interrupted":
            raise Interrupted(self.launcher.stopper.signum)

    def say_stopped(self, what: str) -> None:
        """The line that says the search stopped early and what ``--resume`` does."""
        print(f"archscale: stopped ({self.stopped}) {what}", file=self.out, flush=True)
