"""Helpers the GPU benchmarks rely on, checked on a CPU with tiny data."""

import importlib.util
import io
import sys
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_airbench_files_hold_the_npz_images_in_torchvision_layout(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8), "y_train": np.arange(5, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), "y_test": np.array([9, 0], np.uint8)}
    np.savez(tmp_path / "cifar10.npz", **arrays)
    counts = _load("airbench_data").write_airbench_files(tmp_path / "cifar10.npz", tmp_path / "work")
    assert counts == {"train": 5, "test": 2}
    for split in ("train", "test"):
        record = torch.load(tmp_path / "work" / "cifar10" / f"{split}.pt", weights_only=True)
        assert record["images"].dtype == torch.uint8 and record["labels"].dtype == torch.int64
        assert np.array_equal(record["images"].numpy(), arrays[f"x_{split}"])  # HWC, as torchvision's .data
        assert record["labels"].tolist() == arrays[f"y_{split}"].tolist()
        assert record["classes"][0] == "airplane" and len(record["classes"]) == 10


def test_airbench_files_refuse_images_of_another_shape(tmp_path):
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        _load("airbench_data").write_airbench_files(tmp_path / "cifar10.npz", tmp_path / "work")


def test_every_file_seeds_md_names_exists():
    """benchmarks/seeds.md (written by reproduce.py) and its rows name only files of this checkout
    (run directories under runs/ are outputs, and data folders are the user's: not checked)."""
    import re
    import sys

    root = BENCHMARKS.parent
    table = (BENCHMARKS / "seeds.md").read_text()
    named = set(re.findall(r"(?<![\w./-])((?:examples|benchmarks|archscale|tests)/[\w./-]*\w)", table))
    spec = importlib.util.spec_from_file_location("reproduce", BENCHMARKS / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = reproduce  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(reproduce)
    finally:
        del sys.modules["reproduce"]
    named |= {row.spec for row in reproduce.ROWS}
    assert "examples/cifar10_200k.yaml" in named and "examples/cifar10_compound_scaling.yaml" in named
    assert sorted(p for p in named if not (root / p).is_file()) == []
    assert "not in this checkout" not in table
def _brute_force_area(points, reference):
    """Area dominated by (accuracy:max, macs:min) points above/below ``reference``, by
    coordinate compression: every cell of the grid of all coordinates, covered or not."""
    ra, rm = reference
    pts = [(a, m) for a, m in points if a > ra and m < rm]
    xs = sorted({ra, *(a for a, _ in pts)})
    ys = sorted({rm, *(m for _, m in pts)})
    area = 0.0
    for x0, x1 in zip(xs, xs[1:]):
        for y0, y1 in zip(ys, ys[1:]):
            if any(a >= x1 and m <= y0 for a, m in pts):
                area += (x1 - x0) * (y1 - y0)
    return area


def test_sampler_quality_scores_hypervolume_against_the_true_front(tmp_path):
    """The benchmark's score: hypervolume of the first trials over the true front's, under one
    reference point (the worst completed values), checked by brute force; the true front is
    the one Optuna's public ``Study.best_trials`` picks from the same trials."""
    import optuna

    from archscale.spec import parse_spec

    bench = _load("sampler_quality")
    rng = np.random.default_rng(1)
    params = {"c1_width": [4, 8, 12, 16], "c2_width": [8, 16, 24]}
    spec = parse_spec({"name": "s", "space": {"params": params},
                       "search": {"sampler": "grid", "objectives": ["val_accuracy:max", "macs:min"]}})
    rows = [{"trial_id": f"t{i}", "status": "completed" if i % 5 else "failed", "c1_width": a, "c2_width": b,
             "macs": int(rng.integers(1000, 9000)), "params": 100, "val_accuracy": round(rng.uniform(0.5, 1), 4),
             "epochs": 1, "arch": f"budgeted:c1_width={a},c2_width={b}"} for i, (a, b) in enumerate((a, b) for a in params["c1_width"] for b in params["c2_width"])]
    (tmp_path / "spec.yaml").write_text(spec.to_yaml())
    pd.DataFrame(rows).to_csv(tmp_path / "trials.csv", index=False)
    space = bench.Space("toy", {0: tmp_path}, proxies=False)

    done = [(r["val_accuracy"], r["macs"]) for r in rows if r["status"] == "completed"]
    reference = (min(a for a, _ in done), max(m for _, m in done))
    assert space.bounds.reference == pytest.approx(reference)
    assert space.true_hv[0] == pytest.approx(_brute_force_area(done, reference))
    study = optuna.create_study(directions=["maximize", "minimize"])
    for a, m in done:
        study.add_trial(optuna.trial.create_trial(values=[a, m]))
    front = {(t.values[0], t.values[1]) for t in study.best_trials}
    assert _brute_force_area(front, reference) == pytest.approx(space.true_hv[0])

    result = {"train_seed": 0, "budget": len(rows),  # a replay's record, as _job writes it
              "trials": [[r["status"], r["val_accuracy"], r["macs"], 1.0] for r in rows]}
    trace = space.trace_of(result)
    for budget in (3, 7, 12):
        first = [(r["val_accuracy"], r["macs"]) for r in rows[:budget] if r["status"] == "completed"]
        assert trace[budget - 1] == pytest.approx(_brute_force_area(first, reference) / space.true_hv[0], abs=1e-6)
    assert trace[-1] == pytest.approx(1.0)


def test_sampler_quality_judges_a_replay_on_the_seed_mean_accuracy(tmp_path):
    """The seed-mean trace: a configuration found is worth its mean over the training seeds (a
    configuration that failed in one seed is worth nothing), a trial stopped early adds nothing,
    and the front of every configuration's mean is the whole; checked by brute force."""
    from archscale.spec import parse_spec

    bench = _load("sampler_quality")
    params = {"layer1_add": ["none", "extra", "residual"], "width_mult": [0.5, 1.0]}  # 1.0 is read back as 1
    spec = parse_spec({"name": "s", "space": {"family": "davidnet", "params": params},
                       "search": {"sampler": "grid", "objectives": ["val_accuracy:max", "macs:min"]}})
    configs = [(a, b) for a in params["layer1_add"] for b in params["width_mult"]]
    accuracy = {0: [0.80, 0.90, 0.85, 0.95, 0.70, 0.99], 1: [0.84, 0.86, 0.93, 0.91, 0.74, 0.97]}
    macs = [1000, 1500, 2000, 3000, 4000, 5000]
    dirs = {}
    for seed, acc in accuracy.items():
        dirs[seed] = tmp_path / f"s{seed}"
        dirs[seed].mkdir()
        (dirs[seed] / "spec.yaml").write_text(spec.to_yaml())
        rows = [{"trial_id": f"t{i}", "status": "failed" if (seed, i) == (1, 5) else "completed", "layer1_add": a,
                 "width_mult": b, "macs": macs[i], "params": 100, "val_accuracy": acc[i], "epochs": 1,
                 "arch": f"davidnet:layer1_add={a},width_mult={b}"} for i, (a, b) in enumerate(configs)]
        pd.DataFrame(rows).to_csv(dirs[seed] / "trials.csv", index=False)
    space = bench.Space("toy", dirs, proxies=False)
    mean = {i: (accuracy[0][i] + accuracy[1][i]) / 2 for i in range(5)}  # the sixth failed under seed 1
    assert len(space.mean) == 5
    reference = space.bounds.reference
    whole = _brute_force_area([(mean[i], macs[i]) for i in range(5)], reference)
    assert space.mean_hv == pytest.approx(whole)
    order = [3, 5, 0, 2]  # handed out in this order; the third (config 0) stopped after half its epochs
    result = {"budget": 4, "trials": [["completed", accuracy[0][i], macs[i], 0.0] for i in order],
              "costs": [1.0, 1.0, 0.5, 1.0], "configs": [list(configs[i]) for i in order]}
    trace = space.mean_trace_of(result)
    found = [[3], [3], [3], [3, 2]]  # 5: no mean; 0: stopped
    for got, ids in zip(trace, found):
        assert got == pytest.approx(_brute_force_area([(mean[i], macs[i]) for i in ids], reference) / whole, abs=1e-6)
    # each seed's own front (seed 0: configs 0, 1, 3; 5 has no mean), as seed-mean levels
    assert space.levels[bench.config_id(configs[4])] == 1
    assert space.fronts() == {0: [0, 0, 0], 1: [0, 0, 0]}
    # the oracle trains the seed-mean front first: here configs 3 (0.93, 3000), 2 (0.89, 2000),
    # 1 (0.88, 1500) and 0 (0.82, 1000); config 4 (0.72, 4000) is dominated
    oracle = space.oracle(0, seed=7, budget=5)
    assert sorted(map(tuple, oracle["configs"][:4])) == sorted(configs[i] for i in (0, 1, 2, 3))
    assert tuple(oracle["configs"][4]) == configs[4]
    assert oracle["trials"][0][1:3] == [accuracy[0][configs.index(tuple(oracle["configs"][0]))],
                                        macs[configs.index(tuple(oracle["configs"][0]))]]  # seed 0's own values
    assert space.mean_trace_of(oracle)[3] == pytest.approx(1.0) and space.mean_trace_of(oracle)[2] < 1.0
    assert bench.config_id(["extra", 1.0]) == bench.config_id([np.str_("extra"), np.int64(1)]) == '["extra", 1]'


def test_sampler_quality_counts_the_cost_to_a_target_and_pairs_each_seed_with_random():
    """Cost: full-training equivalents until the trace first reaches the target: a prescreen's
    time up front, then each trial's epochs over the full schedule plus the sampler's share;
    the paired difference is taken seed by seed."""
    bench = _load("sampler_quality")
    full = [1.0] * 4
    assert bench.cost_to([0.1, 0.5, 0.8, 0.9], full, 0.8, 0.25) == pytest.approx(3 * 1.25)
    assert bench.cost_to([0.1, 0.5, 0.8], [0.25, 0.5, 1.0], 0.8, 0.0, upfront=2.0) == pytest.approx(3.75)  # ASHA
    assert bench.cost_to([0.1, 0.5], [1.0, 1.0], 0.8, 0.0) == float("inf")
    assert bench.quantile(np.array([3.0, np.inf, 1.0, np.inf]), 0.5) == 3.0  # the lower middle value
    ramp = [min(1.0, 0.1 * i) for i in range(1, bench.BUDGET + 1)]
    late = [min(1.0, 0.05 * i) for i in range(1, bench.BUDGET + 1)]
    ones = [1.0] * bench.BUDGET
    results = pd.DataFrame([{"space": "toy", "strategy": "random", "seed": s, "sampler_s": 0.0, "upfront_s": 0.0,
                             "handed_over": False, "costs": ones, "trace": [v * (0.9 + 0.01 * s) for v in late]}
                            for s in range(3)]
                           + [{"space": "toy", "strategy": "gp", "seed": s, "sampler_s": 0.5, "upfront_s": 5.0,
                               "handed_over": False, "costs": ones, "trace": [min(1.0, v + 0.02 * s) for v in ramp]}
                              for s in range(3)])

    table = bench.summary(results, {"toy": SimpleNamespace(trial_seconds=5.0)}).set_index("strategy")
    assert table.at["random", "target"] == pytest.approx(0.91)  # the median of 0.90, 0.91, 0.92 at 40
    assert table.at["gp", "sampler_frac"] == pytest.approx(0.1) and table.at["gp", "upfront"] == pytest.approx(1.0)
    gp_costs = [bench.cost_to([min(1.0, v + 0.02 * s) for v in ramp], ones, 0.91, 0.1, 1.0) for s in range(3)]
    assert table.at["gp", "cost"] == pytest.approx(np.median(gp_costs))
    diffs = [min(1.0, ramp[19] + 0.02 * s) - late[19] * (0.9 + 0.01 * s) for s in range(3)]
    assert table.at["gp", "diff20"] == pytest.approx(np.mean(diffs))

    # the driver's seconds to judge a candidate: once per trial, and once per candidate of a pool
    pre = results.assign(strategy=results["strategy"].replace({"gp": "gp+pre:params:8:2"}))
    charged = bench.summary(pre, {"toy": SimpleNamespace(trial_seconds=5.0)}, {"toy": 0.25}).set_index("strategy")
    assert charged.at["gp+pre:params:8:2", "upfront"] == pytest.approx((5.0 + 8 * 0.25) / 5.0)
    assert charged.at["gp+pre:params:8:2", "evaluation_frac"] == pytest.approx(0.05)
    pre_costs = [bench.cost_to([min(1.0, v + 0.02 * s) for v in ramp], ones, 0.91, 0.1 + 0.05, 1.4) for s in range(3)]
    assert charged.at["gp+pre:params:8:2", "cost"] == pytest.approx(np.median(pre_costs))
    random_costs = [bench.cost_to([v * (0.9 + 0.01 * s) for v in late], ones, 0.91, 0.05) for s in range(3)]
    assert charged.at["random", "cost"] == pytest.approx(np.median(random_costs))

    # --target-trials 10: the target is random's median at 10 trials (0.5 x 0.91), the same replays
    near = bench.summary(results, {"toy": SimpleNamespace(trial_seconds=5.0)}, target_at=10).set_index("strategy")
    assert near.at["random", "target"] == pytest.approx(0.5 * 0.91) and near.at["gp", "target_at"] == 10
    gp_near = [bench.cost_to([min(1.0, v + 0.02 * s) for v in ramp], ones, 0.5 * 0.91, 0.1, 1.0) for s in range(3)]
    assert near.at["gp", "cost"] == pytest.approx(np.median(gp_near)) and near.at["gp", "cost"] < table.at["gp", "cost"]
    assert charged.at["random", "cost"] > table.at["random", "cost"]


def test_proxy_correlation_ranks_each_proxy_against_accuracy():
    bench = _load("proxy_correlation")
    frame = pd.DataFrame({"val_accuracy": [0.1, 0.5, 0.3, 0.9],
                          "params": [1, 3, 2, 4],  # same order as the accuracy
                          "macs": [4, 2, 3, 1],  # the reverse
                          "synflow": [1, 2, 3, np.nan],  # one without a value
                          "naswot": [1, 1, 1, 1], "grad_norm": [1, 2, 4, 3], "zico": [1, 3, 2, 4]})
    out = bench.correlations(frame)
    assert out["params"][:2] == pytest.approx((1.0, 1.0)) and out["macs"][:2] == pytest.approx((-1.0, -1.0))
    assert out["synflow"][2] == 3 and np.isnan(out["naswot"][0])
    assert out["grad_norm"][0] == pytest.approx(0.4)  # ranks 1 2 4 3 vs 1 3 2 4: 1 - 6*6/(4*15)


def test_sampler_quality_strategies_become_specs():
    bench = _load("sampler_quality")
    assert bench.parse("auto+asha+pre:zico:200:10") == {"sampler": "auto", "asha": True, "proxy": "zico", "pool": 200,
                                                         "keep": 10, "check": 0}
    assert bench.parse("auto+pre:params:80:20:10")["check"] == 10
    assert bench.parse("random+asha:accuracy")["asha"] == "accuracy"
    assert bench.parse("tpe") == {"sampler": "tpe", "asha": False, "proxy": None, "pool": bench.POOL,
                                  "keep": bench.KEEP, "check": 0}
    spec = bench.spec_for(bench.load_spec(BENCHMARKS / "sampler_spaces" / "quickstart_grid.yaml"), 3,
                          "auto+pre:params:80:20:10")
    assert spec.seed == 3 and spec.search.prescreen.check == 10 and spec.search.prescreen.keep == 20
    with pytest.raises(ValueError, match="unknown part 'hyperband'"):
        bench.parse("tpe+hyperband")
    assert bench.default_strategy().split("+")[0] == "auto"


def test_every_sampler_space_has_a_published_grid_per_training_seed():
    """The search-cost tables are computed from the committed grids: each space's spec loads (the
    user family of plainnet included) and each training seed's grid holds every point of it."""
    bench = _load("sampler_quality")
    assert set(bench.HELD_OUT) < set(bench.SPACES)
    for name, path in bench.SPACES.items():
        spec = bench.load_spec(path)
        size = int(np.prod([d.size for d in spec.searched()]))
        for seed in bench.TRAIN_SEEDS:
            trials = pd.read_csv(bench.published(name, seed) / "trials.csv")
            assert len(trials) == size, (name, seed)
            assert (trials["status"] == "completed").sum() > size // 4, (name, seed)


def test_evaluation_cost_times_every_point_and_prices_a_pool_in_full_trials(capsys):
    """The driver's evaluation of each depthwise point is timed (by main in a fresh process), and a
    full trial is the grids' median over configurations of each one's fastest train_seconds,
    computed here from the CSVs."""
    bench = _load("evaluation_cost")
    seconds = bench.evaluation_seconds("depthwise")
    assert len(seconds) == 96 and (seconds > 0).all()
    every = pd.concat([pd.read_csv(BENCHMARKS / "grids" / f"sq_depthwise_s{s}" / "trials.csv") for s in (0, 1, 2)])
    done = every[every["status"] == "completed"]
    names = ["c2_width", "c3_width", "c4_width", "c3_conv", "c4_conv", "downsample"]
    assert bench.full_trial_seconds("depthwise") == pytest.approx(done.groupby(names)["train_seconds"].min().median())
    assert bench.main(["--spaces", "depthwise"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row[0] == "depthwise" and row[1] == "96"
    assert float(row[5]) == pytest.approx(bench.POOL * float(row[3]) / float(row[4]), abs=0.02)
    assert lines[-1] == f"prescreen_evaluations_in_full_trials: {float(row[5]):.2f}"


def test_sampler_quality_skips_a_space_whose_dataset_is_not_here(monkeypatch, tmp_path):
    """A space whose proxies are not cached needs its dataset; without it (CIFAR-10 with no
    ARCHSCALE_DATA, no network) the space is skipped whole and said, the others go on."""
    bench = _load("sampler_quality")

    class Fake:
        def __init__(self, name, seed, folder, store):
            if name == "cifar":
                raise bench.DataError("cifar10: not found in $ARCHSCALE_DATA and no network to download it")
            self.name = name

    monkeypatch.setattr(bench, "Grid", Fake)
    folders = {(name, seed): tmp_path for name in ("quickstart", "cifar") for seed in (0, 1)}
    out = io.StringIO()
    grids, names = bench.read_grids(folders, ["quickstart", "cifar"], tmp_path, out)
    assert names == ["quickstart"] and sorted(grids) == [("quickstart", 0), ("quickstart", 1)]
    assert out.getvalue().count("skipped: space cifar") == 1 and "ARCHSCALE_DATA" in out.getvalue()
