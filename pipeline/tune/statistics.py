"""Figures of one trained fold, and their mean and standard deviation across the folds of a trial."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

VAL_LOSS = "val_loss"


def fold_figures(best_val_loss: float, val_metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """A fold's figures as flat names: ``val_loss`` (best mean validation loss) and ``<task>.<metric>``
    (validation metrics of the best epoch)."""
    figures = {VAL_LOSS: float(best_val_loss)}
    for task, values in val_metrics.items():
        figures.update({f"{task}.{name}": float(value) for name, value in values.items()})
    return figures


def across_folds(folds: Sequence[dict[str, float]]) -> dict[str, float]:
    """``<figure>_mean`` and ``<figure>_std`` of every figure all folds have.

    The std is the sample standard deviation (``ddof = 1``), the usual spread of k-fold estimates;
    it is ``nan`` for a single fold. A figure that is ``nan`` in some fold (e.g. a pixel AUC without
    lesion pixels) is ``nan`` in both.
    """
    if not folds:
        raise ValueError("across_folds needs at least one fold")
    out: dict[str, float] = {}
    for name in folds[0]:
        if not all(name in fold for fold in folds):
            continue
        values = [fold[name] for fold in folds]
        out[f"{name}_mean"] = statistics.fmean(values)
        out[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
    return out
