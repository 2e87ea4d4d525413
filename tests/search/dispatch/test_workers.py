"""Trials of several data-parallel workers (``search.resources_per_trial.workers``): what the
spec accepts and refuses, what a trial asks Ray for, the resource checks that exit 2, and
searches whose trials run as Ray Train workers, on this machine's Ray and on a two-node cluster
from `ray start`."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray import cloudpickle

from archscale.analysis.records import read_trials
from archscale.cli import main
from archscale.search.dispatch import launch, session
from archscale.search.dispatch.resources import DRIVER_BUNDLE, TrialResources, gpu_need_mb, gpu_share
from archscale.search.dispatch.workers import GROUP, GroupReleaser, backend, first_worker_error
from archscale.spec import SpecError, parse_spec

ROOT = Path(__file__).resolve().parents[3]


def spec_with(tiny_spec: dict, **resources) -> dict:
    spec = copy.deepcopy(tiny_spec)
    spec["search"]["resources_per_trial"] = {"cpu": 1, "gpu": 0, **resources}
    return spec


# --------------------------------------------------------------------------- the spec


def test_one_worker_is_the_default_and_two_are_accepted(tiny_spec):
    assert parse_spec(tiny_spec).search.resources_per_trial.workers == 1
    assert parse_spec(spec_with(tiny_spec, workers=2)).search.resources_per_trial.workers == 2
    assert parse_spec(tiny_spec).train.sync_bn is False


@pytest.mark.parametrize("workers", [0, -1, 1.5, "two"])
def test_a_worker_count_that_is_not_a_positive_integer_is_refused(tiny_spec, workers):
    with pytest.raises(SpecError, match="search.resources_per_trial.workers"):
        parse_spec(spec_with(tiny_spec, workers=workers))


def test_a_global_batch_that_does_not_split_among_the_workers_is_refused(tiny_spec):
    spec = spec_with(tiny_spec, workers=3)  # batch_size 64
    with pytest.raises(SpecError, match=r"train.batch_size: 64 is the global batch of 3 workers .* a multiple of 3"):
        parse_spec(spec)
    spec["train"]["batch_size"] = [48, 96, 100]  # a searched batch: every value is checked
    with pytest.raises(SpecError, match="train.batch_size: 100 is the global batch of 3 workers"):
        parse_spec(spec)
    spec["train"]["batch_size"] = [48, 96]
    assert parse_spec(spec).search.resources_per_trial.workers == 3


def test_asha_with_several_workers_is_accepted(tiny_spec):
    spec = spec_with(tiny_spec, workers=2)
    spec["search"]["scheduler"] = "asha"
    spec["train"]["epochs"] = 3
    assert parse_spec(spec).search.scheduler == "asha"


def test_sync_bn_on_cpu_workers_is_refused_with_its_reason(tiny_spec):
    spec = spec_with(tiny_spec, workers=2)
    spec["train"]["sync_bn"] = True
    with pytest.raises(SpecError, match="train.sync_bn: true needs CUDA workers .*resources_per_trial.gpu is 0"):
        parse_spec(spec)
    spec["search"]["resources_per_trial"]["gpu"] = 1
    spec["train"]["device"] = "cpu"
    with pytest.raises(SpecError, match="train.device is 'cpu'"):
        parse_spec(spec)
    spec["train"]["device"] = "auto"
    assert parse_spec(spec).train.sync_bn is True


def test_check_refuses_it_in_one_line_with_exit_2(tiny_spec, write_spec, capsys):
    spec = spec_with(tiny_spec, workers=3)
    assert main(["check", str(write_spec(spec))]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size: 64 is the global batch of 3 workers" in err and "Traceback" not in err


# --------------------------------------------------------------------------- what a trial asks for


def test_the_driver_of_a_trial_of_workers_holds_no_cpu_and_its_workers_theirs():
    one = TrialResources(None, 1, 0.0)({})
    assert one.bundles == [{"CPU": 1.0}]
    driver = TrialResources(None, 1, 0.0, workers=2)
    assert driver({}).bundles == [DRIVER_BUNDLE] and "CPU" not in DRIVER_BUNDLE and "GPU" not in DRIVER_BUNDLE
    assert driver.worker_resources({}, 64) == {"CPU": 1.0}
    assert TrialResources(None, 4, 1.0, workers=8).worker_resources({}, 512) == {"CPU": 4.0, "GPU": 1.0}


def test_gpu_auto_sizes_each_worker_from_its_share_of_the_batch():
    def measure(config):  # MiB of one step: 10 per image
        return 10.0 * config["train.batch_size"]

    r = TrialResources(None, 1, "auto", gpu_total_mb=80_000.0, measure=measure, workers=4)
    shipped = cloudpickle.loads(cloudpickle.dumps(r))  # as Tune ships it: the trial's driver sizes its workers
    got = shipped.worker_resources({"c1_width": 4}, 512)
    # a step of 512 / 4 = 128 images: (1280 MiB + no data) * 1.2 + 600 = 2136 MiB, 37 such workers on one GPU
    assert gpu_need_mb(1280.0, 0.0) == pytest.approx(2136.0)
    assert got == {"CPU": 1.0, "GPU": gpu_share(2136.0, 80_000.0)} and got["GPU"] == pytest.approx(0.027, abs=1e-4)
    one = cloudpickle.loads(cloudpickle.dumps(TrialResources(None, 1, "auto", gpu_total_mb=1.0, measure=measure)))
    assert one.measure is None  # a trial of one worker is sized on Tune's side only


def test_a_failed_run_is_told_by_its_lowest_failed_rank_s_own_error():
    from ray.train import WorkerGroupError

    own = ValueError("rank 1's")
    assert first_worker_error(WorkerGroupError("...", {3: RuntimeError("rank 3's"), 1: own})) is own
    plain = RuntimeError("the controller's")
    assert first_worker_error(plain) is plain


def test_nccl_on_whole_gpus_gloo_on_cpus_and_gpu_shares():
    assert backend(0.0) == "gloo" and backend(0.5) == "gloo" and backend(1.0) == "nccl" and backend(2.0) == "nccl"


# --------------------------------------------------------------------------- exit 2 at start


def test_more_workers_than_this_machine_has_cores_are_refused_before_ray_starts(tiny_spec, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(session.os, "sched_getaffinity", lambda pid: {0, 1})
    session.require_cores(parse_spec(spec_with(tiny_spec, workers=2)))  # two workers of one CPU fit two cores
    three = spec_with(tiny_spec, workers=3)
    three["train"]["batch_size"] = 48
    with pytest.raises(SpecError, match=r"workers: 3 workers of 1 CPU per trial, but this machine has 2 cores.*"
                                        r"at most 2"):
        session.require_cores(parse_spec(three))


def nodes(*cpus_gpus):
    return [{"Alive": True, "Resources": {"CPU": c, **({"GPU": g} if g else {})}} for c, g in cpus_gpus]


def test_the_workers_a_cluster_holds_are_counted_node_by_node(monkeypatch):
    monkeypatch.setattr(launch.ray, "nodes", lambda: nodes((1, 0), (1, 0)) + [{"Alive": False,
                                                                              "Resources": {"CPU": 64}}])
    assert launch.worker_capacity({"CPU": 1.0}) == 2
    assert launch.worker_capacity({"CPU": 0.5}) == 4
    monkeypatch.setattr(launch.ray, "nodes", lambda: nodes((16, 8), (16, 2), (64, 0)))
    assert launch.worker_capacity({"CPU": 4.0, "GPU": 1.0}) == 6  # min(4, 8) + min(4, 2) + 0
    assert launch.worker_capacity({"CPU": 3.0}) == 5 + 5 + 21


def test_a_trial_of_more_workers_than_the_cluster_holds_is_refused(monkeypatch, tiny_spec):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(launch.ray, "nodes", lambda: nodes((1, 0), (1, 0)))
    spec = spec_with(tiny_spec, workers=2)
    spec["search"]["address"] = "10.0.0.1:6379"
    launch.require_resources(parse_spec(spec))  # one on each node
    spec["search"]["resources_per_trial"]["workers"] = 4
    spec["train"]["batch_size"] = 64
    with pytest.raises(SpecError) as err:
        launch.require_resources(parse_spec(spec))
    assert str(err.value).startswith("search.resources_per_trial.workers: 4 workers of 1 CPU each per trial, "
                                        "but the nodes of the Ray cluster at 10.0.0.1:6379 hold at most 2 such "
                                        "workers at once, so no trial could ever start; allowed: at most 2")


# --------------------------------------------------------------------------- the example


def write_images(root: Path, side: int = 224) -> Path:
    """An ImageNet-like folder: 3 classes, RGB PNGs of ``side`` x ``side + 8`` px."""
    from torchvision.io import write_png

    from tests.conftest import image_of

    for split, per_class in (("train", 3), ("test", 1)):
        for cls in ("cat", "dog", "fish"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                write_png(image_of(3, side, side + 8, i), str(folder / f"{i}.png"))
    return root


@pytest.mark.slow
def test_the_eight_gpu_example_checks_against_a_generated_folder(tmp_path):
    example = ROOT / "examples" / "imagefolder_effnet_8gpu.yaml"
    spec = yaml.safe_load(example.read_text())
    r = spec["search"]["resources_per_trial"]
    assert (r["workers"], r["gpu"], spec["space"]["params"]["base"], spec["data"]["image_size"]) == (
        8, 1, "effnet_b0_224", 224)
    folder = write_images(tmp_path / "images")
    done = subprocess.run([sys.executable, "-m", "archscale", "check", str(example), "--samples", "2",
                           "--set", f"data.dataset=imagefolder:{folder}", "--set", f"data.root={tmp_path / 'root'}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stage 1: grid sampler over alpha, beta, gamma" in done.stdout
    assert "5 of 8 grid points are feasible" in done.stdout


# --------------------------------------------------------------------------- searches


def one_config_quickstart(workers: int) -> dict:
    """The quickstart's space fixed at one configuration (a grid of one point), 4 epochs."""
    spec = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec["space"]["params"] = {k: v[-1] if isinstance(v, list) else v for k, v in spec["space"]["params"].items()}
    spec["search"].update(sampler="grid", num_trials=1, max_concurrent=1,
                          resources_per_trial={"cpu": 1, "gpu": 0, "workers": workers})
    spec["name"] = f"quickstart_w{workers}"
    return spec


