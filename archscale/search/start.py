"""Ray started for a search as early as the driver can: a local instance comes up in a
background thread while the driver reads the data and checks the spec.

Warming Ray's idle workers (a task importing torch in each) does not help: Tune's trial
actors start in fresh worker processes, not in the idle ones (tried on ray 2.60: the actors'
pids differ from the warmed workers' and torch is not loaded in them).

Only the start is here; how Ray is started or a cluster joined is
:func:`archscale.search.launch.init_ray`. Imports ray lazily.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent.futures import Future

from archscale.search.spec import Spec


def _local(address: str | None) -> bool:
    """Whether :func:`init_ray` would start a fresh local instance (no cluster to join)."""
    return address is None and os.environ.get("RAY_ADDRESS") in (None, "", "local")


_STARTING: dict[str, Future] = {}  # "local" -> the Ray start begun by start_ray_early


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
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return  # Ray started by the caller (a notebook, a test session)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init sets it in the main thread
    logging.getLogger("ray._private.worker").addFilter(_NotMainThread())
    started: Future = Future()
    from archscale.search.launch import init_ray, runtime_env

    env = runtime_env(spec)  # a family of the user's own goes to the workers with the job

    def start() -> None:
        try:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a search's own Ray
            init_ray(None, env)
        except BaseException as err:  # noqa: BLE001 - raised again in the main thread by ray_ready
            started.set_exception(err)
            return
        started.set_result(None)
        # Ray's processes are killed when the thread that started them ends (Linux's parent-death
        # signal): this one lives as long as the process
        threading.Event().wait()

    _STARTING["local"] = started
    threading.Thread(target=start, name="archscale-ray-start", daemon=True).start()


def ray_ready(address: str | None, env: dict | None = None) -> None:
    """Ray started or joined: the start :func:`start_ray_early` began (its error raised here),
    else :func:`init_ray` now, with ``env`` as the job's ``runtime_env``."""
    starting = _STARTING.pop("local", None) if _local(address) else None
    if starting is not None:
        starting.result()
    from archscale.search.launch import init_ray

    init_ray(address, env)  # returns at once when Ray is running
