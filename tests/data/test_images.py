"""Reading PNGs as grey or RGB images and binary masks, whatever their encoding; an image must be opaque."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from pipeline.data.images import read_grey, read_image, read_mask
from pipeline.errors import DataError

GREY = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P"])
def test_grey_values_survive_any_8_bit_encoding(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    Image.fromarray(GREY).convert(mode).save(path)
    np.testing.assert_array_equal(read_grey(path), GREY)


def _alpha(mode: str):
    """``GREY`` in ``mode`` with an alpha channel, its first pixel transparent."""

    def save(path):
        image = Image.fromarray(GREY).convert(mode)
        alpha = np.full(GREY.shape, 255, np.uint8)
        alpha[0, 0] = 0
        image.putalpha(Image.fromarray(alpha))
        image.save(path)

    return save


def _transparent_colour(mode: str):
    """``GREY`` in ``mode`` whose PNG names the first pixel's value its transparent colour (a tRNS chunk)."""

    def save(path):
        image = Image.fromarray(GREY).convert(mode)
        image.save(path, transparency=image.getpixel((0, 0)))

    return save


def _sixteen_bit_transparent_colour(path):
    wide = GREY.astype(np.uint16) * 257
    Image.fromarray(wide).save(path, transparency=int(wide[0, 0]))


TRANSPARENT = {
    "RGBA": _alpha("RGBA"),
    "LA": _alpha("LA"),
    "palette tRNS": _transparent_colour("P"),
    "grey tRNS": _transparent_colour("L"),
    "RGB tRNS": _transparent_colour("RGB"),
    "16-bit tRNS": _sixteen_bit_transparent_colour,
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("save", TRANSPARENT.values(), ids=TRANSPARENT.keys())
def test_an_image_with_a_transparent_pixel_is_refused_however_it_is_encoded(tmp_path, save, channels):
    path = tmp_path / "scan.png"
    save(path)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: has transparent pixels \(1 of 240, "):
        read_image(path, channels)


def test_16_bit_grey_is_scaled_to_the_8_bit_range(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=np.uint16)).save(path)
    assert read_grey(path).tolist() == [[0, 1, 128, 255]]


def test_masks_are_or_ed_and_any_nonzero_colour_counts(tmp_path):
    first, second = np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.uint8)
    first[0, 0] = (1, 0, 0)  # a faint red pixel, which a luma conversion would round to 0
    second[3, 4] = 255
    Image.fromarray(first).save(tmp_path / "a.png")
    Image.fromarray(second).save(tmp_path / "b.png")
    mask = read_mask([tmp_path / "a.png", tmp_path / "b.png"])
    assert mask.dtype == np.uint8 and mask.sum() == 2 and mask[0, 0] == mask[3, 4] == 1


def test_masks_of_different_sizes_name_the_odd_file(tmp_path):
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match=f"{tmp_path / 'b.png'}: mask is 6x4 px, expected 5x4"):
        read_mask([tmp_path / "a.png", tmp_path / "b.png"])


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n garbage", b"GIF89a not a png"])
def test_unreadable_file_names_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"^{path}: "):
        read_grey(path)
