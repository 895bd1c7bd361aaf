"""The ``evaluate`` stage: every balancer's fold models on the held-out test split (the paper's Tables II–III).

For each balancer of ``train.balancers`` and each fold of ``train.folds`` (null = all), the fold's
best checkpoint ``<models>/<balancer>/fold_<k>/best.pt`` predicts every test image of ``<data>``
(the preprocessed originals of the split's test ids, as the train stage tests them). Efficiency
figures (peak memory, longest and median step time, longest epoch time) come from the train stage's
``<metrics>/<balancer>/folds.json``. Means and standard deviations are over folds. Each balancer's fold
ensemble (:class:`~pipeline.evaluate.ensemble.FoldEnsemble`: the fold models averaging their
probabilities, what ``registry.package: ensemble`` registers) is evaluated on the same test images too.

Paired statistics (see :mod:`pipeline.evaluate.paired`): each balancer against ``equal`` on the same
test images; per image, segmentation Dice averaged over the fold models (Wilcoxon signed-rank) and
classification correctness of the fold-averaged class probabilities (exact McNemar), Holm-corrected
per task across balancers when ``evaluate.holm``.

Outputs under ``<reports>`` (the paths ``dvc.yaml`` declares), each replaced atomically:

- ``metrics.json`` — DVC metrics: ``{balancer: {task: {Table II metric: mean}, "efficiency": {Table III
  figure: mean}, "ensemble": {task: {Table II metric: value}}}}``;
- ``per_fold.csv`` — one row per (balancer, fold): ``balancer, fold, <task>/<metric>...,
  efficiency/<figure>...`` (every test metric of :class:`~pipeline.runtime.metrics.TaskMetrics`);
- ``summary.csv`` — one row per balancer: ``<group>/<name>/mean`` and ``<group>/<name>/std``;
- ``evaluation/summary.json`` — ``{"balancers", "folds", "test_images", "tasks": [{"name", "kind", "classes"}],
  "results": {balancer: {group: {name: {"mean", "std", "folds": [...]}}}},
  "ensembles": {balancer: {task: {metric: value}}}}``;
- ``evaluation/per_image.csv`` — one row per (balancer, fold, test image): ``index`` (test row),
  ``id``; per segmentation task ``dice``, ``iou``; per classification task ``label``, ``predicted``
  (class names), ``correct`` (0/1) and ``p_<class>`` (softmax probability of every class);
- ``evaluation/statistics.json`` — :func:`~pipeline.evaluate.paired.statistics_document`;
- ``evaluation/examples.npz`` — ``evaluate.contour_images`` test images for the report's contour
  figure: ``rows`` ``(n,)``, ``ids`` ``(n,)``, ``image`` ``(n, C, H, W)`` uint8 and, per binary
  segmentation task, ``truth/<task>`` ``(n, H, W)`` uint8 and ``probability/<task>/<balancer>``
  ``(n, H, W)`` float32: the lesion probability averaged over the fold models.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import paths
from pipeline.atomic import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text
from pipeline.balancers import check_methods
from pipeline.config import Params
from pipeline.data.folds import ArraySet, load_test
from pipeline.errors import ConfigError, DataError
from pipeline.evaluate.ensemble import FoldEnsemble
from pipeline.evaluate.evaluation_files import STATISTICS_FILE, SUMMARY_FILE, EvaluationSummary, TaskInfo
from pipeline.evaluate.inference import ModelPass, load_model, model_pass
from pipeline.evaluate.paired import paired_values, statistics_document
from pipeline.evaluate.summary import (
    EFFICIENCY,
    ENSEMBLE,
    TABLE_III,
    ensemble_headline,
    fold_rows,
    headline,
    over_folds,
    summary_row,
)
from pipeline.runtime.device import select_device
from pipeline.tasks import Task, build_tasks
from pipeline.tracking.results import history_csv
from pipeline.train.checkpoint import BEST
from pipeline.train.folds_file import folds_path, read_folds

EVALUATION_DIR = paths.EVALUATION.relative_to(paths.REPORTS)


def run(params: Params, data: Path, models_dir: Path, metrics_dir: Path, reports: Path) -> dict[str, Any]:
    """Evaluate every (balancer, fold) checkpoint on the test split and write the outputs; returns metrics.json."""
    check_methods(params)
    tasks = build_tasks(params)
    reserved = [t.name for t in tasks if t.name in (EFFICIENCY, ENSEMBLE)]
    if reserved:
        raise ConfigError(
            f"tasks: the name {reserved[0]!r} is reserved for the evaluate stage's figures "
            f"({EFFICIENCY!r}: training efficiency, {ENSEMBLE!r}: the fold ensemble's test metrics)"
        )
    balancers, folds = params.train.balancers, params.folds
    checkpoints = checkpoint_paths(Path(models_dir), balancers, folds)
    efficiency = {b: read_efficiency(metrics_dir, b, folds) for b in balancers}
    test = load_test(data)
    keep = contour_rows(tasks, test, params.evaluate.contour_images)
    device = select_device(params.train.device)
    passes, ensembles = {}, {}
    for b, fold_paths in checkpoints.items():
        members = [load_model(params, tasks, path, device, b) for path in fold_paths]
        passes[b] = [model_pass(m, tasks, test, params.train.batch_size, device, keep) for m in members]
        ensemble = model_pass(FoldEnsemble(tasks, members), tasks, test, params.train.batch_size, device, keep[:0])
        ensembles[b] = ensemble.metrics

    figures = {b: [p.metrics | {EFFICIENCY: e} for p, e in zip(passes[b], efficiency[b])] for b in balancers}
    summaries = {b: over_folds(figures[b]) for b in balancers}
    paired = {b: paired_values(tasks, [p.per_image for p in passes[b]]) for b in balancers}
    summary = EvaluationSummary(
        balancers=list(balancers),
        folds=list(folds),
        test_images=len(test),
        tasks=[TaskInfo(name=t.name, kind=t.kind, classes=list(t.class_names)) for t in tasks],
        results=summaries,
        ensembles=ensembles,
    )
    per_image = [
        row for b in balancers for k, p in zip(folds, passes[b]) for row in image_rows(tasks, b, k, test.ids, p)
    ]
    with atomic_dir(Path(reports) / EVALUATION_DIR) as out:
        summary.write(out / SUMMARY_FILE)
        statistics_document(tasks, paired, params.evaluate.alpha, params.evaluate.holm).write(out / STATISTICS_FILE)
        atomic_write_text(out / "per_image.csv", history_csv(per_image))
        atomic_write_bytes(out / "examples.npz", examples_npz(tasks, test, keep, passes))
    per_fold = [row for b in balancers for row in fold_rows(b, folds, figures[b])]
    atomic_write_text(Path(reports) / "per_fold.csv", history_csv(per_fold))
    atomic_write_text(Path(reports) / "summary.csv", history_csv([summary_row(b, summaries[b]) for b in balancers]))
    kinds = {t.name: t.kind for t in tasks}
    metrics = {b: headline(summaries[b], kinds) | {ENSEMBLE: ensemble_headline(ensembles[b], kinds)} for b in balancers}
    atomic_write_json(Path(reports) / "metrics.json", metrics)
    return metrics


def checkpoint_paths(models_dir: Path, balancers: Sequence[str], folds: Sequence[int]) -> dict[str, list[Path]]:
    """``{balancer: [<models_dir>/<balancer>/fold_<k>/best.pt per fold]}``; DataError naming the first missing."""
    paths = {b: [models_dir / b / f"fold_{k}" / BEST for k in folds] for b in balancers}
    missing = [path for fold_paths in paths.values() for path in fold_paths if not path.is_file()]
    if missing:
        raise DataError(
            f"{missing[0]}: checkpoint not found ({len(missing)} of train.balancers × folds missing); "
            "run the train stage for every balancer first"
        )
    return paths


def read_efficiency(metrics_dir: Path, balancer: str, folds: Sequence[int]) -> list[dict[str, float]]:
    """The Table III figures of ``folds`` from ``balancer``'s ``folds.json``, in fold order."""
    document, path = read_folds(metrics_dir, balancer), folds_path(metrics_dir, balancer)
    out = []
    for fold in folds:
        figures = document.fold(fold, path).efficiency
        missing = [name for name in TABLE_III if name not in figures]
        if missing:
            raise DataError(f"{path}: folds.fold_{fold}.efficiency lacks {missing}; rerun the train stage")
        out.append({name: float(figures[name]) for name in TABLE_III})
    return out


