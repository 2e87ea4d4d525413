"""The whole spec: the search section (resources, ASHA, the two stages, objectives) and
:class:`Spec`, which holds every section."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, field_validator, model_validator

from archscale.spec.objectives import METRICS, PROXY_NAMES
from archscale.spec.sections import OBJECTIVES, DataSpec, Dimension, SpaceSpec, TrainSpec, _Strict


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0, description="CPU cores per trial; also the trial's torch threads")
    gpu: float | str = Field(
        "auto", description="GPUs per trial: a fraction below 1 shares one GPU, 'auto' sizes the fraction from "
                            "the measured peak memory of one training step (0 where the cluster has no GPU)")

    workers: int = Field(1, ge=1, description="data-parallel workers per trial (Ray Train's TorchTrainer, DDP: gloo on "
                         "CPU, NCCL on CUDA), each with the cpu and gpu above; train.batch_size is the global batch "
                         "(batch_size / workers per worker); 1 trains in the trial's own process")

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, value: Any) -> float | str:
        allowed = "allowed: 'auto', a fraction in [0, 1] (several trials share one GPU) or a whole number of GPUs"
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"gpu {value!r} is not allowed; {allowed}")
        if value < 0 or (value > 1 and value != int(value)):
            raise ValueError(f"gpu {value!r} is not allowed; {allowed}")
        return float(value)


class AshaSpec(_Strict):
    """Asynchronous successive halving: Ray Tune's ASHAScheduler on validation accuracy when
    that is the one objective; with several, each rung judges a trial on all of them, by
    non-dominated level and crowding distance (MO-ASHA), so a small network on the front is
    not stopped for learning slower. A trial that is never stopped trains its full schedule."""

    grace_period: int = Field(1, ge=1, description="epochs every trial trains before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1, description="at each rung, trials outside the best 1/reduction_factor stop")


ADDRESS = re.compile(r"^(auto|ray://[^\s:/]+:\d+|[^\s:/]+:\d+)$")


class CoefficientsStage(_Strict):
    """Stage 1 of a compound-scaling search: (alpha, beta, gamma) at a fixed phi."""

    sampler: Literal["tpe", "nsga2", "random", "grid"] = Field("grid", description="the sampler of stage 1")
    num_trials: int | None = Field(None, ge=1, description="default: every grid point (grid), else search.num_trials")
    phi: float = Field(1.0, gt=0, le=8, description="phi at which the coefficients are compared")


class PhiSweepStage(_Strict):
    """Stage 2: the best (alpha, beta, gamma) of stage 1, scaled by every phi of a list."""

    phi: list[float] = Field(..., min_length=1, description="values of phi, e.g. [0, 1, 2, 3]")
    compare_single_dimension: bool = Field(False, description="also scale depth only, width only and resolution "
                                           "only to the same MACs multiplier, for scaling.png")

    @field_validator("phi")
    @classmethod
    def _phis(cls, value: list[float]) -> list[float]:
        for phi in value:
            if not 0 <= phi <= 8:
                raise ValueError(f"phi {phi} is out of range; allowed: 0 <= phi <= 8")
        if len(set(value)) != len(value):
            raise ValueError(f"the list {value} repeats a value")
        return value


class Stages(_Strict):
    """``search.stages`` of the ``efficientnet`` family: stage 1 then stage 2, one run."""

    coefficients: CoefficientsStage = Field(default_factory=CoefficientsStage)
    phi_sweep: PhiSweepStage


class PrescreenSpec(_Strict):
    """``search.prescreen``: before the sampler proposes anything, draw ``pool`` feasible
    configurations at random, score each untrained network with a training-free ``proxy`` on
    one seeded minibatch, and train the best ``keep`` first (ranked by non-dominated sorting
    of the proxy and the cost objectives); the sampler, told their results, proposes the rest."""

    proxy: str = Field(..., description=f"the proxy that ranks the pool, among {', '.join(PROXY_NAMES)}; auto: the "
                       "one whose ranking agrees best with the accuracy of the check's candidates, drawn at random; "
                       "vote: the mean of each candidate's ranks under params, synflow and grad_norm")
    pool: int = Field(80, ge=2, le=100_000, description="feasible candidates drawn at random and scored")
    keep: int = Field(..., ge=1, description="the best candidates trained first (at most pool and search.num_trials)")
    check: int = Field(0, ge=0, description="candidates of the pool, spread evenly over the proxy's ranking (auto: "
                       "drawn at random), trained "
                       "first to test the proxy: its best are trained only if its ranking agrees with their "
                       "val_accuracy (Spearman, one-sided p < 0.1); 0: trust it")

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str) -> str:
        if value not in (*PROXY_NAMES, "auto", "vote"):
            raise ValueError(f"unknown proxy {value!r}; allowed: auto, vote, {', '.join(PROXY_NAMES)}")
        return value

    @model_validator(mode="after")
    def _sizes(self) -> "PrescreenSpec":
        if self.keep + self.check > self.pool:
            what = f"keep + check ({self.keep} + {self.check})" if self.check else f"keep {self.keep}"
            raise ValueError(f"{what} is more than pool {self.pool}; allowed: at most {self.pool}")
        if self.proxy == "auto" and self.check < 3:
            raise ValueError(f"proxy auto chooses its proxy by the check, but check is {self.check}; allowed: 3 or "
                             "more (10 is the sampler's own random start-up at 40 trials)")
        if self.check == 1 or self.check == 2:
            raise ValueError(f"check {self.check} cannot test a ranking; allowed: 0 (trust the proxy) or 3 and more")
        return self


# The default search, chosen by evidence (docs: Benchmarks, Search cost): with sampler auto and 30 or more
# trials, the pool's best 10 by the mean rank of params, synflow and grad_norm train first, in place of the
# sampler's random start-up (auto+pre:vote:80:10 in benchmarks/sampler_quality.py).
DEFAULT_PRESCREEN = {"proxy": "vote", "pool": 80, "keep": 10}
DEFAULT_PRESCREEN_TRIALS = 30


class SearchSpec(_Strict):
    sampler: Literal["auto", "tpe", "nsga2", "random", "grid", "gp"] = Field(
        "auto", description="the Optuna sampler that proposes configurations; auto: gp while its own time per "
                            "suggestion stays within 5% of a trial's median training time, else tpe")
    num_trials: int = Field(10, ge=1, description="configurations to try; over-budget ones are recorded but not "
                            "counted, except with grid (every point counts; at most the grid's size)")
    objectives: list[str] = Field(default_factory=lambda: ["val_accuracy:max"], min_length=1, max_length=3,
                                  description=f"METRIC:max or METRIC:min, METRIC among {', '.join(OBJECTIVES)}")
    max_concurrent: int = Field(2, ge=1, description="trials at once")
    resources_per_trial: Resources = Field(default_factory=Resources)
    constraints: bool = Field(False, description="also tell over-budget configurations to tpe, nsga2 and gp as "
                              "Optuna constraints (Trial.set_constraint), not only as 0 accuracy")
    scheduler: Literal["none", "asha"] = Field("none", description="asha: stop weak trials early (on every objective, val_accuracy at that epoch)")
    asha: AshaSpec = Field(default_factory=AshaSpec)
    max_failures: int = Field(1, ge=0, description="retries of a trial whose worker died or ran out of GPU memory")
    time_budget_s: float | None = Field(None, gt=0, description="wall-clock seconds for this invocation; unfinished "
                                                                "trials are stopped and rerun by --resume")
    address: str | None = Field(None, description="Ray cluster: null starts Ray here; 'auto', 'HOST:PORT' (the GCS) "
                                                  "or 'ray://HOST:PORT' (Ray Client) joins an existing cluster")
    resource_wait_s: float = Field(0.0, ge=0, description="a cluster that grows (Ray's autoscaler): seconds to "
                                   "wait at start for a node that can hold one trial; 0 takes the cluster as it is "
                                   "(a trial no node can hold is refused at once)")
    store: str | None = Field(None, description="results store: a SQLite file shared between runs (relative: to the "
                                                "spec file's folder); a configuration already trained under the same "
                                                "key is read from it, not trained")
    proxies: list[str] = Field(default_factory=list, description="training-free proxies each trial computes before "
                               f"it trains, on one seeded minibatch of its training split, among {', '.join(PROXY_NAMES)} "
                               "(params and macs are measured anyway); recorded as proxy_NAME columns of trials.csv "
                               "with their seconds (proxy_NAME_s) and proxy_errors")
    proxy_batch: int = Field(64, ge=2, le=4096, description="images in the minibatch the proxies are computed on")
    prescreen: PrescreenSpec | None = Field(None, description="rank a random pool of candidates by a training-free "
                                            "proxy before training and train the best first: {proxy, pool, keep}; "
                                            "unset with sampler auto and 30 or more trials: {proxy: vote, pool: 80, "
                                            "keep: 10} (the benchmark's default by evidence); null: none")

    @field_validator("proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in PROXY_NAMES:
                raise ValueError(f"unknown proxy {name!r}; allowed: {', '.join(PROXY_NAMES)}")
        if len(set(value)) != len(value):
            raise ValueError(f"a proxy is named twice in {value}")
        return value

    track: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list, description="where each trial's curves also go while the search runs (RUN/study.db "
        "always does): tensorboard (RUN/tensorboard/<trial id>/), mlflow (one run per trial under one run for the "
        "search); needs pip install \"archscale[track]\"")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI for track: [mlflow]; null: a SQLite store "
                                   "in the run directory (RUN/mlflow.db), written into the run's spec.yaml")

    @field_validator("track")
    @classmethod
    def _track(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))  # each tracker once, in the order given

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not ADDRESS.match(value):
            raise ValueError(f"address {value!r} is not allowed; allowed: null (start Ray here), 'auto', "
                             "'HOST:PORT' or 'ray://HOST:PORT'")
        return value

    reference_point: dict[str, float] | None = Field(
        None, description="hypervolume reference point, metric -> value (default: chance accuracy, a cost's budget "
                         "or the largest in the space, else the worst completed value)")

    @field_validator("reference_point")
    @classmethod
    def _reference(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if not value:  # a run's spec.yaml writes null: checked without importing pareto (pandas)
            return value
        for metric in value:
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
        return value
    stages: Stages | None = Field(None, description="two-stage compound scaling (family efficientnet); "
                                  "replaces sampler and num_trials")

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        seen = set()
        for item in value:
            metric, _, mode = item.partition(":")
            if metric not in OBJECTIVES:
                raise ValueError(f"unknown objective {metric!r} in {item!r}; allowed: {', '.join(OBJECTIVES)} "
                                 "(test_accuracy is reported, never optimised)")
            if mode not in ("max", "min"):
                raise ValueError(f"objective {item!r} needs a direction ':max' or ':min'")
            if metric in seen:
                raise ValueError(f"objective {metric!r} is given twice")
            seen.add(metric)
        return value

    def objective_pairs(self) -> list[tuple[str, str]]:
        return [tuple(o.split(":")) for o in self.objectives]  # type: ignore[misc]


def section_of(raw: dict, key: str) -> tuple[dict, str]:
    """(the mapping of the spec dict ``raw`` that holds the dotted ``key``'s last part, that part)."""
    *parents, leaf = key.split(".")
    for part in parents:
        raw = raw[part]
    return raw, leaf


class Spec(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", description="names the run directory")
    seed: int = Field(0, ge=0, le=2**31 - 1,
                      description="seeds the sampler, the validation split and every trial's training (0 to 2^31 - 1: "
                                  "NumPy and Optuna take no negative seed)")
    data: DataSpec = Field(default_factory=DataSpec)
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    # Dotted keys this spec left unset that a default chosen from the rest of it filled in
    # (search.prescreen): a resumed run takes them from its own spec.yaml instead (rundir.as_run_began).
    _defaulted: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _grid(self) -> "Spec":
        self.train.dimensions()  # raises for bad train choices
        stages = self.search.stages
        if stages is not None:
            if self.space.family != "efficientnet":
                raise ValueError(f"search.stages: two-stage compound scaling needs space.family 'efficientnet', "
                                 f"not {self.space.family!r}")
            if "phi" in self.space.params:
                raise ValueError("space.params.phi: set by search.stages (coefficients.phi, phi_sweep.phi), "
                                 "not in space.params, when search.stages is given")
            searched_train = [d.name for d in self.train.dimensions() if d.kind != "fixed"]
            if searched_train:
                raise ValueError(f"{searched_train[0]}: training fields cannot be searched with search.stages "
                                 "(a compound-scaling run compares networks under one recipe); give one value")
            if (self.search.address or "").startswith("ray://"):
                raise ValueError(f"search.address: {self.search.address!r} (Ray Client) is not supported with "
                                 "search.stages; allowed: null, 'auto' or 'HOST:PORT'")
            if self.search.scheduler != "none":
                raise ValueError(f"search.scheduler: {self.search.scheduler!r} is not used with search.stages "
                                 "(every stage-2 point trains in full); allowed: none")
        sampler, where = (stages.coefficients.sampler, "search.stages.coefficients.sampler") if stages else (
            self.search.sampler, "search.sampler")
        if sampler == "grid":
            for d in self.searched():
                if d.size == math.inf:
                    raise ValueError(f"{where}: 'grid' needs finite choices, but space.params.{d.name} "
                                     "is a float range without step")
        return self

    @model_validator(mode="after")
    def _prescreen(self) -> "Spec":
        if "prescreen" not in self.search.model_fields_set and self._default_prescreen():
            self.search.prescreen = PrescreenSpec(**DEFAULT_PRESCREEN)
            self._defaulted = ("search.prescreen",)
        pre = self.search.prescreen
        if pre is None:
            return self
        if self.search.stages is not None:
            raise ValueError("search.prescreen is not used with search.stages (stage 1 is a grid of coefficients); "
                             "remove one of them")
        if self.search.sampler == "grid":
            raise ValueError("search.prescreen: sampler 'grid' trains every point, so there is nothing to "
                             "prescreen; allowed: auto, gp, tpe, nsga2 or random")
        if pre.keep + pre.check > self.search.num_trials:
            what = f"keep + check: {pre.keep} + {pre.check}" if pre.check else f"keep: {pre.keep}"
            raise ValueError(f"search.prescreen.{what} is more than search.num_trials ({self.search.num_trials}); "
                             f"allowed: at most {self.search.num_trials}")
        if pre.check and "val_accuracy" not in [m for m, _ in self.search.objective_pairs()]:
            raise ValueError("search.prescreen.check tests the proxy against val_accuracy, which is not among the "
                             f"objectives {self.search.objectives}; add val_accuracy:max or set check: 0")
        if not self.searched():
            raise ValueError("search.prescreen: nothing is searched (every space.params value is fixed)")
        return self

    def _default_prescreen(self) -> bool:
        """Whether a spec that does not set search.prescreen gets :data:`DEFAULT_PRESCREEN`: with
        sampler auto, :data:`DEFAULT_PRESCREEN_TRIALS` or more trials (where its 10 replace the
        sampler's random start-up of 10), no stages and something searched."""
        s = self.search
        return (s.sampler == "auto" and s.num_trials >= DEFAULT_PRESCREEN_TRIALS and s.stages is None
                and bool(self.searched()))

    @model_validator(mode="after")
    def _asha(self) -> "Spec":
        if self.search.scheduler != "asha":
            return self
        if "val_accuracy" not in [m for m, _ in self.search.objective_pairs()]:
            raise ValueError(f"search.scheduler: 'asha' stops trials on val_accuracy, which is not among the "
                             f"objectives {self.search.objectives}; add val_accuracy:max or use scheduler: none")
        if self.train.epochs < 2:
            raise ValueError("search.scheduler: 'asha' stops trials between epochs, but train.epochs is 1; "
                             "train for 2 or more epochs or use scheduler: none")
        if self.search.asha.grace_period >= self.train.epochs:
            raise ValueError(f"search.asha.grace_period: {self.search.asha.grace_period} is not below train.epochs "
                             f"({self.train.epochs}), so ASHA could stop no trial; allowed: 1 to {self.train.epochs - 1}")
        return self

    @model_validator(mode="after")
    def _workers(self) -> "Spec":
        r = self.search.resources_per_trial
        if r.workers == 1:
            return self
        searched = [d.grid() for d in self.train.dimensions() if d.name == "train.batch_size"]
        batches = searched[0] if searched else [self.train.batch_size]
        for batch in batches:
            if int(batch) % r.workers:
                raise ValueError(f"train.batch_size: {batch} is the global batch of {r.workers} workers "
                                 f"(search.resources_per_trial.workers) and must split evenly among them; allowed: "
                                 f"a multiple of {r.workers}")
        if self.train.sync_bn and (self.train.device == "cpu" or r.gpu == 0):
            why = "train.device is 'cpu'" if self.train.device == "cpu" else "search.resources_per_trial.gpu is 0"
            raise ValueError(f"train.sync_bn: true needs CUDA workers (torch's SyncBatchNorm runs on GPUs only), but "
                             f"{why}; allowed: false, or GPU workers")
        return self

    def searched(self) -> list[Dimension]:
        """Every searched dimension: the architecture's, then the training recipe's (``train.*``)."""
        return self.space.searched() + [d for d in self.train.dimensions() if d.kind != "fixed"]

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
