"""Image files → model input, with exactly the preprocessing the training data went through.

:func:`pipeline.data.images.read_image` (PNG only) with the model's channel count ``C`` — 1: grey
(16-bit grey scaled to 8 bits; RGB-encoded grey, R = G = B, read as grey); 3: RGB (grey repeated) —
→ :func:`pipeline.data.preprocess.resize_image` per channel to ``S × S`` → float32 ``x / 127.5 - 1``
(the scaling of :func:`pipeline.train.loop.to_tensors`).

``read_image`` refuses an image with transparent pixels, as it does in training (the rule for images is
stated there). A 1-channel model was trained on grey ultrasound: a file whose colour channels differ (a colour
picture) has no faithful grey reading, so it is rejected with a :class:`DataError` rather than converted with
luma weights. A 3-channel model reads colour as training did.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.images import read_image
from pipeline.data.preprocess import resize_image
from pipeline.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""Files a folder contributes; all but PNG are then reported as errors (training reads PNG only)."""
_GREY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass(frozen=True)
class ModelInput:
    """One file ready for the model: ``image`` ``(C, S, S)`` float32 in [-1, 1], and the original
    ``height`` × ``width`` in pixels (masks are resized back to it)."""

    image: np.ndarray
    height: int
    width: int


def image_files(inputs: Iterable[Path]) -> Iterator[Path]:
    """Every file named, and every file with an :data:`IMAGE_SUFFIXES` suffix under every folder named
    (recursively, sorted), in argument order. A path that does not exist is yielded as it is, so that
    reading it reports the error."""
    for path in map(Path, inputs):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def read_input(path: Path, size: int, channels: int) -> ModelInput:
    """Read ``path`` as the model's input (module docstring); DataError naming the file if it cannot be."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    pixels = read_image(path, channels)  # (C, H, W)
    if channels == 1:
        _check_grey(path)
    image = np.stack([resize_image(band, size) for band in pixels])
    return ModelInput(image.astype(np.float32) / 127.5 - 1.0, *pixels.shape[1:])


def _check_grey(path: Path) -> None:
    """DataError if the (already decoded, opaque) image at ``path`` has differing colour channels."""
    with Image.open(path) as img:
        if img.mode in _GREY_MODES:
            return
        mode = img.mode
        rgb = np.asarray(img.convert("RGB"))
    if (rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any():
        raise DataError(
            f"{path}: colour image (mode {mode}, its R, G and B channels differ); the model takes grey images "
            "(one channel, or RGB with R = G = B)"
        )
