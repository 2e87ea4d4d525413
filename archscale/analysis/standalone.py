"""The standalone ``model.py`` of an export: plain PyTorch that imports nothing from archscale.

Every ``model.py`` has the same shell: ``ARCH``, ``INPUT_SHAPE`` (C, H, W), ``CLASSES`` (names by
label), ``INPUT`` (how the search brought an image to the network), ``CLASSIFIER`` (the layer
``load(num_classes=N)`` makes anew), ``build(num_classes)``, ``preprocess(image)`` and
``load(weights=None, device="cpu", num_classes=None)``. ``preprocess`` is the source of
:mod:`archscale.pixels`, the functions the search's own loading calls. The network
section is written by the first of three writers that works; each one's text is run here and
checked against the model (the same state-dict names and shapes, the same eval logits within
1e-5, a ``build(N)`` of N outputs) before the file is written:

- **source** (a family with :meth:`SearchSpace.network`, archscale's own among them): the
  network's own classes and what they use, taken from their modules (:mod:`analysis.closure`),
  and a ``build`` that calls the constructor with the architecture's parameters written out.
  One definition: the file runs archscale's own ``forward``, and trains as the search did.
- **fx** (any other family whose model ``torch.fx.symbolic_trace`` can trace): ``Net``, its
  standard ``torch.nn`` layers built from their reprs at the model's dotted names, and
  ``forward`` as the code fx generates (the user's own layers inlined as torch calls, their
  tensors at the same names, branches on ``self.training`` fixed as in eval mode).
- **graph** (the last resort, said in the file and by the export): ``torch.export``'s
  inference graph, one ATen operator a line; the number of classes is fixed.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import math
import operator
import re
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.export import Dim, export

from archscale.analysis.closure import Closure, ClosureError, archscale_module, closure
from archscale.space import Arch, SearchSpace, get_space
from archscale.space.registry import Network
from archscale import pixels

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


# --------------------------------------------------------------------------- source writer


def _literal(a: Any, b: Any, k: int, out: Closure, owned: Callable[[str], bool], indent: int = 0) -> str:
    """Python source for ``a`` (an argument of the network at ``k`` classes), given ``b`` (the
    same argument at ``k + 1`` classes): where they differ by exactly that, ``num_classes``."""
    if type(a) is not type(b):
        raise StandaloneError(f"an argument of the network is {a!r} at {k} classes but {b!r} at {k + 1}")
    if isinstance(a, int) and not isinstance(a, bool) and (a, b) == (k, k + 1):
        return "num_classes"
    if isinstance(a, (bool, int, float, str, type(None))):
        if a != b and not (isinstance(a, float) and math.isnan(a) and math.isnan(b)):
            raise StandaloneError(f"an argument of the network is {a!r} at {k} classes but {b!r} at {k + 1}: "
                                  "derived from num_classes, which build(num_classes) cannot write")
        return repr(a)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        closure([type(a)], owned, out)
        items = [(f.name + "=", getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a) if f.init]
        return _container(f"{type(a).__name__}(", ")", items, k, out, owned, indent)
    if isinstance(a, Mapping):
        if list(a) != list(b):
            raise StandaloneError(f"the network's arguments have other keys at {k + 1} classes")
        items = [(repr(key) + ": ", a[key], b[key]) for key in a]
        return _container("{", "}", items, k, out, owned, indent)
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):
            raise StandaloneError(f"an argument of the network has {len(a)} items at {k} classes, {len(b)} at {k + 1}")
        open_, close = ("(", ",)" if len(a) == 1 else ")") if isinstance(a, tuple) else ("[", "]")
        return _container(open_, close, [("", x, y) for x, y in zip(a, b)], k, out, owned, indent)
    raise StandaloneError(f"an argument of the network, {a!r}, is not a value model.py can write")


def _container(open_: str, close: str, items: list, k: int, out: Closure, owned: Callable[[str], bool],
               indent: int) -> str:
    """``open_ items close`` on one line when it fits in 110 columns, else one item a line."""
    parts = [label + _literal(x, y, k, out, owned, indent + 4) for label, x, y in items]
    one = open_ + ", ".join(parts) + close
    if len(one) + indent <= 110 and "\n" not in one:
        return one
    pad = " " * (indent + 4)
    return open_ + "\n" + "".join(f"{pad}{p},\n" for p in parts) + " " * indent + close.lstrip(",")


def _owned_by(space: SearchSpace) -> Callable[[str], bool]:
    """The modules whose source is written out: archscale's and, for a user's family, its package's."""
    top = type(space).__module__.split(".")[0]
    return lambda name: archscale_module(name) or (top != "archscale" and name.split(".")[0] == top)