def contour_rows(tasks: Sequence[Task], test: ArraySet, count: int) -> np.ndarray:
    """Up to ``count`` test rows for the contour figure, ascending: evenly spaced over the rows whose mask
    of the first binary segmentation task has lesion pixels (over all rows if none has); none without
    a binary segmentation task."""
    masked = [t for t in tasks if t.kind == "binary_segmentation"]
    if not masked:
        return np.zeros(0, dtype=np.int64)
    target = masked[0].target
    masks = test.read(np.arange(len(test)), [target])[target]
    candidates = np.flatnonzero(masks.reshape(len(test), -1).any(axis=1))
    if not candidates.size:
        candidates = np.arange(len(test))
    picks = np.linspace(0, candidates.size - 1, min(count, candidates.size)).round().astype(np.int64)
    return candidates[np.unique(picks)]


def image_rows(
    tasks: Sequence[Task], balancer: str, fold: int, ids: Sequence[str], result: ModelPass
) -> list[dict[str, Any]]:
    """``per_image.csv`` rows of one (balancer, fold) model (columns in the module docstring)."""
    rows = []
    for i, image_id in enumerate(ids):
        row: dict[str, Any] = {"balancer": balancer, "fold": fold, "index": i, "id": image_id}
        for t in tasks:
            values = result.per_image[t.name]
            if t.is_segmentation:
                row |= {f"{t.name}/dice": float(values["dice"][i]), f"{t.name}/iou": float(values["iou"][i])}
                continue
            probability = values["probability"][i]
            row |= {
                f"{t.name}/label": t.class_names[values["label"][i]],
                f"{t.name}/predicted": t.class_names[int(probability.argmax())],
                f"{t.name}/correct": int(values["correct"][i]),
            } | {f"{t.name}/p_{c}": float(p) for c, p in zip(t.class_names, probability, strict=True)}
        rows.append(row)
    return rows


def examples_npz(tasks: Sequence[Task], test: ArraySet, keep: np.ndarray, passes: dict[str, list[ModelPass]]) -> bytes:
    """``examples.npz`` (arrays in the module docstring) as compressed bytes."""
    arrays = test.read(keep)
    out = {"rows": keep, "ids": np.array([test.ids[i] for i in keep], dtype=str), "image": arrays["image"]}
    for t in tasks:
        if t.kind != "binary_segmentation":
            continue
        out[f"truth/{t.name}"] = arrays[t.target]
        for balancer, fold_passes in passes.items():
            maps = np.mean([p.kept[t.name] for p in fold_passes], axis=0)
            out[f"probability/{t.name}/{balancer}"] = maps.astype(np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **out)  # type: ignore[arg-type]  # numpy's stub takes a key for allow_pickle
    return buffer.getvalue()
