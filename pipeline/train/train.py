"""The ``train`` stage: one balancer, every configured fold, each fold a Ray Train job, tracked in MLflow.

The folds' jobs run side by side when the cluster has room for several (:func:`pipeline.train.distributed.run_folds`);
each fold's result is the same either way.

Before any data is loaded it connects to the MLflow tracking store and to Ray (an unreachable
server or address fails here). One MLflow parent run for the invocation, one child run per fold
(per-epoch metrics streamed from the rank-0 worker, then test metrics, plots and the model). A fold's run
ends FINISHED only with every epoch's metrics in it: after training the driver logs what the workers could
not deliver, waiting out an unreachable server for up to ``tracking.outage_s`` seconds, else the stage fails.

Outputs (the paths ``dvc.yaml`` declares):

- ``<out_dir>/fold_<k>/{best,last}.pt`` — best-validation weights and the resumable last checkpoint;
- ``<metrics_dir>/folds.json`` — per fold and mean over folds: best validation metrics, test
  metrics of the best checkpoint, trivial-baseline test metrics, efficiency figures;
- ``<metrics_dir>/metrics.json`` — the headline figures of ``folds.json`` (DVC metrics);
- ``<metrics_dir>/history.csv`` — one row per (fold, epoch): losses, weights, temperature, lr.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import atomic_write_json, atomic_write_text
from pipeline.balancers import balancer_class, check_methods
from pipeline.config import Params, with_overlay
from pipeline.data.folds import ArraySet, load_test
from pipeline.environment import tracking_uri
from pipeline.models.base import MultiTaskModel
from pipeline.runtime.compute_format import ComputeFormat
from pipeline.runtime.device import select_device, to_tensors
from pipeline.runtime.inference import evaluate
from pipeline.runtime.metrics import TaskMetrics
from pipeline.tasks import Task, build_tasks
from pipeline.tracking import EpochLogger, child_run, log_fold_result, stage_run
from pipeline.tracking.results import history_csv
from pipeline.tracking.system import NodeSystemMetrics
from pipeline.train import cluster
from pipeline.train.checkpoint import BEST, read_checkpoint
from pipeline.train.distributed import FoldJob, run_folds
from pipeline.train.folds_file import FOLDS_FILE, FoldFigures, FoldsDocument
from pipeline.train.identity import ray_run_name
from pipeline.train.loop import FoldResult
from pipeline.train.progress import EpochReporter


def run(params: Params, balancer: str, data: Path, out_dir: Path, metrics_dir: Path) -> FoldsDocument:
    """Train ``balancer`` on ``params.folds`` and write its metrics; returns the metrics document."""
    check_methods(params)
    balancer_class(balancer)
    tasks = build_tasks(params)
    per_fold: dict[str, FoldFigures] = {}
    history: list[dict[str, Any]] = []
    with stage_run(params, "train", balancer, data) as parent, contextlib.ExitStack() as fold_runs:
        cluster.connect(params)
        test = load_test(data)
        run_ids = {
            fold: fold_runs.enter_context(child_run(parent, balancer, fold, outage_s=params.tracking.outage_s))
            for fold in params.folds
        }
        loggers = {fold: EpochLogger(tracking_uri(params), run_id) for fold, run_id in run_ids.items()}
        jobs = [
            FoldJob(
                fold,
                Path(out_dir) / f"fold_{fold}",
                ray_run_name(params, balancer, fold),
                epoch_callback=EpochReporter(loggers[fold], balancer),
                system_metrics=NodeSystemMetrics(tracking_uri(params), run_ids[fold])
                if params.tracking.system_metrics
                else None,
            )
            for fold in params.folds
        ]
        results = run_folds(params, balancer, data, jobs)  # side by side where the cluster has room
        for job in jobs:
            fold, result = job.fold, results[job.fold]
            loggers[fold].finish(result.history, params.tracking.outage_s)  # what the workers could not deliver
            model = balancer_class(balancer).build_network(params, tasks)
            model.load_state_dict(read_checkpoint(job.out_dir / BEST)["model"])
            test_metrics = evaluate_on_driver(params, model, tasks, test)
            example = to_tensors(test.read([0]), torch.device("cpu"))["image"]
            log_fold_result(
                run_ids[fold],
                result,
                model,
                example,
                test_metrics,
                outage_s=params.tracking.outage_s,
                log_model=params.tracking.log_models,
            )
            per_fold[f"fold_{fold}"] = fold_summary(result, test_metrics)
            history.extend(result.history)
    return write_metrics(tasks, balancer, per_fold, history, test, Path(metrics_dir))


def run_command(
    params: Params, balancer: str, data: Path, models: Path, metrics: Path, tuned: Path | None = None
) -> FoldsDocument:
    """``mtl-pipeline train <balancer>``: :func:`run` with the sweep's overlay for ``balancer`` merged in (from
    ``tuned``, the tune stage's ``tuned_params.yaml``), into ``<models>/<balancer>`` and ``<metrics>/<balancer>``."""
    if tuned is not None:
        params = with_overlay(params, tuned, balancer)
    return run(params, balancer, data, Path(models) / balancer, Path(metrics) / balancer)


