"""What Optuna's RDB storage on SQLite costs a search, per trial, against the in-memory study
the sampler uses, and what writing ``RUN/study.db`` costs, at the end or as trials finish.

Over ``--trials`` trials of a 2-objective TPE search on the quickstart's space (the sampler's
work included, no training):

- ``memory``: ask and tell on an in-memory study (what a search does);
- ``sqlite``: the same on ``optuna.create_study(storage="sqlite:///...")`` (the sampler's own
  study on disk: every ask and tell a transaction on the search's critical path);
- ``at end``: every finished trial added at once when the run ends (``Study.add_trials``, what
  archscale did before study.db was written live);
- ``live``: :class:`archscale.search.sampling.studydb.LiveStudy`, one trial at a time as each is
  recorded: ``live add`` is what the search's thread pays (a queue put), ``live write`` what the
  writer thread spends adding it to SQLite.

Each trial carries 2 epochs of intermediate values and the user attributes a run writes.

    python benchmarks/study_db_cost.py [--trials 100]

Last lines: ``study_db_write_ms_per_trial: X`` (live, writer thread) and
``study_db_add_us_per_trial: Y`` (the search's thread).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def search(storage: str | None, spec, n: int) -> tuple[float, list[dict]]:
    """Seconds for ``n`` ask/tell rounds with archscale's sampler; the rows they make."""
    import optuna

    from archscale.search.sampling.asktell import make_sampler, optuna_space

    dists = optuna_space(spec.searched())
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"], sampler=make_sampler(spec))
    rng = np.random.default_rng(0)
    rows = []
    start = time.perf_counter()
    for i in range(n):
        trial = study.ask(dists)
        acc, macs = float(rng.uniform(0.5, 0.99)), int(rng.integers(10_000, 500_000))
        trial.set_user_attr("trial_id", f"t{i}")
        study.tell(trial, [acc, macs])
        rows.append({"trial_id": f"t{i}", "status": "completed", **trial.params, "params": 1000, "macs": macs,
                     "val_accuracy": acc, "test_accuracy": acc, "epochs": 2, "train_seconds": 1.0,
                     "arch": "budgeted:" + ",".join(f"{k}={v}" for k, v in trial.params.items()), "source": "trained"})
    return time.perf_counter() - start, rows


def at_end(run_dir: Path, spec, rows: list[dict]) -> float:
    """Seconds to add every row at once to a new study.db, as a run used to when it ended."""
    import optuna

    from archscale.search.sampling.asktell import optuna_space
    from archscale.search.sampling.studydb import open_study, study_storage, study_trial

    start = time.perf_counter()
    storage = optuna.storages.RDBStorage(study_storage(run_dir))
    dists, metrics = optuna_space(spec.searched()), [m for m, _ in spec.search.objective_pairs()]
    open_study(storage, spec).add_trials([study_trial(r, dists, metrics, {1: r["val_accuracy"] / 2,
                                                                          2: r["val_accuracy"]}) for r in rows])
    storage.engine.dispose()
    return time.perf_counter() - start


def live(run_dir: Path, spec, rows: list[dict]) -> tuple[float, float, float]:
    """(seconds the search's thread spent in add, seconds the writer spent writing, seconds from
    the first add to the writer's end) for ``rows`` recorded one by one."""
    from archscale.search.sampling.studydb import LiveStudy

    added = 0.0
    start = time.perf_counter()
    with LiveStudy(run_dir, spec, spec.searched()) as study:
        for r in rows:
            t = time.perf_counter()
            study.add(r, {1: r["val_accuracy"] / 2, 2: r["val_accuracy"]})
            added += time.perf_counter() - t
    assert study.written == len(rows)
    return added, study.seconds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    from archscale.spec import parse_spec

    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw["search"]["num_trials"] = args.trials
    spec = parse_spec(raw)
    n = args.trials
    with tempfile.TemporaryDirectory() as tmp:
        memory, rows = search(None, spec, n)
        sqlite, _ = search(f"sqlite:///{Path(tmp) / 'live.db'}", spec, n)
        (Path(tmp) / "end").mkdir()
        (Path(tmp) / "live").mkdir()
        end = at_end(Path(tmp) / "end", spec, rows)
        added, written, drained = live(Path(tmp) / "live", spec, rows)
    print(f"{n} trials of TPE (2 objectives) on the quickstart space; load average {os.getloadavg()[0]:.2f}")
    print(f"{'way':<12} {'total s':>8} {'ms/trial':>9}")
    for name, seconds in (("memory", memory), ("sqlite", sqlite), ("at end", end), ("live add", added),
                          ("live write", written), ("live, all", drained)):
        print(f"{name:<12} {seconds:>8.2f} {seconds / n * 1000:>9.3f}")
    print(f"study_db_write_ms_per_trial: {written / n * 1000:.1f}")
    print(f"study_db_add_us_per_trial: {added / n * 1e6:.1f}")


if __name__ == "__main__":
    main()
