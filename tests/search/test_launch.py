"""What the launcher refuses before any trial: a trial no node of the Ray in use can hold
would wait for ever (Ray queues it without a word), so the run stops at start, one line,
exit 2, nothing written. CPUs beyond this machine's cores are refused before Ray starts
(tests/search/test_resources.py); a cluster that grows is in tests/search/test_cluster.py."""

import pytest


@pytest.mark.parametrize("resource, asked", [("gpu", 64), ("cpu", 512)])
def test_a_trial_no_node_can_hold_is_refused_at_start(resource, asked, ray_session, tmp_path, write_spec, tiny_spec,
                                                      capsys, monkeypatch):
    import ray

    from archscale.cli import main

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(1024)))  # Ray's own count is the one to pass
    tiny_spec["search"]["resources_per_trial"] = {"cpu": 1, "gpu": 0, resource: asked}
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(tiny_spec)), "--out", str(run_dir)]) == 2
    name = resource.upper()
    has = max(n["Resources"].get(name, 0) for n in ray.nodes() if n["Alive"])  # what Ray says this machine has
    assert capsys.readouterr().err.splitlines() == [
        f"archscale: error: search.resources_per_trial.{resource}: {asked} {name} per trial, but this machine's Ray "
        f"has {has:g}, so no trial could ever start; allowed: at most {has:g}"]
    assert not run_dir.exists()
