"""The Python API (``import archscale``): one tiny search through ``archscale.run``, then
everything a notebook does with it, checked against the CLI that calls the same functions."""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import archscale
from archscale.analysis.pareto import pareto_front
from archscale.cli import main
from archscale.spec import Spec, SpecError, parse_spec
from tests.conftest import TINY_SPEC

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, ray_session):
    """One 3-trial search through archscale.run (both override spellings), shared by the module."""
    spec = copy.deepcopy(TINY_SPEC)
    spec["search"]["num_trials"] = 5
    out = tmp_path_factory.mktemp("api") / "run"
    return archscale.run(spec, out, quiet=True, **{"search.num_trials": 3}, train__epochs=1, data__subset=0.1)


def test_import_archscale_loads_no_heavy_library():
    code = ("import sys, archscale; "
            "print(sorted(m for m in ('torch', 'ray', 'optuna', 'pandas', 'archscale.api') if m in sys.modules)); "
            "archscale.load_run; print('archscale.api' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    # nothing until a name of the API is used; then its module, and still no torch until a function runs
    assert out.split("\n")[:2] == ["[]", "True False"]


def test_the_api_module_loads_neither_ray_nor_optuna():
    code = "import sys, archscale.api; print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_dir_and_unknown_names():
    assert {"run", "load_run", "Run", "check", "build", "spaces", "load_exported"} <= set(dir(archscale))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        archscale.nope  # noqa: B018


def test_run_applies_overrides_and_returns_the_run(tiny_run):
    assert isinstance(tiny_run.spec, Spec)
    assert tiny_run.spec.search.num_trials == 3 and tiny_run.spec.train.epochs == 1
    assert tiny_run.spec.data.subset == 0.1
    saved = yaml.safe_load((tiny_run.path / "spec.yaml").read_text())
    assert saved["search"]["num_trials"] == 3 and saved["data"]["subset"] == 0.1
    trials = tiny_run.trials
    assert isinstance(trials, pd.DataFrame) and len(trials) == 3 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "infeasible", "failed"}
    assert "completed" in set(trials["status"])


def test_load_run_reads_the_same_run(tiny_run):
    again = archscale.load_run(tiny_run.path)
    assert again.spec == tiny_run.spec
    pd.testing.assert_frame_equal(again.trials, tiny_run.trials)
    assert "completed" in repr(again)


def test_front_and_best(tiny_run):
    trials = tiny_run.trials
    front = tiny_run.front()
    expected = pareto_front(trials, [("val_accuracy", "max"), ("macs", "min")])
    assert front["trial_id"].tolist() == expected["trial_id"].tolist() and len(front) >= 1
    as_pairs = tiny_run.front([("val_accuracy", "max"), ("params", "min")])
    as_text = tiny_run.front("val_accuracy:max,params:min")
    assert as_pairs["trial_id"].tolist() == as_text["trial_id"].tolist()
    best = tiny_run.best
    assert isinstance(best, pd.Series) and best["trial_id"] in set(front["trial_id"])
    done = trials[trials["status"] == "completed"]
    assert best["val_accuracy"] == done["val_accuracy"].max()


def test_hypervolume_is_what_the_pareto_command_prints(tiny_run, capsys, tmp_path):
    for objectives, reference in ((None, None), ("val_accuracy:max,params:min", {"params": 6000})):
        args = ["pareto", str(tiny_run.path), "--plot", str(tmp_path / "p.png")]
        if objectives:
            args += ["--objectives", objectives]
        if reference:
            args += ["--reference", ",".join(f"{k}={v}" for k, v in reference.items())]
        capsys.readouterr()
        assert main(args) == 0
        printed = re.search(r"hypervolume: ([0-9.]+) normalised", capsys.readouterr().out)
        value = tiny_run.hypervolume(objectives, reference)
        assert printed is not None and 0.0 <= value <= 1.0
        assert f"{value:.4f}" == printed.group(1)


def test_hypervolume_by_hand_with_one_objective(tiny_run):
    # One objective to maximise: the volume up to the reference is best - reference, normalised
    # by the box from the ideal (the best) to the reference: exactly 1.
    done = tiny_run.trials.query("status == 'completed'")
    assert tiny_run.hypervolume("val_accuracy:max", {"val_accuracy": done["val_accuracy"].max() - 0.5}) == pytest.approx(1.0)


