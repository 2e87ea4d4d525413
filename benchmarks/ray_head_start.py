"""The early Ray start's head start: ``archscale run`` of the dispatch benchmark's spec with
the driver holding its imports back until Ray's raylet runs (``archscale.search.dispatch.session``'s
``HEAD_START_S``, the default) and without (``HEAD_START_S = 0``), alternately, ``--reps``
times each, each a fresh process. Prints each run's wall time and time to the first trial
(from its ``profile.json``), the means, and ends with ``head_start_first_trial_gain_s: X``
(mean time to the first trial without the wait, less with it).

    python benchmarks/ray_head_start.py [--reps 4] [--trials 12] [--parallel 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dispatch_overhead import ROOT, load, spec  # noqa: E402  (the same spec and load reading)

RUN = ("import sys\n"
       "import archscale.search.dispatch.session as start\n"
       "if sys.argv[1] == 'off':\n"
       "    start.HEAD_START_S = 0.0\n"
       "from archscale.cli import entry\n"
       "sys.argv = ['archscale', 'run', sys.argv[2], '--quiet', '--profile', '--out', sys.argv[3]]\n"
       "entry()\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "dispatch.yaml"
        spec_file.write_text(yaml.safe_dump(spec(args.trials, args.parallel, args.epochs)))
        for rep in range(args.reps):
            for mode in ("on", "off"):
                out = Path(tmp) / f"{mode}{rep}"
                before = load()
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-c", RUN, mode, str(spec_file), str(out)], cwd=ROOT, env=env,
                                      capture_output=True, text=True)
                wall = time.perf_counter() - start
                if done.returncode != 0:
                    sys.exit(f"run ({mode}) failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
                first = json.loads((out / "profile.json").read_text())["time_to_first_trial"]
                rows.append((mode, rep, wall, first, before))
    print(f"{args.trials} trials x {args.epochs} epochs, {args.parallel} at once; load average (1/5 min) before each")
    print(f"{'head start':<10} {'rep':>3} {'wall s':>8} {'first trial s':>14} {'load':>10}")
    for mode, rep, wall, first, before in rows:
        print(f"{mode:<10} {rep:>3} {wall:>8.1f} {first:>14.2f} {before:>10}")
    mean = {m: (statistics.fmean(r[2] for r in rows if r[0] == m), statistics.fmean(r[3] for r in rows if r[0] == m))
            for m in ("on", "off")}
    for m, (wall, first) in mean.items():
        print(f"mean with head start {m}: wall {wall:.1f} s, first trial {first:.2f} s")
    print(f"head_start_first_trial_gain_s: {mean['off'][1] - mean['on'][1]:.2f}")


if __name__ == "__main__":
    main()
