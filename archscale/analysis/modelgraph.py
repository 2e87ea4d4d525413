"""The two writers of an export's ``model.py`` for a network archscale has no source for
(:mod:`.standalone` tells which runs): **fx**, ``torch.fx.symbolic_trace``'s code with the
model's standard ``torch.nn`` layers rebuilt from their reprs, and **graph**, ``torch.export``'s
inference graph as the last resort. :class:`Section` is what every writer returns.
"""

from __future__ import annotations

import base64
import builtins
import math
import operator
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torch.export import Dim, export

from archscale.analysis.closure import Closure

_ALLOWED_OP_NAMESPACES = ("aten", "prims")


class StandaloneError(RuntimeError):
    """A model that a writer cannot write as plain PyTorch source."""


@dataclass(frozen=True)
class Section:
    """A writer's network section: the imports and definitions it needs, its ``build``, the
    dotted name of the classifier (None: the number of classes cannot change) and a note
    for the file's docstring."""

    closure: Closure
    build: str
    classifier: str | None
    writer: str
    note: str = ""


def classifier_of(model: nn.Module, other: nn.Module) -> str | None:
    """The dotted name of the module whose tensors change with the number of classes (the
    longest common prefix of those tensors' names), or None when none or the whole model."""
    mine, theirs = model.state_dict(), other.state_dict()
    changed = [k for k in {*mine, *theirs} if k not in mine or k not in theirs or mine[k].shape != theirs[k].shape]
    if not changed:
        return None
    parts = [name.split(".")[:-1] for name in changed]
    prefix = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        prefix.append(level[0])
    return ".".join(prefix) or None



# --------------------------------------------------------------------------- fx writer

_PUT = '''def _put(root: nn.Module, name: str, value: nn.Module | torch.Tensor, kind: str = "module") -> None:
    """Place a layer (or a parameter, buffer or constant tensor) at the dotted ``name`` of
    ``root``, creating plain containers on the way, so that state-dict names are the original's."""
    *path, leaf = name.split(".")
    for part in path:
        if part not in root._modules:
            root.add_module(part, nn.Module())
        root = root._modules[part]
    if kind == "module":
        root.add_module(leaf, value)
    elif kind == "parameter":
        root.register_parameter(leaf, nn.Parameter(value, requires_grad=value.is_floating_point()))
    else:
        root.register_buffer(leaf, value, persistent=(kind == "buffer"))'''

_DECODE = '''def _decode(shape, dtype: str, data: str) -> torch.Tensor:
    """A tensor from its exact bytes (base64), shape and dtype."""
    raw = bytearray(base64.b64decode(data))
    flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    return flat.view(getattr(torch, dtype)).reshape(shape).clone()'''


def _layer_source(module: nn.Module) -> str:
    """``nn.<repr>`` of a standard torch.nn layer, checked: it builds the same layer."""
    cls = type(module)
    text = repr(module)
    if getattr(nn, cls.__name__, None) is not cls or "\n" in text:
        raise StandaloneError(f"layer {cls.__module__}.{cls.__qualname__} is not a torch.nn layer its repr rebuilds")
    try:
        rebuilt = eval("nn." + text, {"nn": nn, "torch": torch})  # noqa: S307 - a torch.nn layer's own repr
    except Exception as err:  # noqa: BLE001 - any repr that does not evaluate
        raise StandaloneError(f"{text} does not rebuild its layer ({type(err).__name__}: {err})") from None
    shapes = lambda m: {k: (tuple(v.shape), v.dtype) for k, v in m.state_dict().items()}  # noqa: E731
    if type(rebuilt) is not cls or repr(rebuilt) != text or shapes(rebuilt) != shapes(module):
        raise StandaloneError(f"{text} does not rebuild its layer")
    return "nn." + text


def _with_classes(mine: str, theirs: str, k: int) -> str:
    """``mine`` (a layer's source at ``k`` classes) with ``num_classes`` where ``theirs`` (at
    ``k + 1``) differs by exactly that."""
    a, b = re.split(r"(\d+)", mine), re.split(r"(\d+)", theirs)
    if len(a) != len(b) or any(x != y and (x, y) != (str(k), str(k + 1)) for x, y in zip(a, b)):
        raise StandaloneError(f"{mine} becomes {theirs} at {k + 1} classes, which build(num_classes) cannot write")
    return "".join("num_classes" if x != y else x for x, y in zip(a, b))


