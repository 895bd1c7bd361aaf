"""Image files → model input, with exactly the preprocessing the training data went through.

:func:`pipeline.data.images.read_image` with the model's channel count ``C`` (the rule for images, stated
there, that ingest and preprocess read training images by: PNG, opaque; 1 channel grey, 3 RGB)
→ :func:`pipeline.data.preprocess.resize_image` per channel to ``S × S`` → float32 ``x / 127.5 - 1``
(:func:`pipeline.data.preprocess.scale_pixels`, the scaling training uses).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.images import read_image
from pipeline.data.preprocess import resize_image, scale_pixels
from pipeline.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""Files a folder contributes; all but PNG are then reported as errors (training reads PNG only)."""


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
    image = np.stack([resize_image(band, size) for band in pixels])
    return ModelInput(scale_pixels(image), *pixels.shape[1:])
