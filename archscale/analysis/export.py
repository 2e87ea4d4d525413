"""Export a trial as files that rebuild the model, and reload them.

An export directory holds:

- ``arch.yaml``: the family, its parameters and text form, and the input
  normalisation (``(x / 255 - mean) / std``) — enough to rebuild with no other file;
- ``weights.pt``: the trained state dict;
- ``metrics.json``: the trial's measured metrics and their provenance;
- ``model.py`` (unless ``standalone=False``): the network as plain PyTorch source that imports
  nothing from archscale, whose ``load()`` returns it with the ``weights.pt`` beside it loaded
  (:mod:`analysis.standalone`);
- ``model.onnx`` (with ``onnx=True``): the same inference graph for ONNX runtimes.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import yaml
from torch import nn

from archscale.analysis.records import TRIALS_DIR
from archscale.space import Arch, build

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


def warn_line(message: str) -> None:
    """One warning line on stderr."""
    print(f"archscale: warning: {message}", file=sys.stderr, flush=True)


def export_trial(run_dir: str | Path, trial_id: str, out: str | Path, extra: Mapping[str, Any] | None = None,
                 standalone: bool = True, onnx: bool = False, strict: bool = True,
                 warn: Callable[[str], None] = warn_line) -> Path:
    """Write ``arch.yaml``, ``weights.pt`` and ``metrics.json`` of one trial into ``out``, and
    ``model.py`` (``standalone``) and ``model.onnx`` (``onnx``). When the model cannot be
    written as ``model.py`` this raises, or with ``strict=False`` records why in
    ``metrics.json`` (``standalone_error``) and writes the rest.

    ``metrics.json`` carries the ``provenance`` the trial recorded when it trained (code
    version, commit, libraries, spec hash, seed, device), copied, never taken anew: a trial
    trained before archscale recorded it has ``"provenance": null``, and ``warn`` says so."""
    src = trial_dir(run_dir, trial_id)
    result_path = src / RESULT_FILE
    if not result_path.is_file() or not (src / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"trial {trial_id} has no saved weights in {src}: only completed trials can be exported")
    result = json.loads(result_path.read_text())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arch = Arch.from_text(result["arch"])
    doc = {
        "family": arch.family,
        "text": arch.text,
        "params": dict(arch.params),
        "input": {"mean": result["mean"], "std": result["std"],
                  "note": "inputs are (x / 255 - mean) / std per channel, shape (B, in_channels, image_size, image_size)"},
        "data": result.get("data", {}),
    }
    (out / "arch.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copyfile(src / WEIGHTS_FILE, out / WEIGHTS_FILE)
    metrics = {
        "trial_id": str(trial_id),
        **result.get("metrics", {}),
        "history": result.get("history", []),
        **(dict(extra) if extra else {}),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": result.get("provenance"),
    }
    if metrics["provenance"] is None:
        warn(f"trial {trial_id} of {run_dir} recorded no provenance when it trained (a run made before archscale "
             "recorded it): metrics.json has \"provenance\": null")
    written = ["arch.yaml", WEIGHTS_FILE, "metrics.json"]
    if standalone or onnx:
        from archscale.analysis.standalone import write_model_py, write_onnx

        model = load_exported(out)
        chw = (int(arch.params["in_channels"]), int(arch.params["image_size"]), int(arch.params["image_size"]))
        if standalone:
            try:
                write_model_py(model, chw, out / "model.py", arch=arch.text, mean=result["mean"], std=result["std"],
                               classes=result.get("classes"))
                written.append("model.py")
            except Exception as err:  # noqa: BLE001 - torch.export failures come in many types
                if strict:
                    raise
                metrics["standalone_error"] = f"{type(err).__name__}: {err}"[:500]
        if onnx:
            write_onnx(model, chw, out / "model.onnx")
            written.append("model.onnx")
    metrics["files"] = written
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    return out


def read_exported(path: str | Path) -> dict[str, Any]:
    """The ``arch.yaml`` of an export directory as a dict."""
    arch_file = Path(path) / "arch.yaml"
    if not arch_file.is_file():
        raise FileNotFoundError(f"{arch_file} does not exist: is {path} an export directory?")
    return yaml.safe_load(arch_file.read_text())


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the exported model from ``arch.yaml`` and load ``weights.pt``; in eval mode."""
    doc = read_exported(path)
    model = build(Arch(doc["family"], doc["params"]))
    state = torch.load(Path(path) / WEIGHTS_FILE, map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()
