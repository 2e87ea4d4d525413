"""Joining clusters started with `ray start`: what `archscale run --set search.address=...`
answers, and how fast, against a head with token authentication, a head without it, and an
address where nothing listens; then a trial no node can hold, on a cluster and here.

Each head is one `ray start --head --block` on loopback (1 CPU, its own temp dir, HOME and
process group, stopped by its own ids: never `ray stop`). The archscale side runs as a user
with no ``~/.ray/auth_token``, the token (when given) in ``RAY_AUTH_TOKEN``. Walls are whole
commands from a fresh interpreter. Prints a table and ends with
``no_token_refusal_wall_s: VALUE``.

    python benchmarks/cluster_connect.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.search.conftest import free_port, start_node  # noqa: E402 - the test suite's `ray start` nodes

RUN = [sys.executable, "-m", "archscale", "run", "examples/quickstart.yaml", "--quiet",
       "--set", "search.num_trials=2", "--set", "train.epochs=1"]


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def timed(case: str, argv: list[str], env: dict[str, str], rows: list[tuple]) -> float:
    before, start = load(), time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - start
    said = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or [""])[-1]
    rows.append((case, done.returncode, wall, before, said))
    print(f"{case}: exit {done.returncode}, {wall:.1f} s (load {before})\n  {said[:400]}", flush=True)
    return wall


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="as-bench-", dir="/tmp"))  # short: Ray's socket paths live under it
    token, rows, nodes = uuid.uuid4().hex, [], []
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    user = {**base, "HOME": str(root / "user"), "PYTHONPATH": str(ROOT)}  # a user with no ~/.ray/auth_token
    out = lambda name: ["--out", str(root / name)]  # noqa: E731
    try:
        for auth in ("token", "disabled"):
            (root / auth).mkdir()
            env = {**base, "HOME": str(root / auth), "RAY_AUTH_MODE": auth,
                   **({"RAY_AUTH_TOKEN": token} if auth == "token" else {})}
            gcs = free_port()
            start_node(["--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--include-dashboard=false"],
                       env, root, f"head-{auth}", nodes)
            at = ["--set", f"search.address=127.0.0.1:{gcs}"]
            if auth == "token":
                no_token = timed("token cluster, no token anywhere", RUN + out("a") + at, user, rows)
                timed("token cluster, wrong RAY_AUTH_TOKEN", RUN + out("b") + at, {**user, "RAY_AUTH_TOKEN": "x"}, rows)
                timed("token cluster, its token in RAY_AUTH_TOKEN", RUN + out("c") + at,
                      {**user, "RAY_AUTH_TOKEN": token}, rows)
            else:
                timed("cluster without token auth, a token present", RUN + out("d") + at,
                      {**user, "RAY_AUTH_TOKEN": token}, rows)
                timed("cluster without token auth, cpu 512, resource_wait_s 10", RUN + out("e") + at +
                      ["--set", "search.resources_per_trial.cpu=512", "--set", "search.resource_wait_s=10"], user, rows)
            while nodes:
                nodes.pop().stop()
        timed("nothing listening at the address", RUN + out("f") + ["--set", f"search.address=127.0.0.1:{free_port()}"],
              user, rows)
        timed("Ray here, cpu 512", RUN + out("g") + ["--set", "search.resources_per_trial.cpu=512"], user, rows)
        timed("for comparison: an invalid spec (num_trials 0)", RUN + out("h") + ["--set", "search.num_trials=0"],
              user, rows)
        written = sorted(p.name for p in root.iterdir() if len(p.name) == 1)
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\n| case | exit | wall (s) | load average before |\n|---|---|---|---|")
    for case, code, wall, before, _ in rows:
        print(f"| {case} | {code} | {wall:.1f} | {before} |")
    print(f"run directories written: {written} (c, d: the two runs that completed)")
    print(f"no_token_refusal_wall_s: {no_token:.1f}")


if __name__ == "__main__":
    main()
