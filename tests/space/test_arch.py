import pytest

from archscale.space import Arch, ArchTextError


def test_text_round_trip_of_every_value_type():
    arch = Arch("fam", {"w": 16, "ratio": 0.25, "tiny": 1e-05, "whole": 2.0, "on": True, "off": False, "kind": "depthwise"})
    text = arch.text
    assert text == "fam:kind=depthwise,off=false,on=true,ratio=0.25,tiny=1e-05,w=16,whole=2.0"
    back = Arch.from_text(text)
    assert back == arch
    assert dict(back.params) == dict(arch.params)
    assert type(back["whole"]) is float and type(back["w"]) is int and back["on"] is True


def test_arch_is_immutable_and_replace_returns_a_new_one():
    arch = Arch("fam", {"w": 1})
    with pytest.raises(TypeError):
        arch.params["w"] = 2  # type: ignore[index]
    wider = arch.replace(w=2)
    assert arch["w"] == 1 and wider["w"] == 2


@pytest.mark.parametrize("text", ["nofamily", "fam:w", "fam:w=1,w=2", "fam:w=a b", "1fam:w=1"])
def test_bad_text_is_rejected(text):
    with pytest.raises(ArchTextError):
        Arch.from_text(text)


@pytest.mark.parametrize("value", ["true", "12", "1.5", "has space", [1]])
def test_values_the_text_form_cannot_hold_are_rejected(value):
    with pytest.raises(ArchTextError):
        Arch("fam", {"x": value})
