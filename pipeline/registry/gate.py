"""The promotion gate: a pure decision from test metrics (no files, no MLflow).

Metrics are flat maps ``{"<task>.<metric>": value}`` (see :func:`flat_metrics`); every metric the
evaluation produces (Dice, IoU, accuracy, F1, AUC, ...) lies in 0..1 and is better when higher. The
*primary score* is the mean of the ``registry.primary`` metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.config import RegistryParams


@dataclass(frozen=True)
class Decision:
    """Whether the candidate becomes champion, and why (one sentence per check, in check order)."""

    promote: bool
    reasons: tuple[str, ...]
    candidate_score: float
    champion_score: float | None


def flat_metrics(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{task: {metric: value}}`` (as evaluation and ``folds.json`` store them) → ``{"task.metric": value}``."""
    return {f"{task}.{name}": float(value) for task, values in metrics.items() for name, value in values.items()}


def primary_score(metrics: Mapping[str, float], names: Sequence[str]) -> float:
    """Mean of ``metrics[name]`` over ``names``; nan if any of them is nan."""
    return math.fsum(metrics[name] for name in names) / len(names)


def decide(candidate: Mapping[str, float], champion: Mapping[str, float] | None, gate: RegistryParams) -> Decision:
    """Promote ``candidate`` over ``champion`` (both measured on the same test split)?

    Yes when every ``gate.floors`` metric of the candidate is at least its floor, and either there is
    no champion (``None``) or the candidate's primary score exceeds the champion's by at least
    ``gate.min_improvement`` (a smaller gain, a tie or a loss keeps the champion). A nan value fails
    its floor; a nan primary score (the candidate's or the champion's) refuses.
    """
    reasons = []
    passed = True
    for name, floor in sorted(gate.floors.items()):
        value = candidate[name]
        if value >= floor:
            reasons.append(f"{name} = {value:.4f} meets its floor {floor:g}")
        else:
            passed = False
            reasons.append(f"{name} = {value:.4f} is below its floor {floor:g}")
    score = primary_score(candidate, gate.primary)
    shown = f"primary score ({' + '.join(gate.primary)}) / {len(gate.primary)} = {score:.4f}"
    if champion is None:
        passed = passed and not math.isnan(score)
        reasons.append(f"{shown}; no other version is champion")
        return Decision(passed, tuple(reasons), score, None)
    best = primary_score(champion, gate.primary)
    gain = score - best
    if gain >= gate.min_improvement:
        reasons.append(
            f"{shown} beats the champion's {best:.4f} by {gain:.4f} >= min_improvement {gate.min_improvement:g}"
        )
    else:
        passed = False
        reasons.append(
            f"{shown} does not beat the champion's {best:.4f} by min_improvement {gate.min_improvement:g} "
            f"(gain {gain:.4f})"
        )
    return Decision(passed, tuple(reasons), score, best)
