"""The standalone model.py of every registered family, run in a fresh interpreter where
archscale cannot be imported, gives the built model's logits (fp32, max abs difference < 1e-5)."""

import json

import pytest
import torch

from archscale.analysis.standalone import write_model_py
from archscale.space import get_space, list_spaces

CIFAR = {"in_channels": 3, "num_classes": 10, "image_size": 32}
MNIST = {"in_channels": 1, "num_classes": 10, "image_size": 28}

# Every family at its defaults, plus the budgeted blocks export has to get right: BlurPool's
# non-persistent filter and shape-dependent padding, squeeze-excite, dilation, group norm, dropout.
CASES = [(f"{name}-default", name, {}, CIFAR) for name in list_spaces()] + [
    ("budgeted-blurpool-se", "budgeted", {"blurpool": True, "se_ratio": 0.25, "downsample": "stride",
                                          "c1_width": 8, "c2_width": 8, "c3_width": 12, "c4_width": 16}, MNIST),
    ("budgeted-dilated-group", "budgeted", {"c2_conv": "dilated", "c3_conv": "depthwise", "norm": "group",
                                            "downsample": "dilation", "dropout": 0.1, "activation": "silu",
                                            "c1_width": 8, "c2_width": 8, "c3_width": 12, "c4_width": 16}, MNIST),
    ("budgeted-maxblurpool-layer", "budgeted", {"blurpool": True, "downsample": "maxpool", "norm": "layer",
                                                "blur_size": 4, "activation": "gelu", "c1_width": 6}, MNIST),
]

# Run with the no_archscale_python fixture: every folder's model.py against its saved io.pt.
CHECK = r"""
out = {}
for folder in sys.argv[1:]:
    module = load_model_py(folder)
    net = module.load()
    io = torch.load(folder + "/io.pt")
    with torch.no_grad():
        diffs = [(net(x) - y).abs().max().item() for x, y in io]
    out[folder] = {"max_abs_diff": max(diffs), "batch": module.BATCH}
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


@pytest.fixture(scope="module")
def exported(tmp_path_factory, no_archscale_python):
    """Export every case, then check them all in one fresh interpreter: {case: result}."""
    root = tmp_path_factory.mktemp("standalone")
    folders = {}
    for case, family, values, context in CASES:
        arch = get_space(family).resolve(values, context)
        torch.manual_seed(0)
        model = get_space(family).build_model(arch)
        randomise_running_stats(model)
        model.eval()
        folder = root / case
        folder.mkdir()
        torch.save(model.state_dict(), folder / "weights.pt")
        chw = (context["in_channels"], context["image_size"], context["image_size"])
        write_model_py(model, chw, folder / "model.py", arch=arch.text)
        with torch.no_grad():
            io = [(x, model(x)) for x in (torch.randn(3, *chw), torch.randn(1, *chw))]
        torch.save(io, folder / "io.pt")
        folders[case] = str(folder)
    stdout = no_archscale_python(CHECK, *folders.values(), cwd=root)
    results = json.loads(stdout.strip().splitlines()[-1])
    return {case: results[folder] for case, folder in folders.items()}, folders


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_standalone_model_gives_the_same_logits_without_archscale(exported, case):
    results, folders = exported
    assert results[case]["max_abs_diff"] < 1e-5
    source = open(f"{folders[case]}/model.py").read()
    imports = [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))]
    assert all(ln.split()[1].split(".")[0] in ("torch", "base64", "math", "pathlib", "operator") for ln in imports), imports


def test_standalone_weights_load_strictly_into_the_same_names(exported, tmp_path):
    """model.py keeps the original state-dict names: the trial's weights.pt loads with strict=True."""
    import importlib.util

    _, folders = exported
    folder = folders["budgeted-blurpool-se"]
    spec = importlib.util.spec_from_file_location("m", f"{folder}/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net()
    state = torch.load(f"{folder}/weights.pt")
    assert set(net.state_dict()) == set(state)
    net.load_state_dict(state, strict=True)
    assert module.BATCH is None  # the batch dimension stayed dynamic


def test_onnx_export_matches_under_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from archscale.analysis.standalone import write_onnx

    _, family, values, context = CASES[-3]  # blurpool + squeeze-excite
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
