"""``metrics/<balancer>/folds.json``: what the train stage measured of one balancer, per fold and over folds.

Written by the train stage (:func:`pipeline.train.train.write_metrics`); read by ``compare``, the evaluate stage
(Table III's efficiency figures) and ``promote`` (the validation figures that pick the candidate).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pipeline.errors import DataError
from pipeline.stage_files import Document, Number

FOLDS_FILE = "folds.json"
TaskFigures = dict[str, dict[str, float]]
"""``{task: {metric: value}}``, e.g. ``{"lesion": {"dice": 0.88}}``."""


class FoldFigures(BaseModel):
    """One fold's figures (or their mean over folds): the best epoch (0-based) and the epochs run, the best
    validation loss, the validation metrics of the best epoch, the test metrics of its checkpoint, and efficiency
    (``parameters``, ``peak_memory_mib``, step times in ms, the longest epoch in s)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    best_epoch: Number
    epochs_run: Number
    best_val_loss: float
    val: TaskFigures
    test: TaskFigures
    efficiency: dict[str, Number]


class FoldsDocument(Document):
    """``folds``: by ``fold_<k>``; ``mean``: element-wise over them; ``baseline``: ``{"test": {task: {predictor:
    {metric: value}}}}``, the constant predictors' test metrics."""

    balancer: str
    folds: dict[str, FoldFigures]
    mean: FoldFigures
    baseline: dict[str, dict[str, dict[str, dict[str, float]]]]

    def fold(self, fold: int, path: Path) -> FoldFigures:
        """The figures of ``fold``; DataError naming ``path`` when the train stage did not train it."""
        figures = self.folds.get(f"fold_{fold}")
        if figures is None:
            raise DataError(f"{path}: no fold_{fold} (it has {sorted(self.folds)}); rerun the train stage")
        return figures


def folds_path(metrics_dir: Path, balancer: str) -> Path:
    return Path(metrics_dir) / balancer / FOLDS_FILE


def read_folds(metrics_dir: Path, balancer: str) -> FoldsDocument:
    """``<metrics_dir>/<balancer>/folds.json``; DataError naming the file when missing or malformed."""
    return FoldsDocument.read(folds_path(metrics_dir, balancer), f"the train stage of {balancer!r}")
