"""The results store: its key, its schema and what it refuses, several writers at once, a
writer killed with SIGKILL, the searcher serving stored configurations before dispatch, and
a grid run again over a shared store."""

from __future__ import annotations

import copy
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from archscale.cli import main
from archscale.spec import SpecError
from archscale.search.configs.store import SCHEMA_VERSION, Store, code_hash, trial_key

ROOT = Path(__file__).resolve().parents[3]
RECIPE = {"epochs": 2, "lr": 0.1, "batch_size": 64}
DATA = {"dataset": "mnist-5k", "val_fraction": 0.1, "subset": 0.15, "seed": 0, "root": "data"}


def record(key: str = "k" * 64, status: str = "completed", val: float | None = 0.5) -> dict:
    return {"key": key, "status": status, "family": "budgeted", "dataset": "mnist-5k", "arch": "budgeted:c1_width=4",
            "recipe": RECIPE, "seed": 0, "epochs": 2, "code": "c", "val_accuracy": val, "params": 100, "macs": 1000,
            "metrics": {"val_accuracy": val, "params": 100, "macs": 1000}, "history": [{"epoch": 1}], "run": "r",
            "trial_id": "t"}


# --------------------------------------------------------------------------- the key


def test_the_key_changes_with_each_part_and_only_with_them():
    base = trial_key("budgeted:a", RECIPE, DATA, 0, "code")
    assert trial_key("budgeted:a", dict(reversed(list(RECIPE.items()))), {**DATA, "root": "elsewhere"}, 0,
                     "code") == base  # the order of fields and where the data lives do not count
    changed = [trial_key("budgeted:b", RECIPE, DATA, 0, "code"),
               trial_key("budgeted:a", {**RECIPE, "lr": 0.2}, DATA, 0, "code"),
               trial_key("budgeted:a", {**RECIPE, "epochs": 3}, DATA, 0, "code"),
               trial_key("budgeted:a", RECIPE, {**DATA, "dataset": "cifar10"}, 0, "code"),
               trial_key("budgeted:a", RECIPE, {**DATA, "val_fraction": 0.2}, 0, "code"),
               trial_key("budgeted:a", RECIPE, {**DATA, "subset": 0.5}, 0, "code"),
               trial_key("budgeted:a", RECIPE, {**DATA, "seed": 1}, 0, "code"),
               trial_key("budgeted:a", RECIPE, DATA, 1, "code"),
               trial_key("budgeted:a", RECIPE, DATA, 0, "other code")]
    assert len({base, *changed}) == len(changed) + 1


