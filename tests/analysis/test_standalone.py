"""The standalone model.py of every registered family, run in a fresh interpreter where
archscale cannot be imported: the built model's state-dict keys, its eval logits (< 1e-6), the
same weights and BatchNorm statistics after one SGD step in train mode (< 1e-5), a new
classifier with ``load(num_classes=N)``; its classes are archscale's own source; and the fx and
graph writers a family without ``network()`` falls back to."""

import importlib.util
import inspect
import json
import textwrap
from pathlib import Path

import pytest
import torch

from archscale.analysis.standalone import StandaloneError, write_model_py
from archscale.space import get_space, list_spaces
from archscale.space.davidnet import AIRBENCH94
from archscale.space.registry import Network
from archscale.pixels import loading

CIFAR = {"in_channels": 3, "num_classes": 10, "image_size": 16}  # small images keep the tests fast on 2 cores
MNIST = {"in_channels": 1, "num_classes": 10, "image_size": 28}
SMALL = {"in_channels": 1, "num_classes": 3, "image_size": 8}
HALF = {"in_channels": 3, "num_classes": 10, "image_size": 112}  # half of what the 224 px bases were designed for
TINY = {f"c{i}_width": w for i, w in enumerate((4, 6, 8, 8), 1)}
NARROW = {"base_width": 0.125, "divisor": 4}

# Each family at its smallest, default and largest settings and at the points whose layers
# export must get right (BlurPool, SE, ghost/group/layer norm, dilated and depthwise convs,
# DavidNet placements, frozen BatchNorm scales, compound scaling's resize, stochastic depth).
CASES = [
    ("budgeted-default", "budgeted", {}, CIFAR),
    ("budgeted-smallest", "budgeted", {**{f"c{i}_width": 1 for i in range(1, 5)},
                                       **{f"c{i}_convs": 1 for i in range(1, 5)}}, SMALL),
    ("budgeted-largest", "budgeted", {**TINY, **{f"c{i}_convs": 8 for i in range(1, 5)},
                                      **{f"c{i}_conv": "dilated" for i in range(1, 5)},
                                      **{f"c{i}_dilation": 8 for i in range(1, 5)},
                                      "blurpool": True, "blur_size": 5, "se_ratio": 1.0, "dropout": 0.9}, MNIST),
    ("budgeted-blurpool-se", "budgeted", {**TINY, "blurpool": True, "se_ratio": 0.25, "dropout": 0.2}, MNIST),
    ("budgeted-dilated-group", "budgeted", {**TINY, "c2_conv": "dilated", "c3_conv": "depthwise", "norm": "group",
                                            "downsample": "dilation", "activation": "silu"}, MNIST),
    ("budgeted-maxblurpool-layer", "budgeted", {**TINY, "blurpool": True, "downsample": "maxpool", "norm": "layer",
                                                "blur_size": 4, "activation": "gelu"}, MNIST),
    ("budgeted-ghost-depthwise", "budgeted", {**TINY, **{f"c{i}_conv": "depthwise" for i in range(1, 5)},
                                              "norm": "ghost", "ghost_batch": 2, "downsample": "maxpool",
                                              "activation": "celu"}, MNIST),
    ("budgeted-no-norm", "budgeted", {**TINY, "norm": "none", "c4_conv": "dilated", "c4_dilation": 4}, MNIST),
    ("davidnet-default", "davidnet", {}, CIFAR),
    ("davidnet-smallest", "davidnet", {"width_mult": 0.05, **{f"{n}_add": "none" for n in ("layer1", "layer2", "layer3")},
                                       "prep_kernel": 2, "prep_norm": False}, CIFAR),
    ("davidnet-airbench94", "davidnet", {**AIRBENCH94, "width_mult": 0.125}, CIFAR),
    ("davidnet-largest-ghost", "davidnet", {"width_mult": 0.1, **{f"{n}_add": "extra+residual" for n in ("layer1", "layer2", "layer3")},
                                            "norm": "ghost", "ghost_batch": 2, "pool": "avg", "final_pool": "avg",
                                            "order": "conv-pool-bn", "activation": "celu", "head_scale": 10.0}, CIFAR),
    ("efficientnet-b0", "efficientnet", {**NARROW, "base_width": 0.25, "divisor": 8}, CIFAR),
    ("efficientnet-b0-phi1", "efficientnet", {**NARROW, "phi": 1.0}, MNIST),  # resized 28 -> 32
    ("efficientnet-b0-phi2-stage", "efficientnet", {**NARROW, "phi": 2.0, "depth_rounding": "stage"}, CIFAR),  # 16 -> 20
    ("efficientnet-resnet18", "efficientnet", {**NARROW, "base": "resnet18", "dropout": 0.0,
                                               "stochastic_depth": 0.0}, CIFAR),
    ("efficientnet-resnet18-phi1", "efficientnet", {**NARROW, "base": "resnet18", "phi": 1.0}, MNIST),
    # torchvision's ResNet-18 strides: 7x7/2 stem, 3x3/2 max-pool; resized 112 -> 128 (a multiple of its step 8)
    ("efficientnet-resnet18_224-phi1", "efficientnet", {**NARROW, "base": "resnet18_224", "phi": 1.0}, HALF),
]
assert {family for _, family, _, _ in CASES} == set(list_spaces())

