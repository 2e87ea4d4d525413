"""The one place a Ray Tune run is built: Ray started, the trainable with its data and
resources, one stopper (Ctrl-C and the time budget) for the whole invocation, and per
:meth:`Launcher.fit` the recorder, the run directory's files and the ``Tuner``.

``archscale run`` (one stage or two), ``ablate`` and ``repeat`` all launch through it.
Imports ray at its top: the entry points import it once the cluster's address is checked
(:func:`archscale.search.dispatch.cluster.prepare_address`).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TextIO

import ray
from ray import tune
from ray.autoscaler.sdk import request_resources
from ray.util.queue import Queue

from archscale.analysis.records import proxy_columns
from archscale.analysis.status import mark_ended, read_process
from archscale.search.configs.context import TrialContext
from archscale.search.configs.evaluate import Evaluator
from archscale.search.jobs.profile import PROFILE, phase
from archscale.search.dispatch.session import init_ray, runtime_env
from archscale.search.dispatch.recorder import (Interrupted, Progress, Relay, RunFiles, SearchStopper, TrialRecorder,
                                                drain)
from archscale.search.dispatch.resources import TrialResources, trial_resources
from archscale.search.dispatch.shared import share_splits
from archscale.spec import Spec, SpecError
from archscale.search.configs.runstore import RunStore
from archscale.search.dispatch.trial import run_trial
from archscale.search.dispatch.workers import GroupReleaser, run_workers_trial

SPEC_FILE = "spec.yaml"
RESOURCE_POLL_S = 5.0  # seconds between looks at a growing cluster's nodes


def write_spec(run_dir: Path, spec: Spec) -> Path:
    """Write the resolved spec as ``RUN_DIR/spec.yaml``, whole even if killed while writing."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{SPEC_FILE}.tmp"
    tmp.write_text(spec.to_yaml())
    return tmp.replace(run_dir / SPEC_FILE)


def spec_text(run_dir: Path, spec: Spec, resume: bool) -> str:
    """The text of the run's ``spec.yaml``: the file of a resumed run, else what :func:`write_spec` writes."""
    return (Path(run_dir) / SPEC_FILE).read_text() if resume else spec.to_yaml()


def require_resources(spec: Spec, out: TextIO | None = None) -> None:
    """Refuse a trial that asks for more CPUs or GPUs than any node of the Ray in use has:
    it would wait for ever. Ray started here, or a cluster taken as it is
    (``search.resource_wait_s`` 0): at once. A cluster that grows (Ray's autoscaler adds
    nodes): after a waiting line, once ``resource_wait_s`` has passed with no node big enough
    (meanwhile the bundle is asked of the autoscaler with ``request_resources``).

    A trial of several workers asks that per worker, and the live nodes together must hold
    ``workers`` such bundles (Ray Train places them with a placement group)."""
    address = spec.search.address or os.environ.get("RAY_ADDRESS") or "local"
    r = spec.search.resources_per_trial
    asked = {"CPU": float(r.cpu), **({"GPU": float(r.gpu)} if r.gpu != "auto" and float(r.gpu) > 0 else {})}
    where = "this machine's Ray" if address == "local" else f"the largest node of the Ray cluster at {address}"
    missing = _missing(asked)
    if not missing:
        _require_workers(spec, asked, address)
        return
    wait = spec.search.resource_wait_s if address != "local" else 0.0
    if wait > 0:
        name, amount, largest = missing[0]
        print(f"archscale: {amount:g} {name} per trial, but {where} has {largest:g}; "
              f"waiting up to {wait:g} s (search.resource_wait_s) for the autoscaler to add one",
              file=out or sys.stdout, flush=True)
        request_resources(bundles=[asked] * r.workers)
        deadline = time.monotonic() + wait
        while missing and time.monotonic() < deadline:
            time.sleep(min(RESOURCE_POLL_S, max(0.0, deadline - time.monotonic())))
            missing = _missing(asked)
        request_resources(bundles=[])  # Tune asks for what its trials need from here on
        if not missing:
            _require_workers(spec, asked, address)
            return
    name, amount, largest = missing[0]
    grow = (f" (after waiting {wait:g} s for a node)" if wait > 0 else
            "; on a cluster that grows, search.resource_wait_s waits for a node" if address != "local" else "")
    raise SpecError(f"search.resources_per_trial.{name.lower()}: {amount:g} {name} per trial, but {where} "
                    f"has {largest:g}, so no trial could ever start{grow}; allowed: {_allowed(name, largest)}")


