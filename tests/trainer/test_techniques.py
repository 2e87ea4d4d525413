"""Each training technique has the effect it claims: measured on the batch functions, on a
task a linear model fits exactly, and on the trained weights of a tiny network."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from archscale.trainer import TrainConfig, evaluate, train
from archscale.trainer.batches import channel_stats, cutout, mixup, normalise
from archscale.trainer.optim import triangular
from archscale.trainer.steps import frozen_bn_stats, loss_of, sam_step

CPU = torch.device("cpu")


@pytest.mark.parametrize("side", [8, 5])
def test_cutout_zeros_one_square_of_the_given_side_per_image(side):
    gen = torch.Generator().manual_seed(0)
    x = torch.ones(64, 3, 32, 32)
    out = cutout(x, side, gen)
    zeros = (out == 0).all(1)  # (B, H, W): zeroed in every channel
    assert ((out == 0) == zeros[:, None]).all()  # the same pixels in each channel
    counts = zeros.flatten(1).sum(1)
    assert counts.max() == side * side and (counts > 0).all()
    for i in range(64):  # the zeroed pixels form one axis-aligned rectangle, clipped at the border
        rows, cols = zeros[i].nonzero(as_tuple=True)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert height * width == counts[i] and height <= side and width <= side
        inside = (rows.min() > 0 and rows.max() < 31) and (cols.min() > 0 and cols.max() < 31)
        if inside:  # away from the border: the whole square
            assert height == width == side


def test_mixup_is_a_convex_combination_of_pairs():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.eye(6).reshape(6, 1, 2, 3)  # one-hot images: the mix reveals its partners
    y = torch.arange(6)
    mixed, ya, yb, lam = mixup(x, y, 0.4, gen)
    assert 0 < lam < 1
    flat = mixed.flatten(1)
    for i in range(6):
        expected = torch.zeros(6)
        expected[ya[i]] += lam
        expected[yb[i]] += 1 - lam
        assert torch.allclose(flat[i], expected, atol=1e-6)
    assert sorted(yb.tolist()) == list(range(6)) and not torch.equal(yb, ya)  # partners: a permutation


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_trains_against_the_mixed_targets(smoothing):
    """The loss of a mixed batch is cross-entropy against the soft targets
    lam * onehot(y) + (1 - lam) * onehot(y[perm]) (smoothed as the spec says), as torch computes it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x, y = torch.randn(16, 3, 2, 2), torch.randint(0, 5, (16,))
    mixed, ya, yb, lam = mixup(x, y, 0.4, torch.Generator().manual_seed(1))
    cfg = TrainConfig(mixup=0.4, label_smoothing=smoothing, precision="fp32")
    loss, logits = loss_of(model, mixed, ya, yb, lam, cfg, CPU)
    soft = lam * nn.functional.one_hot(ya, 5).float() + (1 - lam) * nn.functional.one_hot(yb, 5).float()
    soft = soft * (1 - smoothing) + smoothing / 5
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(logits, soft).item(), rel=1e-6)
    plain, _ = loss_of(model, mixed, ya, None, 1.0, cfg, CPU)
    assert abs(loss.item() - plain.item()) > 1e-3  # the partners' labels count


def test_label_smoothing_raises_the_training_loss_floor(separable_splits, linear_model):
    """On a task the model fits, plain cross-entropy falls towards 0, while with smoothing eps
    over K classes it cannot fall below the entropy of the smoothed targets."""
    eps, k = 0.2, 4
    q_true, q_other = 1 - eps + eps / k, eps / k
    floor = -(q_true * math.log(q_true) + (k - 1) * q_other * math.log(q_other))  # 0.587 nats

    def final_loss(smoothing):
        cfg = TrainConfig(epochs=10, batch_size=32, lr=0.2, schedule="constant", weight_decay=0.0,
                          label_smoothing=smoothing)
        return train(linear_model(), separable_splits, cfg).history[-1]["train_loss"]

    plain, smoothed = final_loss(0.0), final_loss(eps)
    assert plain < 0.01
    assert floor - 1e-4 <= smoothed < floor + 0.01


def test_sam_steps_with_the_gradient_taken_at_the_perturbed_point():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    rho, lr = 0.5, 0.1
    w0 = [p.detach().clone() for p in model.parameters()]
    # expected: g at w0, e = rho g / |g|, g2 at w0 + e, w1 = w0 - lr g2
    ref = copy.deepcopy(model)
    grads = torch.autograd.grad(nn.functional.cross_entropy(ref(x), y), list(ref.parameters()))
    norm = torch.norm(torch.stack([g.norm() for g in grads]))
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads):
            p.add_(g * rho / norm)
    grads2 = torch.autograd.grad(nn.functional.cross_entropy(ref(x), y), list(ref.parameters()))
    expected = [w - lr * g2 for w, g2 in zip(w0, grads2)]
    sgd = [w - lr * g for w, g in zip(w0, grads)]

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sam_step(model, opt, x, y, None, 1.0, TrainConfig(sam_rho=rho, precision="fp32"), CPU)
    for p, e, s in zip(model.parameters(), expected, sgd):
        assert torch.allclose(p, e, atol=1e-6)
        assert (p - s).abs().max() > 1e-3  # not the step plain SGD takes


