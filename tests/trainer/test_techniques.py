"""Each training technique does what it claims, on a tiny model."""

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from archscale.space import build, get_space
from archscale.trainer import TrainConfig, evaluate, load_dataset, split, train
from archscale.trainer.train import _sam_step, cutout, frozen_bn_stats, mixup, normalise, triangular


@pytest.fixture(scope="module")
def splits():
    return split(load_dataset("mnist-5k"), 0.1, subset=0.5, seed=0)


def tiny(seed=0):
    torch.manual_seed(seed)
    arch = get_space("budgeted").resolve(
        {"c1_width": 4, "c2_width": 8, "c3_width": 8, "c4_width": 8, **{f"c{i}_convs": 1 for i in range(1, 5)}},
        {"in_channels": 1, "num_classes": 10, "image_size": 28})
    return build(arch)


def test_cutout_zeros_one_square_per_image():
    gen = torch.Generator().manual_seed(0)
    x = torch.ones(64, 3, 32, 32)
    out = cutout(x, 8, gen)
    zeros = (out == 0).all(1)  # (B, H, W): zeroed in every channel
    assert ((out == 0) == zeros[:, None]).all()  # the same pixels in each channel
    counts = zeros.flatten(1).sum(1)
    assert counts.max() == 64 and (counts > 0).all() and (counts <= 64).all()
    for i in range(64):  # the zeroed pixels form one axis-aligned rectangle
        rows, cols = zeros[i].nonzero(as_tuple=True)
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == counts[i]
    full = counts == 64
    assert full.any()
    rows, cols = zeros[full.nonzero()[0, 0]].nonzero(as_tuple=True)
    assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7  # an 8x8 patch


def test_mixup_is_a_convex_combination_of_pairs():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.eye(6).reshape(6, 1, 2, 3)  # one-hot images: the mix reveals its partners
    y = torch.arange(6)
    mixed, ya, yb, lam = mixup(x, y, 0.4, gen)
    assert 0 <= lam <= 1
    flat = mixed.flatten(1)
    for i in range(6):
        expected = torch.zeros(6)
        expected[ya[i]] += lam
        expected[yb[i]] += 1 - lam
        assert torch.allclose(flat[i], expected, atol=1e-6)
    assert sorted(yb.tolist()) == list(range(6))  # partners are a permutation


def test_label_smoothing_makes_the_model_less_confident(splits):
    def confidence(smoothing):
        model = tiny()
        train(model, splits, TrainConfig(epochs=4, batch_size=32, lr=0.1, label_smoothing=smoothing))
        x = normalise(splits.x_val, *_stats(splits), torch.device("cpu"))
        with torch.no_grad():
            return model.eval()(x).softmax(1).max(1).values.mean().item()

    assert confidence(0.3) < confidence(0.0) - 0.05


def _stats(splits):
    from archscale.trainer.train import channel_stats

    return channel_stats(splits.x_train)


def test_sam_steps_with_the_gradient_taken_at_the_perturbed_point():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    rho, lr = 0.5, 0.1
    w0 = [p.detach().clone() for p in model.parameters()]
    # expected: g at w0, e = rho g / |g|, g2 at w0 + e, w1 = w0 - lr g2
    ref = copy.deepcopy(model)
    loss = nn.functional.cross_entropy(ref(x), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    norm = torch.norm(torch.stack([g.norm() for g in grads]))
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads):
            p.add_(g * rho / norm)
    grads2 = torch.autograd.grad(nn.functional.cross_entropy(ref(x), y), list(ref.parameters()))
    expected = [w - lr * g2 for w, g2 in zip(w0, grads2)]

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    cfg = TrainConfig(sam_rho=rho, precision="fp32")
    _sam_step(model, opt, x, y, None, 1.0, cfg, torch.device("cpu"))
    for p, e in zip(model.parameters(), expected):
        assert torch.allclose(p, e, atol=1e-6)


def test_sam_second_pass_leaves_batchnorm_statistics_alone():
    bn = nn.BatchNorm1d(3)
    x = torch.randn(16, 3) * 5 + 2
    bn(x)
    after_one = bn.running_mean.clone()
    with frozen_bn_stats(bn):
        bn(x * 10)
    assert torch.equal(bn.running_mean, after_one)
    assert bn.momentum == 0.1  # restored


def test_swa_keeps_averaged_weights_with_recomputed_bn_statistics(splits):
    seen = {}
    model = tiny()

    def snapshot(epoch, _metrics):
        seen[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.1, swa=True, swa_start=0.5, swa_lr=0.05)
    train(model, splits, cfg, callback=snapshot)
    final = model.state_dict()
    # the kept weights are not the raw weights of epoch 2 (the first snapshot) alone
    weight = next(k for k in final if k.endswith("weight"))
    assert not torch.equal(final[weight], seen[2][weight])
    # BatchNorm statistics are those of the training data under the averaged weights
    x = normalise(splits.x_train, *_stats(splits), torch.device("cpu"))
    check = copy.deepcopy(model)
    update_bn([x[i:i + 1024] for i in range(0, len(x), 1024)], check)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            assert torch.allclose(buf, dict(check.named_buffers())[name], atol=1e-4)


def test_ema_weights_are_the_ones_judged_and_kept(splits):
    model = tiny()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    # a decay this close to 1 keeps the average at the initial weights
    result = train(model, splits, TrainConfig(epochs=1, batch_size=64, lr=0.2, ema=0.999999))
    for key, value in model.state_dict().items():
        if value.dtype.is_floating_point and "running" not in key:
            assert torch.allclose(value, start[key], atol=1e-3), key
    assert result.val_accuracy < 0.35  # an untrained model


def test_tta_averages_the_logits_of_an_image_and_its_mirror():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x = torch.randn(50, 2, 4, 4)
    y = torch.randint(0, 3, (50,))
    with torch.no_grad():
        expected = ((model(x) + model(x.flip(3))).argmax(1) == y).float().mean().item()
        plain = (model(x).argmax(1) == y).float().mean().item()
    assert evaluate(model, x, y, tta=True) == pytest.approx(expected)
    assert evaluate(model, x, y, tta=False) == pytest.approx(plain)


def test_triangular_schedule_peaks_at_warmup_end_and_ends_at_zero():
    f = triangular(100, 0.2)
    assert f(0) == 0 and f(10) == pytest.approx(0.5) and f(20) == 1.0 and f(60) == pytest.approx(0.5) and f(100) == 0


@pytest.mark.parametrize("overrides", [dict(cutout=4), dict(mixup=0.2), dict(sam_rho=0.05), dict(ema=0.99), dict(tta=True),
                                       dict(swa=True, swa_start=0.5), dict(schedule="triangular"), dict(channels_last=True)])
def test_each_technique_trains_end_to_end(splits, overrides):
    result = train(tiny(), splits, TrainConfig(epochs=2, batch_size=64, lr=0.1, **overrides))
    assert 0.0 <= result.test_accuracy <= 1.0 and len(result.history) == 2
