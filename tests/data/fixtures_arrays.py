"""Tiny ingest folders and params for the split / preprocess / augment / folds tests.

Independent of the ingest stage: PNG files and a manifest are written here directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.config import Params, deep_merge, parse_params
from pipeline.data import augment, preprocess, split
from pipeline.data.folds import AUGMENTED_DIR, PREPROCESSED_DIR, SPLIT_DIR
from pipeline.data.manifest import Manifest, Record, write_manifest

COUNTS = {"benign": 24, "malignant": 16}
BASE = {
    "seed": 3,
    "data": {"image_size": 32, "workers": 1},
    "split": {"test_fraction": 0.25, "k_folds": 3},
    "augment": {"copies_per_image": 6},
}


def make_params(**overrides: Any) -> Params:
    """The test params (32 px, 3 folds, 6 copies, 1 worker) with ``overrides`` merged in."""
    return parse_params(deep_merge(BASE, overrides))


def record_id(label: str, n: int) -> str:
    return f"{label}_{n:03d}"


def write_manifest_only(folder: Path, counts: dict[str, int] = COUNTS) -> None:
    """A manifest whose records point at no files: enough for the split stage."""
    records = tuple(
        Record(record_id(c, n), c, f"{c}/{n}.png", (f"{c}/{n}_mask.png",), "0" * 64)
        for c, k in counts.items()
        for n in range(k)
    )
    write_manifest(folder, Manifest("test", "busi", tuple(counts), records))


def make_ingested(folder: Path, counts: dict[str, int] = COUNTS, seed: int = 0) -> Path:
    """Noise images of varied sizes (24..70 px, so preprocess both enlarges and shrinks) with elliptic
    lesion masks; the first image of each class has two mask files (left and right halves of the lesion)."""
    rng = np.random.default_rng(seed)
    records = []
    for label, k in counts.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for n in range(k):
            h, w = int(rng.integers(24, 71)), int(rng.integers(24, 71))
            image = rng.integers(0, 256, (h, w), dtype=np.uint8)
            yy, xx = np.mgrid[:h, :w]
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
            lesion = ((yy - cy) / (0.25 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2 < 1
            parts = [lesion & (xx < cx), lesion & (xx >= cx)] if n == 0 else [lesion]
            rid = record_id(label, n)
            Image.fromarray(image).save(folder / label / f"{rid}.png")
            masks = []
            for j, part in enumerate(parts):
                name = f"{label}/{rid}_mask{'_' + str(j) if j else ''}.png"
                Image.fromarray(part.astype(np.uint8) * 255).save(folder / name)
                masks.append(name)
            records.append(Record(rid, label, f"{label}/{rid}.png", tuple(masks), "0" * 64))
    write_manifest(folder, Manifest("test", "busi", tuple(counts), tuple(records)))
    return folder


def build_data_root(root: Path, params: Params) -> Path:
    """Ingest fixture → split → preprocess → augment under ``root`` (the layout of pipeline.paths)."""
    ingested = make_ingested(root / "ingested")
    split.run(params, ingested=ingested, out_dir=root / SPLIT_DIR)
    preprocess.run(params, ingested=ingested, out_dir=root / PREPROCESSED_DIR)
    augment.run(params, preprocessed=root / PREPROCESSED_DIR, split=root / SPLIT_DIR, out_dir=root / AUGMENTED_DIR)
    return root


def flips(image: np.ndarray) -> list[np.ndarray]:
    """``image`` (C, S, S) and its horizontal and vertical mirror images."""
    return [image, image[..., ::-1], image[..., ::-1, :]]
