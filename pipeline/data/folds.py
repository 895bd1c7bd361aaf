"""The fold views training and evaluation read: index-addressable, memory-mapped sets of rows.

``data_root`` holds ``split/``, ``preprocessed/`` and ``augmented/`` (the layout of :mod:`pipeline.paths`).

* fold ``k`` train: preprocessed originals of fold ``k``'s train ids + their augmented copies
  (copies of fold ``k``'s validation images are excluded);
* fold ``k`` val: preprocessed originals of fold ``k``'s val ids;
* test: preprocessed originals of the test ids.

Arrays are memory-mapped once per load; :meth:`ArraySet.read` gathers a batch with one sorted fancy index
per array file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import paths
from pipeline.data.preprocess import open_arrays, rows_of
from pipeline.data.split import SplitDocument, read_split
from pipeline.errors import DataError
from pipeline.paths import MANIFEST, SPLIT_FILE

SPLIT_DIR = paths.SPLIT.relative_to(paths.DATA)
PREPROCESSED_DIR = paths.PREPROCESSED.relative_to(paths.DATA)
AUGMENTED_DIR = paths.AUGMENTED.relative_to(paths.DATA)


@dataclass(frozen=True)
class _Part:
    """Rows ``rows`` of one folder's memory-mapped arrays."""

    arrays: Mapping[str, np.ndarray]
    rows: np.ndarray


class ArraySet:
    """An ordered set of rows drawn from one or more memory-mapped array folders.

    ``ids[i]`` names row ``i``; ``source_ids[i]`` is the original image it comes from (its own id for an
    original, the augmented copy's source otherwise); ``classes`` are the label names.
    """

    def __init__(self, classes: Sequence[str], parts: Sequence[tuple[_Part, Sequence[str], Sequence[str]]]):
        self.classes = tuple(classes)
        self.ids = tuple(i for _, ids, _ in parts for i in ids)
        self.source_ids = tuple(s for _, _, sources in parts for s in sources)
        self._parts = tuple(part for part, _, _ in parts)
        self._starts = np.cumsum([0] + [len(p.rows) for p in self._parts])

    @classmethod
    def from_arrays(cls, classes: Sequence[str], arrays: Mapping[str, np.ndarray], ids: Sequence[str]) -> ArraySet:
        """Every row of in-memory ``arrays`` (the layout :meth:`read` returns), row ``i`` named ``ids[i]``
        and its own source."""
        return cls(classes, [(_Part(arrays, np.arange(len(ids))), list(ids), list(ids))])

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, indices: Sequence[int] | np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Rows ``indices`` (any order, repeats allowed) as ``{"image": (B, C, S, S) uint8,
        "mask": (B, S, S) uint8, "label": (B,) int64}`` in the order given; ``names`` picks arrays."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices must lie in 0..{len(self) - 1}, got {idx.min()}..{idx.max()}")
        first = self._parts[0].arrays
        wanted = tuple(first) if names is None else tuple(names)
        out = {name: np.empty((idx.size, *first[name].shape[1:]), first[name].dtype) for name in wanted}
        part_of = np.searchsorted(self._starts, idx, side="right") - 1
        for p, part in enumerate(self._parts):
            where = np.flatnonzero(part_of == p)
            if not where.size:
                continue
            rows = part.rows[idx[where] - self._starts[p]]
            order = np.argsort(rows, kind="stable")
            for name in wanted:
                out[name][where[order]] = part.arrays[name][rows[order]]
        return out


@dataclass(frozen=True)
class FoldData:
    """Training and validation rows of one cross-validation fold."""

    train: ArraySet
    val: ArraySet


def load_fold(data_root: Path, fold: int) -> FoldData:
    """Fold ``fold`` of ``data_root``'s split: augmented training rows and original validation rows."""
    root = Path(data_root)
    split = read_split(root / SPLIT_DIR)
    folds = split.folds
    if not 0 <= fold < len(folds):
        raise DataError(f"{root / SPLIT_DIR / SPLIT_FILE}: no fold {fold} (it has folds 0..{len(folds) - 1})")
    pre_meta, pre = open_arrays(root / PREPROCESSED_DIR)
    aug_meta, aug = open_arrays(root / AUGMENTED_DIR)
    _check_compatible(root, pre_meta, aug_meta, split)
    train_ids = set(folds[fold].train)
    aug_rows = [i for i, s in enumerate(aug_meta["source_id"]) if s in train_ids]
    augmented = (
        _Part(aug, np.asarray(aug_rows, dtype=np.int64)),
        [aug_meta["ids"][i] for i in aug_rows],
        [aug_meta["source_id"][i] for i in aug_rows],
    )
    classes = pre_meta["classes"]
    return FoldData(
        train=ArraySet(classes, [_originals(root, pre_meta, pre, folds[fold].train), augmented]),
        val=ArraySet(classes, [_originals(root, pre_meta, pre, folds[fold].val)]),
    )


def load_test(data_root: Path) -> ArraySet:
    """The held-out test rows (preprocessed originals, never augmented)."""
    root = Path(data_root)
    split = read_split(root / SPLIT_DIR)
    pre_meta, pre = open_arrays(root / PREPROCESSED_DIR)
    return ArraySet(pre_meta["classes"], [_originals(root, pre_meta, pre, split.test)])


def _originals(
    root: Path, meta: dict[str, Any], arrays: Mapping[str, np.ndarray], ids: Sequence[str]
) -> tuple[_Part, Sequence[str], Sequence[str]]:
    rows = rows_of(meta, ids, root / PREPROCESSED_DIR / MANIFEST, root / SPLIT_DIR / SPLIT_FILE)
    return _Part(arrays, rows), list(ids), list(ids)


def _check_compatible(root: Path, pre: dict[str, Any], aug: dict[str, Any], split: SplitDocument) -> None:
    """Augmented rows must match the preprocessed arrays and come from training images only."""
    path = root / AUGMENTED_DIR / MANIFEST
    for key in ("image_size", "channels", "classes"):
        if aug[key] != pre[key]:
            raise DataError(f"{path}: {key} {aug[key]!r} differs from preprocessed {pre[key]!r}; rerun augment")
    sources = aug.get("source_id")
    if not isinstance(sources, list) or len(sources) != len(aug["ids"]):
        raise DataError(f"{path}: 'source_id' must list one source id per row")
    leaked = sorted(set(sources) - set(split.train))
    if leaked:
        raise DataError(
            f"{path}: copies of {len(leaked)} non-training images (e.g. {leaked[:3]}); augmented data is "
            f"stale for {root / SPLIT_DIR / SPLIT_FILE}; rerun augment"
        )
