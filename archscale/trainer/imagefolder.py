"""Image folders in torchvision's ``ImageFolder`` layout, decoded once to uint8 tensors.

``imagefolder:PATH`` reads ``PATH/train/<class>/*`` and ``PATH/test/<class>/*``, and
``PATH/val/<class>/*`` when there is one (it then replaces the validation split carved from
``train``). Class names are the folder names, sorted: label ``i`` is ``classes[i]``, as
``torchvision.datasets.ImageFolder`` numbers them (its ``find_classes``, without importing
torchvision: ``archscale check`` reads folders without it). A
class folder is read recursively; only names starting with ``.`` are left out (``.DS_Store``).

Every other file must be an image torchvision decodes (JPEG, PNG, GIF, WEBP). The layout is
checked first (:func:`list_folder`): no ``train/``, an empty class or classes that differ
between splits are a :class:`~archscale.trainer.config.DataError` naming the path. Then every
file is checked in one pass, its header (not such an image, an image whose short side is under
the requested side) and its decoding (a truncated or damaged file), and one DataError lists
every bad file: the first 20 by name, then how many more. ``archscale check`` decodes the
folder too, into the cache that ``archscale run`` reads (:func:`folder_context`).

Decoding (:func:`load_folder`) uses ``torchvision.io.decode_image`` in the channel mode most
images have (grey or RGB; torchvision converts the others, alpha dropped), then
``transforms.v2.functional`` resizes the short side to ``image_size`` (bilinear, antialiased)
and centre-crops the square. The uint8 result is cached as one ``.npz`` in
``<data.root>/imagefolder-cache/`` keyed by every file's name, size and mtime and by the side:
a second run with the same files and side reads the cache and decodes nothing.

``python -m archscale.trainer.folder mnist-5k DIR`` writes a dataset archscale knows as such a
folder of PNG files (:mod:`archscale.trainer.folder`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.io  # noqa: F401 - read_image's decoder, imported before any progress bar starts
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from archscale.trainer.arrays import Dataset
from archscale.trainer.config import DataError
from archscale.pixels import fit_side, read_image

SPLITS = ("train", "val", "test")
FORMATS = ("JPEG", "PNG", "GIF", "WEBP")  # what torchvision.io.decode_image reads
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}  # PIL modes of single-channel images
CACHE_DIR = "imagefolder-cache"
CACHE_VERSION = 1  # part of the key: a change in how images are decoded makes new cache files


@dataclass(frozen=True)
class FolderScan:
    """An image folder, checked: its classes in label order and each split's files and labels."""

    root: Path
    image_size: int
    classes: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]  # split -> [(file, label)], sorted by class then name
    key: str  # sha256 of every file's name, size and mtime, and of the image side

    @property
    def context(self) -> dict:
        return {"num_classes": len(self.classes), "image_size": self.image_size}

    def cache_file(self, data_root: str | Path) -> Path:
        """Where the decoded folder is cached under ``data_root``."""
        return Path(data_root).expanduser() / CACHE_DIR / f"{self.root.name}-{self.image_size}px-{self.key[:16]}.npz"


def _classes(folder: Path) -> list[str]:
    """The class folders of ``folder`` in label order: sorted names of its subfolders, as
    ``torchvision.datasets.folder.find_classes`` gives them (tests/trainer/test_folder.py)."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def _class_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, recursively, sorted; names starting with ``.`` left out."""
    found = []
    for top, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(top) / n for n in sorted(names) if not n.startswith(".")]
    return found


