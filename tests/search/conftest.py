"""Fixtures of the search tests: a two-node Ray cluster started on this machine, shared by
the cluster tests (``test_cluster.py``, ``test_custom_family.py``)."""

import os
import socket

import pytest


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    # On a loaded CI machine the head's Ray Client server takes more than its default 30 s to
    # start the server of a new client; the nodes inherit this process's environment.
    os.environ.setdefault("RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S", "180")

    with socket.socket() as s:  # a free port for the head's Ray Client server
        s.bind(("127.0.0.1", 0))
        client_port = s.getsockname()[1]
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "ray_client_server_port": client_port, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield {"gcs": cluster.address, "client": f"ray://127.0.0.1:{client_port}"}
    finally:
        cluster.shutdown()
