"""What Optuna's RDB storage on SQLite costs a search, per trial, against the in-memory study
the sampler uses, and what writing ``RUN/study.db`` from trials.csv at the end costs.

Three ways, each over ``--trials`` trials of a 2-objective TPE search on the quickstart's
space (the sampler's work included, no training):

- ``memory``: ask and tell on an in-memory study (what a search does);
- ``sqlite``: the same on ``optuna.create_study(storage="sqlite:///...")`` (the sampler's own
  study on disk: every ask and tell a transaction on the search's critical path);
- ``write_study``: :func:`archscale.search.sampling.studydb.write_study` of the finished trials, once,
  as a run does when it ends.

    python benchmarks/study_db_cost.py [--trials 100]

Last line: ``study_db_write_ms_per_trial: X``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
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
                     "val_accuracy": acc, "source": "trained"})
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    from archscale.spec import parse_spec
    from archscale.search.sampling.studydb import write_study

    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw["search"]["num_trials"] = args.trials
    spec = parse_spec(raw)
    n = args.trials
    with tempfile.TemporaryDirectory() as tmp:
        memory, rows = search(None, spec, n)
        sqlite, _ = search(f"sqlite:///{Path(tmp) / 'live.db'}", spec, n)
        trials = pd.DataFrame(rows).astype({"trial_id": str})
        start = time.perf_counter()
        write_study(tmp, spec, trials, [d.name for d in spec.searched()])
        written = time.perf_counter() - start
    print(f"{n} trials of TPE (2 objectives) on the quickstart space; load average {os.getloadavg()[0]:.2f}")
    print(f"{'way':<12} {'total s':>8} {'ms/trial':>9}")
    for name, seconds in (("memory", memory), ("sqlite", sqlite), ("write_study", written)):
        print(f"{name:<12} {seconds:>8.2f} {seconds / n * 1000:>9.1f}")
    print(f"study_db_write_ms_per_trial: {written / n * 1000:.1f}")


if __name__ == "__main__":
    main()
