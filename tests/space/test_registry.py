import pytest

from archscale.space import Param, SearchSpace, SpaceError, get_space, list_spaces, register_space


def test_duplicate_family_name_raises():
    class Again(SearchSpace):
        name = "budgeted"
        description = "a second budgeted"
        params = ()

    with pytest.raises(ValueError, match="already registered"):
        register_space(Again)
    assert type(get_space("budgeted")).__name__ == "Budgeted"


def test_unknown_family_names_the_known_ones():
    with pytest.raises(SpaceError, match="unknown family 'nope'; known: budgeted"):
        get_space("nope")
    assert "budgeted" in list_spaces()


def test_param_coercion_and_messages():
    p = Param("w", 8, "width", low=1, high=64)
    assert p.coerce(16) == 16
    with pytest.raises(SpaceError, match=r"value 0 is out of range; allowed: int in \[1, 64\]"):
        p.coerce(0)
    with pytest.raises(SpaceError, match="not allowed"):
        p.coerce(True)  # a bool is not an int here
    f = Param("r", 0.5, "ratio", low=0.0, high=1.0)
    assert f.coerce(1) == 1.0 and isinstance(f.coerce(1), float)
    c = Param("kind", "a", "kind", choices=("a", "b"))
    with pytest.raises(SpaceError, match="value 'z' is not allowed; allowed: one of 'a', 'b'"):
        c.coerce("z")


def test_resolve_rejects_unknown_parameters():
    with pytest.raises(SpaceError, match="zzz: unknown parameter"):
        get_space("budgeted").resolve({"zzz": 1})


@pytest.mark.parametrize("param, said", [
    (Param("width", 300, "channels", low=1, high=256), "parameter 'width': default 300 is outside its own range; "
                                                       "allowed: int in [1, 256]"),
    (Param("kernel", 4, "kernel", choices=(3, 5)), "parameter 'kernel': default 4 is outside its own choices; "
                                                   "allowed: one of 3, 5"),
])
def test_a_default_outside_its_own_range_or_choices_is_refused_when_registered(param, said):
    class Odd(SearchSpace):
        name = "odd_defaults"
        description = "a default its own declaration forbids"
        params = (param,)

    with pytest.raises(SpaceError) as err:
        register_space(Odd)
    assert str(err.value) == f"family 'odd_defaults': {said}"
    assert "odd_defaults" not in list_spaces()


def test_a_user_family_with_a_default_outside_its_range_exits_2_naming_family_and_parameter(tmp_path, monkeypatch,
                                                                                           capsys):
    from archscale.cli import main
    from archscale.space import registry, user

    (tmp_path / "odd_family.py").write_text(
        "from archscale.space import Param, SearchSpace\n\n\n"
        "class Odd(SearchSpace):\n    name = 'odd_family'\n    description = 'a bad default'\n"
        "    params = (Param('width', 0, 'channels', low=1, high=64),)\n\n"
        "    def build_model(self, arch):\n        raise NotImplementedError\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    before = dict(registry._REGISTRY)
    assert main(["spaces", "odd_family:Odd"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("archscale: error: family: odd_family:Odd: family 'odd_family', parameter 'width': default 0 is "
                           "outside its own range; allowed: int in [1, 64]")
    assert registry._REGISTRY == before and "odd_family" not in user._LOADED
