"""Fold views: fold k trains on its train ids and their copies, validates on originals, never sees test."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.data.folds import AUGMENTED_DIR, PREPROCESSED_DIR, SPLIT_DIR, load_fold, load_test
from pipeline.errors import DataError
from tests.data.fixtures_arrays import build_data_root, flips, make_params


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_data_root(tmp_path_factory.mktemp("data"), make_params())


@pytest.fixture
def split(root):
    return json.loads((root / SPLIT_DIR / "split.json").read_text())


def _rows(folder):
    meta = json.loads((folder / "manifest.json").read_text())
    arrays = {name: np.load(folder / f"{name}.npy") for name in ("image", "mask", "label")}
    return {id_: {name: a[i] for name, a in arrays.items()} for i, id_ in enumerate(meta["ids"])}


def test_fold_train_holds_its_originals_and_their_copies_but_no_validation_image(root, split):
    for k, fold in enumerate(split["folds"]):
        data = load_fold(root, k)
        assert data.val.ids == tuple(fold["val"]) == data.val.source_ids
        assert set(data.train.source_ids) == set(fold["train"])
        assert not set(data.train.source_ids) & set(fold["val"])
        assert len(data.train) == len(fold["train"]) * (1 + 6)


def test_no_test_image_or_mirror_of_one_reaches_any_fold(root, split):
    test = load_test(root)
    assert test.ids == tuple(split["test"]) == test.source_ids
    images = test.read(range(len(test)))["image"]
    test_images = {np.ascontiguousarray(v).tobytes() for image in images for v in flips(image)}
    for k in range(len(split["folds"])):
        data = load_fold(root, k)
        assert not set(data.train.source_ids + data.val.source_ids) & set(split["test"])
        seen = {img.tobytes() for s in (data.train, data.val) for img in s.read(np.arange(len(s)))["image"]}
        assert not seen & test_images


def test_read_returns_the_requested_rows_in_order(root):
    data = load_fold(root, 1)
    source = _rows(root / PREPROCESSED_DIR) | _rows(root / AUGMENTED_DIR)
    n = len(data.train)
    indices = [n - 1, 0, 5, n - 1, len(data.train.ids) // 2]
    batch = data.train.read(indices)
    assert batch["image"].shape == (5, 1, 32, 32) and batch["image"].dtype == np.uint8
    assert batch["mask"].shape == (5, 32, 32) and batch["mask"].dtype == np.uint8
    assert batch["label"].shape == (5,) and batch["label"].dtype == np.int64
    for j, i in enumerate(indices):
        row = source[data.train.ids[i]]
        for name in ("image", "mask", "label"):
            assert np.array_equal(batch[name][j], row[name])
    with pytest.raises(IndexError):
        data.train.read([n])


def test_missing_or_inconsistent_arrays_raise_data_error_naming_the_file(root, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(root, broken)
    (broken / AUGMENTED_DIR / "image.npy").unlink()
    with pytest.raises(DataError, match=r"augmented/image\.npy: missing"):
        load_fold(broken, 0)
    np.save(broken / PREPROCESSED_DIR / "mask.npy", np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"preprocessed/mask\.npy: shape \(3, 32, 32\)"):
        load_test(broken)


def test_copies_of_non_training_images_are_refused(root, split, tmp_path):
    stale = tmp_path / "data"
    shutil.copytree(root, stale)
    path = stale / AUGMENTED_DIR / "manifest.json"
    meta = json.loads(path.read_text())
    meta["source_id"][0] = split["test"][0]
    path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"augmented/manifest\.json: copies of 1 non-training images"):
        load_fold(stale, 0)


def test_unknown_fold_is_refused(root):
    with pytest.raises(DataError, match=r"split\.json: no fold 3"):
        load_fold(root, 3)
