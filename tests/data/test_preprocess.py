"""Preprocess stage: fixed-size, memory-mappable, binary-mask arrays; reproducible; safe on bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.config import parse_params
from pipeline.data import preprocess
from pipeline.data.manifest import read_manifest
from pipeline.errors import ConfigError, DataError
from tests.data.fixtures_arrays import COUNTS, make_ingested, make_params


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    return make_ingested(tmp_path_factory.mktemp("ingested"))


def _run(ingested, out, **overrides):
    preprocess.run(make_params(**overrides), ingested=ingested, out_dir=out)
    return json.loads((out / "manifest.json").read_text())


def test_arrays_are_memory_mappable_with_the_documented_layout(ingested, tmp_path):
    meta = _run(ingested, tmp_path / "pre")
    records = read_manifest(ingested).records
    n = len(records)
    assert meta["ids"] == [r.id for r in records]
    assert meta["classes"] == ["benign", "malignant"] and meta["class_counts"] == COUNTS
    expected = {
        "image": ((n, 1, 32, 32), np.uint8),
        "mask": ((n, 32, 32), np.uint8),
        "label": ((n,), np.int64),
    }
    for name, (shape, dtype) in expected.items():
        path = tmp_path / "pre" / f"{name}.npy"
        array = np.load(path, mmap_mode="r")
        assert isinstance(array, np.memmap) and array.shape == shape and array.dtype == dtype
        assert meta["arrays"][name] == {
            "shape": list(shape),
            "dtype": np.dtype(dtype).name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    labels = np.load(tmp_path / "pre" / "label.npy")
    assert [meta["classes"][i] for i in labels] == [r.label for r in records]


def test_masks_are_binary_and_multiple_mask_files_are_merged(ingested, tmp_path):
    _run(ingested, tmp_path / "pre")
    masks = np.load(tmp_path / "pre" / "mask.npy")
    assert set(np.unique(masks)) == {0, 1}
    assert all(m.any() for m in masks)
    first = read_manifest(ingested).records[0]
    assert len(first.masks) == 2
    halves = [np.asarray(Image.open(ingested / m)) > 0 for m in first.masks]
    assert masks[0].sum() > 1.5 * max(preprocess.resize_mask(h.astype(np.uint8), 32).sum() for h in halves)


def test_three_channels_replicate_the_grey_image(ingested, tmp_path):
    _run(ingested, tmp_path / "grey")
    _run(ingested, tmp_path / "rgb", data={"channels": 3})
    grey, rgb = np.load(tmp_path / "grey" / "image.npy"), np.load(tmp_path / "rgb" / "image.npy")
    assert rgb.shape[1] == 3
    assert all(np.array_equal(rgb[:, c], grey[:, 0]) for c in range(3))


def test_same_params_give_identical_arrays_for_any_worker_count(ingested, tmp_path, monkeypatch):
    one = _run(ingested, tmp_path / "one")
    again = _run(ingested, tmp_path / "again")
    monkeypatch.setattr(preprocess, "POOL_START_S", 0.0)  # the pool takes over after the first chunk
    two = _run(ingested, tmp_path / "two", data={"workers": 2})
    assert one["arrays"] == again["arrays"] == two["arrays"]


def test_mask_size_mismatch_names_the_file_and_keeps_the_previous_output(tmp_path):
    ingested = make_ingested(tmp_path / "ingested")
    before = _run(ingested, tmp_path / "pre")
    bad = read_manifest(ingested).records[5]
    Image.fromarray(np.zeros((13, 17), np.uint8)).save(ingested / bad.masks[0])
    with pytest.raises(DataError, match=rf"{bad.masks[0]}: mask is 17x13 px but its image .* is"):
        _run(ingested, tmp_path / "pre")
    assert json.loads((tmp_path / "pre" / "manifest.json").read_text()) == before
    assert not list(tmp_path.glob(".pre.*")), "temporary output left behind"


def test_image_size_must_be_a_multiple_of_32():
    with pytest.raises(ConfigError, match=r"data\.image_size = 48"):
        parse_params({"data": {"image_size": 48}})
