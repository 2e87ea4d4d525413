"""A standalone ``model.py`` for any built model: plain PyTorch source, no archscale import.

The model's inference graph (eval mode) is captured with ``torch.export`` (non-strict, batch
dimension dynamic where the model allows it) and written out as Python source by
``torch.fx``'s code generator. ``torch.export`` rather than ``torch.fx.symbolic_trace``:
symbolic tracing cannot follow Python that looks at tensor shapes (BlurPool picks its padding
mode from the input size), while export sees concrete shapes; so one generic path serves every
registered family, present and future, with no per-family code.

The file holds:

- ``Net``: an ``nn.Module`` whose parameters and buffers sit at the same dotted names as in
  the original model, so the original ``weights.pt`` loads into it with ``strict=True``;
- constants the state dict does not hold (non-persistent buffers such as BlurPool's
  filter), embedded exactly as base64 bytes;
- ``forward``: one line per ATen operator, commented with the module it came from;
- ``load(weights=None, device="cpu")``: a ``Net`` with the ``weights.pt`` beside the file
  loaded, in eval mode.

The graph is the inference graph: BatchNorm uses its running statistics and dropout is off,
whatever ``.train()`` says. For training, rebuild the model with archscale.
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

_ALLOWED_OP_NAMESPACES = ("aten", "prims")


class StandaloneError(RuntimeError):
    """A model whose graph cannot be written as plain PyTorch source."""


# --------------------------------------------------------------------------- capture


def capture(model: nn.Module, example: torch.Tensor) -> tuple[torch.fx.GraphModule, bool]:
    """``torch.export`` the model in eval mode; return its graph module and whether the batch
    dimension stayed dynamic (a model that only works at the example's batch size is
    exported at that size)."""
    from torch.export import Dim, export

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
                   weights_file: str = "weights.pt") -> Path:
    """Write ``path`` (a ``model.py``): ``model``'s inference graph as plain PyTorch source
    whose ``load()`` reads ``weights_file`` beside it. ``input_shape`` is (C, H, W)."""
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
