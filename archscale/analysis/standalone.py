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

import dataclasses
import math
import sys
import types
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from archscale.analysis.closure import Closure, ClosureError, archscale_module, closure
from archscale.space import Arch, SearchSpace, get_space
from archscale import pixels
from archscale.analysis.modelgraph import Section, StandaloneError, classifier_of, fx_section, graph_section

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
    return Section(out, build, classifier_of(space.build_model(arch), _rebuilt(space, arch, k + 1)), "source")


def _rebuilt(space: SearchSpace, arch: Arch, num_classes: int) -> nn.Module:
    return space.build_model(space.resolve({**arch.params, "num_classes": num_classes}))


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
                section = fx_section(model, other, k, arch)
            else:
                section = graph_section(model, input_shape, k, "; ".join(why) or "asked for")
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