def _require_workers(spec: Spec, asked: dict[str, float], address: str) -> None:
    """Refuse a trial of more workers than the live nodes can hold at once (each holds
    ``asked`` of every worker); a cluster that grows is given its ``resource_wait_s`` first."""
    workers = spec.search.resources_per_trial.workers
    if workers == 1:
        return
    wait = spec.search.resource_wait_s if address != "local" else 0.0
    held, deadline = worker_capacity(asked), time.monotonic() + wait
    if held < workers and wait > 0:
        request_resources(bundles=[asked] * workers)
        while held < workers and time.monotonic() < deadline:
            time.sleep(min(RESOURCE_POLL_S, max(0.0, deadline - time.monotonic())))
            held = worker_capacity(asked)
        request_resources(bundles=[])
    if held >= workers:
        return
    where = "this machine's Ray" if address == "local" else f"the Ray cluster at {address}"
    each = ", ".join(f"{amount:g} {name}" for name, amount in asked.items())
    raise SpecError(f"search.resources_per_trial.workers: {workers} workers of {each} each per trial, but the nodes "
                    f"of {where} hold at most {held} such workers at once, so no trial could ever start; allowed: "
                    f"at most {held}" + (f" (after waiting {wait:g} s for nodes)" if wait > 0 else ""))


def worker_capacity(asked: dict[str, float]) -> int:
    """How many workers of ``asked`` the live nodes hold at once, each node as many as fit in it."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return sum(min(math.floor(float(node.get(name, 0)) / amount + 1e-9) for name, amount in asked.items() if amount > 0)
               for node in nodes) if nodes else 0


def _allowed(name: str, largest: float) -> str:
    """What a trial may ask of ``name`` where the largest node has ``largest``."""
    if largest > 0:
        return f"at most {largest:g}"
    if name == "GPU":
        return "0 (no node has a GPU)"
    return (f"a node with {name}s first: none has any (a head started with --num-cpus=0 runs no trials; "
            "on a cluster that grows, the autoscaler must add one)")


def _missing(asked: dict[str, float]) -> list[tuple[str, float, float]]:
    """(resource, asked, largest node's amount) for each resource no live node has enough of."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    largest = {name: max((float(n.get(name, 0)) for n in nodes), default=0.0) for name in asked}
    return [(name, amount, largest[name]) for name, amount in asked.items() if amount > largest[name]]


STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}  # how the search is stopped from outside
STOP_GRACE_S = 15.0  # after SIGTERM, how long the process may take to end cleanly before it exits as it is


class SigtermDeadline:
    """After a SIGTERM, the process ends within :data:`STOP_GRACE_S` seconds whatever its main
    thread is doing, ``process.json`` of ``run_dir`` marked interrupted (:func:`_give_up`).

    Python runs a signal handler only when the main thread is back in Python code; inside
    Ray's C++ client it may wait a minute on processes that a SIGTERM sent to the whole process
    group (Slurm, systemd) has ended (a run stopped so while Ray started took 30 to 60 s, then
    ended with status 1 and nothing marked). So a thread watches for the signal through
    :func:`signal.set_wakeup_fd`, to which the interpreter writes the signal's number as it
    arrives, and starts the clock. :meth:`disarm` stops the clock once the search has stopped in
    time (:func:`stop_signals`), so that the front and the winner's files are written whatever
    they take."""

    def __init__(self, run_dir: Path | None, out: TextIO):
        self.run_dir, self.out = run_dir, out
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None
        self.disarmed = False

    def arm(self) -> None:
        with self.lock:
            if self.timer is None and not self.disarmed:
                self.timer = threading.Timer(STOP_GRACE_S, _give_up, args=(self.run_dir, self.out))
                self.timer.daemon = True
                self.timer.start()

    def close(self) -> None:
        """The block it guards has ended (:func:`sigterm_interrupts`): its caller, whose main
        thread runs, decides what follows (the CLI gives its own exit a deadline)."""
        with self.lock:
            self.disarmed = True
            if self.timer is not None:
                self.timer.cancel()

    def disarm(self) -> None:
        """The search stopped in time after the SIGTERM that armed the deadline: no deadline
        from here on (a second SIGTERM interrupts at once)."""
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.disarmed = True

    @contextmanager
    def watching(self):
        """While the block runs, a SIGTERM arms the deadline even if the main thread never
        returns to Python code. Main thread only (as :func:`signal.set_wakeup_fd` is)."""
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        try:
            previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            os.close(read_end)
            os.close(write_end)
            yield
            return
        watcher = threading.Thread(target=self._watch, args=(read_end,), name="archscale-sigterm", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous)
            os.close(write_end)  # the watcher reads the end of the pipe, closes it and returns

    def _watch(self, read_end: int) -> None:
        try:
            while chunk := os.read(read_end, 64):
                if signal.SIGTERM in chunk:
                    self.arm()
        finally:
            os.close(read_end)