def _source_section(space: SearchSpace, arch: Arch) -> Section:
    """The network's own classes and a ``build`` calling its constructor (:meth:`SearchSpace.network`)."""
    k = int(arch.params["num_classes"])
    net, other = space.network(arch), space.network(space.resolve({**arch.params, "num_classes": k + 1}))
    if net.factory is not other.factory or list(net.kwargs) != list(other.kwargs):
        raise StandaloneError(f"{space.name}.network builds another constructor at {k + 1} classes")
    owned = _owned_by(space)
    out = closure([net.factory], owned)
    args = [f"{name}={_literal(net.kwargs[name], other.kwargs[name], k, out, owned, 8)}" for name in net.kwargs]
    call = f"{net.factory.__name__}(" + ", ".join(args) + ")"
    if len(call) > 80 or "\n" in call:
        call = f"{net.factory.__name__}(\n" + "".join(f"        {a},\n" for a in args) + "    )"
    build = (f"def build(num_classes: int = {k}) -> nn.Module:\n"
             f"    \"\"\"The searched network, untrained: {net.factory.__name__} (above, as archscale defines it) with\n"
             f"    the architecture's parameters.\"\"\"\n"
             f"    return {call}\n")
    out.imports.setdefault("from torch import nn", None)
    return Section(out, build, _classifier(space.build_model(arch), _rebuilt(space, arch, k + 1)), "source")


def _rebuilt(space: SearchSpace, arch: Arch, num_classes: int) -> nn.Module:
    return space.build_model(space.resolve({**arch.params, "num_classes": num_classes}))


def _classifier(model: nn.Module, other: nn.Module) -> str | None:
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


def _fx_section(model: nn.Module, other: nn.Module | None, k: int, arch: str) -> Section:
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
    constants = []
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target not in state:
            value = operator.attrgetter(node.target)(gm)
            if not isinstance(value, torch.Tensor):
                raise StandaloneError(f"the traced forward reads {node.target!r}, a {type(value).__name__}, not a tensor")
            constants.append(f"    {node.target!r}: {_tensor_literal(value)!r},")
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
    return Section(out, build, _classifier(model, other) if other is not None else None, "fx", note)


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


def _graph_section(model: nn.Module, input_shape: tuple[int, int, int], k: int, why: str) -> Section:
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
    constants = []
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target not in state:
            value = operator.attrgetter(node.target)(gm)
            if not isinstance(value, torch.Tensor):
                raise StandaloneError(f"the graph reads {node.target!r}, a {type(value).__name__}, not a tensor")
            constants.append(f"    {node.target!r}: {_tensor_literal(value)!r},")
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


# --------------------------------------------------------------------------- the file

