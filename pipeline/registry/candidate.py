"""The candidate for promotion: the (balancer, fold) checkpoint with the best primary score on validation.

Selection reads the best-epoch *validation* metrics of ``<metrics>/<balancer>/folds.json``
(``folds.fold_<k>.val.<task>.<metric>``) for every balancer of ``train.balancers`` and fold of
``train.folds``. Their test metrics are not looked at: picking the best of several checkpoints by
test score would fit the choice to the test set, and the gate's test comparison with the champion
would then favour the candidate. Ties go to the first balancer in ``train.balancers``, then the
lower fold.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Params
from pipeline.errors import ConfigError, DataError
from pipeline.registry.gate import flat_metrics, primary_score
from pipeline.train.checkpoint import BEST


@dataclass(frozen=True)
class Candidate:
    """One trained checkpoint and its best-epoch validation metrics ``{"task.metric": value}``."""

    balancer: str
    fold: int
    checkpoint: Path
    validation: dict[str, float]
    score: float


def select_candidate(params: Params, models_dir: Path, metrics_dir: Path) -> Candidate:
    """The checkpoint ``<models_dir>/<balancer>/fold_<k>/best.pt`` with the best validation primary score.

    A missing ``folds.json`` or fold raises DataError naming the file; a gate metric
    (``registry.primary`` / ``registry.floors``) the evaluation does not produce raises ConfigError
    listing the ones it does; a missing checkpoint of the winner raises DataError.
    """
    candidates = [
        _candidate(params, models_dir, metrics_dir, balancer, fold)
        for balancer in params.train.balancers
        for fold in params.folds
    ]
    ranked = [c for c in candidates if not math.isnan(c.score)]
    if not ranked:
        raise DataError(f"{metrics_dir}: every checkpoint's validation primary score is nan")
    best = max(ranked, key=lambda c: c.score)  # max keeps the first of equal scores
    if not best.checkpoint.is_file():
        raise DataError(
            f"{best.checkpoint}: not found (folds.json lists it; rerun the train stage of {best.balancer!r})"
        )
    return best


def _candidate(params: Params, models_dir: Path, metrics_dir: Path, balancer: str, fold: int) -> Candidate:
    path = Path(metrics_dir) / balancer / "folds.json"
    try:
        folds = json.loads(path.read_text(encoding="utf-8"))["folds"]
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the train stage of {balancer!r} first)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: malformed metrics document ({exc!r})") from None
    key = f"fold_{fold}"
    if key not in folds or "val" not in folds[key]:
        raise DataError(
            f"{path}: no validation metrics of {key} (train.folds lists fold {fold}); rerun the train stage"
        )
    validation = flat_metrics(folds[key]["val"])
    missing = [m for m in params.registry.metric_names() if m not in validation]
    if missing:
        raise ConfigError(
            f"registry.primary/floors: {missing} are not metrics the evaluation produces; "
            f"allowed: {sorted(validation)}"
        )
    return Candidate(
        balancer=balancer,
        fold=fold,
        checkpoint=Path(models_dir) / balancer / key / BEST,
        validation=validation,
        score=primary_score(validation, params.registry.primary),
    )
