"""Search spaces: building blocks, families, a registry and ``build(arch)``.

Nothing here imports the trainer, the search or the analysis. Importing the package, listing
the families and resolving (validating) an architecture load no torch: each built-in family
declares itself in its module here and builds its network from :mod:`space.nets` (PyTorch),
imported by ``build_model``.
"""

from archscale.space.arch import Arch, ArchTextError
from archscale.space.scaling import BASES, NetConfig, StageConfig, make_divisible, scale
from archscale.space.registry import CONTEXT_PARAMS, Param, SearchSpace, SpaceError, register_space
from archscale.space.families import build, get_space, list_spaces

# Importing a family module registers it (its network, in space.nets, is imported when built);
# a user's own family is imported when named (space.user).
from archscale.space import budgeted as _budgeted  # noqa: F401
from archscale.space import davidnet as _davidnet  # noqa: F401
from archscale.space import efficientnet as _efficientnet  # noqa: F401

__all__ = [
    "Arch",
    "BASES",
    "NetConfig",
    "StageConfig",
    "make_divisible",
    "scale",
    "ArchTextError",
    "CONTEXT_PARAMS",
    "Param",
    "SearchSpace",
    "SpaceError",
    "build",
    "get_space",
    "list_spaces",
    "register_space",
]
