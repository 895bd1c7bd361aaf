"""Decoding PNG images, binary masks and index (tissue) masks into numpy arrays (Pillow).

Every function raises :class:`~pipeline.errors.DataError` naming the file when it is missing, is
not a PNG or does not decode completely (truncated or corrupt data). Images (not masks) must also be
opaque: :func:`read_image` states the rule, which ingest, preprocess, ``predict`` and ``track`` all read
images by.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import DataError

_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L")


def _decode(path: Path) -> Image.Image:
    """Open ``path`` and decode all of its pixels (a lazy ``open`` alone misses truncated data)."""
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc})") from None
    if img.format != "PNG":
        raise DataError(f"{path}: expected a PNG image, got {img.format}")
    return img


def png_shape(path: Path) -> tuple[int, int]:
    """Decode ``path`` completely and return its shape ``(height, width)`` in pixels."""
    width, height = _decode(Path(path)).size
    return height, width


def _transparent_pixels(img: Image.Image) -> int:
    """How many pixels of ``img`` are not fully opaque: alpha below 255 (``RGBA``, ``LA``, ``PA``, a palette's
    transparent entries) or equal to the PNG's transparent colour (its ``tRNS`` chunk, any mode)."""
    if not img.has_transparency_data:
        return 0
    if img.mode in _SIXTEEN_BIT_MODES:  # Pillow's RGBA conversion of 16-bit grey ignores the transparent colour
        return int((np.asarray(img) == img.info["transparency"]).sum())
    return int((np.asarray(img.convert("RGBA"))[..., 3] != 255).sum())


def _decode_opaque(path: Path) -> Image.Image:
    """:func:`_decode` ``path``, then DataError naming it if any pixel is transparent (:func:`read_image`)."""
    img = _decode(Path(path))
    transparent = _transparent_pixels(img)
    if transparent:
        raise DataError(
            f"{path}: has transparent pixels ({transparent} of {img.width * img.height}, PNG mode {img.mode}); "
            "an image must be opaque, as a transparent pixel has no faithful grey or colour value"
        )
    return img


def read_grey(path: Path) -> np.ndarray:
    """Read an opaque PNG as grey levels: ``(H, W)`` uint8, 0 = black (the 1-channel case of :func:`read_image`).

    Grey (``L``, ``LA``), palette and colour PNGs are converted with the ITU-R 601 luma weights,
    which return the original value for RGB-encoded grey (R = G = B); an opaque alpha channel is dropped.
    16-bit grey is scaled from 0..65535 to 0..255 (rounded).
    """
    img = _decode_opaque(Path(path))
    if img.mode in _SIXTEEN_BIT_MODES:
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def read_image(path: Path, channels: int) -> np.ndarray:
    """Read an image PNG as ``(channels, H, W)`` uint8, by the one rule for images that ingest, preprocess,
    ``predict`` and ``track`` all follow through this function.

    The rule: a PNG that decodes completely, every pixel opaque. A transparent pixel (alpha below 255, or the
    PNG's transparent colour) shows whatever lies behind it, so it has no faithful grey or colour value: the
    image is refused with a DataError naming the file and how many pixels are transparent, never flattened
    onto a guessed background. An alpha channel that is opaque everywhere carries nothing and is dropped, so
    an opaque ``RGBA`` image reads as its RGB content. 1 channel: grey levels (:func:`read_grey`); 3: RGB, a
    grey PNG repeating its grey level in every channel. Masks are not images: :func:`read_mask` ignores alpha.
    """
    if channels == 1:
        return read_grey(path)[None]
    img = _decode_opaque(Path(path))
    if img.mode in _SIXTEEN_BIT_MODES:
        return np.repeat(read_grey(path)[None], 3, axis=0)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def read_index_mask(path: Path, num_values: int, names: Sequence[str]) -> np.ndarray:
    """Read an index PNG (8-bit grey, each pixel a class index) as ``(H, W)`` uint8 in ``0 .. num_values - 1``.

    ``names[k]`` names index ``k`` in error messages. A palette, colour or 16-bit PNG, or an index outside
    the range, raises DataError naming the file: a palette PNG's pixel values are positions in its colour
    table, which need not be the class indices, so it is not guessed at.
    """
    img = _decode(Path(path))
    if img.mode in ("P", "PA"):
        raise DataError(
            f"{path}: palette PNG, but an index PNG is expected (mode 'L': 8-bit grey whose values are the "
            f"indices {dict(enumerate(names))}); convert it, mapping each palette colour to its class index"
        )
    if img.mode != "L":
        raise DataError(
            f"{path}: {img.mode} PNG, but an index PNG is expected (mode 'L', values {dict(enumerate(names))})"
        )
    index = np.asarray(img, dtype=np.uint8)
    bad = np.unique(index[index >= num_values])
    if bad.size:
        raise DataError(
            f"{path}: index values {bad[:10].tolist()} outside the configured classes "
            f"{dict(enumerate(names))} (data.tissues lists the classes after 0 = background)"
        )
    return index


def read_mask(paths: Sequence[Path]) -> np.ndarray:
    """Read one or more mask PNGs and OR them: ``(H, W)`` uint8 in {0, 1}.

    A pixel is 1 where any colour channel (alpha ignored) of any mask file is nonzero. All files
    must have the same size; a mismatch raises DataError naming the offending file.
    """
    if not paths:
        raise DataError("read_mask: no mask files given")
    merged: np.ndarray | None = None
    for path in paths:
        img = _decode(Path(path))
        if img.mode in ("P", "PA"):
            img = img.convert("RGBA")
        pixels = np.asarray(img)
        if pixels.ndim == 3:
            colour = [i for i, band in enumerate(img.getbands()) if band != "A"]
            pixels = np.asarray(pixels[..., colour].any(axis=-1))
        nonzero = np.asarray(pixels != 0)
        if merged is None:
            merged = nonzero
        elif nonzero.shape != merged.shape:
            raise DataError(
                f"{path}: mask is {nonzero.shape[1]}x{nonzero.shape[0]} px, "
                f"expected {merged.shape[1]}x{merged.shape[0]} like {paths[0]}"
            )
        else:
            merged |= nonzero
    assert merged is not None, "no mask paths"
    return merged.astype(np.uint8)
