"""Makes this Python look like the lent GPU machine's image: the packages that image lacks
cannot be imported (``ModuleNotFoundError``, as there). Put this folder first on
``PYTHONPATH`` (``gpu_session.sh smoke`` does, for itself and every Python it starts).

The image has torch, torchvision, numpy, pandas, matplotlib, pyyaml, onnx, onnxruntime, timm
and pytest; ``GPU_IMAGE_MISSING`` (comma-separated) overrides the list below. A folder of
carried packages on ``PYTHONPATH`` (``ARCHSCALE_PYDEPS``, see ``gpu_session.sh``) is allowed
through, as it would be there: only what is found elsewhere is refused."""

from __future__ import annotations

import os
import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import PathFinder

MISSING = ("ray", "optuna", "fvcore", "iopath", "yacs", "pydantic", "pydantic_core", "mlxtend")


class _GpuImage(MetaPathFinder):
    def __init__(self, missing: set[str], allowed: list[str]):
        self.missing, self.allowed = missing, allowed

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in self.missing:
            return None
        if self.allowed and path is None:  # a top-level package: found in a carried folder, it exists there
            spec = PathFinder.find_spec(name, self.allowed)
            if spec is not None:
                return spec
        elif self.allowed and path is not None:
            return None  # a submodule of a package that was let through
        raise ModuleNotFoundError(f"No module named {name!r} (not in the GPU image)", name=name)


_missing = os.environ.get("GPU_IMAGE_MISSING")
_allowed = [p for p in os.environ.get("ARCHSCALE_PYDEPS", "").split(os.pathsep) if p]
sys.meta_path.insert(0, _GpuImage(set(_missing.split(",") if _missing is not None else MISSING), _allowed))
