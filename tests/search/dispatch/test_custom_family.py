"""A family of the user's own (``space.family: module:ClassName``), written into a folder
outside the project, as a user would: found from the folder the command runs from (no
PYTHONPATH entry for it), recorded with the run so that later commands find it from any
folder, shipped to Ray's workers with the job (``runtime_env``), on a local Ray instance
and on the two-node test cluster, where the workers cannot import it any other way."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import archscale
from archscale.analysis.records import read_trials
from archscale.cli import main
from archscale.space import get_space, list_spaces, user

ROOT = Path(archscale.__file__).resolve().parents[1]  # the checkout: PYTHONPATH of the subprocesses

FAMILY = '''
import os

from torch import nn

from archscale.space import Param, SearchSpace

with open({log!r}, "a") as f:  # where each process imported this module from
    f.write(f"{{os.getpid()}} {{__file__}}\\n")


class {cls}(SearchSpace):
    name = {name!r}
    description = "conv-bn-relu, max-pool, conv-bn-relu, global average pool, linear"
    params = (
        Param("width", 8, "channels of the first conv; the second has twice as many", low=1, high=256),
        Param("kernel", 3, "kernel of both convs", choices=(3, 5)),
    )

    def build_model(self, arch):
        p = arch.params  # width and kernel, plus in_channels, num_classes, image_size from the dataset
        w, k = p["width"], p["kernel"]
        return nn.Sequential(
            nn.Conv2d(p["in_channels"], w, k, padding=k // 2, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, k, padding=k // 2, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, p["num_classes"]))
'''


def write_family(folder: Path, module: str, cls: str = "TinyNet", name: str | None = None,
                 log: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(FAMILY.format(cls=cls, name=name or module, log=str(log or folder / "imports.log")))
    return path


def family_spec(reference: str, **search) -> dict:
    return {"name": "custom", "seed": 0,
            "data": {"dataset": "mnist-5k", "val_fraction": 0.1, "subset": 0.15},
            "space": {"family": reference, "params": {"width": [4, 8], "kernel": [3, 5]}},
            "train": {"epochs": 1, "batch_size": 64, "lr": 0.1},
            "search": {"sampler": "grid", "num_trials": 2, "max_concurrent": 2, "resources_per_trial": {"cpu": 1},
                       "objectives": ["val_accuracy:max", "macs:min"], **search}}


def cli(args: list[str], cwd: Path, prefix: tuple[str, ...] = (), timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m archscale ARGS`` in ``cwd``, with only the checkout on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*prefix, sys.executable, "-m", "archscale", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def imports(log: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()] if log.exists() else []


# --------------------------------------------------------------------------- in this process


def test_found_in_the_current_folder_and_recorded(tmp_path, monkeypatch, isolated, capsys):
    write_family(tmp_path, "cwd_family")
    monkeypatch.chdir(tmp_path)
    assert main(["spaces", "cwd_family:TinyNet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cwd_family: conv-bn-relu") and "width" in out and "kernel" in out
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(family_spec("cwd_family:TinyNet")))
    assert main(["check", "spec.yaml"]) == 0
    assert "4 of 4 configurations fit the budgets" in capsys.readouterr().out

    from archscale.search.dispatch.session import runtime_env
    from archscale.spec import load_spec, parse_spec

    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.space.family_path == str(tmp_path.resolve())  # later commands look there too
    assert runtime_env(spec) == {"py_modules": [str((tmp_path / "cwd_family.py").resolve())]}
    assert runtime_env(parse_spec({"name": "builtin"})) is None  # archscale's own families travel with it
    model = archscale.build("cwd_family:image_size=28,in_channels=1,kernel=5,num_classes=10,width=4")
    assert sum(p.numel() for p in model.parameters()) == 1 * 4 * 25 + 8 + 4 * 8 * 25 + 16 + 8 * 10 + 10


def test_a_reloaded_module_registers_its_new_class(tmp_path, monkeypatch, isolated):
    import importlib

    path = write_family(tmp_path, "edited_family")
    monkeypatch.chdir(tmp_path)
    assert get_space("edited_family:TinyNet").param("width").default == 8
    path.write_text(path.read_text().replace('Param("width", 8,', 'Param("width", 12,'))
    importlib.reload(sys.modules["edited_family"])  # a notebook's edit of the family
    assert get_space("edited_family:TinyNet").param("width").default == 12
    assert get_space("edited_family").param("width").default == 12


def test_a_package_ships_whole(tmp_path, monkeypatch, isolated):
    package = tmp_path / "mypkg"
    write_family(package / "families", "nets", name="pkgnet")
    (package / "__init__.py").write_text("")
    (package / "families" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    space = get_space("mypkg.families.nets:TinyNet")
    assert space.name == "pkgnet" and get_space("pkgnet") is space
    assert user.origin("pkgnet") == user.UserFamily("mypkg.families.nets:TinyNet", str(tmp_path.resolve()),
                                                    str(package.resolve()))


def test_an_entry_point_names_a_family(tmp_path, monkeypatch, isolated):
    write_family(tmp_path, "ep_family", name="epnet")
    info = tmp_path / "ep_family-1.0.dist-info"  # what `pip install` of a package declaring it leaves
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-family\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[archscale.spaces]\nepnet = ep_family:TinyNet\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "epnet" in list_spaces()
    assert get_space("epnet").description.startswith("conv-bn-relu")
    assert user.origin("epnet").ship == str((tmp_path / "ep_family.py").resolve())


BRANCHY = """
import torch
from torch import nn

from archscale.space import Param, SearchSpace


class Branchy(nn.Module):
    def __init__(self, cin, classes):
        super().__init__()
        self.conv, self.head = nn.Conv2d(cin, 4, 3), nn.Linear(4, classes)

    def forward(self, x):
        y = self.conv(x).mean(dim=(2, 3))
        return self.head(y if y.sum() > 0 else -y)  # control flow on the data: torch.export refuses it


class BranchyNet(SearchSpace):
    name = "branchy"
    description = "a network whose forward branches on its data"
    params = (Param("unused", 1, "nothing", low=1, high=2),)

    def build_model(self, arch):
        return Branchy(arch.params["in_channels"], arch.params["num_classes"])
"""


def test_an_export_without_a_graph_still_rebuilds(tmp_path, monkeypatch, isolated):
    from archscale.analysis.export import export_trial, trial_files, write_trial_files

    (tmp_path / "branchy.py").write_text(BRANCHY)
    monkeypatch.chdir(tmp_path)
    space = get_space("branchy:BranchyNet")
    arch = space.resolve({}, {"in_channels": 1, "num_classes": 3, "image_size": 8})
    model = space.build_model(arch)
    write_trial_files(tmp_path / "run" / "trials" / "t1", trial_files(model, {
        "arch": arch.text, "mean": [0.5], "std": [0.25], "metrics": {"val_accuracy": 0.5}}))
    warnings = []
    out = export_trial(tmp_path / "run", "t1", tmp_path / "exp", warn=warnings.append)
    metrics = yaml.safe_load((out / "metrics.json").read_text())
    assert not (out / "model.py").exists() and "model.py" not in metrics["files"]
    assert metrics["standalone_error"] and "model.py was not written" in warnings[-1]
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(archscale.load_exported(out)(x), model.eval()(x))


FAULTS = {
    "no such module": ("", "nomod:TinyNet", ["'nomod'", "no module named", "PYTHONPATH"]),
    "import fails": ("import not_installed_anywhere\n", "fails:TinyNet", ["'fails'", "not_installed_anywhere"]),
    "syntax error": ("def (:\n", "syntax:TinyNet", ["'syntax'", "SyntaxError", "line 1"]),
    "no such class": ("x = 1\n", "noclass:TinyNet", ["'noclass'", "no attribute 'TinyNet'"]),
    "not a SearchSpace": ("class TinyNet:\n    name = 'x'\n", "plain:TinyNet",
                          ["'plain'", "does not subclass archscale.space.SearchSpace"]),
    "a function": ("def TinyNet(): pass\n", "func:TinyNet", ["'func'", "a function", "SearchSpace"]),
    "no params": ("from archscale.space import SearchSpace\nclass TinyNet(SearchSpace):\n    name = 'noparams'\n"
                  "    description = 'd'\n    def build_model(self, arch): pass\n", "noparams:TinyNet",
                  ["noparams:TinyNet", "does not declare params"]),
    "no build_model": ("from archscale.space import SearchSpace\nclass TinyNet(SearchSpace):\n    name = 'nobuild'\n"
                       "    description = 'd'\n    params = ()\n", "nobuild:TinyNet", ["nobuild:TinyNet", "build_model"]),
    "a built-in's name": ("from archscale.space import SearchSpace\nclass TinyNet(SearchSpace):\n"
                          "    name = 'budgeted'\n    description = 'd'\n    params = ()\n"
                          "    def build_model(self, arch): pass\n", "taken:TinyNet", ["'budgeted'", "another name"]),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_bad_family_is_named_with_the_reason(fault, tmp_path, monkeypatch, isolated, capsys):
    source, reference, expected = FAULTS[fault]
    if source:
        (tmp_path / f"{reference.split(':')[0]}.py").write_text(source)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(family_spec(reference)))
    monkeypatch.chdir(tmp_path)
    for args in (["check", "spec.yaml"], ["run", "spec.yaml"], ["spaces", reference]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert err.startswith("archscale: error: " + ("space.family: " if args[0] != "spaces" else "")), err
        assert all(word in err for word in expected), err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["spec.yaml", *([f"{reference.split(':')[0]}.py"] if source else [])]
        + (["__pycache__"] if (tmp_path / "__pycache__").exists() else []))  # nothing written


# --------------------------------------------------------------------------- through the CLI, on Ray


@pytest.mark.slow
def test_every_command_on_local_ray(tmp_path):
    """Run from the family's folder (local Ray); then pareto, report, export and ablate from
    another folder: the run recorded where the module was."""
    home = tmp_path / "project"
    write_family(home, "localnet")
    (home / "spec.yaml").write_text(yaml.safe_dump(family_spec("localnet:TinyNet")))
    done = cli(["run", "spec.yaml", "--profile"], cwd=home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[2/2]" in done.stdout and "localnet:" in done.stdout
    run = home / "runs" / "custom"
    assert yaml.safe_load((run / "spec.yaml").read_text())["space"]["family_path"] == str(home.resolve())
    assert (run / "best" / "model.py").is_file()
    assert len(json.loads((run / "profile.json").read_text())["raw_trials"]) == 2
    assert all(str(home) in path for path in imports(home / "imports.log"))  # Ray puts the driver's folder first

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # ablate (like repeat, through the same variants' launch) reads the run's spec.yaml here: the family
    # comes from its family_path, and the local workers, run from this folder, import the copy of it that
    # Ray shipped with the job (runtime_env py_modules).
    for args in (["pareto", str(run)], ["report", str(run)], ["export", str(run), "--pick", "macs", "--out", "exp"],
                 ["ablate", str(run / "spec.yaml"), "--techniques", "label_smoothing", "--seeds", "1", "--out", "abl"]):
        done = cli(args, cwd=elsewhere)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    assert (run / "report.html").is_file() and (elsewhere / "abl" / "ablation.csv").is_file()
    copies = [path for path in imports(home / "imports.log") if not path.startswith(str(home))]
    assert copies and all(Path(path).name == "localnet.py" and "runtime_resources" in path for path in copies)
    exported = yaml.safe_load((elsewhere / "exp" / "arch.yaml").read_text())
    assert exported["family_module"] == "localnet:TinyNet" and exported["family_path"] == str(home.resolve())

    # The export rebuilds in a process where the family was never loaded; model.py needs no family at all.
    model = archscale.load_exported(elsewhere / "exp")
    spec = importlib.util.spec_from_file_location("exported_localnet", elsewhere / "exp" / "model.py")
    standalone = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standalone)
    assert "localnet" not in (elsewhere / "exp" / "model.py").read_text().split('"""', 2)[2].split("ARCH =")[0]
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(standalone.load()(x), model(x), atol=1e-6)

    # Moved away: a later command names the module and where the run found it.
    shutil.move(home / "localnet.py", tmp_path / "localnet.py")
    done = cli(["pareto", str(run)], cwd=elsewhere)
    assert done.returncode == 2 and "'localnet'" in done.stderr and str(home.resolve()) in done.stderr, done.stderr


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.parametrize("kind", ["gcs", "client"])
def test_shipped_to_a_two_node_cluster(two_nodes, kind, tmp_path):
    """The cluster's processes run from the project with the project's PYTHONPATH; the driver
    runs from the family's folder. Ray adds a driver's folder to its workers' path (it assumes
    the same folders on every machine), so with a GCS address the driver runs in a mount
    namespace of its own where that folder holds the family, empty for the cluster: as on
    another machine, the workers can only import the copy that the job shipped."""
    hidden = tmp_path / "hidden"  # the family's real folder: on no path of the cluster's processes
    home = tmp_path / "home"  # the driver's folder: empty outside its mount namespace
    home.mkdir()
    log = tmp_path / "imports.log"
    write_family(hidden, "clusternet", log=log)
    (hidden / "spec.yaml").write_text(yaml.safe_dump(family_spec(
        "clusternet:TinyNet", address=two_nodes[kind], resources_per_trial={"cpu": 1, "gpu": 0})))
    run = tmp_path / "run"
    if kind == "gcs":
        if not _unshare_works():
            pytest.skip("needs `unshare -m` (a mount namespace) to hide the driver's folder from the cluster")
        prefix = ("unshare", "-m", "sh", "-c", f'mount --bind "{hidden}" "{home}" && cd "{home}" && exec "$@"', "sh")
    else:
        prefix = ()  # a Ray Client job adds no folder of the driver to the workers' path
    done = cli(["run", "spec.yaml", "--out", str(run)], cwd=hidden, prefix=prefix)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(home.iterdir())  # the bind mount was the driver's alone
    trials = read_trials(run)
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials
    paths = imports(log)
    local = [path for path in paths if path.startswith((str(home), str(hidden)))]
    assert len(local) == 1, paths  # the driver's own import; every other process imported the shipped copy
    assert len(paths) > 1 and all(Path(path).name == "clusternet.py" for path in paths), paths
