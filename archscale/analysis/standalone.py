"""A standalone ``model.py`` for any built model: plain PyTorch source, no archscale import.

Two writers, one file format at the top (``ARCH``, ``INPUT_SHAPE``, ``MEAN``, ``STD``,
``CLASSES``) and one ``load()``:

- **readable** (every registered family): the family writes its network as a person would,
  ``Net(num_classes)`` of ``torch.nn`` layers with the numbers written out and the few custom
  layers it uses defined once each (:meth:`SearchSpace.model_source`, :mod:`space.source`).
  It trains as the original does (BatchNorm, dropout and ghost BatchNorm follow
  ``.train()``), its state dict has the original's keys, and ``load(num_classes=N)`` keeps
  every trained weight but the classifier's. Before the file is written, its ``Net`` is
  built here and checked against the model: the same state-dict names and shapes, and the
  same eval logits on a random batch.
- **graph** (a family that does not write itself): the model's inference graph (eval mode)
  captured with ``torch.export`` (non-strict, batch dimension dynamic where the model allows
  it) and written out by ``torch.fx``'s code generator, one ATen operator a line; parameters
  and buffers at the original's dotted names, constants outside the state dict embedded
  exactly as base64 bytes. It is an inference graph: BatchNorm uses its running statistics
  and dropout is off whatever ``.train()`` says, and the number of classes is fixed.
"""

from __future__ import annotations

import base64
import builtins
import math
import operator
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import Dim, export

from archscale.space import Arch, get_space

_ALLOWED_OP_NAMESPACES = ("aten", "prims")


class StandaloneError(RuntimeError):
    """A model whose graph cannot be written as plain PyTorch source."""


# --------------------------------------------------------------------------- capture