def result_of(run_dir: Path) -> dict:
    trials = read_trials(run_dir)
    assert len(trials) == 1 and trials["status"].iloc[0] == "completed", trials
    return json.loads((run_dir / "trials" / trials["trial_id"].iloc[0] / "result.json").read_text())


@pytest.mark.slow
def test_the_quickstart_point_with_one_and_two_workers(tmp_path, write_spec, ray_session):
    results = {}
    for workers in (1, 2):
        run_dir = tmp_path / f"run{workers}"
        assert main(["run", str(write_spec(one_config_quickstart(workers), f"w{workers}.yaml")), "--out",
                     str(run_dir), "--quiet"]) == 0
        results[workers] = result_of(run_dir)
        assert (run_dir / "best" / "weights.pt").is_file()
    one, two = results[1], results[2]
    assert one["host"]["workers"] == 1 and "worker_hosts" not in one["host"]
    assert two["host"]["workers"] == 2 and two["host"]["backend"] == "gloo"
    assert [w["rank"] for w in two["host"]["worker_hosts"]] == [0, 1]
    assert all(w["device"] == "cpu" for w in two["host"]["worker_hosts"])
    assert len({w["pid"] for w in two["host"]["worker_hosts"]}) == 2
    assert two["host"]["threads"] == 1 and two["host"]["cpus"] == 1
    acc1, acc2 = one["metrics"]["val_accuracy"], two["metrics"]["val_accuracy"]
    assert acc1 > 0.9 and abs(acc1 - acc2) <= 0.03, (acc1, acc2)
    assert len(two["history"]) == 4 and two["metrics"]["epochs"] == 4