_SHELL = '''"""{title}

{how}

    import model
    net = model.load()                      # the weights.pt beside this file, in eval mode
    x = model.preprocess("photo.jpg")       # float32 {shape_text}: a path, a PIL image or uint8 (C, H, W)
    label = net(x[None]).argmax(1).item()   # model.CLASSES[label] names it
    net = model.load(num_classes=5)         # every trained weight but a new classifier: fine-tune it

load(), build() and the network need only torch; preprocess() also imports torchvision (and
PIL for a PIL image) when it is called. Nothing here imports archscale.{note}
"""

{imports}

ARCH = {arch!r}
INPUT_SHAPE = {input_shape!r}  # (channels, height, width) of one image, as the network takes it
CLASSES = {classes!r}  # class names by label (None: the dataset names none)
# How the search brought every image to the network (preprocess): decoded to `channels`,
# its short side resized to `side` and the centre square cropped when `resize` (an image
# folder; array datasets were used as stored), then (pixels / 255 - mean) / std per channel.
INPUT = {input!r}
CLASSIFIER = {classifier!r}  # the layer load(num_classes=N) makes anew (None: it cannot)


# --------------------------------------------------------------------------- the network

{network}


{build}

# --------------------------------------------------------------------------- its input

{pixels}


def preprocess(image) -> torch.Tensor:
    """float32 {chw} of one image, as the search gave it to the network: ``image`` is a file's
    path (decoded as the search decoded its image folder, with torchvision), a PIL image or a
    uint8 tensor (C, H, W). Batch with ``torch.stack`` (or ``x[None]`` for one)."""
    return to_input(image, **INPUT)


# --------------------------------------------------------------------------- loading


def load(weights: str | Path | None = None, device: str | torch.device = "cpu",
         num_classes: int | None = None) -> nn.Module:
    """The network with ``weights`` (default: the weights.pt beside this file) loaded, in eval
    mode. With ``num_classes``, a new classifier (CLASSIFIER) of that many classes, freshly
    initialised, and every other trained weight: call ``.train()`` and fine-tune it."""
    path = Path(weights) if weights is not None else Path(__file__).resolve().with_name({weights_file!r})
    state = torch.load(path, map_location="cpu", weights_only=True)
    if num_classes is None:
        net = build()
    elif CLASSIFIER is None:
        raise ValueError("this network's number of classes cannot be changed (see CLASSIFIER)")
    else:
        net = build(num_classes)
        fresh = {{k: v for k, v in net.state_dict().items() if k.startswith(CLASSIFIER + ".")}}
        state = {{k: v for k, v in state.items() if not k.startswith(CLASSIFIER + ".")}} | fresh
    net.load_state_dict(state)
    return net.to(device).eval()


if __name__ == "__main__":
    net = load()
    x = torch.randn(2, *INPUT_SHAPE)
    print(f"{{ARCH}}: input {{tuple(x.shape)}} -> logits {{tuple(net(x).shape)}}")
'''

_SOURCE_HOW = ("The network is archscale's own code for it, copied from the modules that define it, and\n"
               "build() calls its constructor with the searched parameters: it trains as the search did\n"
               "(BatchNorm, dropout and the rest follow .train() and .eval()).")


def _import_block(lines: list[str]) -> str:
    """Import lines: the standard library first, then the rest, each group sorted."""
    third = ("torch", "torchvision", "PIL", "numpy")
    def key(line: str) -> tuple[bool, str]:
        module = line.split()[1]
        return module.split(".")[0] in third or module.split(".")[0] not in _STDLIB, module
    ordered = sorted(dict.fromkeys(lines), key=key)
    groups = [[l for l in ordered if not key(l)[0]], [l for l in ordered if key(l)[0]]]
    return "\n\n".join("\n".join(g) for g in groups if g)


_STDLIB = {"base64", "builtins", "collections", "dataclasses", "math", "operator", "pathlib", "re", "typing",
           "functools", "itertools", "types"}


def model_text(section: Section, *, arch: str, input_shape: tuple[int, int, int], loading: Mapping[str, Any],
               classes: list[str] | None, weights_file: str = "weights.pt") -> str:
    """The whole ``model.py`` around a writer's network section."""
    out = section.closure
    first = len(out.definitions)
    closure([pixels.to_input], archscale_module, out)  # preprocess: the loader's own functions
    out.imports.setdefault("from pathlib import Path", None)
    out.imports.setdefault("import torch", None)
    out.imports.setdefault("from torch import nn", None)
    c, h, w = input_shape
    how = _SOURCE_HOW if section.writer == "source" else section.note
    return _SHELL.format(
        title=f"The {arch.split(':', 1)[0]} network of an archscale search, as plain PyTorch.",
        how=how, note="", shape_text=f"({c}, {h}, {w})", chw=f"({c}, {h}, {w})",
        imports=_import_block(list(out.imports)), arch=arch, input_shape=tuple(input_shape), classes=classes,
        input=dict(loading), classifier=section.classifier,
        network="\n\n\n".join(out.definitions[:first]), build=section.build.rstrip("\n") + "\n",
        pixels="\n\n\n".join(out.definitions[first:]), weights_file=weights_file)


