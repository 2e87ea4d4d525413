"""Image folders: decoded as torchvision decodes them, labelled as ImageFolder labels them,
cached once, and every bad folder refused with its path named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torchvision.datasets import ImageFolder
from torchvision.io import write_jpeg, write_png
from torchvision.transforms import v2

from archscale.trainer import DataError, dataset_context, load_dataset, split
from archscale.trainer import folder as folder_module
from archscale.trainer import imagefolder
from tests.conftest import FOLDER_CLASSES as CLASSES
from tests.conftest import FOLDER_SIDE as SIDE
from tests.conftest import image_of, make_image_folder


@pytest.fixture
def images(tmp_path) -> Path:
    return make_image_folder(tmp_path / "pets")


def test_decoded_as_torchvision_decodes_and_labelled_as_imagefolder_labels(images, tmp_path):
    data = load_dataset(f"imagefolder:{images}", tmp_path / "data", SIDE)
    # torchvision's own pipeline: ImageFolder's PIL loader (RGB), v2 resize of the short side, centre crop
    pipeline = v2.Compose([v2.PILToTensor(), v2.Resize(SIDE, antialias=True), v2.CenterCrop(SIDE)])
    reference = ImageFolder(str(images / "train"), transform=pipeline)
    assert data.classes == tuple(reference.classes) == CLASSES
    assert data.y_train.tolist() == reference.targets
    assert data.x_train.shape == (12, 3, SIDE, SIDE) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (6, 3, SIDE, SIDE) and data.num_classes == 3
    for i, (path, _) in enumerate(reference.samples):
        diff = (data.x_train[i].int() - reference[i][0].int()).abs()
        assert diff.max() <= (8 if path.endswith(".jpg") else 0), path  # JPEG decoders may round differently
    assert data.context == dataset_context(f"imagefolder:{images}", tmp_path / "data", SIDE)


def test_grey_images_become_rgb_when_most_are_rgb_and_the_reverse(images, tmp_path):
    data = load_dataset(f"imagefolder:{images}", tmp_path / "data", SIDE)
    grey_png = sorted((images / "train" / "cat").glob("*.png"))
    assert data.in_channels == 3
    # the 3rd image written is grey: its three channels are equal after decoding
    third = data.x_train[2]
    assert torch.equal(third[0], third[1]) and torch.equal(third[1], third[2]) and grey_png
    mostly_grey = make_image_folder(tmp_path / "grey", grey_every=1)
    write_jpeg(image_of(3, SIDE, SIDE, 99), str(mostly_grey / "train" / "cat" / "colour.jpg"))
    grey = load_dataset(f"imagefolder:{mostly_grey}", tmp_path / "data", SIDE)
    assert grey.in_channels == 1 and grey.x_train.shape[1:] == (1, SIDE, SIDE)


def test_decoded_once_then_read_from_the_cache_until_a_file_changes(images, tmp_path, monkeypatch):
    calls = []
    real = imagefolder._decode
    monkeypatch.setattr(imagefolder, "_decode", lambda *a: calls.append(len(a[0])) or real(*a))
    first = load_dataset(f"imagefolder:{images}", tmp_path / "data", SIDE)
    assert sum(calls) == 18
    cached = list((tmp_path / "data" / "imagefolder-cache").glob("pets-16px-*.npz"))
    assert len(cached) == 1
    again = load_dataset(f"imagefolder:{images}", tmp_path / "data", SIDE)
    assert sum(calls) == 18 and torch.equal(first.x_train, again.x_train) and again.classes == first.classes
    load_dataset(f"imagefolder:{images}", tmp_path / "data", SIDE - 2)  # another side: another cache file
    assert sum(calls) == 36
    touched = next((images / "test" / "dog").iterdir())
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    load_dataset(f"imagefolder:{images}", tmp_path / "data", SIDE)
    assert sum(calls) == 54
    assert len(list((tmp_path / "data" / "imagefolder-cache").glob("*.npz"))) == 3


def test_a_val_folder_replaces_the_carved_validation_split(tmp_path):
    root = make_image_folder(tmp_path / "pets", splits=(("train", 4), ("val", 1), ("test", 2)))
    data = load_dataset(f"imagefolder:{root}", tmp_path / "data", SIDE)
    splits = split(data, val_fraction=0.5, seed=0)
    assert len(splits.y_val) == 3 and splits.y_val.tolist() == [0, 1, 2]
    assert len(splits.y_train) == 12  # every training image: nothing carved
    assert torch.equal(splits.x_val, data.x_val)


def _no_train(root: Path) -> str:
    (root / "train").rename(root / "training")
    return f"{root}: no train/ folder"


def _empty_class(root: Path) -> str:
    for f in (root / "test" / "dog").iterdir():
        f.unlink()
    return f"{root / 'test' / 'dog'}: an empty class"


def _classes_differ(root: Path) -> str:
    (root / "test" / "fish").rename(root / "test" / "bird")
    return "test/ has bird that train/ has not; test/ lacks fish"


def _not_an_image(root: Path) -> str:
    (root / "train" / "cat" / "notes.txt").write_text("not a picture")
    return f"{root / 'train' / 'cat' / 'notes.txt'}: not an image"


def _too_small(root: Path) -> str:
    write_png(image_of(3, SIDE - 1, 40, 0), str(root / "train" / "dog" / "tiny.png"))
    return f"{root / 'train' / 'dog' / 'tiny.png'}: 40x{SIDE - 1} px is smaller than data.image_size {SIDE}"


def _bmp(root: Path) -> str:
    from PIL import Image

    Image.new("RGB", (SIDE, SIDE)).save(root / "train" / "cat" / "x.bmp")
    return "x.bmp: a BMP image, which torchvision.io.decode_image does not read"


BAD = {"no train/": _no_train, "empty class": _empty_class, "classes differ": _classes_differ,
       "not an image": _not_an_image, "too small": _too_small, "unreadable format": _bmp}


@pytest.mark.parametrize("damage", BAD.values(), ids=BAD.keys())
def test_a_bad_folder_is_refused_naming_the_path_and_the_problem(images, tmp_path, damage):
    said = damage(images)
    for read in (dataset_context, load_dataset):
        with pytest.raises(DataError) as err:
            read(f"imagefolder:{images}", tmp_path / "data", SIDE)
        assert said in str(err.value)
    assert not (tmp_path / "data").exists()  # nothing cached


def test_write_folder_writes_a_dataset_as_png_files_that_load_back_equal(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 255, (12, 20, 20, 3), dtype=np.uint8),
             y_train=np.arange(12) % 3, x_test=rng.integers(0, 255, (6, 20, 20, 3), dtype=np.uint8),
             y_test=np.arange(6) % 3)
    assert folder_module.main([f"npz:{tmp_path / 'd.npz'}", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "train").iterdir()) == ["0", "1", "2"]
    source = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    back = load_dataset(f"imagefolder:{tmp_path / 'out'}", tmp_path / "data", 20)
    order = torch.argsort(source.y_train, stable=True)  # the folder lists images class by class
    assert torch.equal(back.x_train, source.x_train[order]) and torch.equal(back.y_train, source.y_train[order])
    assert folder_module.main([f"npz:{tmp_path / 'd.npz'}", str(tmp_path / "out")]) == 2  # not empty: refused


def _truncated_jpeg(path: Path) -> None:
    """A JPEG cut in half: PIL reads its header, torchvision cannot decode its pixels."""
    write_jpeg(image_of(3, 64, 64, 1), str(path), quality=95)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_every_bad_file_is_listed_in_one_pass_the_first_20_by_name_then_the_count(images, tmp_path):
    for i in range(22):
        (images / "train" / "cat" / f"note{i:02}.txt").write_text("not a picture")
    _truncated_jpeg(images / "test" / "dog" / "cut.jpg")  # its header reads, its pixels not
    write_png(image_of(3, SIDE - 1, 40, 0), str(images / "train" / "dog" / "tiny.png"))
    with pytest.raises(DataError) as err:
        load_dataset(f"imagefolder:{images}", tmp_path / "data", SIDE)
    head, *lines = str(err.value).split("\n")
    assert head.startswith(f"image folder {images}: 24 files cannot be used; expected only JPEG, PNG, GIF, WEBP")
    assert len(lines) == 21 and lines[-1] == "  ... and 4 more"
    named = [line.split(": ", 1)[0].strip() for line in lines[:20]]
    assert named == sorted(named) and named[0] == str(images / "test" / "dog" / "cut.jpg")
    assert lines[0] == f"  {images / 'test' / 'dog' / 'cut.jpg'}: torchvision cannot decode it (Image is incomplete " \
                       "or truncated)"  # the whole sentence, without the C++ source location
    assert not (tmp_path / "data").exists()  # nothing cached


def test_library_messages_are_kept_as_whole_sentences():
    long = RuntimeError("decode_png, /src/decode_png.cpp:79, Out of bound read in decode_png. Probably, the input "
                        "image is corrupted. " + "A third sentence that would pass the limit. " * 4)
    said = imagefolder.reason(long)
    assert said.startswith("Out of bound read in decode_png. Probably, the input image is corrupted. A third")
    assert said.endswith("limit.") and len(said) <= 160 and said in str(long)
    one = "x" * 300
    assert imagefolder.reason(ValueError(one)) == one  # one long sentence is never cut


def test_check_decodes_the_folder_once_into_the_cache_that_run_reads(images, tmp_path, monkeypatch, write_spec,
                                                                      capsys):
    from archscale.cli import main

    calls = []
    real = imagefolder._decode
    monkeypatch.setattr(imagefolder, "_decode", lambda *a: calls.append(len(a[0])) or real(*a))
    spec = write_spec({"name": "pets", "data": {"dataset": f"imagefolder:{images}", "image_size": SIDE,
                                                "root": str(tmp_path / "data")},
                       "space": {"family": "budgeted", "params": {"c1_width": 4}}})
    assert main(["check", str(spec), "--samples", "2"]) == 0
    assert sum(calls) == 18 and list((tmp_path / "data" / "imagefolder-cache").glob("pets-16px-*.npz"))
    assert main(["check", str(spec), "--samples", "2"]) == 0
    data = load_dataset(f"imagefolder:{images}", tmp_path / "data", SIDE)  # what `archscale run` loads
    assert sum(calls) == 18 and data.x_train.shape == (12, 3, SIDE, SIDE)


def test_a_damaged_file_found_by_check_exits_2_listing_it(images, tmp_path, write_spec, capsys):
    from archscale.cli import main

    _truncated_jpeg(images / "train" / "cat" / "1.jpg")
    spec = write_spec({"name": "pets", "data": {"dataset": f"imagefolder:{images}", "image_size": SIDE,
                                                "root": str(tmp_path / "data")}})
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"archscale: error: image folder {images}: 1 file cannot be used" in err
    assert f"{images / 'train' / 'cat' / '1.jpg'}: torchvision cannot decode it (Image is incomplete or truncated)" in err


def test_the_decoding_bar_starts_after_torchvision_is_imported():
    """torchvision's decoder comes with the module, so the bar's rate counts decoding only."""
    import subprocess
    import sys

    code = "import sys, archscale.trainer.imagefolder; print('torchvision.io' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr[-2000:]
