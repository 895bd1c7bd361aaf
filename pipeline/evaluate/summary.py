"""Per-fold figures of every balancer, summarised over folds (pure functions), and the table layout.

A fold's figures are ``{group: {name: value}}``: one group per task (its test metrics, names as
:class:`~pipeline.runtime.metrics.TaskMetrics` returns them) and the group :data:`EFFICIENCY`
(the train stage's efficiency figures of that fold).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

EFFICIENCY = "efficiency"
"""Group name of the training-efficiency figures (a task may not be named so)."""

ENSEMBLE = "ensemble"
"""Group name of the fold ensemble's test metrics in ``metrics.json`` (a task may not be named so)."""

TABLE_II = {
    "binary_segmentation": ("accuracy", "dice", "iou", "auc", "recall", "precision"),
    "multiclass_segmentation": ("accuracy", "dice", "iou"),
    "classification": ("accuracy", "f1", "recall", "precision"),
}
"""Test metrics per task kind in the order of the paper's Table II (all: higher is better)."""

TABLE_III = {
    "parameters": "parameters",
    "peak_memory_mib": "peak memory (MiB)",
    "step_time_max_ms": "longest step (ms)",
    "step_time_median_ms": "median step (ms)",
    "epoch_time_max_s": "longest epoch (s)",
}
"""Efficiency figures of the paper's Table III and their column titles (all: lower is better)."""

Figures = Mapping[str, Mapping[str, float]]


def over_folds(folds: Sequence[Figures]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{group: {name: {"mean", "std", "folds"}}}`` over the folds' figures (groups and names of the first fold).

    ``std`` is the sample standard deviation (ddof = 1), ``nan`` with a single fold; ``folds`` lists
    the values in fold order. A mean or std over values containing ``nan`` is ``nan``.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for group, names in folds[0].items():
        out[group] = {}
        for name in names:
            values = np.array([fold[group][name] for fold in folds], dtype=float)
            std = float(values.std(ddof=1)) if values.size > 1 else float("nan")
            out[group][name] = {"mean": float(values.mean()), "std": std, "folds": values.tolist()}
    return out


Summary = Mapping[str, Mapping[str, Mapping[str, Any]]]


def headline(summary: Summary, kinds: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """One balancer's ``reports/metrics.json`` entry: fold means of the Table II metrics per task
    (``kinds``: task name → kind) and of the Table III efficiency figures."""
    out = {task: {m: summary[task][m]["mean"] for m in TABLE_II[kind]} for task, kind in kinds.items()}
    return out | {EFFICIENCY: {k: summary[EFFICIENCY][k]["mean"] for k in TABLE_III}}


def ensemble_headline(
    metrics: Mapping[str, Mapping[str, float]], kinds: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """A fold ensemble's Table II metrics per task (``metrics``: ``{task: {metric: value}}`` of one pass over the
    test set) for ``reports/metrics.json``."""
    return {task: {m: metrics[task][m] for m in TABLE_II[kind]} for task, kind in kinds.items()}


def fold_rows(balancer: str, folds: Sequence[int], figures: Sequence[Figures]) -> list[dict[str, Any]]:
    """CSV rows ``{balancer, fold, "<group>/<name>": value}``, one per fold."""
    return [
        {"balancer": balancer, "fold": fold}
        | {f"{group}/{name}": value for group, names in fold_figures.items() for name, value in names.items()}
        for fold, fold_figures in zip(folds, figures, strict=True)
    ]


def summary_row(balancer: str, summary: Summary) -> dict[str, Any]:
    """A CSV row ``{balancer, "<group>/<name>/mean": .., "<group>/<name>/std": ..}``."""
    return {"balancer": balancer} | {
        f"{group}/{name}/{stat}": value[stat]
        for group, names in summary.items()
        for name, value in names.items()
        for stat in ("mean", "std")
    }
