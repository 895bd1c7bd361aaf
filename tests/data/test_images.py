"""Reading PNGs as grey images and binary masks, whatever their encoding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.data.images import read_grey, read_mask
from pipeline.errors import DataError

GREY = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P"])
def test_grey_values_survive_any_8_bit_encoding(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    Image.fromarray(GREY).convert(mode).save(path)
    np.testing.assert_array_equal(read_grey(path), GREY)


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
