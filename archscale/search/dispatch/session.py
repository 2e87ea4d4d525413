"""How a search gets its Ray, and how it lets it go.

- :func:`init_ray` starts a local instance or joins a cluster (``search.address``,
  ``RAY_ADDRESS``), with the job's :func:`runtime_env`.
- :func:`start_ray_early` begins a local start in a background thread as soon as the spec is
  valid, so that Ray's processes come up while the driver imports torch, reads the data and
  checks the spec; :func:`ray_ready` waits for it where the launcher needs Ray. Until the
  instance's raylet runs (it starts the workers the first trials run in), the driver imports
  nothing more: its imports would hold the interpreter lock that Ray's start needs.
- A local instance preloads what a trial imports (:data:`PRELOAD`) in each of its worker
  processes as they start: Ray starts one idle worker per core with the instance, and
  :func:`trials_on_started_workers` lets Tune's first trial actors be placed on those, so the
  first trials do not wait for a worker to start and import torch. (Warming idle workers with
  a task does not work: a worker that ran a task is not given an actor, tried on ray 2.60.)
  On a cluster the first trials start fresh workers, as Tune's actors always did.
- :func:`leave` ends the ``archscale`` command once everything is written: a local instance's
  processes are killed at once rather than shut down one by one with a grace period for each
  (about 3 s of the command's wall time on a 2-core machine), and the interpreter's teardown
  is skipped.

Imports ray lazily.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from archscale.search.dispatch import cluster
from archscale.spec import Spec, SpecError

CLIENT_ATTEMPTS = 3  # connections to a Ray Client server (ray://) before giving up
CLIENT_CONNECT_S = 240.0  # seconds one of them may take (the server may start a process for it on a busy head)
HEAD_START_S = 6.0  # at most this long the driver waits for the early start's raylet before importing on
PRELOAD = ("ray.tune", "archscale.search.dispatch.trial")  # what a trial's worker imports before it can train
PRELOADED_WORKER_MIB = 400  # private memory of an idle worker that imported PRELOAD (370 MiB: ray 2.60, torch 2.14)
TUNE_ACTOR_ENV = {"PL_DISABLE_FORK": "1"}  # ray.tune.execution.class_cache.DEFAULT_ENV_VARS (ray 2.60)


def _local(address: str | None) -> bool:
    """Whether :func:`init_ray` would start a fresh local instance (no cluster to join)."""
    return address is None and os.environ.get("RAY_ADDRESS") in (None, "", "local")


_STARTING: dict[str, Future] = {}  # "local" -> the Ray start begun by start_ray_early
_STARTED_HERE = threading.Event()  # set once init_ray started a local instance in this process
_ENV_AT_START: dict[str, str] = {}  # the environment that instance's processes inherited
_JOB_ENV: dict[str, Any] = {}  # the runtime_env that instance's job was started with (none: empty)
_COPIES: list[Path] = []  # folders holding the copies of a family's modules a local instance imports (_on_path)


def runtime_env(spec: Spec) -> dict[str, Any] | None:
    """Ray's ``runtime_env`` for the job: a family of the user's own (``package.module:ClassName``
    or an entry point) is shipped to every worker as ``py_modules`` (its top-level package
    folder or module file), so no node needs it installed or on its path; None for archscale's
    own families."""
    from archscale.space import get_space, user

    found = user.origin(get_space(spec.space.family).name)
    return {"py_modules": [found.ship]} if found else None


def require_cores(spec: Spec) -> None:
    """Before Ray starts here (``address`` null, no RAY_ADDRESS): refuse a trial asking more
    CPUs than this process may use, without waiting for Ray and the data. Ray's own count,
    checked once it runs (:func:`archscale.search.dispatch.launch.require_resources`), is never higher."""
    if spec.search.address or os.environ.get("RAY_ADDRESS", "local") not in ("", "local"):
        return
    asked, cores = spec.search.resources_per_trial.cpu, len(os.sched_getaffinity(0))
    if asked > cores:
        raise SpecError(f"search.resources_per_trial.cpu: {asked:g} CPU per trial, but this machine has {cores} "
                        f"cores, so no trial could ever start; allowed: at most {cores}")


def preload_fits(cores: int | None = None, available_mib: float | None = None) -> bool:
    """Whether a local instance's idle workers may preload :data:`PRELOAD`. Ray starts one
    idle worker per core (``cores``: this process's), and they all import at once before Ray's
    soft limit ends those beyond the trials that run at once: for a few seconds they hold
    ``cores`` x :data:`PRELOADED_WORKER_MIB` of memory. Allowed while that is at most a quarter
    of the memory available (``available_mib``: this machine's ``MemAvailable``; allowed when
    it cannot be read): 0.8 GB of 24 GB on a 2-core machine, 6.4 of 128 GB on a 16-core GPU box,
    but not 38 GB on a 96-core machine with 64 GB, whose first trials then start fresh workers."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    available_mib = available_mib if available_mib is not None else _available_mib()
    return available_mib is None or cores * PRELOADED_WORKER_MIB <= available_mib / 4


def _available_mib() -> float | None:
    """``MemAvailable`` of Linux's ``/proc/meminfo`` in MiB; None elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def init_ray(address: str | None = None, env: dict[str, Any] | None = None, workers: int | None = None) -> None:
    """Start Ray here (``address`` None: a fresh local instance, even where `ray start` left a
    cluster that a bare ``ray.init()`` would join; RAY_ADDRESS, when set, is the user's choice)
    or join the cluster at ``address``; ``env`` is the job's ``runtime_env`` (:func:`runtime_env`),
    whose modules a local instance gets on its processes' path instead (:func:`_on_path`).
    A Ray already started in this process is used as it is.

    ``workers``: the trials that run at once. A local instance starts one idle worker per
    core, each preloading :data:`PRELOAD` (370 MiB of its own once torch is in) where that
    fits in memory (:func:`preload_fits`); those beyond ``workers`` are idle workers no trial
    needs, and Ray's soft limit on idle workers, set to ``workers``, ends them once they are up
    (on a 2-core machine, none)."""
    cluster.prepare_address(address)  # before Ray is imported: Ray reads its authentication mode then
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # failed trials report no accuracy
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours (ctrl_c) stops the search and keeps what finished
    if ray.is_initialized():
        return
    if address == "local":
        for name, value in TUNE_ACTOR_ENV.items():
            os.environ.setdefault(name, value)  # what Tune gives its trial actors: every worker inherits it
        path_before = os.environ.get("PYTHONPATH")
        env = _on_path(env)
        _ENV_AT_START.update(os.environ)
        # the idle workers started with the instance run no job with a runtime_env of its own:
        # preloaded, they would only cost CPU and memory
        config: dict[str, Any] = {"preload_python_modules": list(PRELOAD)} if not env and preload_fits() else {}
        if workers:
            config["num_workers_soft_limit"] = int(workers)
        try:
            ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                     runtime_env=env, _system_config=config)
        finally:  # Ray's processes have it; this process's later children need not
            if path_before is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = path_before
        _JOB_ENV.clear()
        _JOB_ENV.update(env or {})
        _STARTED_HERE.set()
        return
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            if address.startswith("ray://"):
                _client_init(address, env)
            else:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, runtime_env=env)
            return
        except ConnectionError as err:
            # A Ray Client's server starts a process per client; on a busy head that start can
            # fail ("Initialization failure from server") where the next one succeeds.
            if not address.startswith("ray://") or attempt == CLIENT_ATTEMPTS:
                raise
            print(f"archscale: connecting to {address} failed ({' '.join(str(err).split())[:200]}); "
                  f"trying again ({attempt + 1} of {CLIENT_ATTEMPTS})", file=sys.stderr, flush=True)
            ray.shutdown()  # whatever the failed connection left behind
            time.sleep(5 * attempt)


def _on_path(env: dict[str, Any] | None) -> dict[str, Any] | None:
    """For a local instance: a job ``runtime_env`` that only ships modules (a family of the
    user's own, :func:`runtime_env`) is replaced by a copy of each module in a folder of this
    process's, put first on the ``PYTHONPATH`` that Ray's processes inherit (returns None).
    As with Ray's ``py_modules``, the workers import the copy taken when the run started (unless
    the driver's folder, which Ray puts before it on its workers' path, holds the module: the
    very file the driver imported); unlike it, every worker can, the idle ones started with the
    instance too, so the first trials run in workers that preloaded torch instead of waiting for
    fresh ones. The folder is removed when this process ends. Any other ``runtime_env`` is
    returned as it is."""
    if not env or set(env) != {"py_modules"}:
        return env
    folder = Path(tempfile.mkdtemp(prefix="archscale-family-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    _COPIES.append(folder)
    for module in env["py_modules"]:
        source = Path(module)
        if source.is_dir():
            shutil.copytree(source, folder / source.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, folder / source.name)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return None


def _client_init(address: str, env: dict[str, Any] | None) -> None:
    """``ray.init`` of a Ray Client address, given :data:`CLIENT_CONNECT_S` to finish.

    When the server fails to set this client up, Ray 2.60 cleans the failed connection up by
    joining its log-stream thread, which waits on a stream nobody ends: the call never returns
    (seen once under load, the main thread in ``LogstreamClient.close``). The call runs in a
    daemon thread here, so that such a hang becomes an error the run reports (and a process
    that can exit: Ray's client threads are daemons too)."""
    import ray

    done: Future = Future()

    def connect() -> None:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, runtime_env=env)
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            done.set_exception(err)
            return
        done.set_result(None)

    threading.Thread(target=connect, name="archscale-ray-client", daemon=True).start()
    try:
        done.result(timeout=CLIENT_CONNECT_S)
    except FutureTimeout:
        raise RuntimeError(f"connecting to the Ray Client server at {address} did not finish in "
                           f"{CLIENT_CONNECT_S:g} s (Ray's client hangs when the server fails to set it up); "
                           "nothing was run; try again, or join by the GCS address (HOST:PORT) instead") from None


class _NotMainThread(logging.Filter):
    """Drops Ray's note that a ray.init outside the main thread sets no SIGTERM handler
    (:func:`start_ray_early` sets the same handler itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


def start_ray_early(spec: Spec) -> None:
    """Begin starting a local Ray instance in a background thread, so that Ray's processes
    come up while the driver reads the data and checks the spec; :class:`Launcher` waits for
    it (:func:`ray_ready`). A cluster (``search.address``, ``RAY_ADDRESS``) is joined by the
    launcher."""
    starting = _STARTING.get("local")
    if not _local(spec.search.address) or (starting is not None and not starting.done()):
        return  # a cluster, or a start already under way
    if cluster.ray_initialized():
        return  # Ray started by the caller (a notebook, a test session)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init sets it in the main thread
    logging.getLogger("ray._private.worker").addFilter(_NotMainThread())
    started: Future = Future()
    env = runtime_env(spec)  # a family of the user's own goes to the workers with the job

    def start() -> None:
        try:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a search's own Ray
            init_ray(None, env, spec.search.max_concurrent)
        except BaseException as err:  # noqa: BLE001 - raised again in the main thread by ray_ready
            started.set_exception(err)
            return
        started.set_result(None)
        # Ray's processes are killed when the thread that started them ends (Linux's parent-death
        # signal): this one lives as long as the process
        threading.Event().wait()

    _STARTING["local"] = started
    earlier = _raylets()
    threading.Thread(target=start, name="archscale-ray-start", daemon=True).start()
    _await_raylet(started, earlier)


def _raylets() -> set[int] | None:
    """The process ids of this process's children named ``raylet``; None without ``/proc``."""
    table = _processes()
    me = os.getpid()
    return None if table is None else {pid for pid, (ppid, name) in table.items() if ppid == me and name == "raylet"}


def _await_raylet(started: Future, earlier: set[int] | None, limit_s: float | None = None) -> None:
    """Wait until the Ray instance being started in this process runs its raylet (a child
    process of this one not among ``earlier``), its start has ended, or ``limit_s`` has passed.

    ``ray.init`` is a chain of steps (Ray imported, the GCS started, the API server waited for,
    the raylet started), each a little Python between waits; the raylet then starts the worker
    processes, which import torch before the first trial can train. The driver's own imports
    (pandas, torch: seconds of CPU in one thread) hold the interpreter lock that each of those
    steps needs, and slowed the chain by about 2 s on a 2-core machine, while the driver had
    seconds to spare before the first trial could be dispatched. Without Linux's ``/proc``, no
    wait. ``limit_s``: :data:`HEAD_START_S` unless given (``benchmarks/ray_head_start.py``
    sets that to 0 to measure the run without the wait)."""
    deadline = time.monotonic() + (HEAD_START_S if limit_s is None else limit_s)
    while earlier is not None and not started.done() and time.monotonic() < deadline:
        looked = time.perf_counter()
        now = _raylets()
        if now is None or now - earlier:
            return
        # a look reads every process's /proc entry (1.5 ms for 60 processes here): on a machine with
        # thousands, look less often, so that looking takes at most a sixth of the wait
        time.sleep(max(0.02, 5 * (time.perf_counter() - looked)))


def cancel_early_start() -> None:
    """A run that stopped before it needed Ray (an input error found while Ray was starting):
    wait for the start :func:`start_ray_early` began, then shut that instance down, so that
    no Ray is left in the caller's process that it did not ask for. Nothing when no start is
    pending (Ray already handed to the launcher, or none begun)."""
    starting = _STARTING.pop("local", None)
    if starting is None:
        return
    try:
        starting.result()
    except BaseException:  # noqa: BLE001 - a start that failed has nothing to shut down
        return
    import ray

    ray.shutdown()
    _STARTED_HERE.clear()
    _ENV_AT_START.clear()
    _JOB_ENV.clear()


def ray_ready(address: str | None, env: dict | None = None, workers: int | None = None) -> None:
    """Ray started or joined: the start :func:`start_ray_early` began (its error raised here),
    else :func:`init_ray` now, with ``env`` as the job's ``runtime_env`` (``workers``: the
    trials that run at once)."""
    starting = _STARTING.pop("local", None) if _local(address) else None
    if starting is not None:
        starting.result()
    init_ray(address, env, workers)  # returns at once when Ray is running


@contextmanager
def trials_on_started_workers() -> Iterator[None]:
    """While a Tune run goes on in a local instance started here (its job without a
    ``runtime_env``: a family of the user's own is on its path instead, :func:`_on_path`),
    Tune's trial actors go to the worker processes Ray started with the instance, which
    have imported what a trial needs (:data:`PRELOAD`).

    Tune gives each trial actor a ``runtime_env`` of environment variables (``PL_DISABLE_FORK=1``,
    and some it copies from the driver's environment), and Ray gives an actor with a
    ``runtime_env`` of its own a fresh worker, never one of the idle workers started with the
    instance: the first trials then wait for a worker to start and import ray.tune and torch
    (3.5 s on a 2-core machine). On this instance every worker inherited the driver's
    environment as :func:`init_ray` left it, so the variables whose values are already there are
    left out of Tune's lists for the run. Elsewhere (a cluster, a Ray started by the caller, a
    job ``runtime_env``) nothing changes."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        class_cache = None
    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    copied = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if not _STARTED_HERE.is_set() or _JOB_ENV or not isinstance(defaults, dict) or not isinstance(copied, (set, frozenset)):
        yield
        return
    inherited = {name for name, value in os.environ.items() if _ENV_AT_START.get(name) == value}
    kept = dict(defaults)
    for name in [n for n, v in defaults.items() if n in inherited and os.environ[n] == v]:
        del defaults[name]
    class_cache.ENV_VARS_TO_PROPAGATE = type(copied)(n for n in copied if n not in inherited)
    try:
        yield
    finally:
        defaults.clear()
        defaults.update(kept)
        class_cache.ENV_VARS_TO_PROPAGATE = copied


def leave(code: int) -> None:
    """End the process with exit status ``code`` once the command has written everything.

    Without Ray: an ordinary exit. With a local instance started here: its processes (every
    process this one started, and theirs) are killed at once, then the process exits without
    the interpreter's teardown. Ray's own shutdown would stop them one at a time, each given a
    grace period, and the interpreter would then unload torch and the rest: about 3 s in all,
    for nothing a finished command needs. With a cluster joined: Ray disconnects as usual
    (the cluster's processes are not this one's), then the same quick exit."""
    if not cluster.ray_initialized():
        sys.exit(code)
    import ray

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a pipe whose reader left
            pass
    logging.shutdown()
    descendants = _descendants(os.getpid()) if _STARTED_HERE.is_set() else None
    if descendants is None:  # a cluster's, or no /proc to find this one's processes in
        ray.shutdown()
    for pid in descendants or ():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for folder in _COPIES:  # what atexit would remove, had the interpreter's teardown run
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(code)


def _processes() -> dict[int, tuple[int, str]] | None:
    """Every process of the machine as process id -> (parent's id, command name), read from
    Linux's ``/proc``; None where there is no ``/proc``."""
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    table = {}
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                head, rest = stat.read().rsplit(b")", 1)
            # field 2 is the command in parentheses, field 4 (after it) the parent
            table[int(entry)] = (int(rest.split()[1]), head.split(b"(", 1)[1].decode(errors="replace"))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return table


def _descendants(pid: int) -> list[int] | None:
    """The processes started by ``pid`` and by them, parents first; None where there is no
    ``/proc``."""
    table = _processes()
    if table is None:
        return None
    children: dict[int, list[int]] = {}
    for child, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(child)
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found
