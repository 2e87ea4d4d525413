"""The typed spec: what a YAML spec file may say, validated by pydantic, below the layers that
read it (``analysis`` reads a run's ``spec.yaml`` through it, ``search`` runs it).

- :mod:`.sections`: the data, space and train sections (``train`` is made from
  :class:`archscale.trainer.TrainConfig`);
- :mod:`.model`: the search section and :class:`Spec`;
- :mod:`.load`: reading a file, ``--set`` overrides, one readable line per error;
- :mod:`.objectives`: the metrics a front is taken over;
- :mod:`.errors`: :class:`SpecError`, which imports nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from archscale import lazy_exports

_MODULE_OF = {
    "SpecError": "errors",
    **dict.fromkeys(("apply_override", "format_validation_error", "load_spec", "parse_spec", "read_yaml"), "load"),
    **dict.fromkeys(("SearchSpec", "Spec"), "model"),
    **dict.fromkeys(("SEARCHABLE_TRAIN", "DataSpec", "Dimension", "SpaceSpec", "TrainSpec"), "sections"),
}

__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:
    from archscale.spec.errors import SpecError
    from archscale.spec.load import apply_override, format_validation_error, load_spec, parse_spec, read_yaml
    from archscale.spec.model import SearchSpec, Spec
    from archscale.spec.sections import SEARCHABLE_TRAIN, DataSpec, Dimension, SpaceSpec, TrainSpec

__getattr__, __dir__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _MODULE_OF.items()},
                                   globals())
