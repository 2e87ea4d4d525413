"""Fixtures of tests/search: a Ray cluster started the way users start one."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

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

    def __init__(self, args: list[str], env: dict[str, str], root: Path, name: str):
        self.log = root / f"{name}.log"
        if self.log.exists():  # an earlier attempt's
            self.log.rename(self.log.with_suffix(f".{time.monotonic_ns()}.log"))
        ports = ["--node-manager-port", "--object-manager-port", "--metrics-export-port",
                 "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port"]
        command = ["ray", "start", *args, "--num-cpus=1", "--block", "--disable-usage-stats",
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


def start_node(args: list[str], env: dict[str, str], root: Path, name: str, nodes: list[RayNode]) -> None:
    """Start a node, a second and third time if it gives up; it joins ``nodes`` (to be stopped) either way."""
    for _ in range(NODE_ATTEMPTS):
        nodes.append(RayNode(args, env, root, name))
        if nodes[-1].started():
            return
    raise RuntimeError(f"ray start did not start in {NODE_ATTEMPTS} attempts:\n{nodes[-1].log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a second node started with `ray start`, one CPU each, token authentication
    on (the token in the cluster's environment, never in a file archscale could read). While
    the module runs, ``RAY_AUTH_TOKEN`` holds the token in this process's environment, so that
    the `archscale` processes a test starts have it; a test that wants no token removes it.
    Yields ``gcs`` (HOST:PORT), ``client`` (ray://HOST:PORT) and ``token``."""
    host, token = "127.0.0.1", uuid.uuid4().hex  # loopback: nothing outside this machine can join
    root = Path(tempfile.mkdtemp(prefix="as-ray-", dir="/tmp"))  # short: Ray's socket paths live under it
    home = root / "home"  # no ~/.ray/auth_token of this machine's user reaches the cluster
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # On a loaded CI machine the head's Ray Client server takes more than its default 30 s to
    # start the server of a new client.
    env.update(HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
               RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S="180")
    gcs, client = free_port(), free_port()
    nodes: list[RayNode] = []
    previous = os.environ.get("RAY_AUTH_TOKEN")
    try:
        start_node(["--head", f"--node-ip-address={host}", f"--port={gcs}", f"--ray-client-server-port={client}",
                    "--include-dashboard=false"], env, root, "head", nodes)
        start_node([f"--address={host}:{gcs}", f"--node-ip-address={host}"], env, root, "node", nodes)
        os.environ["RAY_AUTH_TOKEN"] = token
        yield {"gcs": f"{host}:{gcs}", "client": f"ray://{host}:{client}", "token": token}
    finally:
        if previous is None:
            os.environ.pop("RAY_AUTH_TOKEN", None)
        else:
            os.environ["RAY_AUTH_TOKEN"] = previous
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
