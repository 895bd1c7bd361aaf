"""The four data stages in one call, in-process: what ``dvc repro``'s data stages produce, in any folder.

For benchmarks and tests that need a complete data root without DVC: ``<root>/{ingested,split,
preprocessed,augmented}/`` (the layout :func:`pipeline.data.folds.load_fold` reads).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.data import augment, ingest, preprocess, split


def build_data_root(params: Params, root: Path) -> Path:
    """Run ingest, split, preprocess and augment for ``params`` into ``root``; returns ``root``."""
    root = Path(root)
    ingest.run(params, out_dir=root / "ingested")
    split.run(params, ingested=root / "ingested", out_dir=root / "split")
    preprocess.run(params, ingested=root / "ingested", out_dir=root / "preprocessed")
    augment.run(params, preprocessed=root / "preprocessed", split=root / "split", out_dir=root / "augmented")
    return root
