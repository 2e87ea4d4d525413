"""Paths in a spec: relative ones resolve against the spec file's folder (a dict's and
``--set``'s against the current folder), and every path a command is given is checked before
anything is written, its error naming the input and the absolute path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

import archscale
from archscale.cli import main
from archscale.spec import SpecError, load_spec


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), y_train=np.arange(40) % 4,
             x_test=rng.integers(0, 255, (8, 8, 8), dtype=np.uint8), y_test=np.arange(8) % 4)
    return path


def _spec(folder: Path, **data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "paths", "data": data,
                                    "space": {"family": "budgeted", "params": {"c1_width": 4}}}))
    return path


def test_relative_paths_resolve_against_the_spec_files_folder(tmp_path, monkeypatch):
    spec_file = _spec(tmp_path / "project", dataset="npz:arrays/d.npz", root="cache")
    (tmp_path / "project" / "search.yaml").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(spec_file, ["search.store=results.db"])
    assert spec.data.dataset == f"npz:{tmp_path / 'project' / 'arrays' / 'd.npz'}"
    assert spec.data.root == str(tmp_path / "project" / "cache")
    assert spec.search.store == str(elsewhere / "results.db")  # --set: the current folder
    same = archscale.check.__globals__["resolve_spec"](spec_file, {"search.store": "results.db"})
    assert same == spec  # the API reads a spec file the same way


def test_a_dict_spec_and_defaults_resolve_against_the_current_folder(tmp_path, monkeypatch):
    from archscale.api import resolve_spec

    monkeypatch.chdir(tmp_path)
    spec = resolve_spec({"name": "d", "data": {"dataset": "npz:d.npz"}})
    assert spec.data.dataset == f"npz:{tmp_path / 'd.npz'}" and spec.data.root == str(tmp_path / "data")
    again = resolve_spec(yaml.safe_load(spec.to_yaml()))  # a resolved spec holds absolute paths only
    assert again == spec


def test_check_finds_the_dataset_beside_the_spec_from_any_folder(tmp_path, monkeypatch, capsys):
    _npz(tmp_path / "project" / "d.npz")
    spec_file = _spec(tmp_path / "project", dataset="npz:d.npz")
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(spec_file), "--samples", "2"]) == 0
    assert "valid" in capsys.readouterr().out


def test_a_missing_dataset_names_the_absolute_path_it_tried(tmp_path, monkeypatch, capsys):
    _spec(tmp_path / "project", dataset="npz:missing.npz")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "project/spec.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == (f"archscale: error: data.dataset npz: {tmp_path / 'project' / 'missing.npz'}: does not exist; "
                   "expected an existing file\n")


def _blocked(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "below"


@pytest.mark.parametrize("args, said", [
    (lambda t, s: ["run", str(s), "--out", str(_blocked(t))], lambda t: f"--out {t / 'file' / 'below'}: cannot be "
                                                                          f"created, {t / 'file'} is a file"),
    (lambda t, s: ["run", str(s), "--set", f"search.store={t}"], lambda t: f"search.store {t}: is a directory"),
    (lambda t, s: ["run", str(s), "--set", "data.dataset=cifar10", "--set", f"data.root={_blocked(t)}"],
     lambda t: f"data.root {t / 'file' / 'below'}: cannot be created, {t / 'file'} is a file"),
    (lambda t, s: ["run", str(s), "--set", f"data.dataset=npz:{t}"], lambda t: f"data.dataset npz: {t}: is a directory"),
])
def test_a_bad_path_exits_2_naming_it_before_anything_is_written(tmp_path, monkeypatch, capsys, args, said):
    _npz(tmp_path / "d.npz")
    spec_file = _spec(tmp_path / "project", dataset=f"npz:{tmp_path / 'd.npz'}")
    monkeypatch.chdir(tmp_path / "project")
    argv = args(tmp_path, spec_file)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"archscale: error: {said(tmp_path)}") and err.count("\n") == 1, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_folder_is_refused(tmp_path):
    from archscale.files import FileError, require_writable

    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(FileError, match="is not writable"):
        require_writable(tmp_path / "ro" / "run", "--out")


def test_outputs_of_the_analysis_commands_are_checked(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "trials.csv").write_text("trial_id,status\n")
    (run_dir / "spec.yaml").write_text(yaml.safe_dump({"name": "r"}))
    assert main(["pareto", str(run_dir), "--plot", str(_blocked(tmp_path) / "p.png")]) == 2
    assert f"--plot {tmp_path / 'file' / 'below' / 'p.png'}: cannot be created" in capsys.readouterr().err
    assert main(["compare", str(run_dir), "--out", str(tmp_path / "file")]) == 2
    assert f"--out {tmp_path / 'file'}: is a file" in capsys.readouterr().err
    with pytest.raises(SpecError, match="--out .*: is a directory"):
        archscale.load_run(run_dir).report(tmp_path)
