"""Finding a family by name, and building an architecture's model.

A name is a registered family (archscale's own, declared by :func:`space.registry.register_space`),
a user's ``package.module:ClassName`` (imported and registered, :mod:`space.user`), or a family an
installed package declares in the ``archscale.spaces`` entry points. This module sits above
:mod:`space.registry` and :mod:`space.user`, which do not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from archscale.space import user
from archscale.space.arch import Arch
from archscale.space.registry import SearchSpace, SpaceError, registered, registered_names

if TYPE_CHECKING:  # torch only names the type of a built model
    from torch import nn


def get_space(name: str) -> SearchSpace:
    """The family called ``name``: a registered one, a user's ``package.module:ClassName``
    (imported and registered, :mod:`space.user`), or one an installed package declares in the
    ``archscale.spaces`` entry points."""
    if user.is_reference(name):
        return user.load_family(name)
    space = registered(name) or user.from_entry_point(name)
    if space is None:
        raise SpaceError("family", f"unknown family {name!r}; known: {', '.join(list_spaces())}, "
                                   "or a family of your own as package.module:ClassName")
    return space


def list_spaces() -> list[str]:
    """The registered families and those declared in the ``archscale.spaces`` entry points."""
    return sorted({*registered_names(), *user.entry_point_names()})


def build(arch: Arch | str) -> nn.Module:
    """Build the PyTorch model of an architecture (or of its text form)."""
    if isinstance(arch, str):
        arch = Arch.from_text(arch)
    space = get_space(arch.family)
    arch = space.resolve(arch.params)  # validates a hand-written or stored arch
    model = space.build_model(arch)
    import torch  # a family's network is torch's; declaring and resolving one needs no torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"family {space.name!r}: build_model returned {type(model).__name__}, not a torch.nn.Module")
    if any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in model.parameters()):
        # lazy modules (nn.LazyLinear, ...) take their shapes from a first forward pass: one image of the dataset's size
        p = arch.params
        training = model.training
        with torch.no_grad():
            model.eval()(torch.zeros(1, int(p["in_channels"]), int(p["image_size"]), int(p["image_size"])))
        model.train(training)
    return model
