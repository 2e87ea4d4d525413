"""A run's ``spec.yaml`` read as the typed spec (:class:`archscale.spec.Spec`).

A run directory written by an older archscale still loads: fields added since take their
defaults, as in a fresh spec. A file that is not a YAML mapping is a ``FileError``; one that
today's spec model refuses is a ``SpecError`` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path

from archscale.analysis.records import read_spec
from archscale.spec import Spec, SpecError, parse_spec

SPEC_FILE = "spec.yaml"


def load_run_spec(run_dir: str | Path) -> Spec:
    """A run's ``spec.yaml``, validated: FileError when it is not a YAML mapping, SpecError
    naming the file and the field when it is not a valid spec."""
    path = Path(run_dir) / SPEC_FILE
    try:
        return parse_spec(read_spec(run_dir))
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