_DEADLINE: SigtermDeadline | None = None  # the invocation's (sigterm_interrupts), while one runs


@contextmanager
def stop_signals(stopper, out: TextIO, run_dir: Path | None = None):
    """The first Ctrl-C or SIGTERM (``kill``, a batch scheduler at its time limit, a container
    being stopped) stops the search cleanly: finished trials are kept, the rest rerun by
    ``--resume``. A second one (or one while the time budget stops the search) stops at once.
    In place of Ray's own SIGTERM handler, which ends the driver with a stack dump and nothing
    written.

    A SIGTERM sent to the whole process group (Slurm, systemd) ends Ray's local processes
    too, and Tune's clean stop then waits on them; so after SIGTERM the process exits
    :data:`STOP_GRACE_S` seconds later whatever it is doing (:class:`SigtermDeadline`: the
    invocation's, else one of this block), ``run_dir``'s ``process.json`` marked interrupted
    (the finished trials are in ``trials.csv`` already)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deadline = _DEADLINE or SigtermDeadline(run_dir, out)

    def handler(signum, frame):
        if stopper.reason is not None:  # a second signal, or one while the time budget stops the search
            raise Interrupted(stopper.signum if stopper.reason == "interrupted" else signum)
        stopper.interrupt(signum)
        name = STOP_SIGNALS[signum]
        print(f"archscale: stopping after {name}; finished trials are kept ({name} again to stop at once)",
              file=out, flush=True)
        if signum == signal.SIGTERM:
            deadline.arm()

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        deadline.disarm()  # stopped in time: what follows (the front, the winner's files) is not cut short
        for signum, before in previous.items():
            signal.signal(signum, before if before is not None else signal.SIG_DFL)


@contextmanager
def sigterm_interrupts(run_dir: Path | None = None, out: TextIO | None = None):
    """Around a whole invocation: a SIGTERM outside the search itself (reading the data,
    starting Ray, writing the front and the winner) ends it as Ctrl-C does, with
    :class:`Interrupted` raised in the main thread, so that ``process.json`` says
    ``interrupted`` and the CLI exits 143 (Python's default ends the process with nothing said
    or marked). While trials run, :func:`stop_signals` stops the search cleanly instead. From a
    SIGTERM on, the block has :data:`STOP_GRACE_S` seconds to end (:class:`SigtermDeadline`);
    a caller that catches the interrupt goes on (a notebook, a test)."""
    global _DEADLINE
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    deadline, outer = SigtermDeadline(run_dir, out or sys.stdout), _DEADLINE
    previous = signal.signal(signal.SIGTERM, handler)
    _DEADLINE = deadline
    try:
        with deadline.watching():
            yield
    finally:
        deadline.close()
        _DEADLINE = outer
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _give_up(run_dir: Path | None, out: TextIO) -> None:
    """:class:`SigtermDeadline`'s end: the process ends now."""
    print(f"archscale: the run did not end within {STOP_GRACE_S:g} s of SIGTERM (the signal may have ended Ray's "
          "own processes too); exiting: finished trials are in trials.csv, `archscale run SPEC --resume` runs the rest",
          file=out, flush=True)
    info = read_process(run_dir) if run_dir is not None else None
    if info is not None and info.get("ended") is None:
        mark_ended(run_dir, "interrupted", info["started"])
    # os._exit, the one way out from a thread: the main thread may wait inside Ray's C++ client on processes the
    # signal ended (no exception or sys.exit reaches it), and Ray would end the process itself only after 60 s
    os._exit(128 + signal.SIGTERM)


