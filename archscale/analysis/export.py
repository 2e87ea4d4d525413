"""Export a trial as files that rebuild the model, and reload them.

An export directory holds:

- ``arch.yaml``: the family, its parameters and text form, and how the search brought an image
  to the network (``input``: channels, side, whether it resized and centre-cropped, mean and
  std of ``(x / 255 - mean) / std``) — enough to rebuild with no other file;
- ``weights.pt``: the trained state dict;
- ``metrics.json``: the trial's measured metrics and their provenance;
- ``model.py`` (unless ``standalone=False``): the network as plain PyTorch source that imports
  nothing from archscale, whose ``load()`` returns it with the ``weights.pt`` beside it loaded
  and whose ``preprocess(image)`` repeats the search's decoding, resizing and normalisation
  (:mod:`analysis.standalone`);
- ``model.onnx`` (with ``onnx=True``): the same inference graph for ONNX runtimes.
"""

from __future__ import annotations

import io
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import yaml
from torch import nn

from archscale.files import FileError, fit_state_dict, load_state_dict, read_json_object, read_yaml_mapping
from archscale.analysis.records import TRIALS_DIR, warn_line
from archscale.analysis.standalone import write_model_py, write_onnx
from archscale.space import Arch, SpaceError, build, get_space, user
from archscale.pixels import loading

RESULT_FILE = "result.json"
WEIGHTS_FILE = "weights.pt"


def trial_dir(run_dir: str | Path, trial_id: str) -> Path:
    return Path(run_dir) / TRIALS_DIR / str(trial_id)


def trial_files(model: nn.Module, result: Mapping[str, Any]) -> dict[str, bytes]:
    """A trial's ``weights.pt`` and ``result.json`` as bytes, to be written elsewhere (a
    trial on another node of a cluster sends them to the driver with its last result)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return {WEIGHTS_FILE: buffer.getvalue(),
            RESULT_FILE: json.dumps(dict(result), indent=1, default=str).encode()}


def write_trial_files(folder: str | Path, files: Mapping[str, bytes]) -> None:
    """Write the files of :func:`trial_files` into ``folder``; each lands whole (temp + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / name)


