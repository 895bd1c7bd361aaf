"""Augment stage: copies of training images only, binary masks moved with their images, reproducible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import AUGMENTATIONS
from pipeline.data import augment, preprocess
from pipeline.data.folds import AUGMENTED_DIR, PREPROCESSED_DIR, SPLIT_DIR
from tests.data.fixtures_arrays import build_data_root, flips, make_params


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_data_root(tmp_path_factory.mktemp("data"), make_params())


def _load(folder):
    meta = json.loads((folder / "manifest.json").read_text())
    return meta, {name: np.load(folder / f"{name}.npy") for name in ("image", "mask", "label")}


def _augment(root, out, **overrides):
    params = make_params(**overrides)
    augment.run(params, preprocessed=root / PREPROCESSED_DIR, split=root / SPLIT_DIR, out_dir=out)
    return _load(out)


def test_only_training_images_are_augmented_each_with_one_copy_per_transform(root):
    split = json.loads((root / SPLIT_DIR / "split.json").read_text())
    meta, arrays = _load(root / AUGMENTED_DIR)
    assert set(meta["source_id"]) == set(split["train"])
    assert len(meta["ids"]) == len(arrays["label"]) == 6 * len(split["train"])
    for source in split["train"]:
        made = [t for s, t in zip(meta["source_id"], meta["transform"], strict=True) if s == source]
        assert sorted(made) == sorted(AUGMENTATIONS)


def test_no_test_image_or_mirror_of_one_is_in_the_augmented_data(root):
    split = json.loads((root / SPLIT_DIR / "split.json").read_text())
    pre_meta, pre = _load(root / PREPROCESSED_DIR)
    _, aug = _load(root / AUGMENTED_DIR)
    augmented = {row.tobytes() for row in aug["image"]}
    for id_ in split["test"]:
        image = pre["image"][pre_meta["ids"].index(id_)]
        assert not any(np.ascontiguousarray(v).tobytes() in augmented for v in flips(image))


def test_labels_follow_their_source_and_masks_stay_binary(root):
    pre_meta, pre = _load(root / PREPROCESSED_DIR)
    meta, aug = _load(root / AUGMENTED_DIR)
    rows = [pre_meta["ids"].index(s) for s in meta["source_id"]]
    assert np.array_equal(aug["label"], pre["label"][rows])
    assert set(np.unique(aug["mask"])) == {0, 1}


def test_every_transform_changes_the_image_and_flips_move_image_and_mask_together(root):
    pre_meta, pre = _load(root / PREPROCESSED_DIR)
    meta, aug = _load(root / AUGMENTED_DIR)
    for i, (source, name) in enumerate(zip(meta["source_id"], meta["transform"], strict=True)):
        row = pre_meta["ids"].index(source)
        assert not np.array_equal(aug["image"][i], pre["image"][row]), name
        axis = {"horizontal_flip": -1, "vertical_flip": -2}.get(name)
        if axis is not None:
            assert np.array_equal(aug["image"][i], np.flip(pre["image"][row], axis))
            assert np.array_equal(aug["mask"][i], np.flip(pre["mask"][row], axis))


def test_same_seed_gives_identical_arrays_for_any_worker_count(root, tmp_path, monkeypatch):
    reference, _ = _load(root / AUGMENTED_DIR)
    again, _ = _augment(root, tmp_path / "again")
    monkeypatch.setattr(preprocess, "POOL_START_S", 0.0)  # the pool takes over after the first chunk
    two_workers, _ = _augment(root, tmp_path / "two", data={"workers": 2})
    other_seed, _ = _augment(root, tmp_path / "other", seed=4)
    assert reference == again == two_workers
    assert other_seed["arrays"]["image"]["sha256"] != reference["arrays"]["image"]["sha256"]


def test_zero_copies_writes_empty_memory_mappable_arrays(root, tmp_path):
    meta, _ = _augment(root, tmp_path / "none", augment={"copies_per_image": 0})
    assert meta["ids"] == [] and meta["arrays"]["image"]["shape"] == [0, 1, 32, 32]
    assert np.load(tmp_path / "none" / "mask.npy", mmap_mode="r").shape == (0, 32, 32)


# OpenCV's optional SIMD levels above the x86-64 baseline: disabling them makes this CPU behave like an older one.
OLDER_CPU = "AVX512_SKX,AVX512_COMMON,AVX512_ICL,AVX512_CLX,AVX512_CNL,AVX2,FMA3,AVX,FP16,POPCNT,SSE4_2,SSE4_1,SSSE3"
AUGMENT_IN_NEW_PROCESS = """
import sys
from pathlib import Path
from pipeline.data import augment
from pipeline.data.folds import PREPROCESSED_DIR, SPLIT_DIR
from tests.data.fixtures_arrays import make_params
root, out = map(Path, sys.argv[1:])
augment.run(make_params(), preprocessed=root / PREPROCESSED_DIR, split=root / SPLIT_DIR, out_dir=out)
"""


def test_augmented_bytes_do_not_depend_on_the_cpus_simd_instructions(root, tmp_path):
    outputs = {}
    for cpu, disabled in (("this", None), ("older", OLDER_CPU)):
        env = {k: v for k, v in os.environ.items() if k != "OPENCV_CPU_DISABLE"}
        if disabled:
            env["OPENCV_CPU_DISABLE"] = disabled  # read when cv2 is imported, hence a new process
        out = tmp_path / cpu
        subprocess.run(
            [sys.executable, "-c", AUGMENT_IN_NEW_PROCESS, str(root), str(out)],
            env=env,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        outputs[cpu] = {name: (out / f"{name}.npy").read_bytes() for name in ("image", "mask")}
    assert outputs["this"] == outputs["older"]
