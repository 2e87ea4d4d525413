"""Every file archscale reads, damaged one way at a time: a bad file ends in exit status 2
with one line naming the file, what is wrong and what was expected (no traceback), and the
finished run it belongs to is left byte for byte as it was. The run's own records
(``trials.csv``, ``started.jsonl``) are recovered instead: their intact lines are read.

The run is a copy of the committed legacy run (``tests/data/legacy_run``: 3 completed
trials), damaged per case; nothing here trains except the one resume test."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import archscale
from archscale.files import FileError
from archscale.cli import main

ROOT = Path(__file__).resolve().parents[3]
LEGACY = ROOT / "tests" / "data" / "legacy_run"
TRIAL = "01c5ac06"  # a completed trial of the legacy run (the winner)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    path = tmp_path / "run"
    shutil.copytree(LEGACY, path)
    return path


def digest(folder: Path) -> str:
    """One hash of every path and byte under ``folder``."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def npz(path: Path, **changes) -> Path:
    """A small valid npz dataset (3 classes of 8x8 images) with ``changes`` (None drops a key)."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (30, 8, 8), dtype=np.uint8), "y_train": np.arange(30) % 3,
              "x_test": rng.integers(0, 256, (9, 8, 8), dtype=np.uint8), "y_test": np.arange(9) % 3}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def npz_spec(tmp: Path, data: Path) -> Path:
    spec = yaml.safe_load((LEGACY / "spec.yaml").read_text())
    spec["data"]["dataset"] = f"npz:{data}"
    for key in ("image_size", "in_channels"):
        spec["space"]["params"].pop(key, None)
    path = tmp / "npz_spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def write(path: Path, data: str | bytes) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = text
    path.write_text("".join(lines))


def weights_missing_a_key(run: Path) -> None:
    path = run / "trials" / TRIAL / "weights.pt"
    state = torch.load(path, weights_only=True)
    state.pop(sorted(state)[0])
    torch.save(state, path)


def result_with(run: Path, **changes) -> None:
    path = run / "trials" / TRIAL / "result.json"
    write(path, json.dumps({**json.loads(path.read_text()), **changes}))


def make_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")


# (id, damage(run, tmp) -> extra argv, command argv given RUN/SPEC/TMP, fragments of the one error line)
# A damage function may return a path to use as SPEC (default: the run's own spec.yaml, copied out).
BAD = [
    ("spec not text", lambda run, tmp: write(tmp / "spec.yaml", b"\x89PNG\r\n\x1a\n\x00\x00binary"),
     ["check", "SPEC"], ["spec.yaml line 1", "not text", "byte 0x89", "expected a YAML spec"]),
    ("spec not text, resume", lambda run, tmp: write(tmp / "spec.yaml", b"name: legacy\n\xff\xfe\n"),
     ["run", "SPEC", "--out", "RUN", "--resume"], ["spec.yaml line 2", "not text", "byte 0xff"]),
    ("spec is a directory", lambda run, tmp: make_dir(tmp / "spec.yaml"),
     ["run", "SPEC", "--out", "RUN", "--resume"], ["spec.yaml", "is a directory", "expected a YAML spec"]),
    ("run spec.yaml not YAML", lambda run, tmp: write(run / "spec.yaml", "name: legacy\nseed: [0\n"),
     ["pareto", "RUN"], ["run/spec.yaml line 3", "YAML syntax error", "expected the run's spec.yaml"]),
    ("run spec.yaml not text", lambda run, tmp: write(run / "spec.yaml", b"\x00\x01\x02"),
     ["run", "SPEC", "--out", "RUN", "--resume"], ["run/spec.yaml line 1", "not text"]),
    ("run spec.yaml not a spec", lambda run, tmp: write(run / "spec.yaml", (LEGACY / "spec.yaml").read_text()
                                                        + "colour: red\n"),
     ["report", "RUN"], ["run/spec.yaml", "colour", "unknown key"]),
    ("run spec.yaml a list", lambda run, tmp: write(run / "spec.yaml", "- 1\n- 2\n"),
     ["export", "RUN"], ["run/spec.yaml", "holds a list", "a mapping of keys"]),
    ("run spec.yaml is a directory", lambda run, tmp: make_dir(run / "spec.yaml"),
     ["report", "RUN"], ["run/spec.yaml", "is a directory"]),
    ("trials.csv binary", lambda run, tmp: write(run / "trials.csv", bytes(range(256)) * 4),
     ["pareto", "RUN"], ["trials.csv line 1", "not text", "expected a trials.csv"]),
    ("trials.csv binary, resume", lambda run, tmp: write(run / "trials.csv", b"\xff\xd8\xff\xe0" * 50),
     ["run", "SPEC", "--out", "RUN", "--resume"], ["trials.csv line 1", "not text"]),
    ("trials.csv without a status column",
     lambda run, tmp: replace_line(run / "trials.csv", 1, (LEGACY / "trials.csv").read_text().splitlines()[0]
                                   .replace(",status,", ",state,") + "\n"),
     ["report", "RUN"], ["trials.csv line 1", "no column 'status'", "trial_id, status, arch"]),
    ("trials.csv only a blank line", lambda run, tmp: write(run / "trials.csv", "\n"),
     ["export", "RUN"], ["trials.csv line 1", "no column 'trial_id'"]),
    ("trials.csv is a directory", lambda run, tmp: make_dir(run / "trials.csv"),
     ["pareto", "RUN"], ["trials.csv", "is a directory", "expected a trials.csv"]),
    ("result.json not JSON", lambda run, tmp: write(run / "trials" / TRIAL / "result.json", '{"arch": "budgeted:'),
     ["export", "RUN", "--out", "TMP/out"], [f"{TRIAL}/result.json line 1", "invalid JSON"]),
    ("result.json without arch", lambda run, tmp: write(
        run / "trials" / TRIAL / "result.json",
        json.dumps({k: v for k, v in json.loads((run / "trials" / TRIAL / "result.json").read_text()).items()
                    if k != "arch"})),
     ["export", "RUN", "--out", "TMP/out"], ["result.json", "no key 'arch'"]),
    ("result.json unknown family", lambda run, tmp: result_with(run, arch="transformer:depth=3"),
     ["export", "RUN", "--out", "TMP/out"], ["result.json", "arch", "transformer", "budgeted"]),
    ("result.json history not a list", lambda run, tmp: result_with(run, history="none"),
     ["report", "RUN"], ["result.json", "history", "expected a list of epochs"]),
    ("weights.pt not a torch file", lambda run, tmp: write(run / "trials" / TRIAL / "weights.pt", "not weights"),
     ["export", "RUN", "--out", "TMP/out"], [f"{TRIAL}/weights.pt", "not a PyTorch weights file", "state dict"]),
    ("weights.pt misses a key", lambda run, tmp: weights_missing_a_key(run),
     ["export", "RUN", "--out", "TMP/out"], [f"{TRIAL}/weights.pt", "no tensor", "weights of the architecture"]),
    ("weights.pt a list", lambda run, tmp: torch.save([torch.zeros(1)], run / "trials" / TRIAL / "weights.pt"),
     ["export", "RUN"], ["weights.pt", "holds a list, not a state dict"]),
    ("weights.pt unreadable (a directory)", lambda run, tmp: make_dir(run / "trials" / TRIAL / "weights.pt"),
     ["export", "RUN"], ["weights.pt", "is a directory"]),
    ("npz of floats in [0, 1]", lambda run, tmp: npz_spec(tmp, npz(tmp / "d.npz", x_train=np.full((30, 8, 8), 0.5))),
     ["check", "SPEC"], ["d.npz", "x_train is float64", "uint8", "(x * 255).round().astype(np.uint8)"]),
    ("npz of floats, run", lambda run, tmp: npz_spec(tmp, npz(tmp / "d.npz", x_test=np.zeros((9, 8, 8), np.float32))),
     ["run", "SPEC", "--out", "TMP/new"], ["d.npz", "x_test is float32", "uint8"]),
    ("npz with NaN", lambda run, tmp: npz_spec(tmp, npz(tmp / "d.npz", x_train=np.full((30, 8, 8), np.nan))),
     ["check", "SPEC"], ["d.npz", "x_train", "NaN"]),
    ("npz without y_test", lambda run, tmp: npz_spec(tmp, npz(tmp / "d.npz", y_test=None)),
     ["check", "SPEC"], ["d.npz", "no array 'y_test'", "x_train, y_train, x_test, y_test"]),
    ("npz images of one dimension", lambda run, tmp: npz_spec(tmp, npz(tmp / "d.npz", x_train=np.zeros((30, 64), np.uint8))),
     ["check", "SPEC"], ["d.npz", "x_train has shape (30, 64)", "(N, H, W)"]),
    ("npz train and test disagree", lambda run, tmp: npz_spec(tmp, npz(tmp / "d.npz", x_test=np.zeros((9, 8, 8, 3), np.uint8))),
     ["check", "SPEC"], ["d.npz", "x_test images are 8x8x3", "8x8x1", "same H, W and C"]),
    ("npz label below 0", lambda run, tmp: npz_spec(tmp, npz(tmp / "d.npz", y_train=np.arange(30) % 3 - 1)),
     ["check", "SPEC"], ["d.npz", "y_train[0] is -1", "0..classes-1"]),
    ("npz test label y_train never has", lambda run, tmp: npz_spec(tmp, npz(tmp / "d.npz", y_test=np.arange(9))),
     ["check", "SPEC"], ["d.npz", "y_test[8] is 8", "0..2"]),
    ("npz float labels", lambda run, tmp: npz_spec(tmp, npz(tmp / "d.npz", y_train=np.arange(30) % 3 + 0.0)),
     ["check", "SPEC"], ["d.npz", "y_train is float64", "integer", "astype(np.int64)"]),
    ("npz labels and images differ in count", lambda run, tmp: npz_spec(tmp, npz(tmp / "d.npz", y_train=np.arange(29) % 3)),
     ["check", "SPEC"], ["d.npz", "29 labels for 30 images"]),
    ("npz not an archive", lambda run, tmp: write(tmp / "d.npz", "x_train,y_train\n") or npz_spec(tmp, tmp / "d.npz"),
     ["check", "SPEC"], ["d.npz", "not an npz archive"]),
    ("npz is a directory", lambda run, tmp: (tmp / "d.npz").mkdir() or npz_spec(tmp, tmp / "d.npz"),
     ["check", "SPEC"], ["d.npz", "is a directory"]),
]


@pytest.mark.parametrize("damage,argv,fragments", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_file_is_named_and_nothing_is_written(run_dir, tmp_path, capsys, damage, argv, fragments):
    spec = tmp_path / "spec.yaml"
    shutil.copyfile(LEGACY / "spec.yaml", spec)
    given = damage(run_dir, tmp_path)
    spec = given if isinstance(given, Path) else spec
    before = digest(run_dir)
    listing = sorted(p.name for p in tmp_path.iterdir())
    words = [str(a).replace("RUN", str(run_dir)).replace("SPEC", str(spec)).replace("TMP", str(tmp_path)) for a in argv]
    code = main(words)
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("archscale: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert digest(run_dir) == before  # the run is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # and nothing was written beside it


def test_no_traceback_in_a_fresh_process(tmp_path):
    """The issue's first case through ``python -m archscale``: exit 2 and one line, not a UnicodeDecodeError."""
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    done = subprocess.run([sys.executable, "-m", "archscale", "check", str(spec)], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert str(spec) in done.stderr and "not text" in done.stderr and "Traceback" not in done.stderr


DAMAGED_ROWS = [  # (how line 3 of trials.csv is damaged, what the warning says of it)
    ("cut short", lambda line: line[:70] + "\n", "fields; expected 18"),
    ("binary", lambda line: "\udcff\udcfe garbage\n", "not UTF-8 text"),
    ("unknown status", lambda line: line.replace(",completed,", ",finished,", 1), "status 'finished'"),
    ("a word where a number goes", lambda line: line.replace(",2186,", ",many,", 1), "params 'many' is not a number"),
    ("an unclosed quote", lambda line: line.rstrip("\n")[:-1] + "\n", "an unclosed quote"),
    ("a repeated trial", lambda line: (LEGACY / "trials.csv").read_text().splitlines(keepends=True)[1],
     "trial 9f650546 again (first on line 2)"),
]


def damage_row(run: Path, how) -> str:
    lines = (run / "trials.csv").read_text().splitlines(keepends=True)
    lost = lines[2].split(",")[0]
    text = how(lines[2])
    lines[2] = text
    (run / "trials.csv").write_bytes("".join(lines).encode("utf-8", "surrogateescape"))
    return lost


@pytest.mark.parametrize("how,said", [d[1:] for d in DAMAGED_ROWS], ids=[d[0] for d in DAMAGED_ROWS])
@pytest.mark.parametrize("command", [["pareto", "RUN", "--plot", "TMP/p.png"], ["report", "RUN", "--out", "TMP/r.html"],
                                     ["export", "RUN", "--out", "TMP/out"]], ids=["pareto", "report", "export"])
def test_a_damaged_line_of_trials_csv_is_left_out_with_one_warning(run_dir, tmp_path, capsys, how, said, command):
    lost = damage_row(run_dir, how)
    before = digest(run_dir)
    words = [a.replace("RUN", str(run_dir)).replace("TMP", str(tmp_path)) for a in command]
    assert main(words) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if str(run_dir / "trials.csv") in line]
    assert len(warnings) == 1, err
    assert warnings[0].startswith("archscale: warning: ") and "1 damaged line (line 3: " in warnings[0]
    assert said in warnings[0] and "read the 2 intact rows" in warnings[0]
    assert digest(run_dir) == before  # read, not repaired
    trials = archscale.load_run(run_dir).trials
    assert len(trials) == 2 and lost not in set(trials["trial_id"])


