"""Split stage: disjoint, stratified, seed-reproducible train/test split and k folds."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pipeline.config import parse_params
from pipeline.data import split
from pipeline.errors import ConfigError, DataError
from tests.data.fixtures_arrays import COUNTS, make_params, write_manifest_only


def _run(tmp_path, params=None, counts=COUNTS, name="split"):
    write_manifest_only(tmp_path / "ingested", counts)
    split.run(params or make_params(), ingested=tmp_path / "ingested", out_dir=tmp_path / name)
    return json.loads((tmp_path / name / "split.json").read_text())


def _label(id_: str) -> str:
    return id_.rsplit("_", 1)[0]


def test_test_ids_are_held_out_and_folds_partition_train(tmp_path):
    s = _run(tmp_path)
    everything = {f"{c}_{n:03d}" for c, k in COUNTS.items() for n in range(k)}
    assert set(s["train"]) | set(s["test"]) == everything
    assert not set(s["train"]) & set(s["test"])
    assert len(s["folds"]) == 3
    vals = [set(f["val"]) for f in s["folds"]]
    assert set().union(*vals) == set(s["train"]) and sum(map(len, vals)) == len(s["train"])
    for fold in s["folds"]:
        assert set(fold["train"]) | set(fold["val"]) == set(s["train"])
        assert not set(fold["train"]) & set(fold["val"])
        assert not set(fold["train"] + fold["val"]) & set(s["test"])
    for ids in [s["train"], s["test"]] + [f[k] for f in s["folds"] for k in ("train", "val")]:
        assert ids == sorted(ids)


def test_test_and_validation_sets_are_stratified(tmp_path):
    s = _run(tmp_path, make_params(split={"test_fraction": 0.3, "k_folds": 4}))
    test = Counter(map(_label, s["test"]))
    train = Counter(map(_label, s["train"]))
    for c, n in COUNTS.items():
        assert abs(test[c] - 0.3 * n) <= 1
        for fold in s["folds"]:
            assert abs(Counter(map(_label, fold["val"]))[c] - train[c] / 4) <= 1


def test_same_seed_gives_identical_bytes_and_another_seed_another_split(tmp_path):
    _run(tmp_path, name="a")
    _run(tmp_path, name="b")
    assert (tmp_path / "a" / "split.json").read_bytes() == (tmp_path / "b" / "split.json").read_bytes()
    other = _run(tmp_path, make_params(seed=4), name="c")
    assert other["test"] != json.loads((tmp_path / "a" / "split.json").read_text())["test"]


def test_class_with_fewer_training_images_than_folds_is_rejected(tmp_path):
    with pytest.raises(DataError, match=r"malignant.*split\.k_folds=3"):
        _run(tmp_path, counts={"benign": 20, "malignant": 3})
    assert not (tmp_path / "split").exists()


def test_class_too_small_to_split_is_rejected(tmp_path):
    with pytest.raises(DataError, match=r"manifest\.json: cannot split.*'malignant': 1"):
        _run(tmp_path, counts={"benign": 20, "malignant": 1})


def test_fewer_than_two_folds_is_a_config_error():
    with pytest.raises(ConfigError, match=r"split\.k_folds"):
        parse_params({"split": {"k_folds": 1}})
