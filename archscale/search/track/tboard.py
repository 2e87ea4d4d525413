"""TensorBoard event files of a search: ``RUN/tensorboard/<trial id>/``, one folder per trial
beside (not inside) ``RUN/tune/``, so ``tensorboard --logdir RUN`` shows the trials side by
side. Each epoch: ``train_loss``, ``train_accuracy``, ``val_accuracy``, ``lr`` and
``epoch_seconds`` (step: the epoch), written while the trial runs. Once recorded, the trial's
searched choices and status go to TensorBoard's hparams view, with its final figures as
``final/*`` metrics. Written with ``torch.utils.tensorboard`` (it needs the ``tensorboard``
package: ``pip install "archscale[track]"``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from torch.utils.tensorboard import SummaryWriter

from archscale.analysis.records import TRIALS_FILE, read_trials, warn_line
from archscale.search.track.writer import EPOCH_SCALARS as SCALARS, Curve, QueuedWriter, epochs_of, finite
from archscale.spec import Dimension

TB_DIR = "tensorboard"
FINAL = ("val_accuracy", "test_accuracy", "params", "macs", "memory_mb", "latency_ms", "train_seconds")


def tensorboard_dir(run_dir: str | Path, trial_id: str) -> Path:
    return Path(run_dir) / TB_DIR / str(trial_id)


class TensorBoardTracker(QueuedWriter):
    """Each trial's scalars and hparams in ``RUN/tensorboard/<trial id>/`` (``dims``: the searched
    dimensions, whose names are the hparams and whose choices their domains)."""

    def __init__(self, run_dir: str | Path, dims: Sequence[Dimension], warn: Callable[[str], None] = warn_line):
        self.where = str(Path(run_dir) / TB_DIR)
        self.dims = [d for d in dims if d.kind != "fixed"]
        self.writers: dict[str, SummaryWriter] = {}
        self.steps: dict[str, set[int]] = {}  # trial id -> epochs written
        super().__init__(run_dir, warn)

    def open(self) -> None:
        (self.run_dir / TB_DIR).mkdir(parents=True, exist_ok=True)
        if (self.run_dir / TRIALS_FILE).is_file():  # a resumed run: the recorded trials it has no folder for
            for _, row in read_trials(self.run_dir, warn=lambda message: None).iterrows():
                if not tensorboard_dir(self.run_dir, row["trial_id"]).exists():
                    self.on_add(row.to_dict(), {})

    def on_epoch(self, trial_id: str, metrics: dict) -> None:
        epoch = metrics.get("epochs")
        if isinstance(epoch, int):
            self._scalars(trial_id, epoch, metrics)
            self.writers[trial_id].flush()  # seen by a TensorBoard already open

    def on_add(self, row: dict, curve: Curve) -> None:
        trial_id = str(row["trial_id"])
        for epoch, metrics in epochs_of(self.run_dir, row, curve).items():
            if epoch not in self.steps.get(trial_id, ()):
                self._scalars(trial_id, epoch, metrics)
        writer = self._writer(trial_id)
        domains = self._domains()
        hparams = {d.name: _hparam(row.get(d.name), domains.get(d.name, ())) for d in self.dims}
        hparams["status"] = str(row.get("status"))
        final = {f"final/{k}": float(row[k]) for k in FINAL if finite(row.get(k))}
        # run_name ".": the hparams go in the trial's own folder, one session per trial
        writer.add_hparams(hparams, final, hparam_domain_discrete=domains, run_name=".")
        writer.close()
        self.writers.pop(trial_id, None)
        self.steps.pop(trial_id, None)
        self.written += 1

    def shut(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    def _writer(self, trial_id: str) -> SummaryWriter:
        if trial_id not in self.writers:
            self.writers[trial_id] = SummaryWriter(log_dir=str(tensorboard_dir(self.run_dir, trial_id)))
        return self.writers[trial_id]

    def _scalars(self, trial_id: str, epoch: int, metrics: Mapping[str, Any]) -> None:
        writer = self._writer(trial_id)
        for tag in SCALARS:
            if finite(metrics.get(tag)):
                writer.add_scalar(tag, float(metrics[tag]), global_step=epoch)
        self.steps.setdefault(trial_id, set()).add(epoch)

    def _domains(self) -> dict[str, list]:
        domains = {d.name: [_hparam(v) for v in d.values] for d in self.dims if d.kind == "choice"}
        domains = {k: v for k, v in domains.items() if len({type(x) for x in v}) == 1}  # one type per domain
        return {**domains, "status": ["completed", "pruned", "infeasible", "failed"]}


def _hparam(value: Any, domain: Sequence = ()) -> bool | int | float | str:
    """A value TensorBoard's hparams take (bool, number or string): the domain's own value
    where it equals one (trials.csv reads 8 back as 8.0 or numpy's 8)."""
    for choice in domain:
        if type(choice) is not bool and choice == value:
            return choice
    if hasattr(value, "item"):
        value = value.item()  # a numpy scalar
    return value if isinstance(value, (bool, int, float, str)) else str(value)
