"""One image, from its file (or a PIL image, or a uint8 tensor) to what the network takes.

A leaf module (it imports nothing of archscale), beside :mod:`archscale.files`, so that the
loader and the export share it. The search's loading, one image at a time:
:mod:`archscale.trainer.imagefolder` decodes each file of an image folder with
:func:`read_image` and brings it to its side with :func:`fit_side`; every dataset's uint8 images are then normalised as
:func:`~archscale.trainer.batches.normalise` does. :func:`to_input` chains the three for one
image; an export's ``model.py`` carries these functions' own source as its ``preprocess``
(:mod:`archscale.analysis.standalone`), so that raw files give the network what the search
gave it. Plain torch and torchvision (PIL for a PIL image), imported inside the functions:
a ``model.py`` that only loads its network needs neither.
"""

from __future__ import annotations

from pathlib import Path

import torch

# ImageReadMode by channel count of the dataset: grey, RGB, RGB with alpha (an npz's 4 channels)
READ_MODES = {1: "GRAY", 3: "RGB", 4: "RGB_ALPHA"}
PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """uint8 (channels, H, W) of an image file, decoded by ``torchvision.io.decode_image`` in
    the mode of ``channels`` (grey, RGB or RGBA: torchvision converts, alpha dropped for RGB),
    EXIF orientation applied; an animated GIF's first frame."""
    from torchvision.io import ImageReadMode, decode_image

    image = decode_image(str(path), mode=getattr(ImageReadMode, READ_MODES[channels]), apply_exif_orientation=True)
    return image[0] if image.ndim == 4 else image  # (frames, C, H, W) -> (C, H, W)


def fit_side(image: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (C, H, W) -> (C, side, side): the short side resized to ``side`` (bilinear,
    antialiased), then the centre square cropped; an image already ``side`` square is unchanged."""
    from torchvision.transforms.v2 import functional as TF

    if tuple(image.shape[-2:]) == (side, side):
        return image
    image = TF.resize(image, [side], antialias=True)  # short side -> side
    return TF.center_crop(image, [side, side])


def to_input(image, channels: int, side: int, resize: bool, mean: list[float], std: list[float]) -> torch.Tensor:
    """float32 (channels, side, side) of one image, as the search gave it to the network:
    ``image`` a path (decoded by :func:`read_image`), a PIL image (EXIF orientation applied,
    converted to grey, RGB or RGBA by PIL) or a uint8 tensor (C, H, W) (grey repeated to RGB,
    alpha dropped); brought to ``side`` by :func:`fit_side` when ``resize``, else it must be
    ``side`` square already; then ``(pixels / 255 - mean) / std`` per channel."""
    if isinstance(image, (str, Path)):
        x = read_image(image, channels)
    elif isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise ValueError(f"a tensor image must be uint8 (C, H, W); got {image.dtype} {tuple(image.shape)}")
        x = image
        if x.shape[0] == 4 and channels != 4:
            x = x[:3]  # alpha dropped
        if x.shape[0] == 1 and channels == 3:
            x = x.expand(3, -1, -1)
        if x.shape[0] != channels:
            raise ValueError(f"a tensor image of {image.shape[0]} channels cannot be brought to {channels}: "
                             "pass the file's path, or convert it first")
    else:  # a PIL image
        from PIL import ImageOps
        from torchvision.transforms.v2.functional import pil_to_tensor

        x = pil_to_tensor(ImageOps.exif_transpose(image).convert(PIL_MODES[channels]))
    if resize:
        x = fit_side(x, side)
    elif tuple(x.shape[-2:]) != (side, side):
        raise ValueError(f"the image is {x.shape[-1]}x{x.shape[-2]} px; the network was searched on "
                         f"{side}x{side} images, as its dataset stores them (resize it first)")
    m = torch.tensor(mean)[:, None, None]
    s = torch.tensor(std)[:, None, None]
    return (x.float() / 255 - m) / s  # (C, side, side)


def loading(dataset: str | None, channels: int, side: int, mean: list[float], std: list[float]) -> dict:
    """The keyword arguments of :func:`to_input` that repeat how the search loaded ``dataset``
    (its name as the spec gives it; None when a run did not record it: used as stored)."""
    return {"channels": int(channels), "side": int(side), "resize": str(dataset or "").startswith("imagefolder:"),
            "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
