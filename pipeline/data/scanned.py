"""What a dataset reader finds in a folder: images with their mask files, before ingest copies them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.images import png_shape, read_image
from pipeline.errors import DataError

SKIPPED_DIRS = ("__MACOSX",)


@dataclass(frozen=True)
class SourceImage:
    """One image of a dataset folder and its mask file(s).

    ``id`` is unique in the dataset (e.g. ``benign_0012``, ``test_0007``); ``label`` its class
    (``wound`` for the wound layouts, which have no classes); ``subset`` is ``"test"`` where the dataset
    publishes the image as a test image (the split keeps it there), else None.
    """

    id: str
    label: str
    image: Path
    masks: tuple[Path, ...]
    subset: str | None = None


def shallowest(folder: Path, matches: Callable[[Path], bool], what: str, expected: str) -> Path:
    """The shallowest folder at or below ``folder`` for which ``matches(folder)`` holds.

    Hidden and ``__MACOSX`` folders are skipped. Raises DataError naming ``folder``, ``what`` was looked for
    and the ``expected`` layout (one line, e.g. "data.layout 'fuseg' expects …").
    """
    level = [Path(folder)]
    while level:
        for candidate in level:
            if matches(candidate):
                return candidate
        level = sorted(
            child
            for parent in level
            for child in parent.iterdir()
            if child.is_dir() and not child.name.startswith(".") and child.name not in SKIPPED_DIRS
        )
    raise DataError(f"{folder}: no {what} found at any depth ({expected})")


def check(image: SourceImage) -> np.ndarray:
    """Read the image by the rule for images (:func:`~pipeline.data.images.read_image`, as RGB) and decode each
    of its masks; raise DataError unless all are readable and their sizes agree.

    Returns the image's pixels ``(3, H, W)`` uint8.
    """
    pixels = read_image(image.image, 3)
    shape = pixels.shape[1:]
    for mask in image.masks:
        mask_shape = png_shape(mask)
        if mask_shape != shape:
            raise DataError(
                f"{mask}: mask is {mask_shape[1]}x{mask_shape[0]} px but its image {image.image.name} "
                f"is {shape[1]}x{shape[0]} px"
            )
    return pixels