def export_trial(run_dir: str | Path, trial_id: str, out: str | Path, extra: Mapping[str, Any] | None = None,
                 standalone: bool = True, onnx: bool = False, strict: bool = True,
                 warn: Callable[[str], None] = warn_line) -> Path:
    """Write ``arch.yaml``, ``weights.pt`` and ``metrics.json`` of one trial into ``out``, and
    ``model.py`` (``standalone``) and ``model.onnx`` (``onnx``). When the model cannot be
    written as ``model.py`` this raises, or with ``strict=False`` (always, for a user's own
    family, with a ``warn``) records why in ``metrics.json`` (``standalone_error``) and
    writes the rest.

    ``metrics.json`` carries the ``provenance`` the trial recorded when it trained (code
    version, commit, libraries, spec hash, seed, device), copied, never taken anew: a trial
    trained before archscale recorded it has ``"provenance": null``, and ``warn`` says so."""
    src = trial_dir(run_dir, trial_id)
    if not src.is_dir():
        raise FileError(f"{src}: does not exist; expected the folder of trial {trial_id} with its {RESULT_FILE} "
                        f"and {WEIGHTS_FILE} (only completed trials can be exported)")
    result = read_result(src / RESULT_FILE)
    arch = arch_of(result["arch"], src / RESULT_FILE, "arch")
    # Every file read and checked before anything is written: the weights fit the architecture.
    model = build(arch)
    fit_state_dict(model, load_state_dict(src / WEIGHTS_FILE), src / WEIGHTS_FILE, arch_from=RESULT_FILE)
    model.eval()
    classes = _classes_of(result, arch, src / RESULT_FILE)
    data = result.get("data", {})
    chw = (int(arch.params["in_channels"]), int(arch.params["image_size"]), int(arch.params["image_size"]))
    how = loading(data.get("dataset"), chw[0], chw[1], result["mean"], result["std"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "family": arch.family,
        **family_origin(arch.family),
        "text": arch.text,
        "params": dict(arch.params),
        "input": {**how, "note": "each image decoded to channels, its short side resized to side and centre-"
                                 "cropped when resize (an image folder), then (x / 255 - mean) / std per channel: "
                                 "(B, channels, side, side); model.py's preprocess does it"},
        "data": data,
        "classes": classes,  # class names by label (an image folder's), or null
    }
    (out / "arch.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copyfile(src / WEIGHTS_FILE, out / WEIGHTS_FILE)
    metrics = {
        "trial_id": str(trial_id),
        **result.get("metrics", {}),
        "classes": classes,
        "history": result.get("history", []),
        **(dict(extra) if extra else {}),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": result.get("provenance"),
    }
    if metrics["provenance"] is None:
        warn(f"trial {trial_id} of {run_dir} recorded no provenance when it trained (a run made before archscale "
             "recorded it): metrics.json has \"provenance\": null")
    written = ["arch.yaml", WEIGHTS_FILE, "metrics.json"]
    if standalone:
        try:
            _, writer, why = write_model_py(model, chw, out / "model.py", arch=arch.text, loading=how, classes=classes)
            written.append("model.py")
            metrics["model_py"] = writer
            if writer != "source":
                metrics["model_py_notes"] = why
            if writer == "graph":
                warn(f"model.py holds {arch.family}'s inference graph (ATen operators, eval mode, a fixed number of "
                     f"classes): it could not be written as torch.nn code ({'; '.join(why)[:300]})")
        except Exception as err:  # noqa: BLE001 - torch.export failures come in many types
            if strict and not family_origin(arch.family):
                raise
            metrics["standalone_error"] = f"{type(err).__name__}: {err}"[:500]
            if strict:  # a user's family: the export stands on arch.yaml and the family's module
                warn(f"model.py was not written: {arch.family}'s model could not be written as PyTorch source "
                     f"({metrics['standalone_error'][:300]}); arch.yaml, weights.pt and metrics.json were; "
                     "archscale.load_exported rebuilds it with the family's module")
    if onnx:
        write_onnx(model, chw, out / "model.onnx")
        written.append("model.onnx")
    metrics["files"] = written
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    return out


def _classes_of(result: Mapping[str, Any], arch: Arch, path: Path) -> list[str] | None:
    """The class names a trial's result records, in label order (None when the dataset has none)."""
    classes = result.get("classes")
    if classes is None:
        return None
    num_classes = arch.params.get("num_classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or len(classes) != num_classes:
        raise FileError(f"{path}: classes is {str(classes)[:80]!r}; expected a list of {num_classes} class names, "
                        "one per label")
    return classes


def _number_list(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def read_result(path: str | Path) -> dict[str, Any]:
    """A trial's ``result.json``, checked: the keys an export needs (``arch``, ``mean``, ``std``)."""
    expected = "a trial's result.json written by archscale"
    result = read_json_object(path, expected, keys=("arch", "mean", "std"))
    for key in ("mean", "std"):
        if not _number_list(result[key]):
            raise FileError(f"{path}: {key} is {result[key]!r}; expected a list of numbers, one per channel")
    for key in ("metrics", "data"):
        if not isinstance(result.get(key, {}), dict):
            raise FileError(f"{path}: {key} is a {type(result[key]).__name__}; expected a mapping")
    if not isinstance(result.get("history", []), list):
        raise FileError(f"{path}: history is a {type(result['history']).__name__}; expected a list of epochs")
    return result


def read_history(path: str | Path, keys: tuple[str, ...] = ()) -> list[dict]:
    """The per-epoch ``history`` of a trial's ``result.json`` (empty when it saved none),
    checked: a list of mappings, each with ``keys`` (numbers)."""
    history = read_json_object(path, "a trial's result.json written by archscale").get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise FileError(f"{path}: history is {str(history)[:60]!r}; expected a list of epochs, each a mapping")
    for n, epoch in enumerate(history):
        for key in keys:
            if not isinstance(epoch.get(key), (int, float)) or isinstance(epoch.get(key), bool):
                raise FileError(f"{path}: history[{n}].{key} is {epoch.get(key)!r}; expected a number")
    return history


def arch_of(value: Any, path: Path, key: str) -> Arch:
    """The architecture text a file holds at ``key``, parsed and checked by its family."""
    try:
        if not isinstance(value, str):
            raise TypeError(f"{value!r} is not text")
        arch = Arch.from_text(value)
        get_space(arch.family).resolve(arch.params)  # a registered family, known parameters
        return arch
    except (ValueError, TypeError, SpaceError) as err:
        raise FileError(f"{path}: {key}: {err}; expected an architecture's text form archscale can build") from None


def read_exported(path: str | Path) -> dict[str, Any]:
    """The ``arch.yaml`` of an export directory as a dict, checked: ``family`` (a registered
    one), ``params`` (a mapping), ``text`` and ``input`` (``mean`` and ``std``)."""
    arch_file = Path(path) / "arch.yaml"
    expected = "an arch.yaml written by archscale export (family, params, text, input)"
    doc = read_yaml_mapping(arch_file, expected, keys=("family", "params", "input"))
    if not isinstance(doc["family"], str):
        raise FileError(f"{arch_file}: family is {doc['family']!r}; expected the name of a family (`archscale spaces`)")
    if not isinstance(doc["params"], dict):
        raise FileError(f"{arch_file}: params is a {type(doc['params']).__name__}; expected a mapping of parameters")
    norm = doc["input"]
    if not isinstance(norm, dict) or not _number_list(norm.get("mean")) or not _number_list(norm.get("std")):
        raise FileError(f"{arch_file}: input is {norm!r}; expected a mapping with mean and std, lists of numbers")
    return doc


def family_origin(name: str) -> dict[str, str]:
    """For a user's own family (:mod:`space.user`), where it came from: ``family_module``
    (``package.module:ClassName``) and ``family_path`` (the folder it was found in), as
    ``arch.yaml`` records them; empty for archscale's own families."""
    found = user.origin(name)
    return {"family_module": found.reference, "family_path": found.folder} if found else {}


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the exported model from ``arch.yaml`` and load ``weights.pt``; in eval mode. A
    user's family is imported from ``family_module`` (PYTHONPATH, the current folder, then
    ``family_path``)."""
    doc = read_exported(path)
    arch_file = Path(path) / "arch.yaml"
    try:
        if isinstance(doc.get("family_module"), str):
            user.load_family(doc["family_module"], doc.get("family_path"))
        model = build(Arch(doc["family"], doc["params"]))
    except (ValueError, TypeError, SpaceError) as err:
        raise FileError(f"{arch_file}: {err}; expected a family and parameters archscale can build") from None
    weights = Path(path) / WEIGHTS_FILE
    fit_state_dict(model, load_state_dict(weights, device), weights)
    return model.to(device).eval()
