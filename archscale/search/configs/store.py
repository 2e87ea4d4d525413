"""The results store (``search.store: PATH``): every finished trial of every run that names it,
in one SQLite database (standard library ``sqlite3``, WAL mode) shared between runs. A
configuration already stored under the same key is read, not trained again.

The key of a trial (:func:`trial_key`) is the SHA-256 of

- the architecture's text form (:attr:`archscale.space.Arch.text`);
- the resolved training recipe: every field of ``trainer.TrainConfig`` as the trial trains
  (the spec's values with the sampled ``train.*`` ones applied), ``epochs`` among them;
- the dataset and its split: name, ``val_fraction``, ``subset`` and the split's seed;
- the trial's seed (the spec's ``seed``, or a configuration's own ``seed`` as ``ablate`` runs);
- :func:`code_hash`: the SHA-256 of the *contents* of the source files that decide a result,
  archscale's ``space/`` and ``trainer/`` and the family's own module. A commit that touches
  none of them (the search, the analysis, the README) leaves every key as it was.

What is served (:meth:`.runstore.RunStore.lookup`): a ``completed`` row, or, under this run's budgets
(which are not part of the key), an ``infeasible`` verdict recomputed from the stored measured
costs. ``pruned`` and ``failed`` rows are kept for the record but trained again: the first
depends on the other trials of its run, the second may have been the machine's fault.

Rows are only ever inserted (never updated or deleted), each in its own transaction, after the
trial's files are in place: a run that fails or is killed (SIGKILL included) changes nothing
already stored and loses no committed row. Several runs may share a store at once (WAL and a
busy timeout of :data:`BUSY_TIMEOUT_S`).

Reading a store (the public API; :class:`Store` needs only the standard library)::

    from archscale.search.configs.store import Store

    with Store.open("results.db", create=False) as store:
        store.rows()                              # every stored trial, oldest first (dicts)
        store.rows(status="completed", dataset="mnist-5k", family="budgeted")
        store.lookup(key)                         # the rows of one key, oldest first
        store.files(row)                          # the folder of a completed row's weights.pt and
                                                  # result.json, or None
        store.counts()                            # {"status": {...}, "family": {...}, "dataset": {...}}

Each row is a dict: ``id``, ``key``, ``status``, ``family``, ``dataset``, ``arch``,
``config`` (dict: the sampled values, named as the trials.csv columns of the run that stored
it, ``train.lr`` and the like included), ``recipe`` (dict), ``seed``, ``epochs``, ``code``,
``val_accuracy``, ``test_accuracy``, ``params``, ``macs``, ``metrics`` (dict: the trials.csv
metric columns and ``error``), ``history`` (list: one dict per epoch), ``files``, ``run``,
``trial_id``, ``created`` (Unix time). :func:`trial_key` gives the key of an architecture and
recipe; :class:`.runstore.RunStore` is a store as one run uses it (its ``lookup(config)`` answers for a
sampled configuration under a run's context and budgets).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

from archscale.spec import SpecError

SCHEMA_VERSION = 1  # PRAGMA user_version of the stores this archscale writes
APPLICATION_ID = 0x41524348  # PRAGMA application_id: "ARCH", marks a file as an archscale results store
BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another run's transaction
STATUSES = ("completed", "pruned", "failed", "infeasible")
FILES = ("weights.pt", "result.json")  # a completed trial's files, kept in the store's folder
SQLITE_HEADER = b"SQLite format 3\x00"
STORED_METRICS = ("params", "macs", "memory_mb", "memory_source", "latency_ms", "latency_batch_ms", "val_accuracy",
                  "test_accuracy", "train_seconds", "wall_seconds", "epochs", "error")

_SCHEMA = """
CREATE TABLE trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,             -- trial_key(): what decides the result
    status TEXT NOT NULL CHECK (status IN ('completed', 'pruned', 'failed', 'infeasible')),
    family TEXT NOT NULL,
    dataset TEXT NOT NULL,
    arch TEXT,                     -- the architecture's text form (NULL: the family refused the values)
    config TEXT NOT NULL,          -- JSON: the sampled values, as the trials.csv columns of its run
    recipe TEXT NOT NULL,          -- JSON: TrainConfig's fields as trained
    seed INTEGER NOT NULL,
    epochs INTEGER NOT NULL,       -- epochs asked (metrics.epochs: reached)
    code TEXT NOT NULL,            -- code_hash()
    val_accuracy REAL,
    test_accuracy REAL,
    params INTEGER,
    macs INTEGER,                  -- multiply-adds of one image (fvcore)
    metrics TEXT NOT NULL,         -- JSON: the trials.csv metric columns and error
    history TEXT NOT NULL,         -- JSON: one dict per epoch
    files TEXT,                    -- folder of weights.pt and result.json, relative to the files folder
    run TEXT,                      -- the run directory that stored it
    trial_id TEXT,
    created REAL NOT NULL          -- Unix time
);
CREATE INDEX trials_key ON trials (key);
"""
_COLUMNS = ("id", "key", "status", "family", "dataset", "arch", "config", "recipe", "seed", "epochs", "code",
            "val_accuracy", "test_accuracy", "params", "macs", "metrics", "history", "files", "run", "trial_id",
            "created")
_JSON = ("config", "recipe", "metrics", "history")


# --------------------------------------------------------------------------- the key


def code_hash(family_module: str | Path | None = None, folders: Iterable[str | Path] | None = None) -> str:
    """SHA-256 of the contents of the ``*.py`` files that decide a trial's result: archscale's
    ``space/`` and ``trainer/`` (``folders``), and ``family_module`` (a user family's file)."""
    root = Path(__file__).resolve().parents[2]  # archscale/
    folders = [Path(f) for f in folders] if folders is not None else [root / "space", root / "trainer"]
    files = sorted({p.resolve() for folder in folders for p in folder.rglob("*.py")})
    if family_module is not None and Path(family_module).resolve() not in files:
        files.append(Path(family_module).resolve())
    digest = hashlib.sha256()
    for path in files:
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def trial_key(arch: str, recipe: Mapping[str, Any], data: Mapping[str, Any], seed: int, code: str) -> str:
    """The store's key: SHA-256 of the architecture's text, the recipe (``epochs`` in it), the
    dataset and split (``dataset``, ``val_fraction``, ``subset``, ``seed``), the trial's seed
    and the code hash, as canonical JSON."""
    split = {k: data.get(k) for k in ("dataset", "val_fraction", "subset", "seed")}
    text = json.dumps({"arch": arch, "recipe": dict(recipe), "data": split, "seed": int(seed),
                       "epochs": int(recipe["epochs"]), "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- the database


def _problem(path: Path, what: str) -> SpecError:
    return SpecError(f"{path}: {what}; expected a results store written by archscale (a SQLite database, "
                     f"schema version {SCHEMA_VERSION} or older), or a path where one may be created")


class Store:
    """One results store: a SQLite database and the folder of weights beside it
    (``PATH.files/``). Open it with :meth:`open`; use it as a context manager to close it."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path, self._conn = path, conn
        self.files_dir = path.with_name(path.name + ".files")

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection (opened again after unpickling: Ray Tune pickles its callbacks)."""
        if self._conn is None:
            self._conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._conn.execute("PRAGMA synchronous = FULL")
        return self._conn

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_conn": None}

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | Path, create: bool = True) -> "Store":
        """Open (``create``: or create) the store at ``path``. Raises SpecError naming the path
        when it is a folder, not a SQLite database, not an archscale store, a store of a newer
        schema, or in a folder this process cannot write (a writer needs it: WAL files)."""
        path = Path(path).expanduser()
        if path.is_dir():
            raise _problem(path, "is a folder")
        exists = path.is_file() and path.stat().st_size > 0
        if exists:
            try:
                with path.open("rb") as f:
                    head = f.read(len(SQLITE_HEADER))
            except OSError as err:
                raise _problem(path, f"cannot be read ({err.strerror})") from None
            if head != SQLITE_HEADER:
                raise _problem(path, "is not a SQLite database")
        elif not create:
            raise _problem(path, "does not exist")
        folder = path.parent
        if create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise SpecError(f"{folder}: cannot create the folder of the results store {path.name} "
                                f"({err.strerror}); give a path in a writable folder") from None
            if not os.access(folder, os.W_OK | os.X_OK) or (exists and not os.access(path, os.W_OK)):
                raise SpecError(f"{folder if not exists or os.access(path, os.W_OK) else path}: not writable by "
                                f"this user, so the results store {path} cannot be written; give a path in a "
                                f"writable folder")
        try:
            # one thread at a time, but not always the opener: a Ray Client run records from a drain thread
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise _problem(path, f"cannot be opened ({err})") from None
        try:
            cls._check_schema(path, conn, create)
        except BaseException:
            conn.close()
            raise
        return cls(path, conn)

    @staticmethod
    def _header(conn: sqlite3.Connection) -> tuple[int, int, int]:
        """(application_id, user_version, number of schema objects), read in one transaction:
        another run may be creating the store at this moment."""
        conn.execute("BEGIN")
        try:
            app, version = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("application_id", "user_version"))
            return app, version, conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.execute("COMMIT")

    @staticmethod
    def _check_schema(path: Path, conn: sqlite3.Connection, create: bool) -> None:
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            app, version, tables = Store._header(conn)
        except sqlite3.DatabaseError as err:
            raise _problem(path, f"is not a SQLite database ({err})") from None
        if app == 0 and version == 0 and tables == 0:  # a new (or empty) file
            if not create:
                raise _problem(path, "is an empty database")
            try:
                conn.execute("BEGIN IMMEDIATE")  # one creator; the others wait, then find it made
                app, version = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("application_id", "user_version"))
                if app == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    app, version = APPLICATION_ID, SCHEMA_VERSION
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise SpecError(f"{path}: the results store cannot be created ({err}); give a path in a "
                                "writable folder") from None
        if app != APPLICATION_ID:
            raise _problem(path, f"is a SQLite database but not an archscale results store (application_id {app})")
        if version > SCHEMA_VERSION:
            raise _problem(path, f"was written by a newer archscale (store schema {version}; this archscale reads "
                                 f"up to {SCHEMA_VERSION})")
        if create and conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:  # persistent: every later connection uses WAL
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError:  # another connection is reading: the next writer to open sets it
                pass
        conn.execute("PRAGMA synchronous = FULL")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def rows(self, **where: Any) -> list[dict]:
        """Stored trials, oldest first; ``where``: column=value filters (status, family,
        dataset, key, seed, epochs, code, run, ...)."""
        known = [c for c in _COLUMNS if c not in _JSON]
        unknown = [k for k in where if k not in known]
        if unknown:
            raise ValueError(f"rows(): unknown column {unknown[0]!r}; known: {', '.join(known)}")
        clause = " AND ".join(f"{k} = ?" for k in where)
        cursor = self.conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM trials"
                                   f"{' WHERE ' + clause if clause else ''} ORDER BY id", tuple(where.values()))
        return [self._row(values) for values in cursor]

    def lookup(self, key: str) -> list[dict]:
        """The rows stored under ``key``, oldest first (two runs may have trained it at once)."""
        return self.rows(key=key)

    def files(self, row: Mapping[str, Any]) -> Path | None:
        """The folder of a stored row's ``weights.pt`` and ``result.json``, or None."""
        return self.files_dir / row["files"] if row.get("files") else None

    def counts(self) -> dict[str, dict[str, int]]:
        """How many rows by status, family and dataset."""
        return {col: dict(self.conn.execute(f"SELECT {col}, count(*) FROM trials GROUP BY {col} ORDER BY {col}"))
                for col in ("status", "family", "dataset")}

    @staticmethod
    def _row(values: tuple) -> dict:
        row = dict(zip(_COLUMNS, values))
        for col in _JSON:
            row[col] = json.loads(row[col])
        return row

    # ------------------------------------------------------------------ writing

    def put(self, record: Mapping[str, Any], files: Mapping[str, Path] | None = None) -> int:
        """Insert one finished trial (``record``: the columns of the table but ``id``,
        ``files`` and ``created``); ``files``: name -> path of the files to keep (copied in
        before the row is committed). Returns the row's id."""
        folder = None
        if files:
            folder = f"{record['key'][:2]}/{record['key'][:16]}-{uuid.uuid4().hex[:8]}"
            target = self.files_dir / folder
            target.mkdir(parents=True, exist_ok=True)
            for name, source in files.items():
                tmp = target / f".{name}.tmp"
                shutil.copyfile(source, tmp)
                tmp.replace(target / name)
        values = {c: record.get(c) for c in _COLUMNS if c not in ("id", "files", "created")}
        for col in _JSON:
            values[col] = json.dumps(values[col] if values[col] is not None else ({} if col != "history" else []),
                                     default=_plain, allow_nan=True)
        values.update(files=folder, created=time.time())
        names = list(values)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = self.conn.execute(f"INSERT INTO trials ({', '.join(names)}) VALUES "
                                       f"({', '.join('?' for _ in names)})", [values[n] for n in names])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return int(cursor.lastrowid)


