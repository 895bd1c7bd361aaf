"""Augment stage: offline albumentations expansion of the training split (never the test split).

Every training image gets ``augment.copies_per_image`` copies; copy ``i`` applies transform
``augment.transforms[i % n]`` with probability 1 to image and masks together (masks — the binary mask and,
where there is one, the tissue index mask — by nearest-neighbour, so they keep their values). Copy ``i`` of
image ``id`` is seeded from ``(seed, id, i)`` alone, so the output
is byte-identical across runs and worker counts.

``<out>/`` holds the array layout of :mod:`pipeline.data.preprocess` (rows ordered by sorted source id,
then copy), and its ``manifest.json`` adds, per row, ``source_id`` (the preprocessed image it was made
from) and ``transform`` (the transform's name), plus ``seed``. Row ids are ``"<source_id>~aug<i>"``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import atomic_dir
from pipeline.config import AugmentParams, Params
from pipeline.data.preprocess import ARRAY_DTYPES, CHUNK, Batch, map_chunks, open_arrays, rows_of, write_arrays
from pipeline.data.split import read_split
from pipeline.paths import MANIFEST, SPLIT_FILE

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check from a pipeline stage
import albumentations as A

# name -> factory(augment params, image side in px); every name of config.AUGMENTATIONS.
# The elastic field (alpha = S, sigma = S/20) displaces pixels by a few px; albumentations' default
# (alpha = 1, sigma = 50) would leave the image practically unchanged.
TRANSFORMS: dict[str, Callable[[AugmentParams, int], A.BasicTransform]] = {
    "grid_distortion": lambda aug, size: A.GridDistortion(p=1.0),
    "rotate": lambda aug, size: A.Rotate(limit=aug.rotate_limit, p=1.0),
    "optical_distortion": lambda aug, size: A.OpticalDistortion(p=1.0),
    "horizontal_flip": lambda aug, size: A.HorizontalFlip(p=1.0),
    "vertical_flip": lambda aug, size: A.VerticalFlip(p=1.0),
    "elastic": lambda aug, size: A.ElasticTransform(alpha=size, sigma=size / 20, p=1.0),
}

Job = tuple[int, str, int]  # (row in the preprocessed arrays, source id, copy index)


def plan(params: Params, preprocessed: Path, split: Path) -> tuple[dict[str, Any], list[Job]]:
    """The preprocessed manifest and the stage's jobs: one per (training image, copy), rows ordered by
    sorted source id, then copy."""
    meta, _ = open_arrays(preprocessed)
    train = sorted(read_split(split).train)
    rows = rows_of(meta, train, Path(preprocessed) / MANIFEST, Path(split) / SPLIT_FILE)
    return meta, [(int(row), id_, i) for row, id_ in zip(rows, train) for i in range(params.augment.copies_per_image)]


def run(params: Params, preprocessed: Path, split: Path, out_dir: Path) -> None:
    """Write augmented copies of the training images of ``split/split.json`` to ``out_dir`` (atomically)."""
    preprocessed = Path(preprocessed).resolve()
    meta, jobs = plan(params, preprocessed, split)
    aug = params.augment
    size = meta["image_size"]
    augment = functools.partial(_augment_chunk, preprocessed=preprocessed, aug=aug, seed=params.seed, size=size)
    chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    with atomic_dir(out_dir) as tmp:
        write_arrays(
            tmp,
            ids=[f"{id_}~aug{i}" for _, id_, i in jobs],
            classes=meta["classes"],
            size=size,
            channels=meta["channels"],
            batches=map_chunks(augment, chunks, params.data.workers, "augment", len(jobs)),
            names=[name for name in ARRAY_DTYPES if name in meta["arrays"]],
            source_id=[id_ for _, id_, _ in jobs],
            transform=[aug.transforms[i % len(aug.transforms)] for _, _, i in jobs],
            seed=params.seed,
        )


def copy_seed(seed: int, source_id: str, copy: int) -> int:
    """The 32-bit seed of copy ``copy`` of image ``source_id``: independent of order and process."""
    digest = hashlib.sha256(f"{seed}/{source_id}/{copy}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@functools.cache
def _transform(name: str, aug: AugmentParams, size: int) -> A.Compose:
    """The pipeline of transform ``name``, built once per process and reseeded per image.

    ``set_random_seed(s)`` before a call gives exactly what a new ``Compose(..., seed=s)`` gives; building
    a Compose per image cost 45% of the stage's time (``make bench``, augment vs bare albumentations).
    """
    return A.Compose([TRANSFORMS[name](aug, size)])


def _augment_chunk(jobs: Sequence[Job], preprocessed: Path, aug: AugmentParams, seed: int, size: int) -> Batch:
    source = open_arrays(preprocessed)[1]
    rows = np.asarray([row for row, _, _ in jobs], dtype=np.int64)
    # One gather per array for the whole chunk (a row repeats once per copy): in-memory (B, S, S, C) images.
    chunk_images = np.ascontiguousarray(source["image"][rows].transpose(0, 2, 3, 1))
    mask_names = [name for name in ("mask", "tissue") if name in source]
    chunk_masks = {name: np.asarray(source[name][rows]) for name in mask_names}
    transforms = {name: _transform(name, aug, size) for name in aug.transforms}
    images: list[np.ndarray] = []
    masks: dict[str, list[np.ndarray]] = {name: [] for name in mask_names}
    for i, (_, source_id, copy) in enumerate(jobs):
        transform = transforms[aug.transforms[copy % len(aug.transforms)]]
        transform.set_random_seed(copy_seed(seed, source_id, copy))
        out = transform(image=chunk_images[i], masks=[chunk_masks[name][i] for name in mask_names])
        images.append(out["image"].transpose(2, 0, 1))
        for name, mask in zip(mask_names, out["masks"]):
            masks[name].append(mask)
    return {
        "image": np.stack(images),
        **{name: np.stack(stack) for name, stack in masks.items()},
        "label": np.asarray(source["label"][rows], dtype=np.int64),
    }
