"""Data-parallel training through plain ``torch.distributed``: the process group is someone
else's (Ray Train's ``TorchTrainer`` starts it, gloo on CPU, NCCL on CUDA); this module only
reads it. Nothing here imports ray.

- :class:`Ranks`: this process's rank and the world size (rank 0 of 1 without a process group);
- :func:`shard`: the images of one rank, strided (``rank::world``) and cut to the same length
  on every rank, so every rank takes the same number of steps;
- :func:`wrap`: the model as DDP sees it (SyncBatchNorm first with ``sync_bn``);
- :func:`all_sum`, :func:`from_rank0`, :func:`average_bn_stats`: the collective calls the loop needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Ranks:
    """This process's place in the training run's process group."""

    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one that evaluates and writes."""
        return self.rank == 0

    @classmethod
    def current(cls) -> "Ranks":
        """The ranks of the default process group, or rank 0 of 1 where none was started."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()


def local_batch(batch_size: int, ranks: Ranks) -> int:
    """Images per step on one rank: the global ``batch_size`` split evenly."""
    if batch_size % ranks.world:
        raise ValueError(f"batch_size {batch_size} does not split evenly among {ranks.world} workers; "
                         f"allowed: a multiple of {ranks.world}")
    return batch_size // ranks.world


def shard(images: torch.Tensor, labels: torch.Tensor, ranks: Ranks) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``r``'s share of a split: images ``r, r + world, ...``, the first ``len // world`` of
    them (every rank the same number; the remainder, fewer than ``world`` images, is left out)."""
    if not ranks.distributed:
        return images, labels
    per_rank = len(labels) // ranks.world
    take = slice(ranks.rank, ranks.rank + per_rank * ranks.world, ranks.world)
    return images[take], labels[take]


def wrap(model: nn.Module, dev: torch.device, sync_bn: bool) -> nn.Module:
    """``model`` under DistributedDataParallel (gradients averaged across ranks in the backward
    pass, rank 0's weights and buffers broadcast at the start), its BatchNorm layers turned into
    SyncBatchNorm first with ``sync_bn``. ``model`` itself keeps the same parameters."""
    if sync_bn:
        if dev.type != "cuda":
            raise ValueError(f"train.sync_bn: true needs CUDA workers (torch's SyncBatchNorm runs on GPUs only), "
                             f"but this worker trains on {dev.type}; allowed: false, or GPU workers")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_sum(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (itself without a process group)."""
    if ranks.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def from_rank0(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_bn_stats(model: nn.Module, ranks: Ranks) -> None:
    """BatchNorm running means and variances averaged over the ranks (each computed them on its
    own shard: e.g. SWA's recomputed statistics), so that every rank holds the same."""
    if not ranks.distributed:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            for buffer in (m.running_mean, m.running_var):
                all_sum(buffer, ranks).div_(ranks.world)