# Run with the no_archscale_python fixture: every folder's model.py against what archscale's
# own model did in this process (saved in reference.pt).
CHECK = r"""
torch.set_num_threads(1)  # tiny models: one thread is many times faster than two on a shared machine
out = {}
for folder in sys.argv[1:]:
    module = load_model_py(folder)
    ref = torch.load(folder + "/reference.pt")
    net = module.load()  # strict load of weights.pt, eval mode
    with torch.no_grad():
        eval_diff = max((net(x) - y).abs().max().item() for x, y in ref["eval"])
    # One SGD step in train mode, from the same weights, batch and random stream.
    net.train()
    x, y = ref["batch"]
    torch.manual_seed(1)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    optimiser.step()
    after = net.state_dict()
    train_diff = max((after[k].double() - v.double()).abs().max().item() for k, v in ref["after"].items())
    changed = sum(not torch.equal(after[k], v) for k, v in torch.load(folder + "/weights.pt").items())
    # A new classifier of 7 classes; every other trained tensor kept.
    weights = torch.load(folder + "/weights.pt")
    seven = module.load(num_classes=7)
    kept = seven.state_dict()
    classifier = [k for k in kept if k.startswith(module.CLASSIFIER + ".")]
    with torch.no_grad():
        shape = list(seven(ref["eval"][0][0]).shape)
    out[folder] = {
        "keys_equal": list(net.state_dict()) == list(weights), "eval_diff": eval_diff, "train_diff": train_diff,
        "loss_diff": abs(loss.item() - ref["loss"]), "changed": changed,
        "seven_shape": shape, "classifier": classifier,
        "kept_equal": all(torch.equal(kept[k], v) for k, v in weights.items() if k not in classifier),
        "classifier_rows": [kept[k].shape[0] for k in classifier],
        "imports": sorted({m.split(".")[0] for m in sys.modules} & {"archscale", "space", "analysis"}),
    }
print(json.dumps(out))
"""


