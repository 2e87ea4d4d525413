"""The same spec on a Ray cluster started as users start one (``search.address``): a head and
a second node from `ray start`, token authentication on (the ``two_nodes`` fixture), trials
spread over both, every file of the run written by the driver (trials send their weights and
results with their last report). A cluster that cannot be joined, or cannot hold one trial,
is said in one line, exit 2, with nothing written."""

import json
import os
import socket
import subprocess
import sys
import time
import types

import pytest

from archscale.analysis.records import read_trials
from archscale.search.dispatch import cluster
from archscale.spec import SpecError
from archscale.search.dispatch.launch import RESOURCE_POLL_S
from tests.search.conftest import GROWN_CPUS

CLUSTER = [pytest.mark.cluster, pytest.mark.slow]  # starts two Ray nodes of its own


def archscale_run(spec_path, run_dir, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archscale", "run", str(spec_path), "--out", str(run_dir), *extra],
                          capture_output=True, text=True, timeout=300, env=env)


def without_token(home) -> dict:
    """This process's environment with no token of Ray's anywhere (HOME: a folder without ~/.ray)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    return {**env, "HOME": str(home)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["gcs", "client"])
@pytest.mark.cluster
@pytest.mark.slow
def test_search_on_a_two_node_cluster(two_nodes, kind, tmp_path, write_spec, tiny_spec):
    # one CPU per node and per trial, two trials at once: they can only run on different nodes.
    # Each trains for long enough (seconds) that the second node's worker is up before the first
    # trial ends: a shorter trial would end first and Tune would reuse its worker for the second.
    tiny_spec["search"].update(num_trials=2, max_concurrent=2, resources_per_trial={"cpu": 1, "gpu": 0})
    tiny_spec["data"]["subset"] = 1.0
    tiny_spec["train"]["epochs"] = 6
    tiny_spec["space"]["params"].update(c4_width=8, c3_conv="regular")
    run_dir = tmp_path / "run"
    address = two_nodes[kind]
    done = archscale_run(write_spec(tiny_spec), run_dir, "--verbose", "--set", f"search.address={address}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"on Ray at {address}" in done.stdout and "[2/2]" in done.stdout
    trials = read_trials(run_dir)
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials
    hosts = [json.loads((run_dir / "trials" / t / "result.json").read_text())["host"] for t in trials["trial_id"]]
    assert len({h["node_id"] for h in hosts}) == 2, done.stdout  # one trial on each node
    assert all(h["threads"] == 1 and h["cpus"] == 1 for h in hosts)
    assert (run_dir / "best" / "weights.pt").is_file() and (run_dir / "pareto.csv").is_file()
    assert (run_dir / "tune").is_dir() == (kind == "gcs")  # a Ray Client keeps Tune's state on the cluster
    files = [p for p in run_dir.rglob("*") if p.is_file() and p.stat().st_size < 2**20]
    written = "\n".join(p.read_text(errors="replace") for p in files)
    assert two_nodes["token"] not in written + done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["gcs", "client"])
@pytest.mark.cluster
@pytest.mark.slow
def test_the_probe_tells_a_missing_or_wrong_token_from_the_right_one(two_nodes, kind):
    # the same answers Ray's own client gets (UNAUTHENTICATED, or past authentication)
    target = two_nodes[kind].removeprefix("ray://")
    assert cluster.asks_token(target, kind)
    assert cluster.asks_token(target, kind, "not-the-token")
    assert not cluster.asks_token(target, kind, two_nodes["token"])


@pytest.mark.parametrize("token", [None, "not-the-token"], ids=["no token", "wrong token"])
@pytest.mark.cluster
@pytest.mark.slow
def test_joining_a_token_cluster_without_its_token_is_one_line_at_once(two_nodes, token, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    if token:
        monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    start = time.monotonic()
    with pytest.raises(SpecError) as err:
        cluster.prepare(two_nodes["gcs"])
    assert time.monotonic() - start < 5  # Ray's own retry loop takes about 25 s
    message = str(err.value)
    assert message.startswith(f"search.address: {two_nodes['gcs']!r}: the Ray cluster there ")
    assert ("none was found" if token is None else "refused the authentication token from RAY_AUTH_TOKEN") in message
    assert "not-the-token" not in message


@pytest.mark.cluster
@pytest.mark.slow
def test_the_cli_without_the_token_exits_2_and_writes_nothing(two_nodes, tmp_path, write_spec, tiny_spec):
    run_dir = tmp_path / "run"
    done = archscale_run(write_spec(tiny_spec), run_dir, "--set", f"search.address={two_nodes['client']}",
                         env=without_token(tmp_path / "home"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"archscale: error: search.address: {two_nodes['client']!r}: the Ray cluster there asks for an "
        f"authentication token and none was found (no RAY_AUTH_TOKEN, no RAY_AUTH_TOKEN_PATH, no "
        f"{tmp_path / 'home' / '.ray' / 'auth_token'}); allowed: the cluster's token (`ray get-auth-token` on its "
        "head prints it) in RAY_AUTH_TOKEN, in a file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token"]
    assert not run_dir.exists()


@pytest.mark.cluster
@pytest.mark.slow
def test_a_trial_no_node_can_hold_waits_resource_wait_s_then_exits_2(two_nodes, tmp_path, write_spec, tiny_spec):
    # two nodes of one CPU: a trial of two CPUs fits neither (a trial is one bundle, on one node)
    tiny_spec["search"].update(resources_per_trial={"cpu": 2, "gpu": 0}, resource_wait_s=1)
    run_dir = tmp_path / "run"
    done = archscale_run(write_spec(tiny_spec), run_dir, "--set", f"search.address={two_nodes['gcs']}")
    assert done.returncode == 2, done.stdout + done.stderr
    where = f"the largest node of the Ray cluster at {two_nodes['gcs']}"
    assert f"archscale: 2 CPU per trial, but {where} has 1; waiting up to 1 s (search.resource_wait_s)" in done.stdout
    assert done.stderr.splitlines() == [
        f"archscale: error: search.resources_per_trial.cpu: 2 CPU per trial, but {where} has 1, so no trial could "
        "ever start (after waiting 1 s for a node); allowed: at most 1"]
    assert not run_dir.exists()


@pytest.mark.cluster
@pytest.mark.slow
def test_the_autoscaler_adds_the_node_a_trial_waits_for(growing_cluster, tmp_path, write_spec, tiny_spec):
    # the head has no CPU: the trials can only run on the node the autoscaler adds on request
    tiny_spec["search"].update(num_trials=2, max_concurrent=1, resource_wait_s=120,
                               resources_per_trial={"cpu": GROWN_CPUS, "gpu": 0})
    run_dir, address = tmp_path / "run", growing_cluster["gcs"]
    done = archscale_run(write_spec(tiny_spec), run_dir, "--set", f"search.address={address}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (f"archscale: {GROWN_CPUS} CPU per trial, but the largest node of the Ray cluster at {address} has 0; "
            "waiting up to 120 s (search.resource_wait_s) for the autoscaler to add one") in done.stdout
    trials = read_trials(run_dir)
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials
    hosts = [json.loads((run_dir / "trials" / t / "result.json").read_text())["host"] for t in trials["trial_id"]]
    assert all(h["cpus"] == GROWN_CPUS and h["threads"] == GROWN_CPUS for h in hosts), hosts
    added = growing_cluster["added"]()
    assert len(added) == 1 and {h["node_id"] for h in hosts} == added, (hosts, added)  # on the node it added


@pytest.mark.cluster
@pytest.mark.slow
def test_a_trial_no_node_type_can_hold_exits_2_once_resource_wait_s_has_passed(growing_cluster, tmp_path,
                                                                                write_spec, tiny_spec):
    wait = 15
    tiny_spec["search"].update(resources_per_trial={"cpu": 64, "gpu": 0}, resource_wait_s=wait)
    run_dir, address = tmp_path / "run", growing_cluster["gcs"]
    where = f"the largest node of the Ray cluster at {address}"
    command = [sys.executable, "-m", "archscale", "run", str(write_spec(tiny_spec)), "--out", str(run_dir),
               "--set", f"search.address={address}"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        waiting = proc.stdout.readline()  # the first line: nothing else is said before it
        since = time.monotonic()
        out, err = proc.communicate(timeout=300)
        waited = time.monotonic() - since
    assert proc.returncode == 2, waiting + out + err
    assert waiting == (f"archscale: 64 CPU per trial, but {where} has 0; waiting up to {wait} s "
                       "(search.resource_wait_s) for the autoscaler to add one\n"), waiting + out + err
    assert err.splitlines() == [
        f"archscale: error: search.resources_per_trial.cpu: 64 CPU per trial, but {where} has 0, so no trial could "
        f"ever start (after waiting {wait} s for a node); allowed: a node with CPUs first: none has any (a head "
        "started with --num-cpus=0 runs no trials; on a cluster that grows, the autoscaler must add one)"]
    assert wait <= waited < wait + RESOURCE_POLL_S + 10, waited  # the last look, then Ray's shutdown
    assert not run_dir.exists()
    assert growing_cluster["added"]() == set()  # no node type has 64 CPUs: none was added


def test_nothing_listening_is_said_at_once():
    port = free_port()
    start = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(SpecError, match=rf"^search.address: '{address}': nothing is listening there "
                                            r"\(Connection refused\); allowed: the address `ray start --head`"):
            cluster.prepare(address)
    assert time.monotonic() - start < 2


def test_something_else_listening_is_not_taken_for_ray(monkeypatch):
    monkeypatch.setattr(cluster, "PROBE_S", 0.5)
    with socket.socket() as server:  # listens, never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = "127.0.0.1:%d" % server.getsockname()[1]
        with pytest.raises(SpecError, match=rf"^search.address: '{address}': something listens there but does not "
                                            r"answer as a Ray cluster \(GCS\)"):
            cluster.prepare(address)


def test_ray_still_being_imported_is_no_ray_yet(monkeypatch):
    """A run checks for a Ray while another thread of the process (a notebook's) may still be
    importing ray: the module is in sys.modules, its ``is_initialized`` not yet. That is no Ray
    yet, not an AttributeError."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))  # as ray's __init__ is while it runs
    assert not cluster.ray_initialized()
    cluster.prepare_address(None)  # a Ray of its own: nothing to prepare
    monkeypatch.setattr(sys.modules["ray"], "is_initialized", lambda: True, raising=False)
    assert cluster.ray_initialized()
    monkeypatch.delitem(sys.modules, "ray")
    assert not cluster.ray_initialized()


def test_the_token_is_found_where_ray_looks_for_it(tmp_path, monkeypatch):
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cluster.find_token() == (None, f"no RAY_AUTH_TOKEN, no RAY_AUTH_TOKEN_PATH, no {tmp_path}/.ray/auth_token")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert cluster.find_token() == ("from-home", f"{tmp_path}/.ray/auth_token")
    named = tmp_path / "named"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    assert cluster.find_token() == (None, f"RAY_AUTH_TOKEN_PATH names {named}, which is missing or empty")
    named.write_text("from-path")
    assert cluster.find_token() == ("from-path", f"RAY_AUTH_TOKEN_PATH ({named})")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert cluster.find_token() == ("from-env", "RAY_AUTH_TOKEN")


def test_a_ray_client_connection_that_never_returns_is_an_error_in_time(monkeypatch):
    """Ray 2.60's client can hang for ever cleaning up a connection its server failed to set
    up: the run says so after CLIENT_CONNECT_S instead of waiting with it."""
    import threading

    import ray

    from archscale.search.dispatch import session as start

    release, calls = threading.Event(), []
    # the stand-in returns after 10 s at the latest: a connection not run in a thread of its own then
    # ends without the error, and the test fails instead of hanging
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs) or release.wait(10))
    monkeypatch.setattr(start, "CLIENT_CONNECT_S", 0.5)
    began = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match=r"ray://127\.0\.0\.1:1 did not finish in 0\.5 s"):
            start.init_off_main(start.CLIENT_CONNECT_S, address="ray://127.0.0.1:1")
    finally:
        release.set()  # the stand-in returns: no thread is left waiting
    assert 0.5 <= time.monotonic() - began < 5
    assert calls and calls[0]["address"] == "ray://127.0.0.1:1"
