"""Every kind of bad input: exit status 2, one clear line naming the field, no traceback,
nothing written."""

import pytest
import yaml

from archscale.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clear_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


BAD_SPECS = [
    ("unknown top-level key", {"colour": "red"}, ["colour", "unknown key", "name, seed, data, space, train, search"]),
    ("unknown nested key", {"train": {"epoch": 3}}, ["train.epoch", "unknown key", "epochs"]),
    ("wrong type", {"train": {"epochs": "many"}}, ["train.epochs", "many"]),
    ("below a training bound", {"train": {"epochs": 0}}, ["train.epochs", "greater than or equal to 1", "got 0"]),
    ("empty choice list", {"space": {"params": {"c1_width": []}}}, ["space.params.c1_width", "empty"]),
    ("range low > high", {"space": {"params": {"c1_width": {"low": 16, "high": 8}}}}, ["space.params.c1_width", "low (16) is greater than high (8)"]),
    ("value not allowed", {"space": {"params": {"c2_conv": "fancy"}}}, ["space.params.c2_conv", "'fancy'", "'regular', 'depthwise', 'dilated'"]),
    ("unknown parameter", {"space": {"params": {"c9_width": 3}}}, ["space.params.c9_width", "unknown parameter"]),
    ("unknown family", {"space": {"family": "transformer"}}, ["space.family", "'transformer'", "budgeted"]),
    ("unknown dataset", {"data": {"dataset": "imagenet"}}, ["data.dataset", "'imagenet'", "mnist-5k"]),
    ("unknown sampler", {"search": {"sampler": "bayes"}}, ["search.sampler", "bayes", "'tpe'"]),
    ("unknown objective", {"search": {"objectives": ["accuracy:max"]}}, ["search.objectives", "'accuracy'", "val_accuracy"]),
    ("unknown proxy", {"search": {"proxies": ["synflow", "jacob_cov"]}},
     ["search.proxies", "'jacob_cov'", "naswot", "zico"]),
    ("a proxy twice", {"search": {"proxies": ["zico", "zico"]}}, ["search.proxies", "twice"]),
    ("objective without direction", {"search": {"objectives": ["macs"]}}, ["search.objectives", ":max"]),
    ("reference point metric", {"search": {"reference_point": {"accuracy": 0.5}}},
     ["search.reference_point", "'accuracy'", "latency_ms"]),
    ("latency budget", {"space": {"max_latency_ms": -1}}, ["space.max_latency_ms", "greater than 0"]),
    ("unknown recipe", {"train": {"recipe": "airbench"}}, ["train.recipe", "'airbench'", "davidnet"]),
    ("negative seed", {"seed": -5}, ["seed", "greater than or equal to 0", "got -5"]),  # NumPy's error, exit 1, before
]


@pytest.mark.parametrize("label,patch,fragments", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_spec(tmp_path, capsys, write_spec, tiny_spec, label, patch, fragments, command):
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(tiny_spec.get(key), dict):
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(tiny_spec[key].get(k), dict):
                    tiny_spec[key][k].update(v)
                else:
                    tiny_spec[key][k] = v
        else:
            tiny_spec[key] = value
    spec = write_spec(tiny_spec)
    out_dir = tmp_path / "run"
    extra = ["--out", out_dir] if command == "run" else []
    code, _, err = run_cli(capsys, command, spec, *extra)
    assert_clear_error(code, err, *fragments)
    assert not out_dir.exists()


def test_missing_spec_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "check", tmp_path / "nope.yaml")
    assert_clear_error(code, err, "nope.yaml", "does not exist")


def test_yaml_syntax_error_reports_the_line(capsys, write_spec):
    spec = write_spec("name: x\ndata:\n  dataset: [mnist\ntrain:\n  epochs: 1\n")
    code, _, err = run_cli(capsys, "check", spec)
    assert_clear_error(code, err, "YAML syntax error", "line ")


def test_budget_no_configuration_can_meet(tmp_path, capsys, write_spec, tiny_spec):
    tiny_spec["space"]["max_params"] = 50
    spec = write_spec(tiny_spec)
    code, _, err = run_cli(capsys, "check", spec)
    assert_clear_error(code, err, "no configuration meets the budgets")
    code, _, err = run_cli(capsys, "run", spec, "--out", tmp_path / "run")
    assert_clear_error(code, err, "no sampled configuration meets the budgets", "(max_params=50)", "> max_params 50")
    assert not (tmp_path / "run").exists()


