"""How a search gets its Ray: :func:`init_ray` starts a local instance or joins a cluster
(``search.address``, ``RAY_ADDRESS``), with the job's :func:`runtime_env`, through
``ray.init``'s public arguments only.

Ray is imported inside :func:`init_ray`, not at this module's top: when a cluster asks for an
authentication token, :func:`~archscale.search.dispatch.cluster.prepare_address` must set
``RAY_AUTH_MODE`` before Ray is imported (Ray reads it then), and :func:`require_cores` runs
before any of that. A Ray started here is shut down as Ray shuts itself down: by its ``atexit``
hook when the ``archscale`` command ends, or by the caller's ``ray.shutdown()`` in a notebook.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from archscale.search.dispatch import cluster
from archscale.space import get_space, user
from archscale.spec import Spec, SpecError

CLIENT_ATTEMPTS = 3  # connections to a Ray Client server (ray://) before giving up
CLIENT_CONNECT_S = 240.0  # seconds one of them may take (the server may start a process for it on a busy head)
# Ray's and Tune's documented environment variables, as a search sets them unless the user did
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report from a search's own Ray
    "RAY_AIR_NEW_OUTPUT": "0",  # archscale prints its own progress
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # trials.csv and result.json are the records
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # failed trials report no accuracy
}


def runtime_env(spec: Spec) -> dict[str, Any] | None:
    """Ray's ``runtime_env`` for the job: a family of the user's own (``package.module:ClassName``
    or an entry point) is shipped to every worker as ``py_modules`` (its top-level package
    folder or module file), so no node needs it installed or on its path, a local instance's
    workers included; None for archscale's own families."""
    found = user.origin(get_space(spec.space.family).name)
    return {"py_modules": [found.ship]} if found else None


def require_cores(spec: Spec) -> None:
    """Before Ray starts here (``address`` null, no RAY_ADDRESS): refuse a trial asking more
    CPUs than this process may use, without waiting for Ray and the data. Ray's own count,
    checked once it runs (:func:`archscale.search.dispatch.launch.require_resources`), is never higher."""
    if spec.search.address or os.environ.get("RAY_ADDRESS", "local") not in ("", "local"):
        return
    r, cores = spec.search.resources_per_trial, len(os.sched_getaffinity(0))
    if r.cpu > cores:
        raise SpecError(f"search.resources_per_trial.cpu: {r.cpu:g} CPU per trial, but this machine has {cores} "
                        f"cores, so no trial could ever start; allowed: at most {cores}")
    if r.cpu * r.workers > cores:
        raise SpecError(f"search.resources_per_trial.workers: {r.workers} workers of {r.cpu:g} CPU per trial, but "
                        f"this machine has {cores} cores, so no trial could ever start; allowed: at most "
                        f"{int(cores // r.cpu)}")


FAILURE_HANDLER_OFF = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"  # Ray's documented switch, read when Ray is imported


def import_ray() -> None:
    """Import Ray in this process, once :func:`~archscale.search.dispatch.cluster.prepare_address`
    has set what Ray reads on import, with Ray's C++ failure-signal handler off in this process.

    That handler, put in as ``ray.init`` builds the driver's core worker, takes SIGTERM as well,
    behind Python's back; a SIGTERM in the second or so before the invocation's own handler
    is back (:func:`~archscale.search.dispatch.launch.sigterm_interrupts`) ended the run with a
    stack dump and status -6, ``process.json`` left unmarked (6 of 69 SIGTERMs sent to the
    process group while Ray started, 2026-12-08). Ray reads the switch when it is imported (its
    docs: set it before importing Ray); it is removed again at once, so that Ray's own
    processes, started later, keep their handler. Nothing is changed when Ray is already
    imported or the user set the switch."""
    if "ray" in sys.modules or FAILURE_HANDLER_OFF in os.environ:
        return
    os.environ[FAILURE_HANDLER_OFF] = "1"
    try:
        import ray  # noqa: F401
    finally:
        del os.environ[FAILURE_HANDLER_OFF]