def randomise_running_stats(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so eval-mode normalisation is really exercised."""
    gen = torch.Generator().manual_seed(0)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)


def reference(model: torch.nn.Module, chw: tuple[int, int, int], num_classes: int) -> dict:
    """What archscale's own model gives: eval logits at two batch sizes, and the state after one
    SGD step in train mode (same seed, batch and optimiser as CHECK)."""
    gen = torch.Generator().manual_seed(2)
    model.eval()
    with torch.no_grad():
        eval_io = [(x, model(x)) for x in (torch.randn(3, *chw, generator=gen), torch.randn(1, *chw, generator=gen))]
    batch = (torch.randn(4, *chw, generator=gen), torch.randint(0, num_classes, (4,), generator=gen))
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    torch.manual_seed(1)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
    loss.backward()
    optimiser.step()
    after = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(trained)
    model.eval()
    return {"eval": eval_io, "batch": batch, "after": after, "loss": loss.item()}


def export_case(root: Path, case: str, family: str, values: dict, context: dict) -> Path:
    arch = get_space(family).resolve(values, context)
    torch.manual_seed(0)
    model = get_space(family).build_model(arch)
    randomise_running_stats(model)
    folder = root / case
    folder.mkdir()
    torch.save(model.state_dict(), folder / "weights.pt")
    chw = (context["in_channels"], context["image_size"], context["image_size"])
    _, writer, why = write_model_py(model, chw, folder / "model.py", arch=arch.text,
                                    loading=loading(None, chw[0], chw[1], [0.5] * chw[0], [0.25] * chw[0]))
    assert writer == "source", why
    torch.save(reference(model, chw, context["num_classes"]), folder / "reference.pt")
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is many times faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, no_archscale_python, one_thread):
    """Export every case, then check them all in one fresh interpreter: ({case: result}, {case: folder})."""
    root = tmp_path_factory.mktemp("standalone")
    folders = {case: str(export_case(root, case, family, values, context)) for case, family, values, context in CASES}
    stdout = no_archscale_python(CHECK, *folders.values(), cwd=root)
    results = json.loads(stdout.strip().splitlines()[-1])
    return {case: results[folder] for case, folder in folders.items()}, folders


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_model_py_is_the_same_model_without_archscale(exported, case):
    results, folders = exported
    r = results[case]
    assert r["keys_equal"] and r["imports"] == []
    assert r["eval_diff"] < 1e-6
    assert r["changed"] > 0  # the step did change the weights (and statistics)
    assert r["loss_diff"] < 1e-5 and r["train_diff"] < 1e-5
    context = next(c for name, _, _, c in CASES if name == case)
    assert r["seven_shape"] == [3, 7] and r["classifier_rows"] and set(r["classifier_rows"]) == {7}
    assert r["kept_equal"]
    source = Path(folders[case], "model.py").read_text()
    imports = [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))]
    allowed = ("__future__", "torch", "math", "pathlib", "collections", "typing", "dataclasses", "re")
    assert all(ln.split()[1].split(".")[0] in allowed for ln in imports), imports
    assert "aten" not in source and "get_parameter" not in source  # the network's source, not a trace
    assert f"num_classes: int = {context['num_classes']}" in source


def test_model_py_is_the_networks_own_source(exported):
    """One definition: every class and function of a model.py's network section is archscale's
    own, character for character, and build() writes the architecture's numbers."""
    import ast

    from archscale.space import blocks, layouts, scaling
    from archscale.space.nets import budgeted, davidnet, efficientnet

    _, folders = exported
    modules = (budgeted, davidnet, efficientnet, blocks, layouts, scaling)
    for case, folder in folders.items():
        source = Path(folder, "model.py").read_text()
        network = source.split("# " + "-" * 75 + " the network", 1)[1].split("\ndef build(", 1)[0]
        defined = [node.name for node in ast.parse(network).body if hasattr(node, "name")]
        assert defined, case
        for name in defined:
            theirs = [m for m in modules if hasattr(m, name)]
            assert textwrap.dedent(inspect.getsource(getattr(theirs[0], name))).strip() in network, (case, name)
    source = Path(folders["budgeted-default"], "model.py").read_text()
    assert "return BudgetedNet(" in source and "'c1_width': 16," in source and "'num_classes': num_classes," in source
    source = Path(folders["efficientnet-resnet18_224-phi1"], "model.py").read_text()
    assert "return CompoundNet(" in source and "resolution=128," in source and "stem_pool=3," in source


def test_a_family_without_network_gets_fx_then_the_graph(tmp_path):
    """The fx writer (standard torch.nn layers, the rest of forward traced) and, when nothing
    else works, the ATen graph, with a note in the file; both give the model's logits."""
    space = get_space("davidnet")
    arch = space.resolve({"width_mult": 0.1}, CIFAR)
    torch.manual_seed(0)
    model = space.build_model(arch)
    randomise_running_stats(model)
    model.eval()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    x = torch.randn(3, 3, 16, 16)
    for writer in ("fx", "graph"):
        path, used, _ = write_model_py(model, (3, 16, 16), tmp_path / f"{writer}.py", arch=arch.text,
                                       loading=loading(None, 3, 16, [0.5] * 3, [0.25] * 3), writers=(writer,))
        text = path.read_text()
        assert used == writer and ("torch.ops.aten" in text) == (writer == "graph")
        assert ("NOTE: archscale could not write this network as torch.nn code" in text) == (writer == "graph")
        spec = importlib.util.spec_from_file_location(f"{writer}_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with torch.no_grad():
            assert (module.load(tmp_path / "weights.pt")(x) - model(x)).abs().max() < 1e-5
        if writer == "fx":
            assert "out_features=num_classes" in text and "self.get_submodule('body.prep.conv')" in text
            assert module.load(tmp_path / "weights.pt", num_classes=4)(x).shape == (3, 4)
        else:
            with pytest.raises(ValueError, match="cannot be changed"):
                module.load(tmp_path / "weights.pt", num_classes=4)


def test_a_source_that_differs_from_the_model_is_refused(tmp_path, monkeypatch):
    """write_model_py checks the written network against the model before writing it."""
    space = get_space("budgeted")
    arch = space.resolve(TINY, MNIST)
    model = space.build_model(arch)
    wrong = space.network(space.resolve({**TINY, "c2_width": 5}, MNIST))
    monkeypatch.setattr(type(space), "network",
                        lambda self, a: Network(wrong.factory, {"p": {**wrong.kwargs["p"], "num_classes": a.params["num_classes"]}}))
    with pytest.raises(StandaloneError, match="state dict differs"):
        write_model_py(model, (1, 28, 28), tmp_path / "model.py", arch=arch.text,
                       loading=loading(None, 1, 28, [0.5], [0.25]), writers=("source",))
    assert not (tmp_path / "model.py").exists()


COMPILE_AND_ONNX = r"""
module = load_model_py(sys.argv[1])
net = module.load()
x = torch.load(sys.argv[1] + "/reference.pt")["eval"][0][0]
with torch.no_grad():
    eager = net(x)
    compiled = torch.compile(net)(x)
print(json.dumps({"compile_diff": (compiled - eager).abs().max().item()}))
try:
    import onnxruntime, onnxscript  # noqa: F401
except ImportError:
    sys.exit(0)
path = sys.argv[1] + "/net.onnx"
torch.onnx.export(net, (x,), path, input_names=["input"], output_names=["logits"],
                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), dynamo=True, verbose=False)
session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
(got,) = session.run(["logits"], {"input": x.numpy()})
print(json.dumps({"onnx_diff": float(abs(got - eager.numpy()).max())}))
"""


@pytest.mark.slow
def test_model_py_compiles_and_exports_to_onnx_without_archscale(exported, no_archscale_python):
    """torch.compile (inductor on the CPU) and the ONNX exporter take the written Net as it is."""
    _, folders = exported
    folder = folders["budgeted-smallest"]
    stdout = no_archscale_python(COMPILE_AND_ONNX, folder, cwd=Path(folder))
    results = {}
    for line in stdout.strip().splitlines():
        if line.startswith("{"):
            results.update(json.loads(line))
    assert results["compile_diff"] < 1e-5
    if "onnx_diff" in results:
        assert results["onnx_diff"] < 1e-4


def test_onnx_export_matches_under_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from archscale.analysis.standalone import write_onnx

    _, family, values, context = CASES[3]  # blurpool + squeeze-excite
    arch = get_space(family).resolve(values, context)
    torch.manual_seed(0)
    model = get_space(family).build_model(arch)
    randomise_running_stats(model)
    model.eval()
    chw = (context["in_channels"], context["image_size"], context["image_size"])
    path = write_onnx(model, chw, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = torch.randn(batch, *chw)
        (got,) = session.run(["logits"], {"input": x.numpy()})
        with torch.no_grad():
            assert abs(got - model(x).numpy()).max() < 1e-4