def list_folder(path: str | Path, image_size: int) -> FolderScan:
    """The layout of an image folder, checked (no image is opened): ``train/`` and ``test/``
    exist, the same classes in every split, none empty. The key hashes names, sizes, mtimes."""
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"image folder {str(root)!r} {what}; expected a folder holding train/<class>/ and "
                     "test/<class>/ (torchvision's ImageFolder layout)")
    for needed in ("train", "test"):
        if not (root / needed).is_dir():
            raise DataError(f"{root}: no {needed}/ folder; expected {root}/{needed}/<class>/<image files> "
                         "(torchvision's ImageFolder layout)")
    classes = _classes(root / "train")
    if not classes:
        raise DataError(f"{root / 'train'}: holds no class folder; expected one folder of images per class") from None
    files: dict[str, list[tuple[Path, int]]] = {}
    digest = hashlib.sha256(f"v{CACHE_VERSION} {root.resolve()} side {image_size}".encode())
    for name in SPLITS:
        folder = root / name
        if not folder.is_dir():
            continue
        here = _classes(folder)
        if here != classes:
            extra, missing = sorted(set(here) - set(classes)), sorted(set(classes) - set(here))
            diff = "; ".join(filter(None, (f"{name}/ has {', '.join(extra)} that train/ has not" if extra else "",
                                           f"{name}/ lacks {', '.join(missing)}" if missing else "")))
            raise DataError(f"{folder}: classes differ from train/'s ({diff}); expected the same class folders "
                         f"in every split")
        files[name] = []
        for label, cls in enumerate(classes):
            found = _class_files(folder / cls)
            if not found:
                raise DataError(f"{folder / cls}: an empty class (no image file); expected at least one image in "
                             "every class folder of every split")
            for f in found:
                stat = f.stat()
                digest.update(f"{f.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                files[name].append((f, label))
    return FolderScan(root, image_size, tuple(classes), files, digest.hexdigest())


SHOWN = 20  # bad files named in the error; the rest are counted


def reason(err: BaseException) -> str:
    """A library's error message as whole sentences: whitespace collapsed, the source
    location torchvision puts first (``decode_jpeg, .../decode_jpeg.cpp:171, ``) left out,
    sentences after the first kept while the text stays under 160 characters."""
    text = re.sub(r"^[\w()]+, \S+\.(?:cpp|cc|c|h):\d+, ", "", " ".join(str(err).split())) or type(err).__name__
    sentences = re.split(r"(?<=[.!?]) ", text)
    kept = sentences[0]
    for sentence in sentences[1:]:
        if len(kept) + 1 + len(sentence) > 160:
            break
        kept += " " + sentence
    return kept


def _headers(scan: FolderScan) -> tuple[int, list[tuple[Path, str]]]:
    """Read every image's header (PIL; nothing is decoded): each should be a JPEG, PNG, GIF or
    WEBP file whose short side is at least ``scan.image_size``. Returns the channel count (1
    or 3) most images have and every file that is not so, with why."""
    grey = colour = 0
    problems: list[tuple[Path, str]] = []
    for f, _ in (item for split in scan.files.values() for item in split):
        try:
            with Image.open(f) as image:
                kind, size, mode = image.format, image.size, image.mode
        except (UnidentifiedImageError, OSError, ValueError) as err:
            problems.append((f, f"not an image ({reason(err)})"))
            continue
        if kind not in FORMATS:
            problems.append((f, f"a {kind} image, which torchvision.io.decode_image does not read"))
        elif min(size) < scan.image_size:
            problems.append((f, f"{size[0]}x{size[1]} px is smaller than data.image_size {scan.image_size}"))
        elif mode in GREY_MODES:
            grey += 1
        else:
            colour += 1
    return (1 if grey > colour else 3), problems


def _refuse(scan: FolderScan, problems: list[tuple[Path, str]]) -> DataError:
    """One error listing the first :data:`SHOWN` bad files by name, then how many more."""
    problems = sorted(problems, key=lambda item: str(item[0]))
    lines = [f"  {f}: {why}" for f, why in problems[:SHOWN]]
    if len(problems) > SHOWN:
        lines.append(f"  ... and {len(problems) - SHOWN} more")
    many = f"{len(problems)} files" if len(problems) != 1 else "1 file"
    return DataError(f"image folder {scan.root}: {many} cannot be used; expected only {', '.join(FORMATS)} images "
                     f"with a short side of at least data.image_size {scan.image_size} px under <split>/<class>/ "
                     "(no file is skipped: fix each, move it out of the folder, or lower data.image_size):\n"
                     + "\n".join(lines))


def check_images(scan: FolderScan) -> int:
    """Every image's header checked (:func:`_headers`); the channel count most images have.
    Raises DataError listing every file that is not such an image."""
    channels, problems = _headers(scan)
    if problems:
        raise _refuse(scan, problems)
    return channels


def folder_context(path: str | Path, image_size: int, data_root: str | Path = "data", progress: bool = True) -> dict:
    """``in_channels``, ``num_classes`` and ``image_size`` of an image folder: from the cache's
    record when the folder was decoded before, else every file decoded now (a progress bar on
    stderr) into the cache that :func:`load_folder` reads, so that a run decodes nothing again."""
    scan = list_folder(path, image_size)
    cache = scan.cache_file(data_root)
    try:
        channels = int(json.loads(cache.with_suffix(".json").read_text())["in_channels"]) if cache.is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        channels = None
    if channels is None:
        return load_folder(path, image_size, data_root, progress=progress).context
    return {"in_channels": channels, **scan.context}


def _decode(files: list[tuple[Path, int]], image_size: int, channels: int, bar, problems: list):
    """uint8 (N, C, S, S) images and int64 (N,) labels of ``files``, each decoded with
    torchvision, its short side resized to S, centre-cropped (:mod:`archscale.pixels`,
    which an export's ``preprocess`` repeats). A file that cannot be decoded is added to
    ``problems`` (its slot left zero) and the rest go on."""
    x = torch.zeros((len(files), channels, image_size, image_size), dtype=torch.uint8)
    for i, (f, _) in enumerate(files):
        try:
            image = read_image(f, channels)  # (C, H, W)
        except (RuntimeError, ValueError) as err:
            problems.append((f, f"torchvision cannot decode it ({reason(err)})"))
            bar.update(1)
            continue
        x[i] = fit_side(image, image_size)  # (C, S, S)
        bar.update(1)
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    return x, y


def load_folder(path: str | Path, image_size: int, data_root: str | Path = "data", progress: bool = True) -> Dataset:
    """The :class:`~archscale.trainer.arrays.Dataset` of an image folder: read from the cache
    when the same files were decoded to the same side before, else checked, decoded (a
    progress bar on a terminal's stderr) and cached. Every bad file is found in one pass (headers, then
    decoding) and listed in one DataError; nothing is cached then. A cache that cannot be
    written is said and skipped."""
    scan = list_folder(path, image_size)
    cache = scan.cache_file(data_root)
    arrays = _read_cache(cache)
    if arrays is None:
        channels, problems = _headers(scan)
        bad = {f for f, _ in problems}
        todo = {name: [item for item in files if item[0] not in bad] for name, files in scan.files.items()}
        with tqdm(total=sum(len(v) for v in todo.values()), desc=f"decoding {scan.root.name} to {image_size} px",
                  unit="img", file=sys.stderr, disable=None if progress else True, mininterval=0.5,
                  smoothing=0.1) as bar:  # None: shown on a terminal, not in a pipe or a log file
            arrays = {}
            for name, files in todo.items():
                x, y = _decode(files, image_size, channels, bar, problems)
                arrays[f"x_{name}"], arrays[f"y_{name}"] = x.numpy(), y.numpy()
        if problems:
            raise _refuse(scan, problems)
        _write_cache(cache, arrays, {"in_channels": channels, "classes": list(scan.classes),
                                     "folder": str(scan.root.resolve()), "image_size": image_size})
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return Dataset(f"imagefolder:{scan.root.name}", t["x_train"], t["y_train"], t["x_test"], t["y_test"],
                   len(scan.classes), classes=scan.classes, x_val=t.get("x_val"), y_val=t.get("y_val"))


def _read_cache(cache: Path) -> dict | None:
    """The arrays of a cache file, or None when there is none or it cannot be read."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as arrays:
            return {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError, EOFError):
        return None


def _write_cache(cache: Path, arrays: dict, meta: dict) -> None:
    """``cache`` (the arrays) and its ``.json`` record (channels, classes), each written whole."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            np.savez(f, **arrays)
        tmp.replace(cache)
        cache.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    except OSError as err:
        print(f"archscale: the decoded images are not cached ({cache.parent}: {err.strerror or err}); the next run "
              "decodes them again", file=sys.stderr)