def init_ray(address: str | None = None, env: dict[str, Any] | None = None, state_api: bool = False) -> None:
    """Start Ray here (``address`` None: a fresh local instance, even where `ray start` left a
    cluster that a bare ``ray.init()`` would join; RAY_ADDRESS, when set, is the user's choice)
    or join the cluster at ``address``; ``env`` is the job's ``runtime_env`` (:func:`runtime_env`).
    A Ray already started in this process (a notebook's, a test session's) is used as it is.

    A local instance runs without Ray's dashboard (about 0.8 s less to start on a 2-core machine) unless ``state_api``:
    trials of several workers need it, because Ray Train's placement-group cleaner asks the
    State API, which the dashboard serves, whether a stopped trial's controller is gone, and
    otherwise polls forever (:class:`~archscale.search.dispatch.workers.GroupReleaser`).

    ``ray.init`` runs in a thread of its own (:func:`init_off_main`), so that a Ctrl-C or a
    SIGTERM meanwhile is handled at once."""
    cluster.prepare_address(address)  # before Ray is imported: Ray reads its authentication mode then
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    for name, value in RAY_ENV.items():
        os.environ.setdefault(name, value)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours (launch.stop_signals) stops the search and keeps what finished
    import ray

    if ray.is_initialized():
        return
    if address == "local":
        init_off_main(address="local", include_dashboard=state_api, logging_level=logging.ERROR, log_to_driver=False,
                      runtime_env=env)
        return
    client = address.startswith("ray://")
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            init_off_main(CLIENT_CONNECT_S if client else None, address=address, logging_level=logging.ERROR,
                          log_to_driver=False, runtime_env=env)
            return
        except ConnectionError as err:
            # A Ray Client's server starts a process per client; on a busy head that start can
            # fail ("Initialization failure from server") where the next one succeeds.
            if not client or attempt == CLIENT_ATTEMPTS:
                raise
            print(f"archscale: connecting to {address} failed ({' '.join(str(err).split())[:200]}); "
                  f"trying again ({attempt + 1} of {CLIENT_ATTEMPTS})", file=sys.stderr, flush=True)
            ray.shutdown()  # whatever the failed connection left behind
            time.sleep(5 * attempt)


def init_off_main(timeout: float | None = None, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` in a daemon thread, this one waiting for it (at most ``timeout``
    seconds), its error raised here.

    In the main thread, ``ray.init`` puts in a SIGTERM handler of its own that raises SystemExit
    wherever the main thread is: in a fork hook of a process Ray starts, it left logging's lock
    held and a run hung. And it waits inside Ray's C++ client, where no Python signal handler
    runs: a SIGTERM to the whole process group, which ends Ray's new processes too, took 30 to
    38 s to end a run while Ray started. Off the main thread Ray sets no handler, the
    invocation's stays (:func:`~archscale.search.dispatch.launch.sigterm_interrupts`), and the
    main thread, waiting here on a lock, handles a signal at once. The thread then waits as long
    as the process lives: Ray's local processes are started so that the kernel ends them when
    the thread that started them ends (``PR_SET_PDEATHSIG``); a daemon, it does not keep the
    process from exiting.

    A Ray Client address (``ray://``) is given a timeout: when the server fails to set the
    client up, Ray 2.60 cleans up by joining its log-stream thread, which waits on a stream
    nobody ends, so the call never returns (seen once under load, in
    ``LogstreamClient.close``); the timeout makes that an error the run reports."""
    import ray

    done: Future = Future()

    def start() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            done.set_exception(err)
            return
        done.set_result(None)
        # Ray starts its local processes (GCS, raylet) with PR_SET_PDEATHSIG, which kills them when the *thread*
        # that started them ends: this one waits, a daemon, as long as the process lives
        threading.Event().wait()

    threading.Thread(target=start, name="archscale-ray-init", daemon=True).start()
    try:
        done.result(timeout=timeout)
    except FutureTimeout:
        raise RuntimeError(f"connecting to the Ray Client server at {kwargs['address']} did not finish in "
                           f"{timeout:g} s (Ray's client hangs when the server fails to set it up); "
                           "nothing was run; try again, or join by the GCS address (HOST:PORT) instead") from None
