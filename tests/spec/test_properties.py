"""Property tests: whatever a user writes in a spec or a ``--set``, ``archscale check`` and
spec parsing answer with exit 0 or a one-line input error (exit 2), never a traceback or
exit 1, and an existing run directory is never changed."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archscale.cli import main
from archscale.spec import SpecError, parse_spec

BASE = {"name": "prop", "seed": 0, "data": {"dataset": "mnist-5k", "subset": 0.1},
        "space": {"family": "budgeted", "params": {"c1_width": [4, 8]}},
        "train": {"epochs": 1}, "search": {"sampler": "random", "num_trials": 2}}
FIELDS = {"name": None, "seed": None,
          "data": ("dataset", "root", "val_fraction", "subset", "image_size", "max_device_mb"),
          "space": ("family", "params", "max_params", "max_macs", "max_latency_ms", "max_memory_mb",
                    "allow_resolution_mismatch", "family_path"),
          "train": ("epochs", "batch_size", "lr", "recipe", "optimizer", "label_smoothing", "mixup", "device"),
          "search": ("sampler", "num_trials", "objectives", "max_concurrent", "resources_per_trial", "scheduler",
                     "asha", "reference_point", "stages", "store", "address", "time_budget_s")}
# datasets that need no network: a download attempt would make a case slow, not wrong
DATASETS = st.sampled_from(["mnist-5k", "npz:missing.npz", "imagefolder:nowhere", "npz:", "cifar", "Ünïcødé"])

scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(["", "auto", "max", "val_accuracy:max", "grid", "0", "-1", "1e9"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.sampled_from(["low", "high", "step", "log"]),
                                        inner, max_size=4), max_leaves=12)


@st.composite
def specs(draw) -> dict:
    """A valid base spec with some fields replaced by anything, unknown keys added, or a
    section replaced whole; now and then not a mapping at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(values)
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(FIELDS)))
        keys = FIELDS[section]
        how = draw(st.integers(0, 5))
        if keys is None or how == 0:
            spec[section] = draw(values)
        elif not isinstance(spec.get(section), dict):
            spec[section] = {}
        elif how == 1:
            spec[section][draw(st.text(min_size=1, max_size=10))] = draw(values)  # an unknown key, most likely
        elif how == 2 and section == "data":
            spec[section]["dataset"] = draw(DATASETS)
        else:
            spec[section][draw(st.sampled_from(keys))] = draw(values)
    if isinstance(spec.get("data"), dict) and isinstance(spec["data"].get("dataset"), str) \
            and spec["data"]["dataset"] not in ("mnist-5k",) and not spec["data"]["dataset"].startswith(("npz:", "imagefolder:")):
        spec["data"]["dataset"] = "mnist-5k"  # a torchvision name would try the network: slow, not wrong
    if isinstance(spec.get("data"), dict):
        spec["data"].pop("root", None)  # check may write a decoded folder there: keep it in the case's folder
    return spec


@contextlib.contextmanager
def in_fresh_folder():
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(before)


def check(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as done:  # argparse's own usage errors ("--set -=": an option, not its value)
            code = done.code
    return code, err.getvalue()


def assert_answered(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err, err
    if code == 2:
        assert err.startswith("archscale: error: ") or err.startswith("usage: "), err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_dir(folder: Path) -> Path:
    run = folder / "runs" / "prop"
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text(parse_spec(BASE).to_yaml())
    (run / "trials.csv").write_text("trial_id,status,val_accuracy,macs\nt0,completed,0.5,1000\n")
    return run


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", 40)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_check_of_any_spec_exits_0_or_2_and_changes_no_run(raw):
    with in_fresh_folder() as folder:
        run = _run_dir(folder)
        before = _snapshot(run)
        Path("spec.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
        assert_answered(*check(["check", "spec.yaml", "--samples", "1"]))
        assert _snapshot(run) == before


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", 60)), deadline=None)
@given(specs())
def test_parsing_any_spec_raises_only_spec_error(raw):
    try:
        parse_spec(raw) if isinstance(raw, dict) else None
    except SpecError as err:
        assert "\n" not in str(err) and str(err)


KEYS = st.sampled_from([f"{s}.{k}" for s, keys in FIELDS.items() for k in (keys or ())]
                       + list(FIELDS) + ["space.params.c1_width", "space.params.nope", "data..root", ".", "a.b.c.d"])


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", 40)), deadline=None)
@given(st.lists(st.tuples(KEYS | st.text(max_size=10), st.text(max_size=16) | st.sampled_from(
    ["[1, 2]", "{low: 1, high: 2}", "null", "-5", "1e400", "[", "{a: {b: {c: []}}}", "cifar10"])), min_size=1,
    max_size=3))
def test_check_with_any_set_arguments_exits_0_or_2_and_changes_no_run(assignments):
    argv = []
    for key, value in assignments:
        if key in ("data.dataset", "data") or value == "cifar10" or key.startswith("data.root"):
            value = "mnist-5k" if key == "data.dataset" else value.replace("cifar10", "x")  # no network, no writes
        argv += ["--set", f"{key}={value}"]
    with in_fresh_folder() as folder:
        run = _run_dir(folder)
        before = _snapshot(run)
        Path("spec.yaml").write_text(yaml.safe_dump(BASE))
        assert_answered(*check(["check", "spec.yaml", "--samples", "1", *argv]))
        assert _snapshot(run) == before


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", 40)), deadline=None)
@given(specs(), st.booleans())
def test_preparing_a_run_directory_never_changes_an_existing_run(raw, resume):
    from archscale.search.jobs.rundir import prepare_run_dir

    with in_fresh_folder() as folder:
        run = _run_dir(folder)
        before = _snapshot(run)
        try:
            spec = parse_spec(raw) if isinstance(raw, dict) else None
        except SpecError:
            spec = None
        if spec is not None:
            try:
                prepare_run_dir(spec, run, resume)
            except SpecError as err:
                assert "\n" not in str(err)
        assert _snapshot(run) == before
