"""The candidate for promotion, chosen on validation: a fold model or a fold ensemble (``registry.package``).

Selection reads the best-epoch *validation* metrics of ``<metrics>/<balancer>/folds.json``
(``folds.fold_<k>.val.<task>.<metric>``) for every balancer of ``train.balancers`` and fold of
``train.folds``. Their test metrics are not looked at: picking the best of several checkpoints by
test score would fit the choice to the test set, and the gate's test comparison with the champion
would then favour the candidate.

- ``fold``: the (balancer, fold) checkpoint with the best primary score; ties go to the first balancer
  in ``train.balancers``, then the lower fold.
- ``ensemble``: the k fold checkpoints of the balancer with the best mean over its folds of each
  validation metric (so of the primary score); ties go to the first balancer. Each fold is scored on its
  own validation set: the ensemble as a whole has none (every image was in some member's training set),
  so the gate's test score is the only measurement of the ensemble itself.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Params
from pipeline.errors import ConfigError, DataError
from pipeline.registry.gate import flat_metrics, primary_score
from pipeline.train.checkpoint import BEST
from pipeline.train.folds_file import folds_path, read_folds


@dataclass(frozen=True)
class Candidate:
    """A ``package`` (``fold`` or ``ensemble``) of one balancer's ``checkpoints`` of ``folds`` (one for a
    fold model), its validation metrics ``{"task.metric": value}`` (an ensemble's: means over its folds)
    and their primary ``score``."""

    package: str
    balancer: str
    folds: tuple[int, ...]
    checkpoints: tuple[Path, ...]
    validation: dict[str, float]
    score: float


def select_candidate(params: Params, models_dir: Path, metrics_dir: Path) -> Candidate:
    """The ``registry.package`` of ``<models_dir>/<balancer>/fold_<k>/best.pt`` checkpoints with the best
    validation primary score (module docstring).

    A missing ``folds.json`` or fold raises DataError naming the file; a gate metric
    (``registry.primary`` / ``registry.floors``) the evaluation does not produce raises ConfigError
    listing the ones it does; a missing checkpoint of the winner raises DataError.
    """
    per_balancer = [
        [_fold_candidate(params, models_dir, metrics_dir, balancer, fold) for fold in params.folds]
        for balancer in params.train.balancers
    ]
    if params.registry.package == "fold":
        candidates = [c for fold_candidates in per_balancer for c in fold_candidates]
    else:
        candidates = [_ensemble(fold_candidates, params) for fold_candidates in per_balancer]
    ranked = [c for c in candidates if not math.isnan(c.score)]
    if not ranked:
        raise DataError(f"{metrics_dir}: every {params.registry.package} candidate's validation primary score is nan")
    best = max(ranked, key=lambda c: c.score)  # max keeps the first of equal scores
    for checkpoint in best.checkpoints:
        if not checkpoint.is_file():
            raise DataError(
                f"{checkpoint}: not found (folds.json lists it; rerun the train stage of {best.balancer!r})"
            )
    return best


def package_sha256(package: str, digests: list[str]) -> str:
    """What identifies a registered ``package`` of checkpoints whose file sha256s are ``digests`` (fold
    order): a fold model's is its checkpoint's; an ensemble's the sha256 of ``ensemble:`` and the digests,
    comma-separated (so an ensemble of one fold is not taken for that fold model)."""
    if package == "fold":
        (digest,) = digests
        return digest
    return hashlib.sha256(("ensemble:" + ",".join(digests)).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of the file at ``path``, hex."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _ensemble(members: list[Candidate], params: Params) -> Candidate:
    """One balancer's fold candidates as an ensemble: every metric all of them have, averaged over them."""
    names = [m for m in members[0].validation if all(m in c.validation for c in members)]
    validation = {m: math.fsum(c.validation[m] for c in members) / len(members) for m in names}
    return Candidate(
        package="ensemble",
        balancer=members[0].balancer,
        folds=tuple(f for c in members for f in c.folds),
        checkpoints=tuple(p for c in members for p in c.checkpoints),
        validation=validation,
        score=primary_score(validation, params.registry.primary),
    )


def _fold_candidate(params: Params, models_dir: Path, metrics_dir: Path, balancer: str, fold: int) -> Candidate:
    validation = flat_metrics(read_folds(metrics_dir, balancer).fold(fold, folds_path(metrics_dir, balancer)).val)
    missing = [m for m in params.registry.metric_names() if m not in validation]
    if missing:
        raise ConfigError(
            f"registry.primary/floors: {missing} are not metrics the evaluation produces; allowed: {sorted(validation)}"
        )
    return Candidate(
        package="fold",
        balancer=balancer,
        folds=(fold,),
        checkpoints=(Path(models_dir) / balancer / f"fold_{fold}" / BEST,),
        validation=validation,
        score=primary_score(validation, params.registry.primary),
    )
