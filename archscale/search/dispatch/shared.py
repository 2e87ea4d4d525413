"""The dataset a search's workers share: put once into Ray's object store by the driver,
fetched once per worker process and kept there for every later trial the process runs
(Tune reuses a trial's worker for the next one).

:class:`SharedSplits` is what travels with the trainable: a key (dataset, root, validation
fraction, subset, seed) and the object's reference, a few bytes. :func:`local_splits` turns
it into the :class:`~archscale.trainer.Splits` of this process, from its cache when the key
is the one already held; :func:`loads` counts the fetches of this process (a test and a
trial's ``host`` record read it).

Imports ray lazily, so the module can be imported anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from archscale.trainer import Splits

if TYPE_CHECKING:  # the workers read no spec: they get plain data
    from archscale.spec import Spec

_CACHE: dict[tuple, Splits] = {}  # this process's: one dataset at a time
_LOADS = 0


@dataclass(frozen=True)
class SharedSplits:
    """A search's splits in Ray's object store, and the key a worker keeps them under."""

    key: tuple
    ref: Any  # ray.ObjectRef of the Splits


def data_key(spec: Spec) -> tuple:
    """What the splits of ``spec`` depend on: the dataset, where it is read, the split and the seed."""
    d = spec.data
    return (d.dataset, str(d.root), d.image_size, float(d.val_fraction), float(d.subset), int(spec.seed))


def share_splits(spec: Spec, splits: Splits) -> SharedSplits:
    """Put ``splits`` into Ray's object store once (Ray must be started) and keep them in this
    process's cache too (a trial that runs in the driver's process fetches nothing). The key
    ends with the object's id: a later search in the same Ray session (a notebook), even of the
    same dataset whose files changed, is fetched anew, never served a worker's old copy."""

    ref = ray.put(splits)
    key = (*data_key(spec), ref.hex())
    _keep(key, splits)
    return SharedSplits(key, ref)


def local_splits(splits: Splits | SharedSplits) -> Splits:
    """The splits themselves: ``splits`` when they are; else this process's copy, fetched from
    the object store the first time the key is seen."""
    global _LOADS
    if not isinstance(splits, SharedSplits):
        return splits
    held = _CACHE.get(splits.key)
    if held is None:

        held = ray.get(splits.ref)
        _LOADS += 1
        _keep(splits.key, held)
    return held


def loads() -> int:
    """How many times this process fetched a dataset from the object store."""
    return _LOADS


def _keep(key: tuple, splits: Splits) -> None:
    if key not in _CACHE:
        _CACHE.clear()  # a worker holds one dataset: the current search's
        _CACHE[key] = splits
