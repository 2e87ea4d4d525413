"""Search spaces: building blocks, families, a registry and ``build(arch)``.

Pure PyTorch: nothing here imports the trainer, the search or the analysis.
"""

from archscale.space.arch import Arch, ArchTextError
from archscale.space.scaling import BASES, NetConfig, StageConfig, make_divisible, scale
from archscale.space.registry import CONTEXT_PARAMS, Param, SearchSpace, SpaceError, build, get_space, list_spaces, register_space

# Importing a family module registers it; a user's own family is imported when named (space.user).
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
