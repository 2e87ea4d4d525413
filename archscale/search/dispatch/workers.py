"""A trial of several data-parallel workers (``search.resources_per_trial.workers: N``, N > 1)
through Ray Train, the way Ray 2.60's Train V2 documents it with Tune ("Hyperparameter Tuning
with Ray Tune", docs.ray.io/en/latest/train/user-guides/hyperparameter-optimization.html):
the Tune function trainable is the driver of one Ray Train run. It builds a ``TorchTrainer``
(N workers, ``cpu`` and ``gpu`` each, DDP over gloo on CPU and NCCL on whole GPUs) and calls
``fit()``; each worker's ``ray.train.report`` reaches Tune through Ray's ``TuneReportCallback``,
which passes rank 0's on. So the sampler, ASHA, the budgets, the store, resume and the run
directory see the trial as they see one of one worker.

The driver holds no CPU (:data:`~archscale.search.dispatch.resources.DRIVER_BUNDLE`): Ray
Train reserves the workers' CPUs and GPUs with a placement group of its own (PACK, Ray's
default: on as few nodes as hold them). Every worker runs
:func:`~archscale.search.dispatch.trial.train_trial` in the process group Ray Train started;
the trainer shards the data and wraps the model (:mod:`archscale.trainer.distributed`), and
rank 0 alone sends the weights and ``result.json``.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import ray
import ray.train
import torch
import torch.distributed as dist
from ray import tune
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

from archscale.search.configs.context import TrialContext, train_values
from archscale.search.configs.evaluate import describe_error, is_cuda_out_of_memory
from archscale.search.dispatch.resources import TrialResources
from archscale.search.dispatch.shared import SharedSplits, loads, local_splits
from archscale.search.dispatch.trial import claim_resources, device_name, train_trial
from archscale.search.jobs.profile import process_start
from archscale.trainer.distributed import Ranks

TRAIN_DIR = "train"  # Ray Train's own state, in the trial's folder of Tune's
GROUP = "train_placement_group"  # the key of each report that names the Train run's placement group


def backend(gpu: float) -> str:
    """The process group's backend: NCCL where each worker has a whole GPU (or more), gloo on
    CPUs and on shares of a GPU (NCCL refuses two ranks on one device)."""
    return "nccl" if gpu >= 1 else "gloo"


def run_workers_trial(config: dict[str, Any], ctx: TrialContext, splits: SharedSplits,
                      resources: TrialResources) -> None:
    """Ray Tune function trainable of a trial of ``resources.workers`` workers: the driver of
    one Ray Train run. A run that fails reports ``status: failed`` with its error (a failed GPU
    allocation is raised to Tune, which retries it, as for one worker)."""
    entered = time.time()
    try:
        batch = int(train_values(ctx, config)["batch_size"])
        per_worker = resources.worker_resources(config, batch)
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"config": config, "ctx": ctx, "splits": splits, "workers": resources.workers,
                               "entered": entered},
            scaling_config=ray.train.ScalingConfig(num_workers=resources.workers, use_gpu="GPU" in per_worker,
                                                   resources_per_worker=per_worker),
            torch_config=TorchConfig(backend=backend(per_worker.get("GPU", 0.0))),
            run_config=ray.train.RunConfig(
                name=TRAIN_DIR, storage_path=_trial_dir(), callbacks=[TuneReportCallback()],
                failure_config=ray.train.FailureConfig(max_failures=0)),  # Tune retries the whole trial
        )
        trainer.fit()
    except Exception as err:
        first = first_worker_error(err)
        if is_cuda_out_of_memory(first) or is_cuda_out_of_memory(err):
            raise
        tune.report({"epochs": 0, "status": "failed", "error": describe_error(first)})


def first_worker_error(err: Exception) -> BaseException:
    """The error of the lowest failed rank (a worker's own exception, e.g. the trainer's
    ``TrainingDiverged``), out of Ray Train's ``WorkerGroupError``; ``err`` itself otherwise."""
    failures = getattr(err, "worker_failures", None) or {}
    if not failures:
        return err
    failure = failures[min(failures)]
    return getattr(failure, "cause", None) or failure  # a RayTaskError holds the worker's exception as cause


def _trial_dir() -> str:
    """Where Ray Train keeps its state: the Tune trial's folder, where there is one."""
    try:
        return tune.get_context().get_trial_dir()
    except Exception:  # noqa: BLE001 - outside Tune (a test): a folder of its own
        return tempfile.mkdtemp(prefix="archscale-train-")


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the process group is up; judge and train the configuration with
    every other rank, reporting each epoch through ``ray.train.report`` (every rank reports:
    Ray Train gathers them; Tune gets rank 0's)."""
    host = claim_resources()
    if host["gpus"] and torch.cuda.is_available():
        torch.cuda.set_device(ray.train.torch.get_device())
    splits = local_splits(loop_config["splits"])
    host["data_loads"] = loads()
    ranks = Ranks.current()
    device = "cpu" if not host["gpus"] else "auto"
    where = {"rank": ranks.rank, "node_id": host["node_id"], "pid": os.getpid(),
             "device": device_name("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")}
    gathered: list[Any] = [None] * ranks.world
    dist.all_gather_object(gathered, where)
    host.update(workers=loop_config["workers"], worker_hosts=gathered, backend=dist.get_backend())
    group = ray.util.get_current_placement_group()

    def report(metrics: dict) -> None:  # each report names the placement group, for GroupReleaser
        ray.train.report({**metrics, GROUP: group.id.hex()} if group is not None else metrics)

    train_trial(loop_config["config"], loop_config["ctx"], splits, report, host,
                times={"worker_start": process_start(), "entered": loop_config["entered"]})


class GroupReleaser(Callback):
    """Gives back a trial's Ray Train placement group once Tune has ended the trial.

    A trial that ASHA stops (or that ends at ASHA's last rung: Tune stops it too) has its
    actor ended by Tune while ``fit()`` runs, and the Train controller with it. Ray Train 2.60
    then relies on a detached ``PlacementGroupCleaner`` that asks the State API whether the
    controller died (ray-project/ray#58515); where that API does not answer (a Ray started
    without its dashboard: a notebook's, ``ray[default]`` missing on a cluster), the workers'
    CPUs and GPUs stay reserved and the next trial of several workers never starts. Each
    worker's reports name their placement group (:data:`GROUP`); this callback, on the Tune
    driver and ahead of the recorder, takes the name out of the result and, when the trial
    ends, removes the group with Ray's public ``remove_placement_group`` unless Ray has
    already done so."""

    def __init__(self):
        self.groups: dict[str, str] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        group = result.pop(GROUP, None)
        if group:
            self.groups[trial.trial_id] = group

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.release(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.release(trial.trial_id)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.release(trial.trial_id)  # its next attempt makes a group of its own

    def release(self, trial_id: str) -> bool:
        """Remove ``trial_id``'s group if it is still there; True if this removed it."""
        group = self.groups.pop(trial_id, None)
        if group is None:
            return False
        handle = PlacementGroup(ray.PlacementGroupID.from_hex(group))
        if placement_group_table(handle).get("state") in (None, "REMOVED"):
            return False
        remove_placement_group(handle)
        return True
