"""One answer to "what does this architecture cost, and may it train?".

:class:`Evaluator` resolves a sampled configuration into an architecture, builds it once,
takes its parameters and MACs (fvcore), the memory of one training batch and, when asked,
its inference latency, and checks every budget of the spec and the family's own search
constraint (efficientnet's ``alpha*beta^2*gamma^2``). ``archscale check``, budget-aware
sampling, GPU shares, both stages of compound scaling and the trial itself all ask it;
nothing else in :mod:`archscale.search` measures a model.

Caches: params, MACs and the activation size of one image depend on the architecture
alone, so they are kept per process by its text form (a worker reused across trials, or
the driver's sampler and resources, build and count a network once); so is the latency, by
the architecture, device, batch and precision (a reused worker times an architecture once).
Memory depends on the recipe (batch size, precision) and the device as well, and is kept
per evaluator.

Proxies (``search.proxies``, :mod:`archscale.analysis.proxies`): computed when the caller hands
the evaluator a minibatch (the trial does, from its training split, before it trains), on the
network as initialised under the trial's seed, each timed; kept per process by the
architecture's text, the seed and the minibatch's seed and size, like the other costs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from archscale.analysis.cost import activation_mb, count_macs, count_params, latency_ms
from archscale.analysis.proxies import Scores, minibatch, score

from archscale.search.configs.context import TrialContext, resolve_arch, train_values
from archscale.space import Arch, SpaceError, SearchSpace, build, get_space
from archscale.trainer import TrainConfig, resolve_device
from archscale.trainer.memory import step_peak_mb


@dataclass(frozen=True)
class Verdict:
    """What an architecture costs and why it may not train (``why`` empty: it may)."""

    config: dict[str, Any]
    arch: Arch | None  # None: the family refused the values (``why`` says why)
    params: int | None = None
    macs: int | None = None  # multiply-adds of one image (fvcore)
    memory_mb: float | None = None  # one training batch
    memory_source: str = ""  # cuda_peak | cpu_estimate
    latency_ms: float | None = None  # batch 1, median
    latency_batch_ms: float | None = None  # one training-size batch, median
    why: str = ""
    buildable: bool = True  # False: building or costing it raised (``why`` holds the error's line)
    proxies: dict[str, Any] = field(default_factory=dict)  # proxy_NAME, proxy_NAME_s, proxy_errors (search.proxies)

    @property
    def feasible(self) -> bool:
        return self.arch is not None and not self.why

    def metrics(self) -> dict[str, Any]:
        """The measured values and the architecture's text, as columns of trials.csv."""
        out = {k: getattr(self, k) for k in ("params", "macs", "memory_mb", "latency_ms", "latency_batch_ms")
               if getattr(self, k) is not None}
        if self.memory_source:
            out["memory_source"] = self.memory_source
        out.update(self.proxies)
        if self.arch is not None:
            out["arch"] = self.arch.text
        return out


@dataclass(frozen=True)
class _Cost:
    params: int
    macs: int
    activation_mb_per_image: float  # fp32 activations kept for backward, one image


_COSTS: dict[str, _Cost] = {}  # arch text -> cost, per process
_LATENCIES: dict[tuple, dict[str, float]] = {}  # (arch text, device, batch, precision) -> latencies, per process
_PROXIES: dict[tuple, Scores] = {}  # (arch text, seed, proxies, minibatch size) -> scores, per process
_MAX_CACHED = 4096


def has_constraint(family: str) -> bool:
    """Whether a family restricts its search beyond its parameters' ranges (see
    :meth:`archscale.space.SearchSpace.constraint_violation`)."""
    return type(get_space(family)).constraint_violation is not SearchSpace.constraint_violation


def budget_violation(ctx: TrialContext, params: int | None, macs: int | None, latency: float | None = None, *,
                     memory_mb: float | None = None, memory_source: str = "cpu_estimate",
                     arch: Arch | None = None) -> str:
    """Why the figures break the spec's budgets or the family's constraint ("" when they do not)."""
    broken = []
    if arch is not None and (why := get_space(arch.family).constraint_violation(arch.params)):
        broken.append(why)
    if ctx.max_params is not None and params is not None and params > ctx.max_params:
        broken.append(f"params {params:,} > max_params {ctx.max_params:,}")
    if ctx.max_macs is not None and macs is not None and macs > ctx.max_macs:
        broken.append(f"macs {macs:,} > max_macs {ctx.max_macs:,}")
    if ctx.max_latency_ms is not None and latency is not None and latency > ctx.max_latency_ms:
        broken.append(f"latency_ms {latency:.3f} > max_latency_ms {ctx.max_latency_ms:g}")
    if ctx.max_memory_mb is not None and memory_mb is not None and memory_mb > ctx.max_memory_mb:
        broken.append(f"memory_mb {memory_mb:,.1f} ({memory_source}) > max_memory_mb {ctx.max_memory_mb:g}")
    return "; ".join(broken)