class Launcher:
    """One invocation's Ray side. ``trainable(config, ctx, splits, **kwargs)`` runs a trial
    (default :func:`~archscale.search.dispatch.trial.run_trial`); the splits go to Ray's object store
    once, whatever the number of fits."""

    def __init__(self, spec: Spec, run_dir: Path, ctx: TrialContext, splits, evaluator: Evaluator, *,
                 out: TextIO | None = None, trainable: Callable = run_trial, **trainable_kwargs: Any):
        # the results store first: a bad one is the user's to fix, before Ray starts or anything is written
        self.store = RunStore.open(spec.search.store, ctx) if spec.search.store else None
        self.watchers = None  # a track.writer.Watchers while the job writes study.db and trackers (Job.watching)
        self.env = runtime_env(spec)  # the job's: a family of the user's own travels with it
        # Ray's C++ core worker replaces the process's SIGTERM handler (with one that ends it with a stack dump)
        # behind Python's back: the one this invocation had (sigterm_interrupts) is put back once Ray has started
        before = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
        try:
            with phase("ray start"):
                init_ray(spec.search.address, self.env, state_api=spec.search.resources_per_trial.workers > 1)
        finally:
            if before is not None:
                signal.signal(signal.SIGTERM, before)

        tune_setup = time.perf_counter()
        require_resources(spec, out)
        self.spec, self.run_dir, self.ctx = spec, Path(run_dir), ctx
        self.out = out or sys.stdout
        self.client = (spec.search.address or "").startswith("ray://")
        self.flag = None
        if self.client:  # a Ctrl-C travels to the stopper that runs on the cluster
            self.flag = Queue(actor_options={"num_cpus": 0})
        self.stopper = SearchStopper(spec.search.time_budget_s, self.flag)  # one clock for every fit
        self.resources: TrialResources = trial_resources(spec, evaluator, splits)
        if self.resources.workers > 1 and trainable is run_trial:  # a driver of Ray Train's workers
            trainable, trainable_kwargs = run_workers_trial, {**trainable_kwargs, "resources": self.resources}
        # the data once into Ray's object store; each worker fetches it once and keeps it (reuse_actors)
        shared = share_splits(spec, splits)
        self.trainable = tune.with_resources(
            tune.with_parameters(trainable, ctx=ctx, splits=shared, **trainable_kwargs), self.resources)
        PROFILE.add("tune setup", time.perf_counter() - tune_setup)

    @property
    def worker_text(self) -> str:
        """``"2 workers (Ray Train, DDP) of "`` for a trial of several workers, else nothing."""
        n = self.resources.workers
        return f"{n} workers (Ray Train, DDP) of " if n > 1 else ""

    @property
    def gpu_text(self) -> str:
        gpu = self.resources.gpu
        return "a GPU share sized from its memory" if gpu == "auto" else f"{gpu:g} GPU" if gpu else "no GPU"

    def fit(self, *, choices: list[str], progress: Progress, num_samples: int, search_alg=None, scheduler=None,
            param_space: dict | None = None, name: str = "tune", stage: int | None = None,
            max_failures: int | None = None) -> None:
        """Run one Tune experiment; every trial lands in ``trials.csv`` (with ``stage``), its
        files in ``trials/<id>/``, its start in ``started.jsonl``. Returns when it ends, was
        stopped by the time budget or by Ctrl-C (``self.stopper.reason`` says which)."""

        files = RunFiles(self.run_dir, choices, progress, stage=stage, store=self.store, watchers=self.watchers,
                         extra=tuple(proxy_columns(self.spec.search.proxies)))
        sink, relayed, drainer = files, None, None
        if self.client:
            # Ray Client runs Tune's loop on the cluster: its recorder relays to this process,
            # which writes the run directory.
            queue = Queue(actor_options={"num_cpus": 0})
            sink, relayed = Relay(queue), threading.Event()
            drainer = threading.Thread(target=drain, args=(queue, files, relayed), daemon=True)
            drainer.start()
        recorder = TrialRecorder(sink, self.ctx, choices, self.stopper, self.resources)
        failures = self.spec.search.max_failures if max_failures is None else max_failures
        tuner = tune.Tuner(
            self.trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                        max_concurrent_trials=self.spec.search.max_concurrent,
                                        # a trial's driver is never reused: its Train run ends with it
                                        reuse_actors=self.resources.gpu != "auto" and self.resources.workers == 1),
            # Tune's own state: in the run directory; on a Ray Client, in Ray's default place on the cluster
            run_config=tune.RunConfig(
                name=f"archscale-{self.spec.name}-{uuid.uuid4().hex[:8]}" if self.client else name,
                storage_path=None if self.client else str(self.run_dir.resolve()), verbose=0,
                # the releaser first: it takes its key out of each result before the recorder reads it
                callbacks=[GroupReleaser(), recorder] if self.resources.workers > 1 else [recorder],
                stop=self.stopper,
                failure_config=tune.FailureConfig(max_failures=failures)),
        )
        PROFILE.marks.setdefault("search", time.time())
        try:
            with stop_signals(self.stopper, self.out, self.run_dir):
                tuner.fit()
        finally:
            if drainer is not None:
                relayed.set()
                drainer.join()
        if self.client:
            self.stopper.stop_all()  # the time budget was counted on the cluster: name it here too
