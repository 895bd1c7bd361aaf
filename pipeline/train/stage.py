"""The ``train`` stage: one balancer, every configured fold, in this process.

Outputs (the paths ``dvc.yaml`` declares):

- ``<out_dir>/fold_<k>/{best,last}.pt`` — best-validation weights and the resumable last checkpoint;
- ``<metrics_dir>/folds.json`` — per fold and mean over folds: best validation metrics, test
  metrics of the best checkpoint, trivial-baseline test metrics, efficiency figures;
- ``<metrics_dir>/metrics.json`` — the headline figures of ``folds.json`` (DVC metrics);
- ``<metrics_dir>/history.csv`` — one row per (fold, epoch): losses, weights, temperature, lr.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import atomic_write_json, atomic_write_text
from pipeline.config import Params
from pipeline.data.folds import ArraySet, load_fold, load_test
from pipeline.evaluate.metrics import TaskMetrics
from pipeline.tasks import Task, build_tasks
from pipeline.train.checkpoint import BEST, DirectoryStore, load_checkpoint
from pipeline.tracking.results import history_csv
from pipeline.train.loop import FoldResult, Trainer

log = logging.getLogger(__name__)


def run(params: Params, balancer: str, data: Path, out_dir: Path, metrics_dir: Path) -> dict[str, Any]:
    """Train ``balancer`` on ``params.folds`` and write its metrics; returns the metrics document."""
    tasks = build_tasks(params)
    test = load_test(data)
    per_fold: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    for fold in params.folds:
        trainer = Trainer(params, tasks, balancer, load_fold(data, fold), fold)
        fold_dir = Path(out_dir) / f"fold_{fold}"
        result = trainer.fit(DirectoryStore(fold_dir), on_epoch=lambda r: _print_epoch(balancer, r))
        trainer.model.load_state_dict(load_checkpoint(fold_dir / BEST)["model"])
        _, test_metrics = trainer.evaluate(test)
        per_fold[f"fold_{fold}"] = _fold_summary(result, test_metrics)
        history.extend(result.history)
    document = {
        "balancer": balancer,
        "folds": per_fold,
        "mean": _mean_over_folds(list(per_fold.values())),
        "baseline": {"test": trivial_baselines(tasks, test)},
    }
    atomic_write_json(Path(metrics_dir) / "folds.json", document)
    atomic_write_json(Path(metrics_dir) / "metrics.json", headline(tasks, document))
    atomic_write_text(Path(metrics_dir) / "history.csv", history_csv(history))
    return document


HEADLINE = {"classification": ("accuracy", "f1"), "binary_segmentation": ("dice", "iou", "auc"),
            "multiclass_segmentation": ("dice", "iou")}


def headline(tasks: tuple[Task, ...], document: dict[str, Any]) -> dict[str, Any]:
    """The figures ``dvc metrics show`` tabulates per balancer: mean over folds of the best epoch's
    validation metrics and of the test metrics, the best validation loss and the epochs run."""
    mean = document["mean"]
    return {
        split: {t.name: {m: mean[split][t.name][m] for m in HEADLINE[t.kind]} for t in tasks}
        for split in ("val", "test")
    } | {
        "best_val_loss": mean["best_val_loss"],
        "epochs_run": mean["epochs_run"],
    }


def trivial_baselines(tasks: tuple[Task, ...], data: ArraySet) -> dict[str, dict[str, dict[str, float]]]:
    """Test metrics of constant predictors, scored by the same :class:`TaskMetrics` as the models.

    Segmentation: all-background and all-foreground; classification: always the majority class of ``data``.
    """
    rows = np.arange(len(data))
    targets = {k: torch.from_numpy(np.asarray(v)) for k, v in data.read(rows).items()}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task in tasks:
        target = targets[task.target].long()
        if task.is_segmentation:
            shape = (len(rows), task.out_channels, *target.shape[1:])
            predictors = {"all_background": torch.full(shape, -20.0), "all_foreground": torch.full(shape, 20.0)}
        else:
            majority = int(torch.bincount(target, minlength=task.out_channels).argmax())
            logits = torch.full((len(rows), task.out_channels), -20.0)
            logits[:, majority] = 20.0
            predictors = {"majority_class": logits}
        out[task.name] = {}
        for name, logits in predictors.items():
            metrics = TaskMetrics(task)
            metrics.update(logits, target)
            out[task.name][name] = metrics.compute()
    return out


def _fold_summary(result: FoldResult, test_metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "best_val_loss": result.best_val_loss,
        "val": result.val_metrics,
        "test": test_metrics,
        "efficiency": result.efficiency,
    }


def _mean_over_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of the numeric leaves shared by every fold summary."""
    first = folds[0]
    if isinstance(first, dict):
        return {k: _mean_over_folds([f[k] for f in folds]) for k in first if all(k in f for f in folds)}
    return float(np.mean(folds))


def _print_epoch(balancer: str, record: dict[str, Any]) -> None:
    losses = " ".join(f"{k.split('/', 1)[1]}={v:.4f}" for k, v in record.items() if k.startswith("val_loss/"))
    weights = " ".join(f"{v:.3f}" for k, v in record.items() if k.startswith("weight/"))
    print(
        f"[{balancer} fold {record['fold']}] epoch {record['epoch']:3d} val {losses} "
        f"weights [{weights}] T={record['temperature']} lr={record['lr']:.2e}",
        flush=True,
    )

