"""The same spec on an existing multi-node Ray cluster (``search.address``): two nodes
started on this machine, trials spread over both, every file of the run written by the
driver (trials send their weights and results with their last report)."""

import json
import subprocess
import sys

import pytest

from archscale.analysis.records import read_trials

pytestmark = [pytest.mark.cluster, pytest.mark.slow]  # starts two Ray nodes of its own, then searches


@pytest.mark.parametrize("kind", ["gcs", "client"])
def test_search_on_a_two_node_cluster(two_nodes, kind, tmp_path, write_spec, tiny_spec):
    # one CPU per node and per trial, two trials at once: they can only run on different nodes
    tiny_spec["search"].update(num_trials=2, max_concurrent=2, resources_per_trial={"cpu": 1, "gpu": 0})
    tiny_spec["space"]["params"].update(c4_width=8, c3_conv="regular")
    run_dir = tmp_path / "run"
    address = two_nodes[kind]
    done = subprocess.run([sys.executable, "-m", "archscale", "run", str(write_spec(tiny_spec)), "--out",
                           str(run_dir), "--set", f"search.address={address}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"on Ray at {address}" in done.stdout and "[2/2]" in done.stdout
    trials = read_trials(run_dir)
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials
    hosts = [json.loads((run_dir / "trials" / t / "result.json").read_text())["host"] for t in trials["trial_id"]]
    assert len({h["node_id"] for h in hosts}) == 2  # one trial on each node
    assert all(h["threads"] == 1 and h["cpus"] == 1 for h in hosts)
    assert (run_dir / "best" / "weights.pt").is_file() and (run_dir / "pareto.csv").is_file()
    assert (run_dir / "tune").is_dir() == (kind == "gcs")  # a Ray Client keeps Tune's state on the cluster