def capture(model: nn.Module, example: torch.Tensor) -> tuple[torch.fx.GraphModule, bool]:
    """``torch.export`` the model in eval mode; return its graph module and whether the batch
    dimension stayed dynamic (a model that only works at the example's batch size is
    exported at that size)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                program = export(model, (example,), dynamic_shapes=({0: Dim("batch", min=1, max=1 << 20)},), strict=False)
                dynamic = True
            except Exception:  # noqa: BLE001 - any model that specialises on its batch size
                program = export(model, (example,), strict=False)
                dynamic = False
    finally:
        model.train(was_training)
    return program.module(), dynamic


def _clean(gm: torch.fx.GraphModule) -> None:
    """Drop export's guard and metadata checks, make created tensors follow the input's
    device, and return the single output plainly (no pytree specs)."""
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise StandaloneError(f"the model takes {len(placeholders)} inputs; a standalone export needs exactly one")
    x = placeholders[0]
    for node in list(graph.nodes):
        if node.op == "call_module" and not node.users:
            graph.erase_node(node)  # export's _guards_fn: shape checks of the traced input
        elif node.op == "call_function" and "assert" in str(node.target) and not node.users:
            graph.erase_node(node)  # _assert_tensor_metadata / _assert_scalar: device- and shape-pinned
    device_node = None
    for node in list(graph.nodes):
        if node.op == "call_function" and isinstance(node.kwargs.get("device"), torch.device):
            if device_node is None:
                with graph.inserting_after(x):
                    device_node = graph.call_function(builtins.getattr, (x, "device"))
            node.kwargs = {**node.kwargs, "device": device_node}
    leftover = [n.target for n in graph.nodes if n.op == "call_module"]
    if leftover:
        raise StandaloneError(f"the exported graph still calls submodules {leftover}")
    for node in graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            namespace = node.target.namespace
            if namespace not in _ALLOWED_OP_NAMESPACES:
                raise StandaloneError(f"operator {node.target} is from library {namespace!r}, not PyTorch's own")
    output = next(n for n in graph.nodes if n.op == "output")
    result = output.args[0]
    if isinstance(result, (tuple, list)) and len(result) == 1:
        output.args = (result[0],)
    elif isinstance(result, (tuple, list)):
        raise StandaloneError(f"the model returns {len(result)} values; a standalone export needs one tensor")
    graph._codegen = torch.fx.graph.CodeGen()  # plain forward(self, x), no pytree flattening
    graph.lint()
    gm.recompile()


# --------------------------------------------------------------------------- source


def _global_line(name: str, value: Any) -> str:
    """The import (or assignment) that defines a global the generated forward uses."""
    if value is torch and name == "torch":
        return ""
    if value is math.inf and name == "inf":
        return "inf = math.inf"
    if isinstance(value, float) and math.isnan(value) and name == "nan":
        return "nan = math.nan"
    if value is type(None):
        return f"{name} = type(None)"
    if value is torch.device:
        return f"{name} = torch.device"
    if isinstance(value, type(math)) and value.__name__ in ("math", "operator", "builtins"):
        return f"import {value.__name__} as {name}" if name != value.__name__ else f"import {name}"
    if value is getattr(builtins, name, None):
        return ""
    if value is getattr(operator, name, None):
        return f"from operator import {name}"
    dtype = getattr(torch, name, None)
    if dtype is value and isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
        return f"{name} = torch.{name}"
    raise StandaloneError(f"the generated forward needs {name!r} = {value!r}, which plain PyTorch does not define")


def _tensor_literal(t: torch.Tensor) -> tuple[tuple[int, ...], str, str]:
    """(shape, dtype name, base64 of the raw bytes): an exact, dtype-independent literal."""
    t = t.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return tuple(t.shape), str(t.dtype).removeprefix("torch."), base64.b64encode(raw).decode("ascii")


def _module_comment(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path, kind = list(stack.values())[-1]
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    return f"{path or '(model)'} ({kind.rsplit('.', 1)[-1]})"


def _forward_source(gm: torch.fx.GraphModule) -> tuple[str, list[str]]:
    """The body of ``forward`` (indented) and the global definitions it needs."""
    code = gm.graph.python_code(root_module="self")
    used = {name: value for name, value in code.globals.items() if re.search(rf"\b{re.escape(name)}\b", code.src)}
    globals_needed = [line for name, value in used.items() if (line := _global_line(name, value))]
    # Comment each op's line with the module it came from (fx names each node's output variable).
    comments = {node.name: c for node in gm.graph.nodes if node.op == "call_function" and (c := _module_comment(node))}
    # Tensors by their dotted names (nn.Module.get_parameter / get_buffer), not getattr chains.
    params = {name for name, _ in gm.named_parameters(remove_duplicate=False)}
    reads = {node.name: ("get_parameter" if node.target in params else "get_buffer", node.target)
             for node in gm.graph.nodes if node.op == "get_attr"}
    lines, last = [], None
    for line in code.src.strip("\n").splitlines():
        stripped = line.strip()
        name = stripped.split(" = ", 1)[0] if " = " in stripped else None
        if name in reads:
            method, target = reads[name]
            line = f"{line[:len(line) - len(stripped)]}{name} = self.{method}({target!r})"
        comment = comments.get(name)
        if comment and comment != last:
            lines.append(" " * (len(line) - len(stripped)) + f"# {comment}")
            last = comment
        lines.append(line)
    return "\n".join("    " + ln if ln else ln for ln in lines), globals_needed


_TEMPLATE = '''"""{title}

Plain PyTorch: this file imports nothing but torch. It was written by archscale from the
model's inference graph (eval mode: BatchNorm uses its running statistics, dropout is off),
captured with torch.export; ``forward`` is one line per ATen operator, commented with the
module of the original network each one came from.

    import model
    net = model.load()                 # the weights.pt beside this file, eval mode
    logits = net(x)                    # x: float32 {shape_text}

