"""Each proxy against its paper's formula, worked out by hand on a two-layer network with fixed
weights: x -> W1 x -> ReLU -> W2 h (no biases)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from archscale.analysis import proxies
from archscale.analysis.records import columns_for, proxy_columns


def tiny(w1, w2) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, len(w2), bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1, dtype=torch.float32))
        net[2].weight.copy_(torch.tensor(w2, dtype=torch.float32))
    return net


def test_synflow_is_the_sum_of_abs_weight_times_gradient_on_ones():
    # |W1| = [[1, 2], [3, .5]], |W2| = [[2, 1]]; input (1, 1): h = (3, 3.5), R = 2*3 + 1*3.5 = 9.5.
    # dR/d|W1|[j, k] = |W2|[j]: sum |W1| * that = 2*(1+2) + 1*(3+.5) = 9.5;
    # dR/d|W2|[j] = h[j]: sum = 2*3 + 1*3.5 = 9.5. synflow = 19.
    net = tiny([[1, -2], [3, 0.5]], [[2, -1]])
    before = [p.clone() for p in net.parameters()]
    assert proxies.synflow(net, torch.zeros(4, 2)) == pytest.approx(19.0)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters())), "the network itself is unchanged"


def test_naswot_is_the_log_determinant_of_the_hamming_kernel():
    # W1 = I: codes of (1, 1), (1, -1), (-1, -1) are 11, 10, 00; N_A = 2; Hamming 1, 2, 1;
    # K = [[2, 1, 0], [1, 2, 1], [0, 1, 2]], det K = 2*(4-1) - 1*(2-0) = 4.
    net = tiny([[1, 0], [0, 1]], [[1, 1]])
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    assert proxies.naswot(net, x) == pytest.approx(math.log(4.0))


def test_naswot_of_inputs_sharing_a_pattern_has_a_reason_not_a_value():
    net = tiny([[1, 0], [0, 1]], [[1, 1]])
    with pytest.raises(proxies.ProxyError, match="singular"):
        proxies.naswot(net, torch.tensor([[1.0, 1.0], [2.0, 3.0]]))


def test_grad_norm_sums_each_layers_gradient_norm():
    # x = (1, 2), label 0: h = relu(1, -2) = (1, 0); logits = W2 h = (1, 1), softmax (.5, .5);
    # dL/dlogits = (-.5, .5); dL/dW2 = outer((-.5, .5), (1, 0)), norm sqrt(.5);
    # dL/dh = W2^T (-.5, .5) = (0, 0), so dL/dW1 = 0. grad_norm = sqrt(.5).
    net = tiny([[1, 0], [0, -1]], [[1, 1], [1, 1]])
    value = proxies.grad_norm(net, torch.tensor([[1.0, 2.0]]), torch.tensor([0]))
    assert value == pytest.approx(math.sqrt(0.5))


def test_zico_sums_log_mean_over_std_of_gradients_per_layer():
    # Two halves of one sample each. (1, 2) label 0: dL/dW2 = [[-.5, 0], [.5, 0]] (as above);
    # (2, 1) label 1: h = (2, 0), logits (2, 2), dL/dlogits = (.5, -.5), dL/dW2 = [[1, 0], [-1, 0]].
    # W2[:, 0]: gradients (-.5, 1) and (.5, -1): mean |g| .75, population std .75, ratio 1 each;
    # W2[:, 1] never varies (left out); W1's gradient is 0 (left out, and the layer adds nothing).
    # zico = log(1 + 1) = log 2.
    net = tiny([[1, 0], [0, -1]], [[1, 1], [1, 1]])
    x, y = torch.tensor([[1.0, 2.0], [2.0, 1.0]]), torch.tensor([0, 1])
    assert proxies.zico(net, x, y) == pytest.approx(math.log(2.0))


def test_a_network_without_what_a_proxy_reads_gets_reasons_and_the_others_values():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))  # no activation module
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    scores = proxies.score(net, x, y)
    assert set(scores.values) == {"synflow", "grad_norm", "zico"}
    assert "no activation module" in scores.errors["naswot"]
    metrics = scores.metrics()
    assert "proxy_naswot" not in metrics and metrics["proxy_errors"].startswith("naswot: ")
    assert all(metrics[f"proxy_{n}_s"] >= 0 for n in proxies.PROXIES)
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # no weights at all
    assert "no Conv or Linear" in proxies.score(pool, x, y, names=("synflow",)).errors["synflow"]


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act = nn.Linear(2, 2), nn.ReLU()

    def forward(self, x):
        raise RuntimeError("boom")


def test_a_failing_network_gives_its_error_as_the_reason():
    scores = proxies.score(Broken(), torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
    assert scores.values == {} and all("boom" in why for why in scores.errors.values())


def test_minibatch_is_seeded_and_standardised():
    x = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(50) % 10
    a, ya = proxies.minibatch(x, y, 8, seed=3)
    b, yb = proxies.minibatch(x, y, 8, seed=3)
    c, _ = proxies.minibatch(x, y, 8, seed=4)
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)
    assert a.shape == (8, 1, 4, 4) and abs(float(a.mean())) < 1e-5


def test_trials_csv_has_a_value_and_a_time_column_per_proxy():
    assert proxy_columns(["params", "macs"]) == []
    assert proxy_columns(["macs", "naswot", "zico"]) == ["proxy_naswot", "proxy_naswot_s", "proxy_zico",
                                                         "proxy_zico_s", "proxy_errors"]
    header = columns_for(["c1_width"], extra=proxy_columns(["synflow"]))
    assert header.index("proxy_synflow") > header.index("epochs") and header[-3:] == ["error", "arch", "source"]