def test_the_releaser_removes_a_stopped_trial_s_placement_group_once(ray_session):
    """What a worker's report names (a real placement group of Ray's) is taken out of the
    result before the recorder sees it, and removed when Tune ends the trial; a group Ray
    already removed, or a trial that named none, is left alone."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table

    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=60)
    releaser, trial = GroupReleaser(), type("Trial", (), {"trial_id": "t1"})()
    result = {"val_accuracy": 0.5, GROUP: group.id.hex()}
    releaser.on_trial_result(0, [], trial, result)
    assert GROUP not in result  # trials.csv never gets the column
    assert placement_group_table(group)["state"] == "CREATED"
    releaser.on_trial_complete(0, [], trial)
    assert placement_group_table(group)["state"] == "REMOVED"
    releaser.on_trial_result(0, [], trial, {GROUP: group.id.hex()})
    assert releaser.release("t1") is False  # already removed
    assert releaser.release("never-reported") is False


@pytest.mark.slow
def test_asha_stops_trials_of_workers_and_the_search_goes_on(tmp_path, write_spec, ray_session, tiny_spec):
    """ASHA with 2 workers a trial, one trial at a time, on the test session's Ray (started
    without the dashboard, so Ray Train's own cleaner cannot see the stopped controllers):
    every trial starts and ends, some are stopped early, and no placement group of a trial is
    left holding CPUs. Before GroupReleaser the second trial waited for CPUs forever."""
    import ray
    from ray.util.placement_group import placement_group_table

    spec = spec_with(tiny_spec, workers=2)
    spec["search"].update(sampler="grid", num_trials=4, max_concurrent=1, scheduler="asha", max_failures=0,
                          time_budget_s=300,  # a regression stops here and fails below, not hangs
                          asha={"grace_period": 1, "reduction_factor": 2},
                          objectives=["val_accuracy:max"])  # on accuracy alone ASHA stops some of these 4

    spec["space"]["params"].update(c3_width=8, c3_conv="regular")  # 4 grid points: c1_width x c4_width
    spec["train"]["epochs"] = 3
    run_dir = tmp_path / "run"
    assert main(["run", str(write_spec(spec)), "--out", str(run_dir), "--quiet"]) == 0
    trials = read_trials(run_dir)
    assert len(trials) == 4 and set(trials["status"]) <= {"completed", "pruned"}, trials[["status", "error"]]
    assert (trials["status"] == "pruned").any() and (trials["status"] == "completed").any(), trials["status"]
    held = [g for g in placement_group_table().values() if g["state"] != "REMOVED"]
    assert not held, held
    assert ray.available_resources().get("CPU") == 2


@pytest.mark.slow
def test_a_failing_trial_of_workers_is_recorded_failed(tmp_path, write_spec, ray_session, tiny_spec):
    spec = spec_with(tiny_spec, workers=2)
    spec["search"].update(sampler="grid", num_trials=1)
    spec["space"]["params"] = {k: v[0] if isinstance(v, list) else v for k, v in spec["space"]["params"].items()}
    spec["train"]["lr"] = 1e30  # the loss leaves the numbers in the first epoch, on every rank alike
    run_dir = tmp_path / "run"
    main(["run", str(write_spec(spec)), "--out", str(run_dir), "--quiet"])
    trials = read_trials(run_dir)
    assert len(trials) == 1 and trials["status"].iloc[0] == "failed", trials
    assert str(trials["error"].iloc[0]).startswith("TrainingDiverged: loss became"), trials["error"].iloc[0]


@pytest.mark.cluster
@pytest.mark.slow
def test_two_workers_of_one_trial_run_on_the_two_nodes_of_a_cluster(two_nodes, tmp_path, write_spec, tiny_spec):
    from tests.search.dispatch.test_cluster import archscale_run

    spec = spec_with(tiny_spec, workers=2)  # one CPU per node: the two workers can only be on different nodes
    spec["search"].update(sampler="grid", num_trials=1, max_concurrent=1)
    spec["space"]["params"] = {k: v[0] if isinstance(v, list) else v for k, v in spec["space"]["params"].items()}
    run_dir = tmp_path / "run"
    done = archscale_run(write_spec(spec), run_dir, "--set", f"search.address={two_nodes['gcs']}")
    assert done.returncode == 0, done.stdout + done.stderr
    host = result_of(run_dir)["host"]
    assert host["workers"] == 2 and len({w["node_id"] for w in host["worker_hosts"]}) == 2, host


@pytest.mark.slow
def test_budget_resume_and_store_with_two_workers(tmp_path, write_spec, ray_session, tiny_spec, capsys):
    """A time budget stops a search of 2-worker trials, --resume finishes it, and a second run
    is served from the results store, as with one worker."""
    spec = spec_with(tiny_spec, workers=2)
    spec["search"].update(sampler="grid", num_trials=2, max_concurrent=1, store=str(tmp_path / "store.db"))
    spec["space"]["params"].update(c1_width=[4, 8], c3_width=8, c3_conv="regular", c4_width=8)
    path, run_dir = write_spec(spec), tmp_path / "run"
    assert main(["run", str(path), "--out", str(run_dir), "--set", "search.time_budget_s=1"]) == 0
    assert "stopped (time budget of 1 s reached)" in capsys.readouterr().out
    assert (len(read_trials(run_dir)) if (run_dir / "trials.csv").is_file() else 0) < 2
    assert main(["run", str(path), "--out", str(run_dir), "--resume", "--quiet"]) == 0
    trials = read_trials(run_dir)
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}, trials[["status", "error"]]
    for trial_id in trials["trial_id"]:
        assert json.loads((run_dir / "trials" / trial_id / "result.json").read_text())["host"]["workers"] == 2
    again = tmp_path / "again"
    assert main(["run", str(path), "--out", str(again), "--quiet"]) == 0
    assert set(read_trials(again)["source"]) == {"store"}
