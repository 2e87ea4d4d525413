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
