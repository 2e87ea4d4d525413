"""Reading the files archscale is given: each kind checked where it is read, so that a bad
one ends in :class:`FileError`, one line naming the file, what is wrong (the line or the key
where there is one) and what was expected, and never in a library's own exception.

One helper per kind: :func:`read_bytes` (exists, is a file, can be read), :func:`read_text`
(UTF-8 text), :func:`read_yaml_mapping`, :func:`read_json_object` and
:func:`load_state_dict` (a ``weights.pt``, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterable

import yaml


class FileError(ValueError):
    """A file archscale reads is missing, unreadable or not what it should be (exit status 2)."""


def read_bytes(path: str | Path, expected: str) -> bytes:
    """The bytes of ``path``; ``expected`` says what it should be ("a YAML spec", ...)."""
    path = Path(path)
    if path.is_dir():
        raise FileError(f"{path}: is a directory; expected {expected}")
    if not path.exists():
        raise FileError(f"{path}: does not exist; expected {expected}")
    try:
        return path.read_bytes()
    except PermissionError:
        raise FileError(f"{path}: permission denied; expected {expected} that this user can read") from None
    except OSError as err:
        raise FileError(f"{path}: cannot be read ({err.strerror or err}); expected {expected}") from None


def decode(data: bytes, path: str | Path, expected: str, line: int | None = None) -> str:
    """``data`` as UTF-8 text, or FileError naming the first byte that is not."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if line is None:
            line = data.count(b"\n", 0, err.start) + 1
        raise FileError(f"{path} line {line}: not text (byte 0x{data[err.start]:02x} is not UTF-8); "
                        f"expected {expected}") from None
    if "\x00" in text:
        at = line if line is not None else text.count("\n", 0, text.index("\x00")) + 1
        raise FileError(f"{path} line {at}: not text (a NUL byte); expected {expected}")
    return text


def read_text(path: str | Path, expected: str) -> str:
    """The UTF-8 text of ``path``."""
    return decode(read_bytes(path, expected), path, expected)


def yaml_error(path: str | Path, err: Exception) -> str:
    """``PATH line L, column C: YAML syntax error: PROBLEM`` of a YAML parser's error."""
    mark = getattr(err, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{path}{where}: YAML syntax error: {problem}"


def read_yaml_mapping(path: str | Path, expected: str, keys: Iterable[str] = ()) -> dict:
    """A YAML file whose top level is a mapping holding at least ``keys``."""
    text = read_text(path, expected)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise FileError(f"{yaml_error(path, err)}; expected {expected}") from None
    if not isinstance(doc, dict):
        got = "nothing" if doc is None else f"a {type(doc).__name__}"
        raise FileError(f"{path}: holds {got}; expected {expected}, a mapping of keys")
    _require(doc, keys, path, expected)
    return doc


def read_json_object(path: str | Path, expected: str, keys: Iterable[str] = ()) -> dict:
    """A JSON file holding one object with at least ``keys``."""
    text = read_text(path, expected)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise FileError(f"{path} line {err.lineno}: invalid JSON ({err.msg}); expected {expected}") from None
    if not isinstance(doc, dict):
        raise FileError(f"{path}: holds a JSON {type(doc).__name__}; expected {expected} (a JSON object)")
    _require(doc, keys, path, expected)
    return doc


def _require(doc: dict, keys: Iterable[str], path: str | Path, expected: str) -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        raise FileError(f"{path}: no key {missing[0]!r}; expected {expected} with the keys {', '.join(keys)}")


def load_state_dict(path: str | Path, device: Any = "cpu") -> dict:
    """A ``weights.pt``: a state dict (parameter name -> tensor) saved by ``torch.save``,
    loaded with ``weights_only=True`` (no code in the file runs)."""
    import torch  # here: this module is the leaf every layer reads files through, torch-free paths too

    expected = "a PyTorch state dict saved by torch.save (parameter name -> tensor)"
    read_bytes(path, expected)  # exists, is a file, readable
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, TypeError, UnicodeDecodeError) as err:
        first = " ".join(str(err).split()).split(". ")[0][:100]  # torch's first sentence; the rest is advice
        raise FileError(f"{path}: not a PyTorch weights file ({type(err).__name__}: {first}); expected {expected}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise FileError(f"{path}: holds a {type(state).__name__}, not a state dict; expected {expected}")
    return state


def fit_state_dict(model: Any, state: dict, path: str | Path, arch_from: str = "arch.yaml") -> None:
    """Load ``state`` (from ``path``) into ``model`` (the architecture that ``arch_from``
    describes); FileError naming the first key that is missing, unexpected or of another shape."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise FileError(f"{path}: no tensor {missing[0]!r} ({len(missing)} of the model's {len(own)} missing); "
                        f"expected the weights of the architecture in {arch_from}")
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise FileError(f"{path}: unexpected tensor {unexpected[0]!r}; expected the weights of the architecture "
                        f"in {arch_from}")
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise FileError(f"{path}: {key!r} has shape {tuple(state[key].shape)}; expected {tuple(value.shape)} "
                            f"for the architecture in {arch_from}")
    model.load_state_dict(state)


# --------------------------------------------------------------------------- paths to be written


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def require_writable(path: str | Path, what: str, kind: str = "folder", existing_may_be_read_only: bool = False) -> Path:
    """``path`` (absolute) where archscale will write a ``kind`` ("folder" or "file"), checked
    before anything is written: an existing one is of that kind and writable (unless
    ``existing_may_be_read_only``: a data folder that is only read when it holds the data), a
    new one can be created (its nearest existing parent is a writable folder). ``what`` names
    the input (``--out``, ``data.root``, ...); FileError says which path fails and why."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    expected = f"expected a {kind} this user can write" + (" (or one that can be created)" if kind == "folder" else "")
    if path.exists():
        if kind == "folder" and not path.is_dir():
            raise FileError(f"{what} {path}: is a file; {expected}")
        if kind == "file" and path.is_dir():
            raise FileError(f"{what} {path}: is a directory; {expected}")
        if not existing_may_be_read_only and not os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
            raise FileError(f"{what} {path}: permission denied; {expected}")
        return path
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise FileError(f"{what} {path}: cannot be created, {parent} is a file; {expected}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FileError(f"{what} {path}: cannot be created, {parent} is not writable (permission denied); {expected}")
    return path


def require_existing(path: str | Path, what: str, kind: str = "file") -> Path:
    """``path`` (absolute), which must exist as a ``kind`` ("file" or "folder") this user can read."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    expected = f"expected an existing {kind}"
    if not path.exists():
        raise FileError(f"{what} {path}: does not exist; {expected}")
    if kind == "file" and path.is_dir():
        raise FileError(f"{what} {path}: is a directory; {expected}")
    if kind == "folder" and not path.is_dir():
        raise FileError(f"{what} {path}: is a file; {expected}")
    if not os.access(path, os.R_OK):
        raise FileError(f"{what} {path}: permission denied; {expected} this user can read")
    return path