# What CUDA's libraries say when an allocation fails without torch.OutOfMemoryError: the
# runtime's own error (CUDA_CHECK), cuBLAS and cuDNN handles and workspaces.
CUDA_OOM_TEXTS = ("CUDA out of memory", "CUDA error: out of memory", "cudaErrorMemoryAllocation",
                  "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def is_cuda_out_of_memory(err: BaseException) -> bool:
    """Whether a GPU allocation failed: ``torch.OutOfMemoryError``, or the words cuBLAS, cuDNN
    or the CUDA runtime use for it, in ``err`` or in what it wraps (torch.compile raises its
    own error from the one its compiled code hit)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, torch.OutOfMemoryError) or any(t in str(err) for t in CUDA_OOM_TEXTS):
            return True
        err = err.__cause__ or err.__context__
    return False


def is_out_of_memory(err: BaseException) -> bool:
    """A GPU allocation that failed (:func:`is_cuda_out_of_memory`), or a CPU allocation the host refused."""
    text = str(err)
    return is_cuda_out_of_memory(err) or "can't allocate memory" in text or "not enough memory" in text


def describe_error(err: BaseException) -> str:
    """One line for trials.csv: the exception's type and message (500 characters at most)."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return (f"out of memory: {text}" if is_out_of_memory(err) else text)[:500]


def proxy_batch(data, size: int, seed: int):
    """The proxies' minibatch: ``size`` images of ``data`` = (images, labels), drawn with
    ``seed`` (:func:`archscale.analysis.proxies.minibatch`), on the CPU."""
    x, y = data
    return minibatch(x.cpu(), y.cpu(), size, seed)


@dataclass
class Evaluator:
    """Measures and judges the configurations of one search on one device.

    ``device``: where memory and latency are taken ("auto": CUDA when this process has it);
    ``latency``: take the inference latency too (the trial does; on the driver only ``check``
    with a latency budget, since the driver's device need not be the trial's).
    """

    ctx: TrialContext
    device: str = "auto"
    latency: bool = False
    _memory: dict[tuple, tuple[float, str]] = field(default_factory=dict, repr=False)

    @property
    def restricts(self) -> bool:
        """Whether any configuration can be refused before it trains (a budget or a constraint)."""
        return self.ctx.has_budgets or has_constraint(self.ctx.family)

    def __call__(self, config: dict[str, Any], *, full: bool = False, model=None, data=None) -> Verdict:
        """The verdict on ``config``. Only what the budgets need is measured unless ``full``
        (params, MACs and memory always; latency when the evaluator takes it). ``model``: the
        network already built from this configuration (the trial's, under its seed), so it is
        not built again; it is left on the evaluator's device when latency was taken.
        ``data``: (images, labels) of the training split; with ``full`` and ``search.proxies``,
        the proxies are computed on a minibatch of it (:func:`proxy_batch`)."""
        try:
            arch = resolve_arch(self.ctx, config)
        except SpaceError as err:
            return Verdict(dict(config), None, why=str(err))
        try:
            return self._judge(arch, config, full, model, data)
        except Exception as err:  # noqa: BLE001 - a family's code may fail in any way; the search goes on
            if is_cuda_out_of_memory(err):
                raise  # the GPU's state, not the configuration's: the trial is retried
            return Verdict(dict(config), arch, why=f"cannot be built: {describe_error(err)}", buildable=False)

    def _judge(self, arch: Arch, config: dict[str, Any], full: bool, model, data=None) -> Verdict:
        why = get_space(arch.family).constraint_violation(arch.params) or ""
        ctx = self.ctx
        if not full and (why or not ctx.has_budgets):
            return Verdict(dict(config), arch, why=why)
        recipe = train_values(ctx, config)
        cost = self._cost(arch, model)
        measured: dict[str, Any] = {"params": cost.params, "macs": cost.macs}
        if full and data is not None and self.ctx.proxies:
            measured["proxies"] = self._proxies_of(arch, model, config, data).metrics()
        if full or ctx.max_memory_mb is not None:
            if model is None:
                model = build(arch)
            measured["memory_mb"], measured["memory_source"] = self._batch_memory(arch, model, recipe, cost)
        if self.latency and (full or ctx.max_latency_ms is not None):
            if model is None:
                model = build(arch)
            measured.update(self._latency_of(arch, model, recipe))
        why = budget_violation(ctx, cost.params, cost.macs, measured.get("latency_ms"),
                               memory_mb=measured.get("memory_mb"),
                               memory_source=measured.get("memory_source", "cpu_estimate"), arch=arch)
        return Verdict(dict(config), arch, why=why, **measured)

    # ------------------------------------------------------------------ measurements

    def _cost(self, arch: Arch, model) -> _Cost:
        cost = _COSTS.get(arch.text)
        if cost is None:
            model = model if model is not None else build(arch)
            shape = self.ctx.input_shape
            cost = _Cost(count_params(model), count_macs(model, shape), activation_mb(model, shape, 1))
            if len(_COSTS) >= _MAX_CACHED:
                _COSTS.clear()
            _COSTS[arch.text] = cost
        return cost

    def counts(self, config: dict[str, Any]) -> dict[str, int]:
        """``params`` and ``macs`` of ``config``'s network (cached by its architecture, like
        every cost here). Raises :class:`~archscale.space.SpaceError` for values the family refuses."""
        cost = self._cost(resolve_arch(self.ctx, config), None)
        return {"params": cost.params, "macs": cost.macs}

    def proxies(self, config: dict[str, Any], data, names: tuple[str, ...]) -> Scores:
        """The proxies ``names`` of ``config``'s network as its trial would compute them (on the
        network initialised under the trial's seed and the trial's seeded minibatch of ``data``,
        the training split's (images, labels)); search.prescreen asks this on the driver. Raises
        :class:`~archscale.space.SpaceError` for values the family refuses."""
        return self._proxies_of(resolve_arch(self.ctx, config), None, config, data, names)

    def _proxies_of(self, arch: Arch, model, config: dict[str, Any], data, names: tuple[str, ...] | None = None
                    ) -> Scores:
        """The proxies of ``names`` (default ``search.proxies``; the baselines params and macs
        aside) on the network as the trial initialises it (``model``, else built under the
        trial's seed) and the trial's seeded minibatch of ``data``; on :meth:`proxy_device`, the
        model left as it was."""
        names = tuple(self.ctx.proxies if names is None else names)
        seed = int(config.get("seed", self.ctx.seed))
        device = self.proxy_device()
        key = (arch.text, seed, names, self.ctx.proxy_batch, device.type)
        if key not in _PROXIES:
            x, y = proxy_batch(data, self.ctx.proxy_batch, seed)
            with torch.random.fork_rng(devices=[]):  # the trial's training draws the same numbers with or without
                if model is None:
                    torch.manual_seed(seed)
                    model = build(arch)
                elif device.type != "cpu":
                    model = copy.deepcopy(model)  # the caller's stays where it is
                if len(_PROXIES) >= _MAX_CACHED:
                    _PROXIES.clear()
                _PROXIES[key] = score(model.to(device), x.to(device), y.to(device), names)
        return _PROXIES[key]

    def proxy_device(self) -> torch.device:
        """Where the proxies are computed: the evaluator's device when it is CUDA (a prescreen of
        224-pixel networks takes seconds a candidate on a CPU), else the CPU (synflow runs in
        float64, which Apple's MPS lacks)."""
        device = self.resolved_device()
        return device if device.type == "cuda" else torch.device("cpu")

    def resolved_device(self):
        return resolve_device(str(self.device))

    def _batch_memory(self, arch: Arch, model, recipe: dict[str, Any], cost: _Cost) -> tuple[float, str]:
        """Memory (MiB) of one training batch and how it was obtained: measured on CUDA
        (``cuda_peak``: :func:`archscale.trainer.memory.step_peak_mb`, on a copy of the model,
        since a step changes weights and BatchNorm statistics), else estimated from the
        activation sizes (``cpu_estimate``)."""
        device = self.resolved_device()
        batch = int(recipe["batch_size"])
        if device.type != "cuda":
            return round(cost.activation_mb_per_image * batch, 3), "cpu_estimate"
        key = (arch.text, str(device), batch, recipe.get("precision"), recipe.get("channels_last"))
        if key not in self._memory:
            cfg = TrainConfig(**recipe)
            probe = copy.deepcopy(model)
            peak = step_peak_mb(probe, tuple(self.ctx.input_shape[1:]), self.ctx.data_context["num_classes"], cfg,
                                device)
            del probe
            self._memory[key] = (round(peak, 3), "cuda_peak")
        return self._memory[key]

    def _latency_of(self, arch: Arch, model, recipe: dict[str, Any]) -> dict[str, float]:
        """Inference latency on the evaluator's device, batch 1 and the training batch (median
        ms), under the autocast the trial trains with. Moves the model to that device."""
        device = self.resolved_device()
        precision = recipe.get("precision", "auto")
        dtype = torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None
        batch = int(recipe["batch_size"])
        key = (arch.text, str(device), batch, precision)
        model.to(device)
        if key not in _LATENCIES:
            shape = self.ctx.input_shape
            if len(_LATENCIES) >= _MAX_CACHED:
                _LATENCIES.clear()
            _LATENCIES[key] = {
                "latency_ms": round(latency_ms(model, shape, 1, autocast_dtype=dtype), 4),
                "latency_batch_ms": round(latency_ms(model, shape, batch, autocast_dtype=dtype), 4)}
        return _LATENCIES[key]
