"""Per-image values of each balancer, paired across balancers, and the statistics document.

Pairing. Every balancer is trained once per fold and each fold's model predicts every test image, so
a balancer has k values per image. To get one value per image (the unit the tests pair on):

- segmentation: the image's Dice averaged over the k fold models (a continuous score, as the
  Wilcoxon test wants);
- classification: whether the arg-max of the class probabilities averaged over the k fold models
  (the folds' soft-voting ensemble) is the true class — McNemar's test needs a 0/1 outcome, which
  averaging per-fold correctness would not give.

Multiple comparisons. Each task's comparisons of the balancers against the reference form one
family; with ``evaluate.holm`` their p-values are Holm-adjusted within it, and a comparison is
significant when its adjusted p-value is below ``evaluate.alpha`` (without, the raw p-value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.evaluate.evaluation_files import PairedStatistics
from pipeline.evaluate.statistics import holm, mcnemar_exact, wilcoxon_dice
from pipeline.tasks import Task

REFERENCE = "equal"
"""The balancer every other one is compared with."""

PAIRING = (
    "per test image: segmentation Dice averaged over the fold models (Wilcoxon signed-rank); "
    "classification correctness of the fold-averaged class probabilities (exact McNemar)"
)

PerImage = Mapping[str, Mapping[str, np.ndarray]]


def paired_values(tasks: Sequence[Task], folds: Sequence[PerImage]) -> dict[str, np.ndarray]:
    """One value per test image and task from one balancer's per-fold ``per_image`` results.

    Segmentation: mean Dice over folds ``(N,)`` float; classification: ensemble correctness ``(N,)``
    bool (see the module docstring). Every fold must cover the same images in the same order.
    """
    out = {}
    for task in tasks:
        per_fold = [fold[task.name] for fold in folds]
        if task.is_segmentation:
            out[task.name] = np.mean([f["dice"] for f in per_fold], axis=0)
        else:
            mean_probability = np.mean([f["probability"] for f in per_fold], axis=0)  # (N, C)
            out[task.name] = mean_probability.argmax(axis=1) == per_fold[0]["label"]
    return out


def statistics_document(
    tasks: Sequence[Task], paired: Mapping[str, Mapping[str, np.ndarray]], alpha: float, holm_correct: bool
) -> PairedStatistics:
    """``reports/evaluation/statistics.json``: every balancer of ``paired`` against :data:`REFERENCE`.

    ``paired``: balancer → :func:`paired_values`. ``comparisons[balancer][task]`` is the result of
    :func:`~pipeline.evaluate.statistics.wilcoxon_dice` (segmentation) or
    :func:`~pipeline.evaluate.statistics.mcnemar_exact` (classification) plus ``p_adjusted`` (Holm,
    or the raw p-value without correction) and ``significant`` (``p_adjusted < alpha``). Without the
    reference among the balancers, ``comparisons`` is empty and ``note`` says why.
    """
    document: dict[str, Any] = {
        "reference": REFERENCE,
        "alpha": alpha,
        "correction": "holm" if holm_correct else "none",
        "pairing": PAIRING,
        "comparisons": {},
        "note": "",
    }
    if REFERENCE not in paired:
        return PairedStatistics.model_validate(
            document | {"note": f"no comparisons: {REFERENCE!r} is not in train.balancers"}
        )
    others = [b for b in paired if b != REFERENCE]
    comparisons: dict[str, dict[str, Any]] = {b: {} for b in others}
    for task in tasks:
        test = wilcoxon_dice if task.is_segmentation else mcnemar_exact
        results = [test(paired[b][task.name], paired[REFERENCE][task.name]) for b in others]
        raw = [r["p_value"] for r in results]
        adjusted = holm(raw) if holm_correct and raw else raw
        for balancer, result, p in zip(others, results, adjusted, strict=True):
            comparisons[balancer][task.name] = result | {"p_adjusted": p, "significant": bool(p < alpha)}
    return PairedStatistics.model_validate(document | {"comparisons": comparisons})