def test_damaged_records_read_from_python(run_dir):
    damage_row(run_dir, DAMAGED_ROWS[0][1])
    run = archscale.load_run(run_dir)
    assert run.trials["trial_id"].tolist() == ["9f650546", "5c1a513f"]
    assert run.best["trial_id"] in {"9f650546", "5c1a513f"}


def test_resume_keeps_the_intact_rows_moves_the_damaged_aside_and_reruns(run_dir, capsys, ray_session):
    lost = damage_row(run_dir, DAMAGED_ROWS[0][1])
    cut = (run_dir / "trials.csv").read_text().splitlines(keepends=True)[2]
    kept = [line for n, line in enumerate((run_dir / "trials.csv").read_text().splitlines(keepends=True)) if n != 2]
    with (run_dir / "started.jsonl").open("a") as f:  # a damaged line of started.jsonl too: skipped, said
        f.write("{not json\n")
    assert main(["run", str(run_dir / "spec.yaml"), "--out", str(run_dir), "--resume", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "moved 1 damaged line (line 3: " in out and str(run_dir / "trials.csv.damaged") in out
    assert (run_dir / "trials.csv.damaged").read_text() == cut
    assert any("started.jsonl: skipped 1 damaged line (4)" in line for line in err.splitlines()), err
    after = (run_dir / "trials.csv").read_text().splitlines(keepends=True)
    assert after[:3] == kept and len(after) == 4  # every intact row kept as it was, one row added
    rerun = after[3].split(",")
    started = {json.loads(x)["trial_id"]: json.loads(x)["config"]
               for x in (LEGACY / "started.jsonl").read_text().splitlines()}
    assert rerun[1] == "completed" and rerun[0] != lost
    assert [rerun[2], rerun[3], rerun[4], rerun[5]] == [str(started[lost][k]) for k in
                                                        ("c1_width", "c3_width", "c4_width", "c3_conv")]


def test_resume_of_a_complete_run_with_a_damaged_line_changes_nothing(run_dir, capsys):
    with (run_dir / "trials.csv").open("a") as f:
        f.write("\x00\x00 junk\n")
    before = digest(run_dir)
    assert main(["run", str(run_dir / "spec.yaml"), "--out", str(run_dir), "--resume"]) == 0
    out, err = capsys.readouterr()
    assert "the run is complete (3 of 3 trials)" in out and "1 damaged line (line 5: a NUL byte)" in err
    assert digest(run_dir) == before


BAD_EXPORTS = [  # (damage of an export directory, fragments of FileError's message)
    ("arch.yaml not YAML", lambda d: write(d / "arch.yaml", "family: [budgeted\n"), ["arch.yaml line 2", "YAML syntax"]),
    ("arch.yaml not text", lambda d: write(d / "arch.yaml", b"\xc3\x28"), ["arch.yaml line 1", "not text"]),
    ("arch.yaml unknown family", lambda d: write(d / "arch.yaml", (d / "arch.yaml").read_text()
                                                  .replace("family: budgeted", "family: resnet")),
     ["arch.yaml", "resnet", "budgeted"]),
    ("arch.yaml unknown parameter", lambda d: write(d / "arch.yaml", (d / "arch.yaml").read_text()
                                                     .replace("  c1_width: 8", "  c1_wdth: 8")),
     ["arch.yaml", "c1_wdth"]),
    ("arch.yaml without input", lambda d: write(d / "arch.yaml", (d / "arch.yaml").read_text().split("input:")[0]),
     ["arch.yaml", "no key 'input'"]),
    ("weights.pt not a torch file", lambda d: write(d / "weights.pt", b"PK\x03\x04junk"),
     ["weights.pt", "not a PyTorch weights file"]),
    ("weights.pt of another model", lambda d: torch.save({"w": torch.zeros(2)}, d / "weights.pt"),
     ["weights.pt", "no tensor"]),
    ("weights.pt with a tensor of another shape", lambda d: torch.save(
        {k: (torch.zeros(3, *v.shape[1:]) if v.ndim == 4 else v)
         for k, v in torch.load(d / "weights.pt", weights_only=True).items()}, d / "weights.pt"),
     ["weights.pt", "has shape (3,", "expected (", "architecture in arch.yaml"]),
]


@pytest.mark.parametrize("damage,fragments", [b[1:] for b in BAD_EXPORTS], ids=[b[0] for b in BAD_EXPORTS])
def test_load_exported_names_the_bad_file(tmp_path, damage, fragments):
    folder = tmp_path / "best"
    shutil.copytree(LEGACY / "best", folder)
    damage(folder)
    with pytest.raises(FileError) as caught:
        archscale.load_exported(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message
    for fragment in fragments:
        assert fragment in message, message
