"""The one evaluator: what a configuration costs and whether it may train, measured once."""

import pytest
import torch

import archscale.search.configs.evaluate as evaluate
from archscale.analysis.cost import activation_mb
from archscale.search.configs.context import TrialContext, resolve_arch
from archscale.search.configs.evaluate import Evaluator
from archscale.space import build

MNIST = {"in_channels": 1, "num_classes": 10, "image_size": 28}
SMALL_RESNET = {"base": "resnet18", "base_width": 0.125, "divisor": 4, "beta": 1.0, "phi": 1.0,
                "stochastic_depth": 0.0, "dropout": 0.0}


def ctx_for(family="budgeted", fixed=None, **budgets):
    return TrialContext(run_dir=".", family=family, fixed=fixed or {}, data_context=MNIST, data_info={},
                        train={"batch_size": 32, "precision": "auto", "device": "cpu"}, **budgets)


def test_figures_agree_with_fvcore_and_a_parameter_count_made_here():
    from fvcore.nn import FlopCountAnalysis

    verdict = Evaluator(ctx_for())({"c1_width": 8}, full=True)
    model = build(verdict.arch).eval()
    assert verdict.params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        flops = FlopCountAnalysis(model, torch.zeros(1, 1, 28, 28))
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        assert verdict.macs == flops.total()
    assert verdict.memory_source == "cpu_estimate"
    assert verdict.memory_mb == pytest.approx(activation_mb(model, (1, 1, 28, 28), 32), abs=1e-3)
    assert verdict.feasible and verdict.why == "" and verdict.latency_ms is None  # no latency asked


def test_each_architecture_is_built_and_counted_once(monkeypatch):
    built = []
    real = evaluate.build
    monkeypatch.setattr(evaluate, "build", lambda arch: built.append(arch.text) or real(arch))
    monkeypatch.setattr(evaluate, "_COSTS", {})
    ev = Evaluator(ctx_for(max_params=10**9))
    first = ev({"c1_width": 12})
    again = Evaluator(ctx_for(max_macs=10**12))({"c1_width": 12})  # another evaluator of the same process
    assert (first.params, first.macs) == (again.params, again.macs)
    assert len(built) == 1


def test_every_budget_and_the_family_constraint_are_checked():
    v = Evaluator(ctx_for(max_params=1_000))({"c1_width": 64})
    assert not v.feasible and v.why.startswith("params ") and "> max_params 1,000" in v.why
    v = Evaluator(ctx_for(max_macs=1_000))({"c1_width": 64})
    assert "> max_macs 1,000" in v.why
    v = Evaluator(ctx_for(max_memory_mb=0.01))({"c1_width": 64})
    assert "(cpu_estimate) > max_memory_mb 0.01" in v.why and v.memory_mb > 0.01
    v = Evaluator(ctx_for(max_latency_ms=1e-9), device="cpu", latency=True)({"c1_width": 8})
    assert "> max_latency_ms" in v.why and v.latency_ms > 0
    outside = Evaluator(ctx_for("efficientnet", SMALL_RESNET))({"alpha": 1.0, "gamma": 1.0})
    assert "alpha*beta^2*gamma^2 = 1.000 is outside target 2" in outside.why
    assert outside.params is None  # refused without building: no budget asked for a measurement
    inside = Evaluator(ctx_for("efficientnet", SMALL_RESNET))({"alpha": 2.0, "gamma": 1.0})
    assert inside.feasible


def test_a_value_the_family_refuses_is_a_verdict_not_an_exception():
    v = Evaluator(ctx_for())({"c1_width": 0})
    assert v.arch is None and not v.feasible and "c1_width" in v.why


