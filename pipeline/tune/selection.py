"""Picking the sweep's configuration from its table of fold statistics (a pure function of the table).

Rules (``tune.selection.rule``):

- ``min_std``: the lowest standard deviation across folds of ``tune.selection.metric`` — the paper's
  rule (the most stable γ). Stds within ``tie_tolerance`` of the lowest tie; the lower mean validation
  loss wins among them.
- ``min_mean_val_loss``: the lowest mean (across folds) of the best validation loss.
- ``max_mean_<task>.<metric>``: the highest mean of a validation metric, e.g. ``max_mean_lesion.dice``.

Only rows of trials that trained every fold compete (an ASHA-stopped trial has fewer ``folds_done``).
Remaining ties go to the earlier row (the stage passes rows sorted by γ, T0, window), so the choice is
deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pipeline.config import TuneSelectionParams
from pipeline.errors import ConfigError
from pipeline.tune.statistics import VAL_LOSS

Row = dict[str, Any]


def select(rows: Sequence[Row], selection: TuneSelectionParams, folds: int) -> Row:
    """The chosen row among ``rows`` that have ``folds_done == folds``.

    Raises ConfigError when the rule's figure is missing from the table (naming the figures there) or
    when no row is complete or has a finite value of it.
    """
    complete = [row for row in rows if row.get("folds_done") == folds]
    if not complete:
        raise ConfigError(f"tune: no trial trained all {folds} folds; nothing to select from")
    rule = selection.rule
    if rule == "min_std":
        key = _column(complete, f"{selection.metric}_std", "tune.selection.metric")
        finite = _finite(complete, key, rule)
        lowest = min(row[key] for row in finite)
        tied = [row for row in finite if row[key] <= lowest + selection.tie_tolerance]
        return min(tied, key=lambda row: row[f"{VAL_LOSS}_mean"])
    if rule == "min_mean_val_loss":
        key = f"{VAL_LOSS}_mean"
        return min(_finite(complete, key, rule), key=lambda row: row[key])
    key = _column(complete, rule.removeprefix("max_mean_") + "_mean", "tune.selection.rule")
    return max(_finite(complete, key, rule), key=lambda row: row[key])


def _column(rows: Sequence[Row], key: str, field: str) -> str:
    if key not in rows[0]:
        figures = sorted({k.rsplit("_", 1)[0] for k in rows[0] if k.endswith("_mean")})
        raise ConfigError(f"{field}: the sweep has no figure {key.rsplit('_', 1)[0]!r}; it has {figures}")
    return key


def _finite(rows: Sequence[Row], key: str, rule: str) -> list[Row]:
    finite = [row for row in rows if isinstance(row.get(key), float) and math.isfinite(row[key])]
    if not finite:
        hint = " (a std needs at least 2 folds)" if key.endswith("_std") else ""
        raise ConfigError(f"tune.selection.rule = {rule!r}: no trial has a finite {key}{hint}")
    return finite