def _attribute(target: str) -> str:
    """How fx writes ``self.<target>``: ``getattr(self.blocks, "0").conv`` for ``blocks.0.conv``."""
    expr = "self"
    for part in target.split("."):
        expr = f"{expr}.{part}" if part.isidentifier() else f"getattr({expr}, {part!r})".replace("'", '"')
    return expr


def _plain_names(gm: torch.fx.GraphModule, src: str) -> str:
    """fx's forward with each layer and tensor read by its dotted name (``self.get_submodule(
    "blocks.0.conv")``) and without the lines' ``; x = None`` releases."""
    params = {name for name, _ in gm.named_parameters()}
    lines = []
    for line in src.splitlines():
        line = re.sub(r";\s+[\w, =]+ = None$", "", line)
        lines.append(line)
    text = "\n".join(lines)
    for node in gm.graph.nodes:
        if node.op == "call_module" and not str(node.target).isidentifier():
            text = text.replace(f"= {_attribute(node.target)}(", f"= self.get_submodule({node.target!r})(")
        elif node.op == "get_attr":
            method = "get_parameter" if node.target in params else "get_buffer"
            text = text.replace(f"{node.name} = {_attribute(node.target)}\n", f"{node.name} = self.{method}({node.target!r})\n")
    return text


def _constants(gm: torch.fx.GraphModule, state: Mapping[str, torch.Tensor], what: str) -> list[str]:
    """The lines of the tensors ``gm`` reads that are neither parameters nor buffers (``state``)."""
    constants = []
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target not in state:
            value = operator.attrgetter(node.target)(gm)
            if not isinstance(value, torch.Tensor):
                raise StandaloneError(f"{what} reads {node.target!r}, a {type(value).__name__}, not a tensor")
            constants.append(f"    {node.target!r}: {_tensor_literal(value)!r},")
    return constants