def write_metrics(
    tasks: tuple[Task, ...],
    balancer: str,
    per_fold: dict[str, FoldFigures],
    history: list[dict[str, Any]],
    test: ArraySet,
    metrics_dir: Path,
) -> FoldsDocument:
    """Write the stage's metrics of ``balancer`` from its :func:`fold_summary` per ``fold_<k>`` and every fold's
    epoch records: ``folds.json`` (returned), the DVC metrics ``metrics.json`` and the DVC plots ``history.csv``."""
    document = FoldsDocument(
        balancer=balancer,
        folds=per_fold,
        mean=FoldFigures.model_validate(mean_over_folds([f.model_dump() for f in per_fold.values()])),
        baseline={"test": trivial_baselines(tasks, test)},
    )
    document.write(metrics_dir / FOLDS_FILE)
    atomic_write_json(metrics_dir / "metrics.json", headline(tasks, document))
    atomic_write_text(metrics_dir / "history.csv", history_csv(history))
    return document


def evaluate_on_driver(
    params: Params, model: MultiTaskModel, tasks: tuple[Task, ...], test: ArraySet
) -> dict[str, dict[str, float]]:
    """Test metrics of ``model`` computed where the driver runs: on its GPU when it has one and ``train.device``
    allows it (a GPU-less head of a GPU cluster evaluates on its CPU), in ``train.amp``'s precision and layout.
    ``model`` is back on the CPU afterwards."""
    device = select_device("cpu" if params.train.device == "cpu" else "auto")
    compute = ComputeFormat.from_params(params.train, device)
    _, metrics = evaluate(
        compute.prepare_model(model.to(device)), tasks, test, params.train.batch_size, device, compute=compute
    )
    model.to("cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # torch's stub lacks it
    return metrics


HEADLINE = {
    "classification": ("accuracy", "f1"),
    "binary_segmentation": ("dice", "iou", "auc"),
    "multiclass_segmentation": ("dice", "iou"),
}


def headline(tasks: tuple[Task, ...], document: FoldsDocument) -> dict[str, Any]:
    """The row ``dvc metrics show`` prints for this balancer: the fold means of the headline test metrics per
    task (``{task: {metric: value}}``), the best validation loss and the epochs run. Every balancer's file has
    the same keys, so the table has one row per balancer and a column per figure; the validation figures and
    the per-fold detail stay in ``folds.json``."""
    mean = document.mean
    return {t.name: {m: mean.test[t.name][m] for m in HEADLINE[t.kind]} for t in tasks} | {
        "best_val_loss": mean.best_val_loss,
        "epochs_run": mean.epochs_run,
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


def fold_summary(result: FoldResult, test_metrics: dict[str, dict[str, float]]) -> FoldFigures:
    return FoldFigures(
        best_epoch=result.best_epoch,
        epochs_run=len(result.history),
        best_val_loss=result.best_val_loss,
        val=result.val_metrics,
        test=test_metrics,
        efficiency=result.efficiency,
    )


def mean_over_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of the numeric leaves shared by every fold summary."""
    first = folds[0]
    if isinstance(first, dict):
        return {k: mean_over_folds([f[k] for f in folds]) for k in first if all(k in f for f in folds)}
    return float(np.mean(folds))
