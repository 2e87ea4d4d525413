"""Joining a Ray cluster started the way Ray's documentation starts one (``ray start --head``,
then ``ray start --address=HEAD`` on each other machine), with or without token authentication.

Before Ray connects, :func:`prepare` asks the address one question, the first call Ray's own
client makes there (the GCS's ``GetClusterId``; a Ray Client server's ``ClusterInfo``), and
reads the answer: nothing listening, a cluster that takes anyone, or one that answers
``UNAUTHENTICATED`` because it wants Ray's authentication token. The token is found where Ray
looks for it, in Ray's order (``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``,
``~/.ray/auth_token``), checked with the same question, and Ray told to send it
(``RAY_AUTH_MODE=token``: an explicit address alone does not make Ray 2.60 send a token).
Each failure is one line naming the address and what would do, in about a second, instead
of Ray's retry loop (about 25 s, then ``Failed to connect to Ray cluster``). The token itself
is never printed nor written anywhere.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

from archscale.spec import SpecError

PROBE_S = 5.0  # seconds for the TCP connect and for the probe's answer
AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_VARS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
# the first call of Ray's own client on each kind of address (an empty request message is valid for both)
FIRST_CALL = {"gcs": "/ray.rpc.NodeInfoGcsService/GetClusterId", "client": "/ray.rpc.RayletDriver/ClusterInfo"}
WHERE = ("allowed: the address `ray start --head` printed (HOST:PORT of the GCS, or ray://HOST:PORT of its "
         "Ray Client server)")
ADDRESS = re.compile(r"^(?P<client>ray://)?(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+)$")


def find_token() -> tuple[str | None, str]:
    """(the authentication token, where it was found), looked for as Ray looks for it;
    (None, where it was looked for) when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named).expanduser() if named else DEFAULT_TOKEN_FILE.expanduser()
    source = f"RAY_AUTH_TOKEN_PATH ({path})" if named else str(path)
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if token:
        return token, source
    looked = f"RAY_AUTH_TOKEN_PATH names {path}, which is missing or empty" if named else \
        f"no RAY_AUTH_TOKEN, no RAY_AUTH_TOKEN_PATH, no {path}"
    return None, looked


def asks_token(target: str, kind: str, token: str | None = None) -> bool:
    """Whether the Ray service at ``target`` (``HOST:PORT``; ``kind`` ``gcs`` or ``client``)
    refuses its first call for want of a token (``token``: sent as Ray sends it). Raises
    ConnectionError when it does not answer as a gRPC server."""
    import grpc

    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(FIRST_CALL[kind])  # raw bytes: the empty request message
        try:
            call(b"", timeout=PROBE_S, metadata=metadata)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                return True
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectionError(f"{err.code().name.lower()}: {err.details()}") from None
    return False  # any other answer came from past Ray's authentication


def prepare(address: str, source: str = "search.address") -> None:
    """Check that a Ray cluster answers at ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``;
    ``auto`` is left to Ray, which finds a local cluster's token itself) and, when it asks
    for a token, that the token found here is the cluster's; then make Ray send it. Raises
    :class:`SpecError` (one line, naming ``source`` and the address) otherwise."""
    match = ADDRESS.match(address)
    if match is None:
        return
    host, port = match["host"].strip("[]"), int(match["port"])
    kind = "client" if match["client"] else "gcs"
    field = f"{source}: {address!r}"
    try:
        socket.create_connection((host, port), timeout=PROBE_S).close()
    except OSError as err:
        why = err.strerror or type(err).__name__.replace("Error", " error").lower()
        raise SpecError(f"{field}: nothing is listening there ({why}); {WHERE}") from None
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if not asks_token(target, kind):
            return
        token, found = find_token()
        if token is None:
            raise SpecError(f"{field}: the Ray cluster there asks for an authentication token and none was found "
                            f"({found}); allowed: the cluster's token (`ray get-auth-token` on its head prints it) "
                            f"in RAY_AUTH_TOKEN, in a file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token")
        if asks_token(target, kind, token):
            raise SpecError(f"{field}: the Ray cluster there refused the authentication token from {found}; "
                            f"allowed: the token the cluster was started with (`ray get-auth-token` on its head)")
    except ConnectionError as err:
        raise SpecError(f"{field}: something listens there but does not answer as a Ray "
                        f"{'Client server' if kind == 'client' else 'cluster (GCS)'} ({err}); {WHERE}") from None
    mode = os.environ.get(AUTH_MODE)
    if (mode or "").lower() == "token":
        return
    if mode is not None:
        raise SpecError(f"{field}: the Ray cluster there asks for an authentication token, but {AUTH_MODE} is "
                        f"{mode!r}; allowed: {AUTH_MODE} unset or 'token'")
    if "ray" in sys.modules:  # Ray reads its authentication mode once, when it is imported
        raise SpecError(f"{field}: the Ray cluster there asks for an authentication token, and Ray was imported "
                        f"before archscale could say so; allowed: {AUTH_MODE}=token set before Python starts")
    os.environ[AUTH_MODE] = "token"  # this process and what it starts: Ray sends the token it finds


def ray_initialized() -> bool:
    """Whether this process is on a Ray (``ray.is_initialized``), without importing ray. Ray
    still being imported by another thread is not on one yet: its module is in ``sys.modules``
    before ``is_initialized`` is defined there."""
    is_initialized = getattr(sys.modules.get("ray"), "is_initialized", None)
    return is_initialized is not None and is_initialized()


def prepare_address(address: str | None) -> None:
    """:func:`prepare` the cluster a run will join: ``address``, else ``RAY_ADDRESS``; nothing
    for Ray started here (neither set, or ``local``) or when this process is already on a Ray."""
    source = "search.address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address != "local" and not ray_initialized():
        prepare(address, source)
