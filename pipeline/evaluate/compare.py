"""Compare every trained balancer's test metrics with trivial predictors (``mtl-pipeline compare``).

A balancer beats the baselines when, for every task, its primary test metric (segmentation: mean
per-image Dice; classification: accuracy), averaged over folds, is above the best constant
predictor's (all-background / all-foreground masks; the majority class) by more than
:data:`TIE_TOLERANCE`: a mean over folds that equals the baseline up to float rounding is a tie.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Params
from pipeline.errors import PipelineError
from pipeline.tasks import build_tasks
from pipeline.train.folds_file import read_folds

TIE_TOLERANCE = 1e-9
"""Margins within this are rounding: (0.56 + 0.64) / 2 is 0.6000000000000001, the majority class's 0.6."""
PRIMARY = {"binary_segmentation": "dice", "multiclass_segmentation": "dice", "classification": "accuracy"}


def verdicts(params: Params, metrics_dir: Path) -> list[dict[str, Any]]:
    """One row per balancer: ``{balancer, <task>: (model value, best baseline value), beats: bool}``."""
    rows = []
    for balancer in params.train.balancers:
        doc = read_folds(metrics_dir, balancer)
        row: dict[str, Any] = {"balancer": balancer, "beats": True}
        for task in build_tasks(params):
            metric = PRIMARY[task.kind]
            model = doc.mean.test[task.name][metric]
            baseline = max(b[metric] for b in doc.baseline["test"][task.name].values())
            row[task.name] = (metric, model, baseline)
            row["beats"] &= model > baseline + TIE_TOLERANCE
        rows.append(row)
    return rows


def run(params: Params, metrics_dir: Path, strict: bool) -> None:
    """Print the comparison table; with ``strict``, fail when a balancer does not beat the baselines."""
    rows = verdicts(params, metrics_dir)
    tasks = [t.name for t in build_tasks(params)]
    print(f"{'balancer':<12}" + "".join(f"{t + ' (test / best trivial)':>38}" for t in tasks) + "  beats trivial")
    for row in rows:
        cells = "".join(f"{row[t][0]:>14} {row[t][1]:10.4f} / {row[t][2]:.4f}   " for t in tasks)
        print(f"{row['balancer']:<12}{cells}  {'yes' if row['beats'] else 'NO'}")
    losers = [r["balancer"] for r in rows if not r["beats"]]
    if strict and losers:
        raise PipelineError(f"balancers {losers} do not beat the trivial baselines on the test split")
