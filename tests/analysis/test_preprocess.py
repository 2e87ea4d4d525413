"""An export carries what its accuracy depends on: for every built-in family and a user's own,
``archscale export`` of a trial trained on an image folder writes a model.py that, in a fresh
interpreter where archscale cannot be imported, gives the model's logits, has no ATen call, makes
a new classifier with ``load(num_classes=2)``, and whose ``preprocess`` turns the folder's raw
files (PNG, JPEG, grey, RGBA, of varied sizes) into exactly what archscale's loader gave the
network. An array dataset's export (npz, mnist-5k) takes its images as stored."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from archscale.analysis.export import export_trial, trial_files, write_trial_files
from archscale.space import get_space
from archscale.trainer.batches import channel_stats, normalise
from archscale.trainer.imagefolder import list_folder, load_folder

from tests.analysis.test_standalone import TINY, randomise_running_stats
from tests.search.dispatch.test_custom_family import write_family

SIDE = 24
CLASSES = ["cat", "dog", "owl"]
# (name, size, PIL mode, format): varied sides, colour, grey and alpha, PNG and JPEG
IMAGES = [("a.png", (40, 30), "RGB", "PNG"), ("b.jpg", (50, 64), "RGB", "JPEG"), ("c.png", (36, 36), "L", "PNG"),
          ("d.png", (33, 40), "RGBA", "PNG"), ("e.jpg", (24, 29), "L", "JPEG")]
CASES = [
    ("budgeted", {**TINY}),
    ("davidnet", {"width_mult": 0.1, "bn_weight": "frozen"}),
    ("efficientnet", {"base_width": 0.125, "divisor": 4, "phi": 1.0}),
    ("user", {"width": 4}),
]

CHECK = r"""
from PIL import Image
torch.set_num_threads(1)
out = {}
for folder in sys.argv[1:]:
    module = load_model_py(folder)
    ref = torch.load(folder + "/reference.pt")
    text = open(folder + "/model.py").read()
    net = module.load()
    with torch.no_grad():
        logits = net(ref["inputs"])
        two = module.load(num_classes=2)(ref["inputs"]).shape[1]
    x = torch.stack([module.preprocess(f) for f in ref["files"]])
    pil = [f for f in ref["files"] if f.endswith(".png")]
    x_pil = torch.stack([module.preprocess(Image.open(f)) for f in pil])
    x_ref_pil = ref["inputs"][[ref["files"].index(f) for f in pil]]
    try:
        module.preprocess(ref["wrong_size"]) if ref["wrong_size"] else None
        refused = False
    except ValueError:
        refused = True
    out[folder] = {
        "logit_diff": (logits - ref["logits"]).abs().max().item(),
        "preprocess_diff": (x - ref["inputs"]).abs().max().item(),
        "pil_diff": (x_pil - x_ref_pil).abs().max().item(),
        "two": two, "aten": "aten" in text, "classes": module.CLASSES, "shape": list(module.INPUT_SHAPE),
        "test_accuracy": json.load(open(folder + "/metrics.json"))["test_accuracy"],
        "refused": refused, "training": net.training,
        "imports": sorted({m.split(".")[0] for m in sys.modules} & {"archscale", "space", "analysis"}),
    }
print(json.dumps(out))
"""


def write_folder(root: Path) -> Path:
    """An image folder: three classes, each split holding every kind of IMAGES."""
    gen = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for name, (w, h), mode, fmt in IMAGES:
                pixels = gen.integers(0, 256, (h, w, 3), dtype=np.uint8)
                pixels[..., label] //= 2  # a little class signal
                Image.fromarray(pixels).convert(mode).save(root / split / cls / name, fmt, quality=90)
    return root


def export_case(root: Path, family: str, values: dict, dataset: str, files: list[Path], images: torch.Tensor,
                context: dict, classes: list[str] | None) -> Path:
    """A run directory written by hand (one trial of a randomly initialised model), exported;
    beside its model.py, reference.pt: the files, archscale's inputs for them and its logits."""
    space = get_space(family)
    arch = space.resolve(values, context)
    torch.manual_seed(0)
    model = space.build_model(arch)
    randomise_running_stats(model)
    mean, std = channel_stats(images)
    run = root / f"run-{space.name}-{context['in_channels']}"
    write_trial_files(run / "trials" / "t1", trial_files(model, {
        "arch": arch.text, "mean": mean, "std": std, "metrics": {"val_accuracy": 0.5, "test_accuracy": 0.25},
        "data": {"dataset": dataset}, "classes": classes}))
    out = export_trial(run, "t1", root / f"export-{space.name}-{context['in_channels']}")
    inputs = normalise(images, mean, std, torch.device("cpu"))  # (N, C, S, S): what training fed the network
    with torch.no_grad():
        logits = model.eval()(inputs)
    wrong = None if dataset.startswith("imagefolder:") else str(files[0].with_name("wrong.png"))
    if wrong:
        Image.new("L", (context["image_size"] + 3, context["image_size"])).save(wrong)
    torch.save({"files": [str(f) for f in files], "inputs": inputs, "logits": logits, "wrong_size": wrong},
               out / "reference.pt")
    return out


def test_exported_model_py_repeats_the_search_on_raw_files(tmp_path, monkeypatch, isolated, no_archscale_python):
    torch.set_num_threads(1)
    folder = write_folder(tmp_path / "pets")
    dataset = load_folder(folder, SIDE, data_root=tmp_path / "cache", progress=False)
    scan = list_folder(folder, SIDE)
    files = [f for split in ("train", "test") for f, _ in scan.files[split]]
    images = torch.cat([dataset.x_train, dataset.x_test])  # the loader's uint8 (N, 3, S, S), in files' order
    context = {"in_channels": 3, "num_classes": len(CLASSES), "image_size": SIDE}
    write_family(tmp_path / "family", "petnet")
    monkeypatch.chdir(tmp_path / "family")
    exports = {}
    for name, values in CASES:
        family = "petnet:TinyNet" if name == "user" else name
        exports[name] = export_case(tmp_path, family, values, f"imagefolder:{folder}", files, images, context,
                                    CLASSES)
    # An array dataset (npz, as mnist-5k): grey 12 px images used as stored, here as PNG files.
    grey = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 1, 12, 12), dtype=np.uint8))
    pngs = []
    for i, image in enumerate(grey):
        pngs.append(tmp_path / "digits" / f"{i}.png")
        pngs[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(image[0].numpy()).save(pngs[-1])
    exports["npz"] = export_case(tmp_path, "budgeted", TINY, f"npz:{tmp_path / 'digits.npz'}", pngs, grey,
                                 {"in_channels": 1, "num_classes": 10, "image_size": 12}, None)

    stdout = no_archscale_python(CHECK, *map(str, exports.values()), cwd=tmp_path)
    results = json.loads(stdout.strip().splitlines()[-1])
    for name, out in exports.items():
        r = results[str(out)]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["model_py"] == ("fx" if name == "user" else "source"), (name, metrics.get("model_py_notes"))
        assert r["imports"] == [] and not r["aten"] and not r["training"], name
        assert r["logit_diff"] < 1e-5, name
        assert r["two"] == 2, name
        assert r["preprocess_diff"] < 1e-6 and r["pil_diff"] < 1e-6, (name, r)
        assert r["test_accuracy"] == 0.25
        if name == "npz":
            assert r["classes"] is None and r["shape"] == [1, 12, 12] and r["refused"]
        else:
            assert r["classes"] == CLASSES and r["shape"] == [3, SIDE, SIDE]