def test_run_refuses_a_latency_budget_nothing_meets_as_check_does(tmp_path, capsys, write_spec, tiny_spec):
    tiny_spec["space"].update(max_params=None, max_latency_ms=1e-6)  # no forward pass takes a nanosecond
    code, _, err = run_cli(capsys, "run", write_spec(tiny_spec), "--out", tmp_path / "run")
    assert_clear_error(code, err, "no sampled configuration meets the budgets (max_latency_ms=1e-06)",
                       "> max_latency_ms 1e-06")
    assert not (tmp_path / "run").exists()


def test_set_on_a_path_that_does_not_exist(tmp_path, capsys, write_spec, tiny_spec):
    spec = write_spec(tiny_spec)
    code, _, err = run_cli(capsys, "check", spec, "--set", "train.learning_rate=0.1")
    assert_clear_error(code, err, "--set train.learning_rate", "no field 'learning_rate'", "lr")
    code, _, err = run_cli(capsys, "check", spec, "--set", "space.params.c1_width.low=3")
    assert code == 2 and "Traceback" not in err


def test_set_overrides_fields(capsys, write_spec, tiny_spec):
    spec = write_spec(tiny_spec)
    code, out, err = run_cli(capsys, "check", spec, "--set", "search.num_trials=7", "--set", "space.params.c1_width=[2,3]")
    assert code == 0, err
    assert "7 trials" in out and "c1_width: choice of 2, 3" in out


def test_a_named_recipe_fills_the_fields_the_spec_leaves_out(tiny_spec):
    from archscale.spec import Spec
    from archscale.trainer import RECIPES

    tiny_spec["train"] = {"recipe": "davidnet", "epochs": 2, "lr": [0.2, 0.4]}
    train = Spec.model_validate(tiny_spec).train
    values = train.values()
    assert "recipe" not in values  # the trainer gets the fields, not the name
    for key, value in RECIPES["davidnet"].items():
        if key not in ("epochs", "lr"):
            assert values[key] == value, key
    assert values["epochs"] == 2  # the spec's own value wins
    assert [d.values for d in train.dimensions()] == [(0.2, 0.4)]  # and a searched field stays searched
    # the resolved spec keeps the name and the filled values: reading it back gives the same recipe
    again = Spec.model_validate({**tiny_spec, "train": train.model_dump()}).train
    assert again.values() == values and again.dimensions() == train.dimensions()


def test_resume_of_a_directory_without_a_run(tmp_path, capsys, write_spec, tiny_spec):
    spec = write_spec(tiny_spec)
    code, _, err = run_cli(capsys, "run", spec, "--out", tmp_path / "empty", "--resume")
    assert_clear_error(code, err, "--resume", "holds no run")


def test_run_into_a_directory_holding_another_run(tmp_path, capsys, write_spec, tiny_spec):
    spec = write_spec(tiny_spec)
    other = tmp_path / "other"
    other.mkdir()
    (other / "spec.yaml").write_text(yaml.safe_dump({"name": "other"}))
    before = (other / "spec.yaml").read_text()
    code, _, err = run_cli(capsys, "run", spec, "--out", other)
    assert_clear_error(code, err, "already holds a run", "--resume", "--out")
    assert (other / "spec.yaml").read_text() == before
    code, _, err = run_cli(capsys, "run", spec, "--out", other, "--resume")
    assert_clear_error(code, err, "--resume", "differs")


def test_pareto_and_export_of_a_non_run(tmp_path, capsys):
    for command in ("pareto", "export"):
        code, _, err = run_cli(capsys, command, tmp_path)
        assert_clear_error(code, err, "not a run directory")


def test_spaces_lists_the_family(capsys):
    code, out, _ = run_cli(capsys, "spaces")
    assert code == 0 and "budgeted" in out and "c1_conv" in out and "downsample" in out
    code, _, err = run_cli(capsys, "spaces", "nope")
    assert_clear_error(code, err, "unknown family 'nope'")