{input_note}
Batch size: {batch_note}.
"""

import base64
import math
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim, export

from archscale.space import Arch, get_space

{globals_block}
ARCH = {arch!r}
INPUT_SHAPE = {input_shape!r}  # (channels, height, width) of one image
MEAN = {mean!r}  # per channel, in [0, 1] units: x = (pixels / 255 - MEAN) / STD
STD = {std!r}
BATCH = {batch!r}  # None: any batch size

# Tensors of the state dict (loaded from weights.pt): dotted name, shape, dtype, kind.
STATE = [
{state_rows}
]

# Tensors the state dict does not hold (non-persistent buffers, constants): exact bytes.
CONSTANTS = {{
{constant_rows}
}}


def _attach(root: nn.Module, name: str, tensor: torch.Tensor, kind: str) -> None:
    """Register ``tensor`` at the dotted ``name``, creating plain containers on the way."""
    *path, leaf = name.split(".")
    module = root
    for part in path:
        if part not in module._modules:
            module.add_module(part, nn.Module())
        module = module._modules[part]
    if kind == "parameter":
        module.register_parameter(leaf, nn.Parameter(tensor))
    else:
        module.register_buffer(leaf, tensor, persistent=(kind == "buffer"))


def _decode(shape, dtype: str, data: str) -> torch.Tensor:
    raw = bytearray(base64.b64decode(data))
    flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    return flat.view(getattr(torch, dtype)).reshape(shape).clone()


class Net(nn.Module):
    """{arch_short}"""

    def __init__(self) -> None:
        super().__init__()
        for name, shape, dtype, kind in STATE:
            _attach(self, name, torch.zeros(shape, dtype=getattr(torch, dtype)), kind)
        for name, (shape, dtype, data) in CONSTANTS.items():
            _attach(self, name, _decode(shape, dtype, data), "constant")

{forward}


def load(weights: str | Path | None = None, device: str | torch.device = "cpu") -> Net:
    """The network with ``weights`` (default: the weights.pt beside this file) loaded, in eval mode."""
    path = Path(weights) if weights is not None else Path(__file__).resolve().with_name({weights_file!r})
    net = Net()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.to(device).eval()


if __name__ == "__main__":
    net = load()
    x = torch.randn(BATCH or 2, *INPUT_SHAPE)
    print(f"{{ARCH}}: input {{tuple(x.shape)}} -> logits {{tuple(net(x).shape)}}")
'''


def write_model_py(model: nn.Module, input_shape: tuple[int, int, int], path: str | Path, *, arch: str = "",
                   mean: list[float] | None = None, std: list[float] | None = None,
                   weights_file: str = "weights.pt", classes: list[str] | None = None,
                   graph: bool = False) -> Path:
    """Write ``path`` (a ``model.py``) whose ``load()`` reads ``weights_file`` beside it:
    ``model`` as its family writes it when ``arch`` (its text form) names a family that can,
    else (or with ``graph``) its inference graph. ``input_shape`` is (C, H, W)."""
    written = None if graph or not arch else family_source(arch)
    if written is not None:
        text = readable_text(written, arch, input_shape, mean, std, classes, weights_file)
        check_source(text, model, input_shape)
        path = Path(path)
        path.write_text(text)
        return path
    return _write_graph(model, input_shape, path, arch=arch, mean=mean, std=std, weights_file=weights_file)


def _write_graph(model: nn.Module, input_shape: tuple[int, int, int], path: str | Path, *, arch: str,
                 mean: list[float] | None, std: list[float] | None, weights_file: str) -> Path:
    """The graph writer: ``model``'s inference graph as plain PyTorch source."""
    state = model.state_dict()
    param_names = {name for name, _ in model.named_parameters()}
    example = torch.randn(2, *input_shape)
    gm, dynamic = capture(model, example)
    _clean(gm)
    forward, globals_needed = _forward_source(gm)

    state_rows = [f"    ({name!r}, {tuple(t.shape)!r}, {str(t.dtype).removeprefix('torch.')!r}, "
                  f"{'parameter' if name in param_names else 'buffer'!r}),"
                  for name, t in state.items()]
    constant_rows = []
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target not in state:
            value = operator.attrgetter(node.target)(gm)
            if not isinstance(value, torch.Tensor):
                raise StandaloneError(f"the graph reads {node.target!r}, a {type(value).__name__}, not a tensor")
            constant_rows.append(f"    {node.target!r}: {_tensor_literal(value)!r},")
    c, h, w = input_shape
    text = _TEMPLATE.format(
        title=f"Standalone model: {arch or type(model).__name__}",
        shape_text=f"(B, {c}, {h}, {w})",
        input_note=("Inputs: (pixels / 255 - MEAN) / STD per channel, as in training."
                    if mean is not None else "Inputs: normalised as in training."),
        batch_note="any" if dynamic else f"{example.shape[0]} only (the model specialises on it)",
        globals_block="\n".join(dict.fromkeys(globals_needed)) + ("\n" if globals_needed else ""),
        arch=arch, arch_short=(arch or type(model).__name__)[:200],
        input_shape=tuple(input_shape), mean=mean, std=std, batch=None if dynamic else int(example.shape[0]),
        state_rows="\n".join(state_rows), constant_rows="\n".join(constant_rows),
        forward=forward, weights_file=weights_file,
    )
    path = Path(path)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- readable source