def test_export_load_and_predict(tiny_run, tmp_path):
    folder = tiny_run.export(tmp_path / "winner")
    assert folder == tmp_path / "winner"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["trial_id"] == tiny_run.best["trial_id"] and metrics["picked_by"] == "the winner"
    assert set(metrics["files"]) == {"arch.yaml", "weights.pt", "metrics.json", "model.py"}
    model = archscale.load_exported(folder)
    assert not model.training
    weights = torch.load(folder / "weights.pt", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    cheap = tiny_run.export(tmp_path / "cheap", pick="macs")
    done = tiny_run.trials.query("status == 'completed'")
    assert json.loads((cheap / "metrics.json").read_text())["macs"] == done["macs"].min()
    one = done.iloc[-1]["trial_id"]
    assert json.loads((tiny_run.export(tmp_path / "one", trial=one) / "metrics.json").read_text())["trial_id"] == one


def test_export_errors_name_the_trial(tiny_run, tmp_path):
    with pytest.raises(SpecError, match="'nope': no such trial"):
        tiny_run.export(tmp_path / "x", trial="nope")
    with pytest.raises(SpecError, match="--pick 'best'.*allowed: accuracy, macs, knee"):
        tiny_run.export(tmp_path / "x", pick="best")
    with pytest.raises(SpecError, match="not both"):
        tiny_run.export(tmp_path / "x", pick="knee", trial="a")
    assert not (tmp_path / "x").exists()


def test_report(tiny_run, tmp_path):
    path = tiny_run.report(tmp_path / "r.html")
    assert path == tmp_path / "r.html"
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lstrip().startswith("<")
    assert tiny_run.best["trial_id"] in html


def test_export_command_uses_the_api(tiny_run, tmp_path, capsys):
    assert main(["export", str(tiny_run.path), "--pick", "accuracy", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert f"exported trial {metrics['trial_id']} (--pick accuracy; val_accuracy {metrics['val_accuracy']:.4f}" in out
    assert "files: arch.yaml weights.pt metrics.json model.py" in out


def test_resume_of_a_finished_run_says_so(tiny_run, capsys, monkeypatch):
    from archscale.search.dispatch import launch

    begun = []  # a complete run is seen so before Ray is started for it
    monkeypatch.setattr(launch, "init_ray", lambda *args: begun.append(args))
    before = (tiny_run.path / "trials.csv").read_text()
    again = archscale.run(tiny_run.path / "spec.yaml", tiny_run.path, resume=True)
    assert "the run is complete (3 of 3 trials); nothing to resume" in capsys.readouterr().out
    assert again.path == tiny_run.path and (tiny_run.path / "trials.csv").read_text() == before
    assert begun == []


@pytest.mark.parametrize("written", ["null", "absent"])  # as archscale wrote it before the default; before the field
def test_a_run_begun_before_the_default_prescreen_resumes_as_it_began(tiny_run, tmp_path, capsys, monkeypatch,
                                                                     written):
    """A 30-trial auto search begun without a prescreen, resumed with the same spec file after
    the default became ``vote``: it goes on without one, and says so; a spec that sets a
    prescreen itself is still refused."""
    import shutil

    from archscale.search.dispatch import launch

    monkeypatch.setattr(launch, "init_ray", lambda *args: pytest.fail("a complete run needs no Ray"))
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_dir)
    user = yaml.safe_load((run_dir / "spec.yaml").read_text())
    user["search"].update(num_trials=30, sampler="auto")
    user["search"].pop("prescreen")  # the user's file leaves it to the default
    assert parse_spec(user).search.prescreen.proxy == "vote"
    began = copy.deepcopy(user)
    if written == "null":
        began["search"]["prescreen"] = None
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(began))
    trials = pd.read_csv(run_dir / "trials.csv")
    rows = pd.concat([trials] * 10, ignore_index=True)
    rows["trial_id"] = [f"t{i:02d}" for i in range(len(rows))]
    rows.to_csv(run_dir / "trials.csv", index=False)
    spec_file = tmp_path / "user.yaml"
    spec_file.write_text(yaml.safe_dump(user))

    again = archscale.run(spec_file, run_dir, resume=True)
    out = capsys.readouterr().out
    assert ("resuming as the run began with search.prescreen: null (the spec leaves it to the default, which has "
            "changed since); set it in the spec to change it") in out
    assert "the run is complete (30 of 30 trials); nothing to resume" in out
    assert again.spec.search.prescreen is None and archscale.load_run(run_dir).spec.search.prescreen is None

    user["search"]["prescreen"] = {"proxy": "vote", "pool": 80, "keep": 10}  # set in the spec: not the run's
    spec_file.write_text(yaml.safe_dump(user))
    with pytest.raises(SpecError, match=r"differs from the run's spec.yaml at search.prescreen \(None in the run"):
        archscale.run(spec_file, run_dir, resume=True)


def test_overrides_of_a_spec_object_leave_its_default_prescreen_to_the_default():
    from archscale.api import resolve_spec

    spec = parse_spec({**copy.deepcopy(TINY_SPEC), "search": {"num_trials": 40, "sampler": "auto"}})
    assert spec.search.prescreen.proxy == "vote"  # the default at 40 trials
    assert resolve_spec(spec, {"search.num_trials": 20}).search.prescreen is None  # none at 20
    assert resolve_spec(spec, {"search.num_trials": 50}).search.prescreen == spec.search.prescreen


@pytest.mark.parametrize("spec, overrides, fragments", [
    (42, {}, ["spec: a int is not allowed", "path to a YAML file, a dict"]),
    ("missing.yaml", {}, ["'missing.yaml' does not exist"]),
    (TINY_SPEC, {"search.num_trial": 4}, ["override search.num_trial: no field 'num_trial'", "num_trials"]),
    (TINY_SPEC, {"search__sampler": "annealing"}, ["search.sampler", "annealing"]),
    (TINY_SPEC, {"search.num_trials": 2, "quiet": True, "verbose": True}, ["quiet and verbose"]),
])
def test_bad_input_raises_one_line(spec, overrides, fragments, tmp_path):
    with pytest.raises(SpecError) as info:
        archscale.run(spec, tmp_path / "never", **overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert not (tmp_path / "never").exists()


def test_load_run_names_a_path_that_holds_no_run(tmp_path):
    with pytest.raises(SpecError, match=f"{re.escape(str(tmp_path))} is not a run directory"):
        archscale.load_run(tmp_path)
    with pytest.raises(SpecError, match="does not exist"):
        archscale.load_run(tmp_path / "absent")
    with pytest.raises(SpecError, match="is not an export directory"):
        archscale.load_exported(tmp_path)


def test_front_rejects_bad_objectives(tiny_run):
    with pytest.raises(SpecError, match="unknown metric 'accuracy'; allowed: val_accuracy"):
        tiny_run.front("accuracy:max")
    with pytest.raises(SpecError, match="'macs' needs the direction"):
        tiny_run.front([("macs", "down")])
    with pytest.raises(SpecError, match="reference: 'params' is not an objective"):
        tiny_run.hypervolume(reference={"params": 1})


def test_spec_object_with_overrides_is_a_new_spec():
    spec = parse_spec(copy.deepcopy(TINY_SPEC))
    from archscale.api import resolve_spec

    assert resolve_spec(spec) is spec
    changed = resolve_spec(spec, {"search.num_trials": 9, "space.params.c1_width": [4, 8, 12]})
    assert changed.search.num_trials == 9 and spec.search.num_trials == 3
    assert [d.values for d in changed.space.dimensions() if d.name == "c1_width"] == [(4, 8, 12)]


def test_check_counts_and_text_are_the_commands(tmp_path, capsys, write_spec, tiny_spec):
    path = write_spec(tiny_spec)  # the file, not the dict: safe_dump sorts the keys, and so the samples
    result = archscale.check(path, samples=6, **{"search.num_trials": 7})
    assert result.size == 16 and result.sampled == 6 and len(result.rows) == 6
    assert result.feasible == sum(r["feasible"] for r in result.rows) and result.feasible >= 1
    assert all(r["params"] > 0 for r in result.rows)
    assert "7 trials" in str(result) and f"{result.feasible} of 6 sampled configurations" in str(result)
    assert f"{result}" == str(result) and format(result, "") == result.text
    assert repr(result) == f"Check('tiny': {result.feasible} of 6 sampled feasible; size 16)"
    capsys.readouterr()
    assert main(["check", str(path), "--samples", "6", "--set", "search.num_trials=7"]) == 0
    assert capsys.readouterr().out == str(result)


def test_check_with_nothing_feasible_keeps_what_it_found(tiny_spec, capsys, write_spec):
    tiny_spec["space"]["max_params"] = 10
    path = write_spec(tiny_spec)
    with pytest.raises(archscale.CheckError) as info:
        archscale.check(path, samples=4)
    assert isinstance(info.value, SpecError) and "no configuration meets the budgets" in str(info.value)
    assert "0 of 4 sampled configurations fit the budgets (max_params=10)" in info.value.output
    assert main(["check", str(path), "--samples", "4"]) == 2
    captured = capsys.readouterr()
    assert captured.out == info.value.output and "no configuration meets the budgets" in captured.err


def test_check_of_a_staged_spec(capsys, write_spec):
    from tests.search.jobs.test_stages import STAGED

    path = write_spec(STAGED)
    result = archscale.check(path)  # stage 1's 2 x 2 grid: two points inside alpha*beta^2*gamma^2 = 2 +- 10%
    assert "stage 1: grid sampler over alpha, gamma at phi = 1; 4 trials" in str(result)
    assert "2 of 4 grid points are feasible" in str(result)
    assert result.size == 4 and result.sampled == 4 and result.feasible == 2
    assert main(["check", str(path)]) == 0
    printed = capsys.readouterr().out
    assert printed.split("checked in")[0] == str(result).split("checked in")[0]  # the same text, but its timing


def test_build_and_spaces():
    names = archscale.spaces()
    assert names == sorted(names) and {"budgeted", "davidnet", "efficientnet"} <= set(names)
    families = archscale.spaces(details=True)
    assert list(families) == names and families["budgeted"].name == "budgeted"
    text = "budgeted:c1_width=4,image_size=28,in_channels=1,num_classes=10"
    model = archscale.build(text)
    assert isinstance(model, torch.nn.Module) and model(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    with pytest.raises(SpecError, match="arch 'budgeted:c1_width=oops"):
        archscale.build("budgeted:c1_width=oops")


@pytest.mark.parametrize("args", [["--help"], ["spaces"]])
def test_python_dash_m_archscale(args):
    done = subprocess.run([sys.executable, "-m", "archscale", *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert ("usage: archscale" in done.stdout) if args == ["--help"] else ("budgeted:" in done.stdout)


def readme_block(marker: str = "<!-- test: readme-python") -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(marker)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match and match.start() - start < 200, "the marked block must follow its marker"
    return match.group(1)


def test_the_readme_python_example_runs(tmp_path, monkeypatch, ray_session, capsys):
    """The README's "From Python" block, executed as written; only its search is made tinier
    (archscale.run gets a few more overrides) so that it takes seconds."""
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "quickstart.yaml").write_text((ROOT / "examples" / "quickstart.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    calls = []
    real_run = archscale.run

    def tinier(*args, **overrides):
        calls.append(dict(overrides))
        return real_run(*args, **{**overrides, "search.num_trials": 2, "train.epochs": 1, "data.subset": 0.1})

    monkeypatch.setattr(archscale, "run", tinier)
    namespace: dict = {}
    exec(compile(readme_block(), "README.md (From Python)", "exec"), namespace)
    assert calls and calls[0]["search.num_trials"] == 4  # the block's own override reached run
    out = capsys.readouterr().out
    assert "hypervolume" in out and "predicted" in out
    assert (tmp_path / "runs" / "notebook" / "knee" / "model.py").is_file()
    assert len(namespace["predicted"]) == 8


def test_run_quiet_prints_nothing_at_all(tmp_path, ray_session, capfd):
    spec = copy.deepcopy(TINY_SPEC)
    capfd.readouterr()
    done = archscale.run(spec, tmp_path / "run", quiet=True, **{"search.num_trials": 1}, train__epochs=1,
                         data__subset=0.1)
    assert capfd.readouterr() == ("", "")
    assert len(done.trials) == 1 and (done.path / "pareto.csv").is_file()