def test_latency_is_an_objective_and_a_budget(capsys, write_spec, tiny_spec):
    tiny_spec["search"]["objectives"] = ["val_accuracy:max", "latency_ms:min"]
    tiny_spec["space"]["max_latency_ms"] = 1000.0
    code, out, err = run_cli(capsys, "check", write_spec(tiny_spec), "--samples", "4")
    assert code == 0, err
    assert "latency_ms:min" in out and "max_latency_ms=1,000.0" in out
    tiny_spec["space"]["max_latency_ms"] = 1e-6  # nothing runs a forward pass in a nanosecond
    code, _, err = run_cli(capsys, "check", write_spec(tiny_spec), "--samples", "4")
    assert_clear_error(code, err, "no configuration meets the budgets")


def test_budget_violation_names_the_latency():
    from archscale.search.configs.context import TrialContext
    from archscale.search.configs.evaluate import budget_violation

    ctx = TrialContext(run_dir=".", family="budgeted", fixed={}, data_context={}, data_info={}, train={},
                       max_params=100, max_latency_ms=2.0)
    assert budget_violation(ctx, 50, 10, 1.5) == ''
    assert budget_violation(ctx, 50, 10, 2.5) == "latency_ms 2.500 > max_latency_ms 2"
    assert budget_violation(ctx, 500, 10, 2.5) == "params 500 > max_params 100; latency_ms 2.500 > max_latency_ms 2"


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("resource", ["cpu", "gpu"])
def test_a_trial_no_node_can_hold_is_refused_before_anything_is_written(tmp_path, capsys, write_spec, tiny_spec,
                                                                        resource, monkeypatch):
    import ray

    # past the count of cores made before Ray starts (tests/search/dispatch/test_resources.py): Ray's own count decides
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(1024)))
    has = int(ray.cluster_resources().get(resource.upper(), 0))  # the session's Ray: 2 CPUs, the GPUs there are
    tiny_spec["search"]["resources_per_trial"] = {resource: has + 1}
    code, _, err = run_cli(capsys, "run", write_spec(tiny_spec), "--out", tmp_path / "run")
    assert_clear_error(code, err, f"search.resources_per_trial.{resource}: {has + 1} {resource.upper()} per trial, "
                       f"but this machine's Ray has {has}",
                       f"allowed: at most {has}" if has else "allowed: 0 (no node has a GPU)")
    assert not (tmp_path / "run").exists()


def test_a_base_designed_for_another_input_side_is_refused_unless_allowed(tmp_path, capsys, write_spec, tiny_spec):
    """mnist-5k is 28 px: resnet18_224 (torchvision's strides, 224 px) is more than 2x away."""
    tiny_spec["space"] = {"family": "efficientnet", "params": {"base": ["resnet18", "resnet18_224"],
                                                                "base_width": 0.125}}
    spec = write_spec(tiny_spec)
    for command in ("check", "run"):
        extra = ["--out", tmp_path / "run"] if command == "run" else []
        code, _, err = run_cli(capsys, command, spec, *extra)
        assert_clear_error(code, err, "space.params.base: base resnet18_224 is designed for 224 px inputs",
                           "the dataset's images are 28 px", "base resnet18 suits 28 px",
                           "space.allow_resolution_mismatch: true")
        assert not (tmp_path / "run").exists()
    code, out, err = run_cli(capsys, "check", spec, "--set", "space.allow_resolution_mismatch=true")
    assert code == 0 and "2 of 2 configurations fit" in out, err


def test_the_side_compared_is_data_image_size_for_an_image_folder(tmp_path, capsys, write_spec, tiny_spec):
    """The side the model gets: an image folder's data.image_size, not its files' sizes."""
    from tests.conftest import FOLDER_SIDE, make_image_folder

    folder = make_image_folder(tmp_path / "pets")
    tiny_spec["data"] = {"dataset": f"imagefolder:{folder}", "image_size": FOLDER_SIDE, "root": str(tmp_path / "data")}
    tiny_spec["space"] = {"family": "efficientnet", "params": {"base": "effnet_b0_224", "base_width": 0.125}}
    code, _, err = run_cli(capsys, "check", write_spec(tiny_spec))
    assert_clear_error(code, err, f"the dataset's images are {FOLDER_SIDE} px", f"data.image_size {FOLDER_SIDE}",
                       f"base effnet_b0 suits {FOLDER_SIDE} px")
