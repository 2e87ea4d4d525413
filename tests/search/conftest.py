"""Fixtures of tests/search: a Ray cluster started the way users start one."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

NODE_START_S = 180  # seconds a `ray start` may take on a loaded CI machine
NODE_ATTEMPTS = 3
STOP_S = 5  # seconds a node has to end on SIGTERM before what is left of it is killed
STARTED = "Ray runtime started"  # what `ray start` prints once its node has joined


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNode:
    """One ``ray start ... --block`` process in a process group (and session) of its own, with
    its own temp dir, ports and log; :meth:`stop` ends that group by its ids, never `ray stop`."""

    def __init__(self, args: list[str], env: dict[str, str], root: Path, name: str, cpus: int = 1):
        self.log = root / f"{name}.log"
        if self.log.exists():  # an earlier attempt's
            self.log.rename(self.log.with_suffix(f".{time.monotonic_ns()}.log"))
        ports = ["--node-manager-port", "--object-manager-port", "--metrics-export-port",
                 "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port"]
        command = ["ray", "start", *args, f"--num-cpus={cpus}", "--block", "--disable-usage-stats",
                   f"--temp-dir={root / name}", *(f"{p}={free_port()}" for p in ports)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def started(self) -> bool:
        """Whether the node joined; a node that gave up (`ray start` waits 30 s for its raylet
        to register, which a loaded machine can exceed) or took too long is stopped."""
        deadline = time.monotonic() + NODE_START_S
        while STARTED not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return False
            time.sleep(0.5)
        return True


    def stop(self) -> None:
        """SIGTERM to the node's process group, SIGKILL to what is left of its session
        (Ray's workers have process groups of their own, in the node's session)."""
        sid = self.proc.pid
        try:
            os.killpg(sid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pass
        for pid in _session_members(sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)


def _session_members(sid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            members.append(int(stat.parent.name))
    return members


def start_node(args: list[str], env: dict[str, str], root: Path, name: str, nodes: list[RayNode],
               cpus: int = 1) -> None:
    """Start a node, a second and third time if it gives up; it joins ``nodes`` (to be stopped) either way."""
    for _ in range(NODE_ATTEMPTS):
        nodes.append(RayNode(args, env, root, name, cpus))
        if nodes[-1].started():
            return
    raise RuntimeError(f"ray start did not start in {NODE_ATTEMPTS} attempts:\n{nodes[-1].log.read_text()[-3000:]}")


def cluster_env(root: Path, token: str) -> dict[str, str]:
    """The environment of a test cluster's `ray start`: no RAY_ variable of this process, a
    HOME without ~/.ray (no auth_token of this machine's user reaches the cluster), token
    authentication on with ``token``."""
    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # On a loaded CI machine the head's Ray Client server takes more than its default 30 s to
    # start the server of a new client.
    env.update(HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
               RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S="180")
    return env


@contextmanager
def token_in_environ(token: str):
    """``RAY_AUTH_TOKEN`` set to ``token`` in this process's environment (the `archscale`
    processes a test starts inherit it), whatever it was put back afterwards."""
    previous = os.environ.get("RAY_AUTH_TOKEN")
    os.environ["RAY_AUTH_TOKEN"] = token
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_AUTH_TOKEN", None)
        else:
            os.environ["RAY_AUTH_TOKEN"] = previous


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a second node started with `ray start`, one CPU each, token authentication
    on (the token in the cluster's environment, never in a file archscale could read). While
    the module runs, ``RAY_AUTH_TOKEN`` holds the token in this process's environment, so that
    the `archscale` processes a test starts have it; a test that wants no token removes it.
    Yields ``gcs`` (HOST:PORT), ``client`` (ray://HOST:PORT) and ``token``."""
    host, token = "127.0.0.1", uuid.uuid4().hex  # loopback: nothing outside this machine can join
    root = Path(tempfile.mkdtemp(prefix="as-ray-", dir="/tmp"))  # short: Ray's socket paths live under it
    env = cluster_env(root, token)
    gcs, client = free_port(), free_port()
    nodes: list[RayNode] = []
    try:
        start_node(["--head", f"--node-ip-address={host}", f"--port={gcs}", f"--ray-client-server-port={client}",
                    "--include-dashboard=false"], env, root, "head", nodes)
        start_node([f"--address={host}:{gcs}", f"--node-ip-address={host}"], env, root, "node", nodes)
        with token_in_environ(token):
            yield {"gcs": f"{host}:{gcs}", "client": f"ray://{host}:{client}", "token": token}
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


