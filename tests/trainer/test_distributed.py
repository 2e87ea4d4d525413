"""The trainer data-parallel: two CPU processes in a gloo process group (started here with
``torch.multiprocessing``, as Ray Train starts one) against one process with the same
configuration, seed and global batch.

The references are torch's: one full-batch gradient step is the same whether one process takes
it or DDP averages two half-batch gradients (no BatchNorm: nothing else depends on the split),
so a network without BatchNorm follows the same trajectory, loss for loss, while each epoch is
one step over the whole training split; and a real task trained with 1 and 2 workers ends at
close validation accuracies."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from archscale.trainer import Splits, TrainConfig, load_dataset, split, train
from archscale.trainer.distributed import Ranks, average_bn_stats, from_rank0, local_batch, shard


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))


def mnist_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


def _rank_main(rank: int, world: int, port: int, job: dict, out: str) -> None:
    """One rank: join the gloo group, train ``job``'s model, write what it returned."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = job["model"](0)
        result = train(model, job["splits"](), TrainConfig(**job["cfg"]), device="cpu", stream=job.get("stream"))
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        Path(out, f"rank{rank}.pkl").write_bytes(pickle.dumps((result.history, weights)))
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, job: dict, tmp: Path) -> list[tuple[list[dict], dict]]:
    """``world`` processes training ``job``: each rank's (history, final weights)."""
    tmp.mkdir(parents=True, exist_ok=True)
    mp.spawn(_rank_main, args=(world, _free_port(), job, str(tmp)), nprocs=world, join=True)
    return [pickle.loads((tmp / f"rank{r}.pkl").read_bytes()) for r in range(world)]