def test_the_code_hash_follows_file_contents_not_commits_or_other_files(tmp_path):
    for name in ("space", "trainer"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.py").write_text(f"X = '{name}'\n")
    family = tmp_path / "family.py"
    family.write_text("class F: pass\n")
    folders = [tmp_path / "space", tmp_path / "trainer"]
    before = code_hash(family, folders)
    (tmp_path / "README.md").write_text("unrelated")  # not source that decides a result
    (tmp_path / "search.py").write_text("unrelated = 1\n")
    os.utime(tmp_path / "space" / "a.py", (1, 1))  # a checkout touches files without changing them
    assert code_hash(family, folders) == before
    family.write_text("class F: x = 1\n")
    assert code_hash(family, folders) != before
    family.write_text("class F: pass\n")
    (tmp_path / "trainer" / "a.py").write_text("X = 'changed'\n")
    assert code_hash(family, folders) != before
    # today's code: space/ and trainer/ of this checkout
    assert code_hash() == code_hash(None, [ROOT / "archscale" / "space", ROOT / "archscale" / "trainer"])


# --------------------------------------------------------------------------- the database


def test_rows_go_in_with_their_files_and_read_back(tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"w" * 100)
    (tmp_path / "result.json").write_text('{"history": []}')
    with Store.open(tmp_path / "s" / "results.db") as store:
        first = store.put(record(), {"weights.pt": weights, "result.json": tmp_path / "result.json"})
        second = store.put(record(key="x" * 64, status="failed", val=None))
        assert [r["id"] for r in store.rows()] == [first, second]
        got = store.lookup("k" * 64)
        assert len(got) == 1 and got[0]["recipe"] == RECIPE and got[0]["history"] == [{"epoch": 1}]
        assert (store.files(got[0]) / "weights.pt").read_bytes() == b"w" * 100
        assert store.files(store.lookup("x" * 64)[0]) is None
        assert store.rows(status="failed")[0]["val_accuracy"] is None
        assert store.counts()["status"] == {"completed": 1, "failed": 1}
    conn = sqlite3.connect(tmp_path / "s" / "results.db")  # what SQLite itself says of the file
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _other_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE trials (id INTEGER)")
    conn.commit()
    conn.close()


def _newer(path: Path) -> None:
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_text("name,status\n"), "is not a SQLite database"),
    (_other_schema, "not an archscale results store"),
    (_newer, f"newer archscale (store schema {SCHEMA_VERSION + 1}"),
    (lambda p: p.mkdir(), "is a folder"),
])
def test_what_is_not_a_store_of_this_schema_is_refused_by_name(tmp_path, capsys, make, words):
    path = tmp_path / "results.db"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(SpecError, match=re.escape(words)):
        Store.open(path)
    assert main(["store", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and words.split("(")[0] in err
    assert (path.read_bytes() if path.is_file() else None) == before  # nothing changed


def test_a_folder_that_cannot_be_made_is_refused_by_name(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SpecError, match=f"{tmp_path / 'file' / 'sub'}: cannot create the folder"):
        Store.open(tmp_path / "file" / "sub" / "results.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_refused_by_name(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(SpecError, match=f"{folder}: not writable"):
            Store.open(folder / "results.db")
        assert not (folder / "results.db").exists()
    finally:
        folder.chmod(0o700)


WRITER = """
import sys, time
from archscale.search.configs.store import Store
path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = {"weights.pt": sys.argv[4]} if len(sys.argv) > 4 else None
with Store.open(path) as store:
    for i in range(n):
        row_id = store.put({"key": f"{tag}{i:05d}".ljust(64, "0"), "status": "completed", "family": "budgeted",
                            "dataset": "mnist-5k", "arch": "a", "recipe": {"epochs": 1}, "seed": 0, "epochs": 1,
                            "code": "c", "metrics": {}, "history": [], "trial_id": f"{tag}{i}"}, files)
        print(row_id, flush=True)
"""


def _writer(path: Path, tag: str, n: int, *files: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(n), *map(str, files)],
                            stdout=subprocess.PIPE, text=True, env=env)


def test_several_writers_share_one_store(tmp_path):
    path = tmp_path / "results.db"
    writers = [_writer(path, tag, 40) for tag in ("a", "b", "c")]  # all three may create it
    ids = [int(line) for w in writers for line in w.communicate(timeout=120)[0].split()]
    assert all(w.returncode == 0 for w in writers)
    with Store.open(path, create=False) as store:
        rows = store.rows()
    assert len(rows) == 120 and sorted(r["id"] for r in rows) == sorted(ids)
    assert {r["trial_id"][0] for r in rows} == {"a", "b", "c"}


def test_a_writer_killed_with_sigkill_loses_no_committed_row(tmp_path):
    path, weights = tmp_path / "results.db", tmp_path / "weights.pt"
    weights.write_bytes(os.urandom(1 << 20))  # big enough that a kill often lands while files are copied
    writer = _writer(path, "k", 100_000, weights)
    committed = []
    while len(committed) < 30:
        committed.append(int(writer.stdout.readline()))
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    with Store.open(path, create=False) as store:  # readable, and every row it said it committed is there
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {r["id"]: r for r in store.rows()}
        assert set(committed) <= set(rows)
        assert all((store.files(r) / "weights.pt").stat().st_size == 1 << 20 for r in rows.values())


# --------------------------------------------------------------------------- the searcher


def test_the_searcher_serves_stored_configurations_and_counts_them_as_trials():
    from archscale.search.sampling.searcher import make_searcher
    from archscale.spec import parse_spec

    spec = parse_spec({"name": "s", "space": {"params": {"c1_width": [4, 8, 12], "c4_width": [8, 16]}},
                       "search": {"sampler": "grid", "num_trials": 6, "objectives": ["val_accuracy:max"]}})
    stored = {(4, 8): 0.5, (12, 16): 0.7}
    served = []

    def serve(row_id, config):
        value = stored.get((config["c1_width"], config["c4_width"]))
        if value is None:
            return None
        served.append(row_id)
        return {"status": "completed", "val_accuracy": value}

    searcher = make_searcher(spec, spec.space.searched(), [("val_accuracy", "max")], serve=serve, trials=6)
    dispatched = []
    for i in range(10):
        config = searcher.suggest(f"t{i}")
        if config == searcher.FINISHED:
            break
        dispatched.append((config["c1_width"], config["c4_width"]))
        searcher.on_trial_complete(f"t{i}", {"status": "completed", "val_accuracy": 0.1})
    assert len(dispatched) == 4 and not set(dispatched) & set(stored)  # the grid's other 4 points
    assert searcher.served == 2 and len(served) == 2
    told = {tuple(t.params.values()): t.values[0] for t in searcher.study.trials}
    assert told[(4, 8)] == 0.5 and told[(12, 16)] == 0.7

    # a sampled search: served configurations count toward num_trials
    spec = parse_spec({**spec.model_dump(mode="json"), "search": {"sampler": "random", "num_trials": 3,
                                                                   "objectives": ["val_accuracy:max"]}})
    searcher = make_searcher(spec, spec.space.searched(), [("val_accuracy", "max")], serve=lambda r, c: {
        "status": "completed", "val_accuracy": 0.3}, trials=3)
    assert searcher.suggest("only") == searcher.FINISHED and searcher.served == 3


# --------------------------------------------------------------------------- a run over a store


@pytest.mark.slow
def test_a_grid_run_again_over_the_store_trains_nothing(ray_session, tmp_path, tiny_spec, capsys):
    import optuna
    import torch

    from archscale.analysis.records import read_trials

    spec = copy.deepcopy(tiny_spec)
    spec["search"].update(sampler="grid", num_trials=4)
    spec["space"]["params"].update(c1_width=[4, 8], c3_width=8, c3_conv="regular", c4_width=[8, 64])
    spec["space"]["max_params"] = 3000  # c4_width=64 is over it: 2 completed, 2 infeasible
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    store = tmp_path / "store" / "results.db"
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["run", str(path), "--out", str(first), "--quiet", "--set", f"search.store={store}"]) == 0
    with Store.open(store, create=False) as s:
        stored = s.rows()
    assert sorted(r["status"] for r in stored) == ["completed", "completed", "infeasible", "infeasible"]
    assert {(r["config"]["c1_width"], r["config"]["c4_width"]) for r in stored} == {(4, 8), (4, 64), (8, 8), (8, 64)}

    assert main(["run", str(path), "--out", str(again), "--quiet", "--set", f"search.store={store}"]) == 0
    one, two = read_trials(first), read_trials(again)
    assert set(one["source"]) == {"trained"} and set(two["source"]) == {"store"}
    assert not (again / "started.jsonl").exists()  # no trial was dispatched
    key = ["c1_width", "c4_width"]
    cols = ["status", "val_accuracy", "test_accuracy", "params", "macs", "train_seconds"]
    pd.testing.assert_frame_equal(one.sort_values(key)[key + cols].reset_index(drop=True),
                                  two.sort_values(key)[key + cols].reset_index(drop=True))
    # the winner exported from the stored weights, as after training
    a, b = torch.load(first / "best" / "weights.pt"), torch.load(again / "best" / "weights.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with Store.open(store, create=False) as s:
        assert s.rows() == stored  # served rows are not stored again; nothing stored changed
    # study.db: one trial per row of trials.csv, the same values
    for run in (first, again):
        trials = read_trials(run)
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run / 'study.db'}")
        assert [t.user_attrs["trial_id"] for t in study.trials] == list(trials["trial_id"])
        for t, (_, row) in zip(study.trials, trials.iterrows()):
            assert t.params == {"c1_width": row["c1_width"], "c4_width": row["c4_width"]}
            expected = [row["val_accuracy"], row["macs"]] if row["status"] == "completed" else [0.0, row["macs"]]
            assert t.values == pytest.approx(expected)
    capsys.readouterr()
    assert main(["store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "4 trials" in out and "completed 2, infeasible 2" in out


@pytest.mark.slow
def test_a_run_killed_with_sigkill_leaves_every_committed_row(tmp_path, tiny_spec):
    tiny_spec["search"].update(sampler="grid", num_trials=8, max_concurrent=1)
    tiny_spec["space"]["params"].update(c3_width=8, c4_width=8)  # c1_width x c3_conv: 4 points
    tiny_spec["space"]["max_params"] = None
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec))
    store, run = tmp_path / "results.db", tmp_path / "run"

    def stored() -> list[int]:
        if not store.is_file():
            return []
        try:
            with Store.open(store, create=False) as s:
                return [r["id"] for r in s.rows()]
        except (SpecError, sqlite3.Error):  # being created
            return []

    proc = subprocess.Popen([sys.executable, "-m", "archscale", "run", str(path), "--out", str(run), "--set",
                             f"search.store={store}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 300
    while not stored() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = stored()
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
    out = proc.communicate()[0]
    assert seen, f"no row was stored before the run ended or timed out:\n{out}"
    with Store.open(store, create=False) as s:
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = s.rows()
        assert set(seen) <= {r["id"] for r in rows}
        assert all((s.files(r) / "weights.pt").is_file() for r in rows if r["status"] == "completed")
