"""The spec's ``train`` section is ``trainer.TrainConfig``'s list of fields: the same names,
defaults, bounds, allowed values and docs (all but ``seed``, the spec's top-level one), and
its values build a TrainConfig as they are."""

import dataclasses

import pytest
import yaml

from archscale.cli import main
from archscale.spec import SEARCHABLE_TRAIN, Spec, SpecError, TrainSpec, parse_spec
from archscale.trainer import TrainConfig

FIELDS = [f for f in dataclasses.fields(TrainConfig) if f.name != "seed"]
BOUNDS = [(f.name, kind, f.metadata[kind]) for f in FIELDS for kind in ("ge", "gt", "le", "lt") if kind in f.metadata]
# A value just outside each kind of bound, and how pydantic words the bound.
OUTSIDE = {"ge": (-1, "greater than or equal to"), "gt": (0, "greater than"),
           "le": (1, "less than or equal to"), "lt": (0, "less than")}


def train_error(train: dict) -> str:
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "x", "train": train})
    message = str(err.value)
    assert "\n" not in message
    return message


def test_every_training_field_but_seed_is_a_spec_field_with_its_default_and_doc():
    assert [name for name in TrainSpec.model_fields if name != "recipe"] == [f.name for f in FIELDS]
    for f in FIELDS:
        spec_field = TrainSpec.model_fields[f.name]
        assert (spec_field.default, spec_field.description) == (f.default, f.metadata["doc"]), f.name
    assert Spec.model_validate({"name": "x"}).train.epochs == TrainConfig().epochs == 5


@pytest.mark.parametrize("name,kind,limit", BOUNDS, ids=[f"{n}-{k}" for n, k, _ in BOUNDS])
def test_bounds_come_through(name, kind, limit):
    offset, words = OUTSIDE[kind]
    bad = limit + offset
    message = train_error({name: bad})
    assert message.startswith(f"train.{name}: ") and f"{words} {limit}" in message, message
    with pytest.raises(ValueError, match=rf"TrainConfig\.{name}: {bad!r} is not allowed"):
        TrainConfig(**{name: bad})
    if kind in ("ge", "le"):  # an inclusive bound is itself allowed
        assert getattr(parse_spec({"name": "x", "train": {name: limit}}).train, name) == limit
        assert getattr(TrainConfig(**{name: limit}), name) == limit

def test_epochs_zero_is_one_line_naming_the_field_and_the_bound(capsys, write_spec, tiny_spec):
    tiny_spec["train"]["epochs"] = 0
    assert main(["check", str(write_spec(tiny_spec))]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "archscale: error: train.epochs: Input should be greater than or equal to 1 (got 0)"


@pytest.mark.parametrize("f", [f for f in FIELDS if f.metadata["choices"]], ids=lambda f: f.name)
def test_allowed_values_come_through(f):
    message = train_error({f.name: "bogus"})
    assert message.startswith(f"train.{f.name}: ") and "'bogus'" in message
    assert all(repr(choice) in message for choice in f.metadata["choices"]), message
    with pytest.raises(ValueError, match=rf"TrainConfig\.{f.name}: 'bogus' is not allowed"):
        TrainConfig(**{f.name: "bogus"})


@pytest.mark.parametrize("f", FIELDS, ids=lambda f: f.name)
def test_a_field_may_be_searched_exactly_when_its_metadata_says_so(f):
    if f.metadata["searchable"]:
        dims = parse_spec({"name": "x", "train": {f.name: [f.default]}}).train.dimensions()
        assert [(d.name, d.values) for d in dims] == [(f"train.{f.name}", (f.default,))]
    else:
        message = train_error({f.name: [f.default]})
        assert message.startswith(f"train.{f.name}: cannot be searched; searchable: epochs, "), message
    assert (f.name in SEARCHABLE_TRAIN) == f.metadata["searchable"]

def test_the_seed_is_the_spec_seed_not_a_training_field():
    assert "seed" not in TrainSpec.model_fields
    assert train_error({"seed": 3}) == "train.seed: the seed is the spec's top-level 'seed', not a training field"


def test_values_build_a_train_config_as_they_are(tiny_spec):
    tiny_spec["train"] = {"recipe": "davidnet", "epochs": 2, "lr": [0.2, 0.4], "device": "cpu"}
    values = Spec.model_validate(tiny_spec).train.values()
    cfg = TrainConfig(**values)
    assert dataclasses.asdict(cfg) == {**values, "seed": 0}
    assert (cfg.epochs, cfg.lr, cfg.cutout, cfg.device) == (2, 0.2, 8, "cpu")  # spec, first choice, recipe, spec
    assert TrainConfig(**Spec.model_validate({"name": "x"}).train.values()) == TrainConfig()


def test_check_prints_the_training_dimensions_as_before(capsys, write_spec, tiny_spec):
    tiny_spec["train"] = {"epochs": {"low": 1, "high": 3}, "batch_size": 64, "lr": [0.05, 0.1],
                          "optimizer": ["sgd", "adamw"], "warmup": {"low": 0.1, "high": 0.3}, "flip": [False, True],
                          "precision": "fp32"}
    assert main(["check", str(write_spec(tiny_spec)), "--samples", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  train.")]
    assert lines == ["  train.epochs: int range [1, 3]",  # in the file's order (write_spec sorts the keys)
                     "  train.flip: choice of False, True",
                     "  train.lr: choice of 0.05, 0.1",
                     "  train.optimizer: choice of 'sgd', 'adamw'",
                     "  train.warmup: float range [0.1, 0.3]"]


@pytest.mark.parametrize("search, expected", [
    ({"num_trials": 40}, {"proxy": "vote", "pool": 80, "keep": 10, "check": 0}),  # the default search, by evidence
    ({"num_trials": 30}, {"proxy": "vote", "pool": 80, "keep": 10, "check": 0}),
    ({"num_trials": 29}, None),  # its 10 would be more than the sampler's own start-up
    ({"num_trials": 40, "sampler": "tpe"}, None),  # a sampler the user chose is searched as asked
    ({"num_trials": 64, "sampler": "grid"}, None),
    ({"num_trials": 40, "prescreen": None}, None),  # null: no prescreen
    ({"num_trials": 40, "prescreen": {"proxy": "zico", "keep": 5}}, {"proxy": "zico", "pool": 80, "keep": 5,
                                                                     "check": 0}),
])
def test_the_default_prescreen_applies_only_where_the_benchmark_chose_it(search, expected):
    raw = {"name": "x", "space": {"family": "budgeted", "params": {"c1_width": [4, 8, 12]}}, "search": search}
    spec = parse_spec(raw)
    pre = spec.search.prescreen
    assert (pre.model_dump() if pre else None) == expected
    again = parse_spec(yaml.safe_load(spec.to_yaml()))  # the resolved spec.yaml a resume reads
    assert again.search.prescreen == spec.search.prescreen


def test_nothing_searched_gets_no_default_prescreen():
    assert parse_spec({"name": "x", "search": {"num_trials": 40}}).search.prescreen is None


def test_check_says_what_the_default_prescreen_does(capsys, write_spec, tiny_spec):
    tiny_spec["search"] = {**tiny_spec.get("search", {}), "sampler": "auto", "num_trials": 40}
    assert main(["check", str(write_spec(tiny_spec)), "--samples", "2"]) == 0
    assert ("prescreen: vote ranks 80 random candidates; its best 10 train first (search.prescreen: null turns it "
            "off)") in capsys.readouterr().out.splitlines()
