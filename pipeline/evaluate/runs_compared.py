"""``mtl-pipeline compare-runs REFERENCE CANDIDATE``: two pipeline runs on the same test images, image by image.

Each argument is a ``reports`` folder (or a workspace holding one) with the ``evaluate`` stage's
``evaluation/per_image.csv``. For every balancer both runs trained, each task's headline figure (mean over its
(fold, image) rows: Dice for segmentation, accuracy for classification) is compared by the report's paired tests
over the (fold, image) pairs: Wilcoxon signed-rank on per-image Dice, exact McNemar on per-image correctness
(:mod:`pipeline.evaluate.statistics`). It answers "did this change move the results?", e.g. ``train.amp`` (README:
Mixed precision) or a code change, when both runs used the same data, split and folds; runs of different test
images are refused.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.evaluate.statistics import paired_test

PER_IMAGE = Path("evaluation") / "per_image.csv"
Rows = dict[str, dict[tuple[str, str], dict[str, str]]]
"""Per balancer, the per-image rows keyed by (fold, image id)."""


def per_image_file(folder: Path) -> Path:
    """``folder``'s ``evaluation/per_image.csv``, or its ``reports/`` one; DataError naming both when neither exists."""
    for candidate in (Path(folder) / PER_IMAGE, Path(folder) / "reports" / PER_IMAGE):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: no {PER_IMAGE} nor reports/{PER_IMAGE} (run the evaluate stage there first)")


def read_rows(path: Path) -> Rows:
    rows: Rows = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(row["balancer"], {})[(row["fold"], row["id"])] = row
    return rows


def run(reference: Path, candidate: Path) -> dict[str, Any]:
    """Per balancer trained in both runs and per task: ``{"metric", "reference", "candidate", "delta", "p_value"}``;
    prints one line per balancer."""
    ref_path, cand_path = per_image_file(reference), per_image_file(candidate)
    ref_rows, cand_rows = read_rows(ref_path), read_rows(cand_path)
    results: dict[str, Any] = {}
    for balancer in (b for b in ref_rows if b in cand_rows):
        keys = sorted(ref_rows[balancer])
        if keys != sorted(cand_rows[balancer]):
            raise DataError(
                f"{cand_path}: balancer {balancer!r} was scored on other (fold, image) pairs than in {ref_path}; "
                "compare runs of the same data, split and folds"
            )
        ref = [ref_rows[balancer][k] for k in keys]
        cand = [cand_rows[balancer][k] for k in keys]
        results[balancer] = {
            column.rsplit("/", 1)[0]: paired_column(column, ref, cand) for column in _compared_columns(ref[0])
        }
    for balancer, tasks in results.items():
        print(
            f"{balancer:12s} "
            + " | ".join(
                f"{task} {r['metric']} {r['reference']:.4f} → {r['candidate']:.4f} "
                f"(Δ {r['delta']:+.4f}, p {r['p_value']:.3f})"
                for task, r in tasks.items()
            )
        )
    return results


def _compared_columns(row: dict[str, str]) -> list[str]:
    return [c for c in row if c.endswith(("/dice", "/correct"))]


def paired_column(column: str, reference: list[dict[str, str]], candidate: list[dict[str, str]]) -> dict[str, Any]:
    """Mean of ``column`` in each run, their difference (candidate − reference) and the paired test's p-value."""
    ref = np.array([float(r[column]) for r in reference])
    cand = np.array([float(r[column]) for r in candidate])
    metric = "dice" if column.endswith("/dice") else "accuracy"
    test = paired_test(metric, cand, ref)
    return {
        "metric": metric,
        "reference": float(ref.mean()),
        "candidate": float(cand.mean()),
        "delta": float(cand.mean() - ref.mean()),
        "p_value": test["p_value"],
    }