def _warn(message: str) -> None:
    print(f"archscale: warning: {message}", file=sys.stderr, flush=True)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def _number(value: Any) -> Any:
    """A metric as stored: None for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------- `archscale store PATH`


def describe(path: str | Path, best: int = 10) -> str:
    """What a store holds: counts by status, family and dataset, and the ``best`` most accurate
    completed rows. Raises SpecError naming ``path`` when it is not a store."""
    with Store.open(path, create=False) as store:
        counts = store.counts()
        total = sum(counts["status"].values())
        codes = store.conn.execute("SELECT count(DISTINCT code), count(DISTINCT key) FROM trials").fetchone()
        top = store.conn.execute(
            "SELECT id, family, dataset, epochs, seed, val_accuracy, test_accuracy, params, macs, arch, key "
            "FROM trials WHERE status = 'completed' ORDER BY val_accuracy DESC, id LIMIT ?", (best,)).fetchall()
    lines = [f"{path}: {total} trials, {codes[1]} distinct keys, {codes[0]} code version(s); weights in "
             f"{store.files_dir}"]
    for col in ("status", "family", "dataset"):
        lines.append(f"  by {col}: " + (", ".join(f"{k} {v}" for k, v in counts[col].items()) or "-"))
    if top:
        lines.append(f"best {len(top)} completed by val_accuracy (macs: multiply-adds per image):")
        lines.append(f"  {'id':>5} {'family':<12} {'dataset':<10} {'ep':>3} {'seed':>4} {'val_acc':>7} {'test_acc':>8} "
                     f"{'params':>9} {'macs':>11}  key       arch")
        for (i, fam, ds, ep, seed, val, test, params, macs, arch, key) in top:
            lines.append(f"  {i:>5} {fam:<12} {ds:<10} {ep:>3} {seed:>4} {_fmt(val, 4):>7} {_fmt(test, 4):>8} "
                         f"{_fmt(params, 0):>9} {_fmt(macs, 0):>11}  {key[:8]}  {arch}")
    return "\n".join(lines)


def _fmt(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
