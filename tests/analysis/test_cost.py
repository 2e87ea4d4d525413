import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from archscale.analysis.cost import activation_mb, count_macs, count_params, measure
from archscale.space import build, get_space


def torch_conv_linear_flops(model: nn.Module, shape) -> int:
    with FlopCounterMode(display=False) as counter:
        model.eval()
        model(torch.zeros(shape))
    counts = counter.get_flop_counts()["Global"]
    return sum(v for k, v in counts.items() if any(s in str(k) for s in ("convolution", "mm", "addmm")))


@pytest.mark.parametrize("model,shape", [
    (nn.Conv2d(3, 8, 3, padding=1, bias=False), (1, 3, 16, 16)),
    (nn.Linear(32, 10, bias=False), (1, 32)),
    (nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, groups=1, bias=False), nn.Conv2d(8, 8, 3, groups=8, bias=False),
                   nn.Flatten(), nn.LazyLinear(5, bias=False)), (1, 3, 17, 17)),
])
def test_fvcore_macs_are_half_of_torch_flop_counter(model, shape):
    model(torch.zeros(shape))  # materialise lazy layers
    assert count_macs(model, shape) * 2 == torch_conv_linear_flops(model, shape)


def test_macs_by_hand_for_one_conv():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, (1, 3, 16, 16)) == 16 * 16 * 8 * 3 * 3 * 3


def test_macs_of_budgeted_models_match_torch_on_convs():
    family = get_space("budgeted")
    for conv in ("regular", "depthwise", "dilated"):
        model = build(family.resolve({"c2_conv": conv, "c3_conv": conv}, {"in_channels": 3, "num_classes": 10, "image_size": 32}))
        macs_conv_only = torch_conv_linear_flops(model, (1, 3, 32, 32)) // 2
        # fvcore adds norm/activation costs on top of the convolutions; convs dominate.
        macs = count_macs(model, (1, 3, 32, 32))
        assert macs_conv_only <= macs <= 1.1 * macs_conv_only


def test_params_and_memory():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    assert count_params(model) == 4 * 9 + 4
    # outputs of the conv and the relu: 2 x 4 x 8 x 8 floats per image
    assert activation_mb(model, (1, 1, 8, 8), batch_size=2) == pytest.approx(2 * 2 * 4 * 64 * 4 / 2**20)
    cost = measure(model, (5, 1, 8, 8), batch_size=1)
    assert cost.params == 40
    assert cost.macs == 8 * 8 * 4 * 9  # per image, whatever the batch of the shape


class Slow(nn.Module):
    """Sleeps ``seconds`` per forward and counts its calls."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.calls = seconds, 0
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        import time

        self.calls += 1
        time.sleep(self.seconds)
        return x * self.scale


def test_latency_is_the_median_after_warmup_within_the_time_budget():
    from archscale.analysis.cost import latency_ms

    slow = Slow(0.02)
    ms = latency_ms(slow, (1, 8, 8), batch_size=1, warmup=2, repeats=100, max_seconds=0.1, min_repeats=3)
    assert 20 <= ms < 60
    assert 2 + 3 <= slow.calls <= 2 + 10  # warm-up, then stops once 0.1 s is spent
    assert slow.training  # the mode is restored


def test_latency_grows_with_the_work():
    from archscale.analysis.cost import latency_ms

    small = nn.Conv2d(3, 4, 1)
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1))  # ~3000x the MACs
    assert latency_ms(big, (3, 32, 32), 1, repeats=5) > 5 * latency_ms(small, (3, 32, 32), 1, repeats=5)
    one, eight = latency_ms(big, (3, 32, 32), 1, repeats=5), latency_ms(big, (3, 32, 32), 8, repeats=5)
    assert eight > 2 * one


def test_cuda_timing_synchronises_the_device(monkeypatch):
    from archscale.analysis.cost import _sync_for

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    _sync_for(torch.device("cpu"))()
    assert calls == []
    _sync_for(torch.device("cuda", 0))()
    assert calls == [torch.device("cuda", 0)]