def test_sam_second_pass_leaves_batchnorm_statistics_alone():
    bn = nn.BatchNorm1d(3)
    x = torch.randn(16, 3) * 5 + 2
    bn(x)
    after_one = bn.running_mean.clone()
    with frozen_bn_stats(bn):
        bn(x * 10)
    assert torch.equal(bn.running_mean, after_one)
    assert bn.momentum == 0.1  # restored


def test_swa_keeps_the_average_of_its_snapshots_with_recomputed_bn_statistics(separable_splits, small_convnet,
                                                                              averaged_snapshots):
    cfg = dict(epochs=3, batch_size=32, lr=0.1)
    plain = small_convnet()
    train(plain, separable_splits, TrainConfig(**cfg))
    model = small_convnet()
    train(model, separable_splits, TrainConfig(**cfg, swa=True, swa_start=0.5, swa_lr=0.05))
    (snapshots,) = averaged_snapshots
    assert len(snapshots) == 2  # swa_start 0.5 of 3 epochs: from epoch 2, one per epoch
    names = [name for name, _ in model.named_parameters()]
    assert any(not torch.equal(snapshots[0][n], snapshots[1][n]) for n in names)  # the weights moved between them
    for name, param in model.named_parameters():
        average = (snapshots[0][name] + snapshots[1][name]) / 2
        assert torch.allclose(param, average, atol=1e-6), name
        assert (param - dict(plain.named_parameters())[name]).abs().max() > 1e-4, name  # not SGD's weights
    # BatchNorm statistics are those of the training data under the averaged weights
    mean, std = channel_stats(separable_splits.x_train)
    x = normalise(separable_splits.x_train, mean, std, CPU)
    check = copy.deepcopy(model)
    update_bn([x[i:i + 1024] for i in range(0, len(x), 1024)], check)
    for name, buf in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            assert torch.allclose(buf, dict(check.named_buffers())[name], atol=1e-4), name


def test_ema_keeps_the_decayed_average_of_every_step(separable_splits, linear_model, averaged_snapshots):
    decay = 0.8
    model = linear_model()
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.5, schedule="constant", ema=decay)
    result = train(model, separable_splits, cfg)
    (steps,) = averaged_snapshots
    assert len(steps) == 2 * (256 // 32)  # one update per optimizer step
    for name, param in model.state_dict().items():
        average = steps[0][name]  # the first update copies, then ema = decay * ema + (1 - decay) * w
        for snapshot in steps[1:]:
            average = decay * average + (1 - decay) * snapshot[name]
        assert torch.allclose(param, average, atol=1e-6), name
        assert (param - steps[-1][name]).abs().max() > 1e-4, name  # not the raw last weights
    # the averaged weights are the ones judged
    x_val = normalise(separable_splits.x_val, result.mean, result.std, CPU)
    assert result.val_accuracy == evaluate(model, x_val, separable_splits.y_val)


def test_tta_averages_the_logits_of_an_image_and_its_mirror():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x = torch.randn(200, 2, 4, 4)
    y = torch.randint(0, 3, (200,))
    with torch.no_grad():
        mean_logits = (model(x) + model(x.flip(3))) / 2
        expected = (mean_logits.argmax(1) == y).float().mean().item()
        plain = (model(x).argmax(1) == y).float().mean().item()
    assert expected != plain  # the mirror changes some predictions, so the check can tell them apart
    assert evaluate(model, x, y, tta=True) == pytest.approx(expected)
    assert evaluate(model, x, y, tta=False) == pytest.approx(plain)


def test_triangular_schedule_peaks_at_warmup_end_and_ends_at_zero():
    f = triangular(100, 0.2)
    assert f(0) == 0 and f(10) == pytest.approx(0.5) and f(20) == 1.0 and f(60) == pytest.approx(0.5) and f(100) == 0


BASELINE = dict(epochs=3, batch_size=32, lr=0.1)


@pytest.fixture(scope="module")
def baseline(separable_splits, small_convnet):
    """Plain training's weights and result for the small conv net on the separable task, seed 0."""
    model = small_convnet()
    result = train(model, separable_splits, TrainConfig(**BASELINE))
    return model.state_dict(), result


@pytest.mark.parametrize("overrides", [dict(cutout=3), dict(mixup=0.2), dict(sam_rho=0.05), dict(ema=0.9),
                                       dict(swa=True, swa_start=0.5), dict(schedule="triangular"),
                                       dict(label_smoothing=0.1), dict(crop_padding=1)],
                         ids=lambda o: next(iter(o)))
def test_each_training_technique_changes_the_weights_and_still_learns(separable_splits, small_convnet, baseline,
                                                                      overrides):
    plain, plain_result = baseline
    model = small_convnet()
    result = train(model, separable_splits, TrainConfig(**BASELINE, **overrides))
    assert plain_result.val_accuracy > 0.9 and result.val_accuracy > 0.7  # chance is 0.25
    changed = max((value.float() - plain[name].float()).abs().max().item() for name, value in model.state_dict().items())
    assert changed > 1e-3


def test_tta_changes_evaluation_only(separable_splits, small_convnet, baseline):
    plain, _ = baseline
    model = small_convnet()
    result = train(model, separable_splits, TrainConfig(**BASELINE, tta=True))
    for name, value in model.state_dict().items():
        assert torch.equal(value, plain[name]), name
    x_val = normalise(separable_splits.x_val, result.mean, result.std, CPU)
    with torch.no_grad():
        logits = model.eval()(x_val) + model(x_val.flip(3))
    assert result.val_accuracy == (logits.argmax(1) == separable_splits.y_val).float().mean().item()
