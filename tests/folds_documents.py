"""A train stage's ``folds.json`` for tests that need one without training: the fields a test cares about given,
the rest filled with a plausible one-epoch run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.train.folds_file import FoldFigures, FoldsDocument, folds_path
from pipeline.train.train import mean_over_folds

ONE_EPOCH = {"best_epoch": 0, "epochs_run": 1, "best_val_loss": 1.0, "val": {}, "test": {}, "efficiency": {}}


def write_folds(
    metrics_dir: Path,
    balancer: str,
    per_fold: dict[int, dict[str, Any]],
    mean: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> FoldsDocument:
    """Write ``<metrics_dir>/<balancer>/folds.json``: each fold's given fields over :data:`ONE_EPOCH`, their mean
    (or the given ``mean`` fields over it) and ``baseline`` (default: none); returns the document."""
    folds = {f"fold_{k}": FoldFigures.model_validate(ONE_EPOCH | fields) for k, fields in per_fold.items()}
    averaged = mean_over_folds([f.model_dump() for f in folds.values()]) if folds else ONE_EPOCH
    document = FoldsDocument(
        balancer=balancer,
        folds=folds,
        mean=FoldFigures.model_validate(averaged | (mean or {})),
        baseline=baseline or {"test": {}},
    )
    document.write(folds_path(metrics_dir, balancer))
    return document