def check_text(text: str, model: nn.Module, input_shape: tuple[int, int, int], other: nn.Module | None) -> None:
    """Raise :class:`StandaloneError` unless ``text``'s ``build()`` has ``model``'s state-dict
    names and shapes and, with ``model``'s weights, gives its eval logits (within 1e-5); and
    ``build(k + 1)`` has ``other``'s output size (``other``: the model at one class more)."""
    module = types.ModuleType("archscale_model_py_check")  # a module, as dataclasses expect of a class's home
    namespace = module.__dict__
    sys.modules[module.__name__] = module
    try:
        exec(compile(text, "model.py", "exec"), namespace)  # noqa: S102 - our own generated source, checked here
        net = namespace["build"]()
    except Exception as err:  # noqa: BLE001 - whatever the written source raises
        raise StandaloneError(f"the written model.py does not run ({type(err).__name__}: {err})") from None
    finally:
        del sys.modules[module.__name__]
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()))[:6]
        raise StandaloneError(f"the written network's state dict differs from the model's: {diff}")
    net.load_state_dict(model.state_dict())
    was_training = model.training
    model.eval()
    net.eval()
    try:
        x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = model(x)
            gap = (net(x) - y).abs().max().item()
            if other is not None and namespace["CLASSIFIER"] is not None:
                wider = namespace["build"](y.shape[1] + 1).eval()(x).shape[1]
                if wider != y.shape[1] + 1:
                    raise StandaloneError(f"build({y.shape[1] + 1}) gives {wider} outputs")
    finally:
        model.train(was_training)
    if not gap < 1e-5:
        raise StandaloneError(f"the written network's eval logits differ from the model's by {gap:.3g}")


def write_model_py(model: nn.Module, input_shape: tuple[int, int, int], path: str | Path, *, arch: str,
                   loading: Mapping[str, Any], classes: list[str] | None = None, weights_file: str = "weights.pt",
                   writers: tuple[str, ...] = ("source", "fx", "graph")) -> tuple[Path, str, list[str]]:
    """Write ``path`` (a ``model.py``) for ``model``, the network of ``arch`` (its text form);
    ``input_shape`` is (C, H, W) and ``loading`` the ``INPUT`` of :func:`pixels.loading`. The
    first of ``writers`` that works writes it. Returns the path, the writer, and why each
    writer before it did not (empty when the first one did)."""
    parsed = Arch.from_text(arch)
    space = get_space(parsed.family)
    parsed = space.resolve(parsed.params)
    k = int(parsed.params["num_classes"])
    try:
        other = _rebuilt(space, parsed, k + 1)
    except Exception:  # noqa: BLE001 - a family that cannot build another number of classes
        other = None
    why: list[str] = []
    for writer in writers:
        try:
            if writer == "source":
                if type(space).network is SearchSpace.network:
                    raise StandaloneError(f"family {space.name} has no network() to write its source from")
                section = _source_section(space, parsed)
            elif writer == "fx":
                section = _fx_section(model, other, k, arch)
            else:
                section = _graph_section(model, input_shape, k, "; ".join(why) or "asked for")
            text = model_text(section, arch=arch, input_shape=input_shape, loading=loading, classes=classes,
                              weights_file=weights_file)
            check_text(text, model, input_shape, other)
        except (StandaloneError, ClosureError) as err:
            why.append(f"{writer}: {err}")
            continue
        except Exception as err:  # noqa: BLE001 - torch.export fails in many ways
            if writer != "graph":
                raise
            why.append(f"{writer}: {err}")
            continue
        path = Path(path)
        path.write_text(text)
        return path, writer, why
    raise StandaloneError("model.py could not be written: " + "; ".join(why))


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
