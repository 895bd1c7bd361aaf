"""Paired significance tests of one model against a reference on the same test images (pure functions).

- Segmentation: Wilcoxon signed-rank test on per-image Dice (:func:`wilcoxon_dice`), two-sided, zero
  differences dropped (scipy's ``zero_method="wilcox"``); scipy picks the exact null distribution for
  small samples without ties or zeros and the normal approximation otherwise. When every difference is
  zero the test is undefined (scipy returns ``nan``): we report p = 1, since the two models cannot be
  told apart on these images, and say so in ``note``.
- Classification: exact McNemar test on per-image correctness (:func:`mcnemar_exact`): a two-sided
  binomial test of ``b`` against ``b + c`` trials at 1/2, where ``b`` counts images only the model
  gets right and ``c`` those only the reference gets right. Without discordant pairs p = 1.
- :func:`paired_test` picks the one of the two that fits a headline metric (``dice`` or ``accuracy``).
- :func:`holm` adjusts a family of p-values for multiple comparisons (Holm–Bonferroni step-down).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def wilcoxon_dice(dice: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Wilcoxon signed-rank test of per-image Dice ``dice`` ``(N,)`` against ``reference`` ``(N,)``.

    Returns ``n`` (images), ``n_nonzero`` (images whose Dice differs), ``median_difference`` and
    ``mean_difference`` (model − reference, Dice units), ``direction`` (``better`` / ``worse`` /
    ``tie`` by the sign of the median difference, then of the mean), ``statistic`` (scipy's: the
    smaller of the positive- and negative-rank sums; ``None`` when undefined), ``p_value`` and ``note``.
    """
    dice, reference = _paired(dice, reference)
    difference = dice - reference
    nonzero = int(np.count_nonzero(difference))
    result: dict[str, Any] = {
        "test": "wilcoxon_signed_rank",
        "n": int(difference.size),
        "n_nonzero": nonzero,
        "median_difference": float(np.median(difference)),
        "mean_difference": float(np.mean(difference)),
    }
    median, mean = result["median_difference"], result["mean_difference"]
    result["direction"] = _direction(median if median else mean)
    if nonzero == 0:
        return result | {
            "statistic": None,
            "p_value": 1.0,
            "note": "every paired difference is zero: the test is undefined, p = 1 (indistinguishable)",
        }
    test = stats.wilcoxon(dice, reference, zero_method="wilcox", alternative="two-sided")
    return result | {"statistic": float(test.statistic), "p_value": float(test.pvalue), "note": ""}


def mcnemar_exact(correct: np.ndarray, reference_correct: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test of per-image correctness ``correct`` ``(N,)`` bool against ``reference_correct``.

    Returns ``n``, ``accuracy`` and ``reference_accuracy`` (fractions), the discordant counts ``b``
    (model right, reference wrong) and ``c`` (model wrong, reference right), ``direction``
    (``better`` when b > c, ``worse`` when b < c, else ``tie``), ``p_value`` and ``note``.
    """
    correct, reference_correct = _paired(correct.astype(bool), reference_correct.astype(bool))
    b = int(np.sum(correct & ~reference_correct))
    c = int(np.sum(~correct & reference_correct))
    result: dict[str, Any] = {
        "test": "mcnemar_exact",
        "n": int(correct.size),
        "accuracy": float(correct.mean()),
        "reference_accuracy": float(reference_correct.mean()),
        "b": b,
        "c": c,
        "direction": _direction(b - c),
    }
    if b + c == 0:
        return result | {"p_value": 1.0, "note": "no discordant pairs: both are right on the same images, p = 1"}
    return result | {"p_value": float(stats.binomtest(b, b + c, 0.5).pvalue), "note": ""}


def paired_test(metric: str, figures: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """:func:`wilcoxon_dice` when ``metric`` is ``dice`` (``figures``: per-image Dice ``(N,)``), :func:`mcnemar_exact`
    when it is ``accuracy`` (``figures``: per-image correctness ``(N,)``), each against ``reference`` on the same images.
    """
    if metric == "dice":
        return wilcoxon_dice(figures, reference)
    if metric == "accuracy":
        return mcnemar_exact(figures, reference)
    raise ValueError(f"metric {metric!r}: no paired test (allowed: 'dice', 'accuracy')")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given.

    With the m p-values sorted ascending, the i-th (from 0) becomes ``min(1, max_{j ≤ i} (m − j)·p_(j))``;
    rejecting where the adjusted value is below alpha controls the family-wise error rate at alpha.
    """
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted.tolist()


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if a.size != b.size or a.size == 0:
        raise ValueError(f"paired samples must be non-empty and of equal length, got {a.size} and {b.size}")
    return a, b


def _direction(sign: float) -> str:
    return "better" if sign > 0 else "worse" if sign < 0 else "tie"