def test_memory_on_cuda_is_measured_on_a_copy(monkeypatch):
    """The measured step changes weights and BatchNorm statistics: never those of the model trained."""
    from archscale.search.configs import evaluate

    measured = []
    monkeypatch.setattr(evaluate, "resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(evaluate, "step_peak_mb", lambda model, *args: measured.append(model) or 12.5)
    ctx = ctx_for(max_memory_mb=100.0)
    ev = Evaluator(ctx, device="cuda")
    model = build(resolve_arch(ctx, {"c1_width": 8}))
    verdict = ev({"c1_width": 8}, model=model)
    assert (verdict.memory_mb, verdict.memory_source) == (12.5, "cuda_peak")
    assert len(measured) == 1 and measured[0] is not model
    ev({"c1_width": 8, "train.batch_size": 64})  # another recipe: measured again
    assert len(measured) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_memory_on_cuda_grows_with_the_batch():
    small = Evaluator(ctx_for(), device="cuda")({"c1_width": 64}, full=True)
    large = Evaluator(ctx_for(), device="cuda")({"c1_width": 64, "train.batch_size": 512}, full=True)
    assert small.memory_source == "cuda_peak" and small.memory_mb < large.memory_mb


def test_proxies_are_computed_on_cuda_when_the_evaluator_has_it_else_on_the_cpu(monkeypatch):
    ev = Evaluator(ctx_for(), device="cpu")
    assert ev.proxy_device() == torch.device("cpu")
    monkeypatch.setattr(Evaluator, "resolved_device", lambda self: torch.device("cuda", 1))
    assert ev.proxy_device() == torch.device("cuda", 1)
    monkeypatch.setattr(Evaluator, "resolved_device", lambda self: torch.device("mps"))
    assert ev.proxy_device() == torch.device("cpu")  # synflow's float64 is not on MPS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_proxies_on_cuda_agree_with_the_cpu_and_leave_the_trials_network_on_the_cpu(monkeypatch):
    ctx = TrialContext(run_dir=".", family="budgeted", fixed={}, data_context=MNIST, data_info={},
                       train={"batch_size": 32, "precision": "auto", "device": "cuda"}, seed=3,
                       proxies=("synflow", "naswot", "grad_norm", "zico"), proxy_batch=16)
    data = (torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8), torch.arange(100) % 10)
    torch.manual_seed(3)
    model = build(resolve_arch(ctx, {"c1_width": 8}))
    values = {}
    for device in ("cpu", "cuda"):
        monkeypatch.setattr(evaluate, "_PROXIES", {})
        values[device] = Evaluator(ctx, device=device)({"c1_width": 8}, full=True, model=model, data=data).metrics()
    assert all(p.device.type == "cpu" for p in model.parameters())
    for name in ctx.proxies:
        assert values["cuda"][f"proxy_{name}"] == pytest.approx(values["cpu"][f"proxy_{name}"], rel=1e-3), name


def test_proxies_are_computed_on_the_seeded_network_and_leave_the_trial_as_it_was(monkeypatch):
    monkeypatch.setattr(evaluate, "_PROXIES", {})
    ctx = TrialContext(run_dir=".", family="budgeted", fixed={}, data_context=MNIST, data_info={},
                       train={"batch_size": 32, "precision": "auto", "device": "cpu"}, seed=3,
                       proxies=("params", "synflow", "naswot", "grad_norm", "zico"), proxy_batch=16)
    data = (torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8), torch.arange(100) % 10)
    torch.manual_seed(3)
    model = build(resolve_arch(ctx, {"c1_width": 8}))
    weights = [p.detach().clone() for p in model.parameters()]
    state = torch.get_rng_state()
    verdict = Evaluator(ctx)({"c1_width": 8}, full=True, model=model, data=data)
    assert torch.equal(state, torch.get_rng_state()), "the trial's training draws the same random numbers"
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    metrics = verdict.metrics()
    for name in ("synflow", "naswot", "grad_norm", "zico"):
        assert metrics[f"proxy_{name}"] == pytest.approx(verdict.proxies[f"proxy_{name}"])
        assert metrics[f"proxy_{name}_s"] >= 0
    assert "proxy_params" not in metrics and "proxy_errors" not in metrics
    # the same network built by the evaluator under the trial's seed scores the same
    monkeypatch.setattr(evaluate, "_PROXIES", {})
    again = Evaluator(ctx)({"c1_width": 8}, full=True, data=data).metrics()
    assert again["proxy_synflow"] == pytest.approx(metrics["proxy_synflow"])
    assert again["proxy_zico"] == pytest.approx(metrics["proxy_zico"])
    assert "proxy_synflow" not in Evaluator(ctx)({"c1_width": 8}, full=True).metrics()  # no data: no proxies