GROWN_CPUS = 2  # CPUs of the one node the autoscaler of ``growing_cluster`` can add
ADDED_TYPE = "cpu2"  # its node type in ``autoscaling_config``
IDLE_MINUTES = 1  # an added node idle this long is taken away: longer than a run takes from its joining to a trial
GONE_S = 10  # seconds the processes of a stopped cluster have to disappear from /proc


def autoscaling_config(gcs: str) -> dict:
    """A config for Ray's autoscaler with its fake multi-node provider (the nodes it "launches"
    are Ray nodes on this machine, started by the autoscaler itself): a head of no CPUs and one
    node type of ``GROWN_CPUS`` CPUs, none at first and one at most. Built as
    ``ray.cluster_utils.AutoscalingCluster`` builds its own, with the provider told the GCS's
    port (it assumes 6379)."""
    return {
        "cluster_name": "archscale-test", "max_workers": 1, "head_node_type": "ray.head.default",
        "provider": {"type": "fake_multinode", "gcs_address": gcs, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            ADDED_TYPE: {"resources": {"CPU": GROWN_CPUS, "object_store_memory": 200 * 2**20}, "node_config": {},
                         "min_workers": 0, "max_workers": 1},
        },
        "upscaling_speed": 1.0, "idle_timeout_minutes": IDLE_MINUTES, "auth": {}, "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


@pytest.fixture
def growing_cluster():
    """A head of no CPUs started with `ray start --autoscaling-config`, whose autoscaler (Ray's
    own, with its fake multi-node provider) can add one node of ``GROWN_CPUS`` CPUs; token
    authentication on, ``RAY_AUTH_TOKEN`` set here as for ``two_nodes``. The nodes the
    autoscaler adds are processes of the head's process group (started by its autoscaler), their
    Ray workers in groups of their own, all in the head's session: stopping the head's session
    stops them, and teardown checks that nothing of the cluster is left. One per test: each starts with no node but the head.
    Yields ``gcs`` (HOST:PORT), ``token`` and ``added`` (:func:`added_nodes` of the cluster)."""
    host, token = "127.0.0.1", uuid.uuid4().hex
    root = Path(tempfile.mkdtemp(prefix="as-ray-", dir="/tmp"))
    env = {**cluster_env(root, token), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    gcs = f"{host}:{free_port()}"
    config = root / "autoscaler.yaml"
    config.write_text(yaml.safe_dump(autoscaling_config(gcs)))
    nodes: list[RayNode] = []
    try:
        start_node(["--head", f"--node-ip-address={host}", f"--port={gcs.split(':')[1]}",
                    f"--ray-client-server-port={free_port()}", "--include-dashboard=false",
                    f"--autoscaling-config={config}"], env, root, "head", nodes, cpus=0)
        with token_in_environ(token):
            yield {"gcs": gcs, "token": token, "added": lambda: added_nodes(token)}
    finally:
        for node in nodes:
            node.stop()
        left = _left_of(nodes, token)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the stopped cluster still run: {left}"


def _left_of(nodes: list[RayNode], token: str) -> list[int]:
    """The processes (zombies aside) still there ``GONE_S`` after the nodes' stop: of their
    sessions, or any other with the cluster's token in its environment (every process of the
    cluster inherits it), this one aside."""
    deadline = time.monotonic() + GONE_S
    while True:
        left = sorted({pid for node in nodes for pid in _session_members(node.proc.pid)} | set(_with_token(token)))
        left = [pid for pid in left if pid != os.getpid() and not _zombie(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _with_token(token: str) -> dict[int, dict[str, str]]:
    """pid: environment of each process with ``token`` as its RAY_AUTH_TOKEN."""
    found = {}
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            env = dict(v.split("=", 1) for v in environ.read_bytes().decode(errors="replace").split("\0") if "=" in v)
        except OSError:
            continue
        if env.get("RAY_AUTH_TOKEN") == token:
            found[int(environ.parent.name)] = env
    return found


def added_nodes(token: str) -> set[str]:
    """The ids of the nodes the fake provider of the cluster with ``token`` has started and
    that still run: it gives their processes their node's id and type in their environment."""
    return {env["RAY_OVERRIDE_NODE_ID_FOR_TESTING"] for env in _with_token(token).values()
            if env.get("RAY_NODE_TYPE_NAME") == ADDED_TYPE and "RAY_OVERRIDE_NODE_ID_FOR_TESTING" in env}


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone
