"""Inspecting finished (tiny) runs: pareto with hypervolume, report, export (picks, standalone
model.py, ONNX), compare; latency measured per trial."""

import base64
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from archscale.analysis.records import read_trials
from archscale.cli import main
from tests.analysis.test_standalone import NO_ARCHSCALE

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny spec searched twice, by random sampling and by TPE: {sampler: run_dir}."""
    from tests.conftest import TINY_SPEC

    tmp = tmp_path_factory.mktemp("inspect")
    out = {}
    for sampler in ("random", "tpe"):
        spec = copy.deepcopy(TINY_SPEC)
        spec["name"] = f"tiny_{sampler}"
        # TPE optimises latency: the objective Optuna gets is the one the trial measured.
        second = "macs:min" if sampler == "random" else "latency_ms:min"
        spec["search"].update(sampler=sampler, num_trials=3, objectives=["val_accuracy:max", second])
        spec["space"]["params"]["c2_conv"] = ["regular", "depthwise"]
        path = tmp / f"{sampler}.yaml"
        path.write_text(yaml.safe_dump(spec))
        run_dir = tmp / sampler
        assert main(["run", str(path), "--out", str(run_dir), "--quiet"]) == 0
        out[sampler] = run_dir
    return out


def test_latency_can_be_a_searched_objective(runs):
    trials = read_trials(runs["tpe"])
    assert (trials["status"] == "completed").all() and trials["latency_ms"].gt(0).all()
    front = pd.read_csv(runs["tpe"] / "pareto.csv")
    assert len(front) >= 1 and "latency_ms" in front.columns


def test_trials_carry_latency_and_the_run_writes_hypervolume(runs):
    trials = read_trials(runs["random"])
    assert {"latency_ms", "latency_batch_ms"} <= set(trials.columns)
    done = trials[trials["status"] == "completed"]
    assert (done["latency_ms"] > 0).all() and (done["latency_batch_ms"] > 0).all()
    assert (runs["random"] / "hypervolume.png").is_file()
    assert (runs["random"] / "best" / "model.py").is_file()  # the run's winner comes with its standalone model


def test_pareto_over_any_objectives_prints_arch_and_hypervolume(runs, capsys, tmp_path):
    run_dir = runs["random"]
    code = main(["pareto", str(run_dir), "--objectives", "val_accuracy:max,latency_ms:min,params:min",
                 "--plot", str(tmp_path / "front.png")])
    out = capsys.readouterr().out
    assert code == 0
    assert "Pareto front under val_accuracy:max, latency_ms:min, params:min" in out
    assert "budgeted:" in out  # architecture text of the front's trials
    match = re.search(r"hypervolume: ([0-9.]+) normalised", out)
    assert match and 0 <= float(match.group(1)) <= 1
    assert (tmp_path / "front.png").is_file() and (tmp_path / "hypervolume.png").is_file()


@pytest.mark.parametrize("argv,fragments", [
    (["--objectives", "accuracy:max"], ["--objectives", "'accuracy'", "val_accuracy"]),
    (["--objectives", "val_accuracy:max,macs:min,params:min,latency_ms:min"], ["--objectives", "1 to 3"]),
    (["--objectives", "macs:min,macs:max"], ["--objectives", "twice"]),
    (["--reference", "macs=lots"], ["--reference", "not a number"]),
])
def test_pareto_bad_arguments(runs, capsys, argv, fragments):
    code = main(["pareto", str(runs["random"]), *argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert all(f in err for f in fragments), err


def test_report_is_one_self_contained_page(runs, capsys):
    run_dir = runs["tpe"]
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    for heading in ("Spec", "Pareto front", "Hypervolume over trials", "Learning curves of the front",
                    "Effect of each searched choice on accuracy", "All trials"):
        assert heading in page, heading
    assert not re.search(r"""src=["'](?!data:)""", page)  # nothing loaded from elsewhere
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 5  # front, hypervolume, learning curves, importances, choices
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Parameter importances for val_accuracy" in page or "Parameter importances:" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    import matplotlib.image

    run_dir = runs["tpe"]
    if not (run_dir / "report.html").is_file():
        assert main(["report", str(run_dir)]) == 0
    shot = tmp_path / "report.png"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                           "--hide-scrollbars", "--window-size=1200,2400", f"--screenshot={shot}",
                           (run_dir / "report.html").resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert pixels.shape[:2] == (2400, 1200)
    assert (pixels.min(axis=2) < 0.9).mean() > 0.03  # not a blank page
    # The inlined plots were decoded and drawn: matplotlib's red (front) and blue (curves,
    # bars) appear, which the page's text and tables (black and grey) never use.
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    blue = (pixels[..., 2] > 0.55) & (pixels[..., 0] < 0.3)
    assert red.sum() > 200 and blue.sum() > 200


def evaluate_standalone(folder: Path, x: torch.Tensor, y: torch.Tensor, tmp_path: Path) -> float:
    """Test accuracy of folder/model.py, computed in a fresh interpreter without archscale."""
    torch.save(x, folder / "inputs.pt")
    script = NO_ARCHSCALE + (
        "net = load_model_py(sys.argv[1]).load()\n"
        "with torch.no_grad():\n"
        "    print(json.dumps(net(torch.load(sys.argv[1] + '/inputs.pt')).argmax(1).tolist()))\n")
    proc = subprocess.run([sys.executable, "-I", "-c", script, str(folder)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pred = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    return (pred == y).float().mean().item()


def test_export_pick_writes_a_standalone_model_that_reproduces_test_accuracy(runs, tmp_path, capsys):
    from archscale.analysis.export import load_exported, read_exported
    from archscale.trainer import evaluate, load_dataset, normalise, split

    out = tmp_path / "knee"
    assert main(["export", str(runs["random"]), "--pick", "knee", "--out", str(out)]) == 0
    assert "--pick knee" in capsys.readouterr().out
    for name in ("arch.yaml", "weights.pt", "metrics.json", "model.py"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["picked_by"] == "--pick knee" and "model.py" in metrics["files"]
    doc = read_exported(out)
    info = doc["data"]
    splits = split(load_dataset(info["dataset"], info["root"]), info["val_fraction"], info["subset"], info["seed"])
    x = normalise(splits.x_test, doc["input"]["mean"], doc["input"]["std"], torch.device("cpu"))
    assert evaluate(load_exported(out), x, splits.y_test) == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    standalone = evaluate_standalone(out, x, splits.y_test, tmp_path)
    assert standalone == pytest.approx(metrics["test_accuracy"], abs=1.5 / len(splits.y_test))


@pytest.mark.parametrize("pick", ["accuracy", "macs"])
def test_export_picks_follow_their_rule(runs, tmp_path, capsys, pick):
    trials = read_trials(runs["tpe"])
    done = trials[trials["status"] == "completed"]
    out = tmp_path / pick
    assert main(["export", str(runs["tpe"]), "--pick", pick, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    if pick == "accuracy":
        assert metrics["val_accuracy"] == done["val_accuracy"].max()
    else:
        assert metrics["macs"] == done["macs"].min()


def test_export_onnx_runs_in_onnxruntime(runs, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from archscale.analysis.export import load_exported

    out = tmp_path / "onnx"
    assert main(["export", str(runs["tpe"]), "--onnx", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(4, 1, 28, 28)
    (got,) = session.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        assert abs(got - load_exported(out)(x).numpy()).max() < 1e-4


def test_export_trial_and_pick_are_exclusive(runs, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["export", str(runs["tpe"]), "--trial", "x", "--pick", "knee"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_compare_prints_both_hypervolumes_on_one_reference(runs, capsys, tmp_path):
    code = main(["compare", str(runs["random"]), str(runs["tpe"]), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    rows = [ln for ln in out.splitlines() if ln.strip().startswith(("random (random)", "tpe (tpe)"))]
    assert len(rows) == 2, out
    assert "reference point val_accuracy=" in out
    for name in ("compare_fronts.png", "compare_hypervolume.png", "compare.csv"):
        assert (tmp_path / name).is_file()
    table = pd.read_csv(tmp_path / "compare.csv")
    assert table["hypervolume_normalised"].between(0, 1).all() and len(table) == 2


def test_compare_of_a_non_run_is_a_usage_error(runs, capsys, tmp_path):
    code = main(["compare", str(runs["random"]), str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "not a run directory" in err


def test_param_importances_from_trials(runs):
    from archscale.search.importance import param_importances
    from archscale.search.spec import parse_spec, read_yaml

    spec = parse_spec(read_yaml(runs["random"] / "spec.yaml"))
    trials = read_trials(runs["random"])
    importances, note = param_importances(spec, trials)
    done = trials[trials["status"] == "completed"]
    if done["val_accuracy"].nunique() < 2:
        assert importances is None and note
    else:
        assert set(importances) == {d.name for d in spec.space.searched()}
        assert sum(importances.values()) == pytest.approx(1.0)
    single = trials.iloc[:0]
    assert param_importances(spec, single) == (None, "0 completed trial(s); at least 2 are needed")


def test_reproduce_reads_a_run_directory_and_marks_gpu_rows_not_run(runs, tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    reproduce = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = reproduce  # its dataclasses look their module up there
    spec.loader.exec_module(reproduce)
    table, results = tmp_path / "seeds.md", tmp_path / "seeds.json"
    code = reproduce.main(["--only", "mnist_1p5k", "--from-run", f"mnist_1p5k={runs['random']}",
                           "--results", str(results), "--out", str(table), "--runs-dir", str(tmp_path / "runs")])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"[a-z0-9_]+: [0-9.]+", lines[-1])
    metrics = json.loads((runs["random"] / "best" / "metrics.json").read_text())
    text = table.read_text()
    row = next(ln for ln in text.splitlines() if "98.35%" in ln)
    assert f"test {100 * metrics['test_accuracy']:.2f}%" in row and "not recorded" in row
    for claim in ("86.76%", "> 85%", "94%", "alpha=1.2"):
        other = next(ln for ln in text.splitlines() if claim in ln)
        assert "not run" in other, other
    assert json.loads(results.read_text())["mnist_1p5k"]["values"]["test_accuracy"] == metrics["test_accuracy"]