_READABLE = '''"""{title}

Plain PyTorch that imports nothing but torch. Net trains as the searched network did (BatchNorm
and dropout follow .train()/.eval()); the export's weights.pt loads into it with strict=True.

    net = model.load()                 # the weights.pt beside this file, in eval mode
    net = model.load(num_classes=5)    # every trained weight but a new classifier
    logits = net(x)                    # x: float32 {shape_text}, (pixels / 255 - MEAN) / STD
"""

{imports}
ARCH = {arch!r}
INPUT_SHAPE = {input_shape!r}  # (channels, height, width) of one image
MEAN = {mean!r}  # per channel, in [0, 1] units
STD = {std!r}
CLASSES = {classes!r}  # class names by label, when the dataset gives them
CLASSIFIER = {classifier!r}  # the layer load(num_classes=...) replaces


{code}

def load(weights: str | Path | None = None, device: str | torch.device = "cpu", num_classes: int | None = None) -> Net:
    """``Net`` with ``weights`` (default: the weights.pt beside this file) loaded, in eval mode;
    with ``num_classes``, a new classifier of that many classes, freshly initialised."""
    path = Path(weights) if weights is not None else Path(__file__).resolve().with_name({weights_file!r})
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = Net() if num_classes is None else Net(num_classes)
    fresh = {{k: v for k, v in net.state_dict().items() if k.startswith(CLASSIFIER + ".")}}
    net.load_state_dict({{**state, **fresh}} if num_classes is not None else state)
    return net.to(device).eval()
'''


def family_source(arch: str) -> Any:
    """The :class:`space.source.ModelSource` the family of ``arch`` (text form) writes, or None."""
    parsed = Arch.from_text(arch)
    space = get_space(parsed.family)
    return space.model_source(space.resolve(parsed.params))


def readable_text(written: Any, arch: str, input_shape: tuple[int, int, int], mean: list[float] | None,
                  std: list[float] | None, classes: list[str] | None, weights_file: str = "weights.pt") -> str:
    """The whole ``model.py`` around a family's ``ModelSource``."""
    code = written.code
    imports = [line for line, used in (("import math", "math." in code),
                                       ("from collections import OrderedDict", "OrderedDict" in code)) if used]
    imports += ["from pathlib import Path", ""]
    imports += ["import torch"] + (["import torch.nn.functional as F"] if "F." in code else []) + ["from torch import nn"]
    c, h, w = input_shape
    return _READABLE.format(
        title=f"The {arch.split(':', 1)[0]} network of an archscale search, as plain PyTorch.",
        shape_text=f"(B, {c}, {h}, {w})", imports="\n".join(imports) + "\n", arch=arch,
        input_shape=tuple(input_shape), mean=mean, std=std, classes=classes, classifier=written.classifier,
        code=code, weights_file=weights_file)


def check_source(text: str, model: nn.Module, input_shape: tuple[int, int, int]) -> None:
    """Raise :class:`StandaloneError` unless the ``Net`` of ``text`` has ``model``'s state-dict
    names and shapes and, with ``model``'s weights, gives its eval logits (within 1e-5)."""
    namespace: dict[str, Any] = {"__name__": "archscale_model_py_check"}
    exec(compile(text, "model.py", "exec"), namespace)  # noqa: S102 - our own generated source, checked here
    net = namespace["Net"]()
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()))[:6]
        raise StandaloneError(f"the written Net's state dict differs from the model's: {diff}")
    net.load_state_dict(model.state_dict())
    was_training = model.training
    model.eval()
    net.eval()
    try:
        x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            gap = (net(x) - model(x)).abs().max().item()
    finally:
        model.train(was_training)
    if not gap < 1e-5:
        raise StandaloneError(f"the written Net's eval logits differ from the model's by {gap:.3g}")


def write_onnx(model: nn.Module, input_shape: tuple[int, int, int], path: str | Path) -> Path:
    """Export ``model`` (eval mode) to ONNX with a dynamic batch axis: input ``input``, output ``logits``."""
    was_training = model.training
    model.eval()
    try:
        example = torch.randn(2, *input_shape)
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 20)},), dynamo=True,
                          verbose=False)
    finally:
        model.train(was_training)
    return Path(path)
