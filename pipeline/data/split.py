"""Split stage: stratified train/test split, then stratified k folds on the training part.

Where the dataset publishes a test subset (DFUTissue ``Test``, FUSeg ``validation``: the manifest's
``subset``), that subset is the test split and ``split.test_fraction`` is not used.

``<out>/split.json``::

    {"seed": int, "test_fraction": float, "k_folds": int,
     "train": [id, ...], "test": [id, ...],
     "folds": [{"train": [id, ...], "val": [id, ...]}, ...],
     "duplicates": [[id, ...], ...]}

Every id list is sorted. Fold ``k``'s ``val`` lists partition ``train``; test ids appear in no fold.
Each group of images with identical pixels (the ingest manifest's ``duplicates``, copied here) lies
wholly in ``train`` or in ``test``, and wholly in one fold's ``val``: a copy of a test or validation
image is never trained on.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import StratifiedKFold, train_test_split

from pipeline.config import Params
from pipeline.data import duplicates
from pipeline.data.manifest import read_manifest
from pipeline.errors import DataError
from pipeline.paths import MANIFEST, SPLIT_FILE
from pipeline.stage_files import Document


class Fold(BaseModel):
    """One fold: the ids it trains on and the ids it validates on (together, the split's ``train``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: list[str]
    val: list[str]


class SplitDocument(Document):
    """``split.json`` (the format above)."""

    seed: int
    test_fraction: float
    k_folds: int
    train: list[str]
    test: list[str]
    folds: list[Fold]
    duplicates: list[list[str]]


def run(params: Params, ingested: Path, out_dir: Path) -> None:
    """Split the records of ``ingested/manifest.json`` and write ``out_dir/split.json`` atomically."""
    manifest = read_manifest(ingested)
    source = Path(ingested) / MANIFEST
    ids = [r.id for r in manifest.records]
    labels = manifest.labels()
    counts = {c: labels.count(c) for c in manifest.classes}
    # Duplicate images split as one unit, stratified by their first id's label.
    units, members = duplicates.units(ids, manifest.duplicates)
    label_of = dict(zip(ids, labels))
    unit_labels = [label_of[u] for u in units]
    published_test = {r.id for r in manifest.records if r.subset == "test"}
    if published_test:
        # The dataset's own test subset stays the test split; a duplicate group touching it goes there whole.
        in_test = [any(i in published_test for i in members[u]) for u in units]
        train_units = [u for u, test in zip(units, in_test) if not test]
        test_units = [u for u, test in zip(units, in_test) if test]
        train_labels = [label_of[u] for u in train_units]
    else:
        try:
            train_units, test_units, train_labels, _ = train_test_split(
                units,
                unit_labels,
                test_size=params.split.test_fraction,
                random_state=params.seed,
                stratify=unit_labels,
            )
        except ValueError as exc:
            raise DataError(
                f"{source}: cannot split class counts {counts} with split.test_fraction="
                f"{params.split.test_fraction} ({exc})"
            ) from None
    k = params.split.k_folds
    train_counts = Counter(train_labels)
    short = {c: train_counts[c] for c in manifest.classes if train_counts[c] < k}
    if short:
        raise DataError(
            f"{source}: training images per class {short} (a duplicate group counts once) are fewer than "
            f"split.k_folds={k} "
            f"(class counts {counts}, split.test_fraction={params.split.test_fraction})"
        )
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=params.seed)

    def expand(unit_list: list[str]) -> list[str]:
        return sorted(i for u in unit_list for i in members[u])

    SplitDocument(
        seed=params.seed,
        test_fraction=params.split.test_fraction,
        k_folds=k,
        train=expand(train_units),
        test=expand(test_units),
        folds=[
            Fold(train=expand([train_units[i] for i in tr]), val=expand([train_units[i] for i in va]))
            for tr, va in folds.split(train_units, train_labels)
        ],
        duplicates=[list(group) for group in manifest.duplicates],
    ).write(Path(out_dir) / SPLIT_FILE)


def read_split(folder: Path) -> SplitDocument:
    """Read ``folder/split.json``; a missing or malformed file raises DataError naming it."""
    return SplitDocument.read(Path(folder) / SPLIT_FILE, "the split stage")