def separable() -> Splits:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(192) % 4
    x = torch.randint(0, 256, (192, 1, 8, 8), generator=gen, dtype=torch.uint8)
    for k in range(4):
        x[y == k, :, (k // 2) * 4:(k // 2) * 4 + 4, (k % 2) * 4:(k % 2) * 4 + 4] //= 3
    return Splits(x[:64], y[:64], x[64:128], y[64:128], x[128:], y[128:], num_classes=4)


def mnist() -> Splits:
    return split(load_dataset("mnist-5k"), 0.1, subset=1.0, seed=0)


FULL_BATCH = dict(epochs=6, batch_size=64, optimizer="sgd", lr=0.2, momentum=0.9, schedule="cosine",
                  weight_decay=5e-4, seed=3)


@pytest.mark.slow
def test_two_workers_follow_one_worker_step_for_step_without_batchnorm(tmp_path):
    # 64 training images, global batch 64: every epoch is one step over all of them, in one
    # process or as two halves of 32 on two ranks; DDP's averaged gradient is the full batch's
    one = run_ranks(1, {"model": mlp, "splits": separable, "cfg": FULL_BATCH}, tmp_path / "one")
    two = run_ranks(2, {"model": mlp, "splits": separable, "cfg": FULL_BATCH}, tmp_path / "two")
    losses1 = [h["train_loss"] for h in one[0][0]]
    losses2 = [h["train_loss"] for h in two[0][0]]
    assert losses1[-1] < losses1[0] - 0.1  # it learns: the comparison is not of constants
    assert losses2 == pytest.approx(losses1, rel=1e-4, abs=1e-5)
    assert two[0][0] == two[1][0]  # every rank reports rank 0's metrics
    for key, value in one[0][1].items():
        torch.testing.assert_close(two[0][1][key], value, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(two[1][1][key], two[0][1][key])  # the ranks hold one model


@pytest.mark.slow
@pytest.mark.parametrize("technique", [{"sam_rho": 0.05}, {"ema": 0.9}, {"label_smoothing": 0.1},
                                       {"swa": True, "swa_start": 0.5, "swa_lr": 0.05}], ids=str)
def test_a_deterministic_technique_with_two_workers_follows_one_worker(tmp_path, technique):
    """SAM (both passes' gradients all-reduced), EMA, label smoothing and SWA change nothing
    that depends on the split, so two half-batches follow the full batch, as without them."""
    cfg = {**FULL_BATCH, **technique}
    one = run_ranks(1, {"model": mlp, "splits": separable, "cfg": cfg}, tmp_path / "one")
    two = run_ranks(2, {"model": mlp, "splits": separable, "cfg": cfg}, tmp_path / "two")
    assert [h["train_loss"] for h in two[0][0]] == pytest.approx([h["train_loss"] for h in one[0][0]], rel=1e-4,
                                                                 abs=1e-5)
    assert two[0][0][-1]["val_accuracy"] == pytest.approx(one[0][0][-1]["val_accuracy"], abs=1e-9)
    for key, value in one[0][1].items():
        torch.testing.assert_close(two[0][1][key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("technique", [{"mixup": 0.4}, {"cutout": 2}], ids=str)
def test_a_random_technique_with_two_workers_learns_and_keeps_one_model(tmp_path, technique):
    """mixup and cutout draw per worker (a generator seeded per rank), so the runs differ from
    one worker's; the two ranks still hold one model, and it learns."""
    cfg = {**FULL_BATCH, "epochs": 12, **technique}
    two = run_ranks(2, {"model": mlp, "splits": separable, "cfg": cfg}, tmp_path / "two")
    losses = [h["train_loss"] for h in two[0][0]]
    assert losses[-1] < losses[0] - 0.1, losses
    assert two[0][0] == two[1][0]
    for key, value in two[0][1].items():
        torch.testing.assert_close(two[1][1][key], value)


@pytest.mark.slow
def test_each_rank_streams_its_shard_from_host_memory_with_the_same_batches(tmp_path):
    cfg = {**FULL_BATCH, "batch_size": 16, "epochs": 2, "crop_padding": 1, "flip": True}  # 2 steps a rank, augmented
    resident = run_ranks(2, {"model": mlp, "splits": separable, "cfg": cfg, "stream": False}, tmp_path / "resident")
    streamed = run_ranks(2, {"model": mlp, "splits": separable, "cfg": cfg, "stream": True}, tmp_path / "streamed")
    assert [h["train_loss"] for h in streamed[0][0]] == [h["train_loss"] for h in resident[0][0]]
    for key, value in resident[0][1].items():
        torch.testing.assert_close(streamed[0][1][key], value)


@pytest.mark.slow
def test_one_and_two_workers_reach_close_accuracy_on_mnist_5k(tmp_path):
    cfg = dict(epochs=3, batch_size=128, lr=0.1, seed=0, crop_padding=1)
    one = run_ranks(1, {"model": mnist_net, "splits": mnist, "cfg": cfg}, tmp_path / "one")
    two = run_ranks(2, {"model": mnist_net, "splits": mnist, "cfg": cfg}, tmp_path / "two")
    acc1, acc2 = one[0][0][-1]["val_accuracy"], two[0][0][-1]["val_accuracy"]
    assert acc1 > 0.85 and acc2 > 0.85, (acc1, acc2)
    assert abs(acc1 - acc2) <= 0.03, (acc1, acc2)
    # steps per epoch kept: 4,500 images in 35 global batches of 128, either way
    assert len(one[0][0]) == len(two[0][0]) == 3


def test_shards_are_disjoint_equal_and_cover_all_but_the_remainder():
    x, y = torch.arange(11)[:, None], torch.arange(11)
    parts = [shard(x, y, Ranks(r, 3)) for r in range(3)]
    assert [len(p[1]) for p in parts] == [3, 3, 3]
    seen = torch.cat([p[1] for p in parts])
    assert len(set(seen.tolist())) == 9 and all((p[0][:, 0] == p[1]).all() for p in parts)
    assert shard(x, y, Ranks()) == (x, y)


def test_the_global_batch_splits_evenly_or_is_refused():
    assert local_batch(128, Ranks(1, 4)) == 32 and local_batch(7, Ranks()) == 7
    with pytest.raises(ValueError, match="batch_size 130 does not split evenly among 4 workers"):
        local_batch(130, Ranks(0, 4))


def test_one_process_is_rank_0_of_1_and_collectives_are_identities():
    ranks = Ranks.current()
    assert ranks == Ranks(0, 1) and ranks.leader and not ranks.distributed
    bn = nn.BatchNorm1d(2)
    bn.running_mean += 3
    average_bn_stats(bn, ranks)
    assert bn.running_mean.tolist() == [3.0, 3.0] and from_rank0({"a": 1}, ranks) == {"a": 1}


def _bn_rank(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        bn = nn.BatchNorm1d(2)
        with torch.no_grad():
            bn.running_mean.fill_(float(rank))
            bn.running_var.fill_(1.0 + 2 * rank)
        average_bn_stats(bn, Ranks(rank, world))
        got = from_rank0(f"from {rank}", Ranks(rank, world))
        Path(out, f"{rank}.pkl").write_bytes(pickle.dumps((bn.running_mean.tolist(), bn.running_var.tolist(), got)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_bn_statistics_are_averaged_and_rank_0_speaks_for_all(tmp_path):
    mp.spawn(_bn_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        mean, var, got = pickle.loads((tmp_path / f"{rank}.pkl").read_bytes())
        assert mean == [0.5, 0.5] and var == [2.0, 2.0] and got == "from 0"