def fx_section(model: nn.Module, other: nn.Module | None, k: int, arch: str) -> Section:
    """``Net`` of standard layers at the model's names, with the forward torch.fx traces."""
    was_training = model.training
    model.eval()
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - fx refuses data-dependent control flow and more
        raise StandaloneError(f"torch.fx cannot trace the model ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    finally:
        model.train(was_training)
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise StandaloneError(f"the model takes {len(inputs)} inputs; a standalone export needs exactly one")
    leaves = list(dict.fromkeys(n.target for n in gm.graph.nodes if n.op == "call_module"))
    layers = []
    for name in leaves:
        text = _layer_source(model.get_submodule(name))
        if other is not None:
            text = _with_classes(text, _layer_source(other.get_submodule(name)), k)
        layers.append(f"{name!r}: {text},")
    covered = tuple(name + "." for name in leaves)
    params = {name for name, _ in model.named_parameters()}
    state = model.state_dict()
    theirs = other.state_dict() if other is not None else state
    tensors = []
    for name, t in state.items():
        if not name.startswith(covered):
            if name not in theirs or theirs[name].shape != t.shape:
                raise StandaloneError(f"tensor {name} of a custom layer changes shape with the number of classes")
            kind = "parameter" if name in params else "buffer"
            tensors.append(f"    ({name!r}, {tuple(t.shape)!r}, {str(t.dtype).removeprefix('torch.')!r}, {kind!r}),")
    constants = _constants(gm, state, "the traced forward")
    for node in gm.graph.nodes:
        node.type = None  # no annotations: fx would name torch.Tensor by an alias of its own
    code = gm.graph.python_code(root_module="self")
    used = {name: value for name, value in code.globals.items() if re.search(rf"\b{re.escape(name)}\b", code.src)}
    out = Closure()
    for line in ("import base64", "import torch", "from torch import nn",
                 *(line for name, value in used.items() if (line := _global_line(name, value)))):
        out.imports[line] = None
    forward = "\n".join(line.rstrip() for line in textwrap.indent(_plain_names(gm, code.src.strip("\n")), "    ").splitlines())
    init = textwrap.indent("\n".join(layers), " " * 12)
    extra = ""
    if tensors:
        extra += ("        for name, shape, dtype, kind in TENSORS:  # loaded from weights.pt\n"
                  "            _put(self, name, torch.zeros(shape, dtype=getattr(torch, dtype)), kind)\n")
    if constants:
        extra += ("        for name, (shape, dtype, data) in CONSTANTS.items():\n"
                  "            _put(self, name, _decode(shape, dtype, data), \"constant\")\n")
    net = (f"class Net(nn.Module):\n"
           f"    \"\"\"The searched network as torch.fx traced it: the standard torch.nn layers below at its\n"
           f"    own names, the rest of its forward written out.\"\"\"\n\n"
           f"    def __init__(self, num_classes: int = {k}) -> None:\n"
           f"        super().__init__()\n"
           f"        layers = {{\n{init}\n        }}\n"
           f"        for name, layer in layers.items():\n"
           f"            _put(self, name, layer)\n{extra}\n"
           f"{forward}\n")
    if tensors:
        out.definitions.append("# Tensors of the network's own layers, loaded from weights.pt: dotted name, shape, "
                               "dtype, kind.\nTENSORS = [\n" + "\n".join(tensors) + "\n]")
    if constants:
        out.definitions.append("# Tensors the state dict does not hold (non-persistent buffers, constants): exact "
                               "bytes.\nCONSTANTS = {\n" + "\n".join(constants) + "\n}")
    else:
        out.imports.pop("import base64", None)
    out.definitions += [_PUT] + ([_DECODE] if constants else []) + [net.rstrip("\n")]
    build = (f"def build(num_classes: int = {k}) -> nn.Module:\n"
             f"    \"\"\"The searched network, untrained.\"\"\"\n"
             f"    return Net(num_classes)\n")
    note = ("The network was written by torch.fx from the model archscale built (its family has no\n"
            "network(): see archscale's docs on custom families): standard torch.nn layers, and its own\n"
            "layers' code inlined in forward as traced in eval mode.")
    return Section(out, build, classifier_of(model, other) if other is not None else None, "fx", note)


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
    for node in gm.graph.nodes:
        node.type = None  # no annotations: fx would name torch.Tensor by an alias of its own
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


def graph_section(model: nn.Module, input_shape: tuple[int, int, int], k: int, why: str) -> Section:
    """The last resort: the model's inference graph, one ATen operator a line."""
    state = model.state_dict()
    param_names = {name for name, _ in model.named_parameters()}
    example = torch.randn(2, *input_shape)
    gm, dynamic = capture(model, example)
    _clean(gm)
    forward, globals_needed = _forward_source(gm)
    tensors = [f"    ({name!r}, {tuple(t.shape)!r}, {str(t.dtype).removeprefix('torch.')!r}, "
               f"{'parameter' if name in param_names else 'buffer'!r}),"
               for name, t in state.items()]
    constants = _constants(gm, state, "the graph")
    out = Closure()
    for line in ("import base64", "import math", "import torch", "from torch import nn", *globals_needed):
        out.imports[line] = None
    tables = ("# Tensors of the state dict (loaded from weights.pt): dotted name, shape, dtype, kind.\n"
              "TENSORS = [\n" + "\n".join(tensors) + "\n]\n\n"
              "# Tensors the state dict does not hold (non-persistent buffers, constants): exact bytes.\n"
              "CONSTANTS = {\n" + "\n".join(constants) + ("\n" if constants else "") + "}\n"
              f"BATCH = {None if dynamic else int(example.shape[0])!r}  # None: any batch size")
    net = ("class Net(nn.Module):\n"
           "    \"\"\"The searched network's inference graph (eval mode), one ATen operator a line.\"\"\"\n\n"
           "    def __init__(self) -> None:\n"
           "        super().__init__()\n"
           "        for name, shape, dtype, kind in TENSORS:\n"
           "            _put(self, name, torch.zeros(shape, dtype=getattr(torch, dtype)), kind)\n"
           "        for name, (shape, dtype, data) in CONSTANTS.items():\n"
           "            _put(self, name, _decode(shape, dtype, data), \"constant\")\n\n" + forward)
    out.definitions += [tables, _PUT, _DECODE, net.rstrip("\n")]
    build = (f"def build(num_classes: int = {k}) -> nn.Module:\n"
             f"    \"\"\"The network's graph, untrained; it has {k} classes and no other number.\"\"\"\n"
             f"    if num_classes != {k}:\n"
             f"        raise NotImplementedError(\"this model.py holds an inference graph of {k} classes (see its \"\n"
             f"                                  \"docstring); a new classifier needs the network's source\")\n"
             f"    return Net()\n")
    note = ("NOTE: archscale could not write this network as torch.nn code, so it wrote torch.export's\n"
            f"inference graph instead (ATen operators, eval mode only, {k} classes only). Why:\n"
            + textwrap.indent(textwrap.fill(why, 88), "    "))
    return Section(out, build, None, "graph", note)
