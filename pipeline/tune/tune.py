"""The ``tune`` stage: a Ray Tune grid over settings of one balancer (``tune.balancer``, by default ATDWA's γ, T0
and window), each trial cross-validated.

Before anything is launched it checks the sweep can run: the grid holds valid settings of the balancer, the selection
rule names a figure the trials will report and has the folds it needs, and ``tune.max_concurrent_trials``
training jobs fit on the Ray cluster at once. Then one Tune experiment named after the params runs
(:mod:`pipeline.tune.trial`); when an experiment of that name exists under ``ray.storage_path`` — a
sweep whose driver was killed — it is restored instead: finished trials are kept, unfinished and
errored ones resume from their last fold.

MLflow: one parent run for the invocation (tags ``stage = tune``, ``tune_sweep``), a child run per
trial, a grandchild per fold. The table, the figure and the selection are logged to the parent.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import ray.tune
import torch
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from ray.tune.schedulers import ASHAScheduler

from pipeline.atomic import atomic_write_bytes, atomic_write_text
from pipeline.balancers import balancer_classes, check_methods
from pipeline.config import Params
from pipeline.environment import tracking_credentials, tracking_uri
from pipeline.errors import ConfigError, PipelineError
from pipeline.logs import is_verbose, on_terminal
from pipeline.runtime.metrics import TaskMetrics
from pipeline.tasks import build_tasks
from pipeline.tracking import stage_run
from pipeline.tracking.runs import find_runs
from pipeline.train import cluster
from pipeline.train.distributed import storage_path
from pipeline.train.identity import run_identity
from pipeline.tune.figure import sensitivity_figure
from pipeline.tune.grid import grid_keys, grid_size, param_space, trial_key
from pipeline.tune.results import json_safe, table_csv, tuned_params_yaml
from pipeline.tune.selection import select
from pipeline.tune.statistics import VAL_LOSS
from pipeline.tune.trial import SweepContext, run_trial
from pipeline.tune.tune_file import TUNE_FILE, TuneDocument

TABLE_CSV = "tune.csv"
FIGURE = "tune_sensitivity.png"
TUNED_PARAMS = "tuned_params.yaml"
DRIVER_MEMORY = 256 * 2**20
"""Bytes of Ray's ``memory`` resource a trial reserves when it only drives a multi-worker TorchTrainer."""


def run(params: Params, data: Path, reports: Path) -> TuneDocument:
    """Run (or resume) the sweep and write its table, figure and selection under ``reports``; returns the table."""
    check_methods(params)
    figures = check_selection(params)
    keys = grid_keys(params.tune)
    with stage_run(params, "tune", params.tune.balancer, data) as parent:  # connects to MLflow first
        cluster.connect(params)
        check_concurrency(params, ray.cluster_resources().get("CPU", 0))
        sweep = sweep_name(params)
        MlflowClient().set_tag(parent.info.run_id, "tune_sweep", sweep)
        context = SweepContext(
            params=params.model_dump(mode="json"),
            data_root=str(Path(data).resolve()),
            sweep=sweep,
            tracking_uri=tracking_uri(params),
            experiment_id=parent.info.experiment_id,
            parent_run_id=parent.info.run_id,
            tracking_credentials=tracking_credentials(),
        )
        grid = _tuner(params, context).fit()
        _adopt_earlier_runs(context)
        rows = sorted(
            (_row(grid[i], keys, len(params.folds)) for i in range(len(grid))), key=lambda row: [row[k] for k in keys]
        )
        failed = [row["trial"] for row in rows if row["status"] == "error"]
        if failed:
            raise PipelineError(
                f"tune sweep {sweep!r}: trials {failed} failed (see the Ray output above); re-run to resume them"
            )
        selected_row = select(rows, params.tune.selection, len(params.folds))
        selected = {key: selected_row[key] for key in keys}
        document = TuneDocument(
            sweep=sweep,
            balancer=params.tune.balancer,
            rule=params.tune.selection.rule,
            metric=params.tune.selection.metric,
            folds=list(params.folds),
            epochs=params.tune.epochs or params.train.epochs,
            rows=json_safe(rows),
            selected=selected,
        )
        figure = sensitivity_figure(params.tune.balancer, rows, figures, selected)
        _write(params, Path(reports), document, figure, rows)
        client = MlflowClient()
        client.log_dict(parent.info.run_id, document.model_dump(), TUNE_FILE)
        client.log_figure(parent.info.run_id, figure, FIGURE)
        for key, value in selected.items():
            client.set_tag(parent.info.run_id, f"selected.{key}", str(value))
    print(f"tune: selected {trial_key(selected)} by {params.tune.selection.rule} over {len(rows)} trials")
    return document


def sweep_name(params: Params) -> str:
    """The Tune experiment name: the same exactly when the sweep is (:func:`run_identity` of a sweep)."""
    return f"tune-{params.tune.balancer}-{run_identity(params, None)[:12]}"


def check_selection(params: Params) -> list[str]:
    """Raise ConfigError unless the selection rule can be applied to what the trials report.

    Returns the figures the sensitivity figure shows: the rule's figure, then ``val_loss``.
    """
    selection, folds = params.tune.selection, len(params.folds)
    available = [VAL_LOSS] + [f"{task.name}.{name}" for task in build_tasks(params) for name in _metric_names(task)]
    if selection.rule == "min_std":
        figure, field = selection.metric, "tune.selection.metric"
        if folds < 2:
            raise ConfigError(f"tune.selection.rule = 'min_std' needs at least 2 folds; train.folds gives {folds}")
    elif selection.rule == "min_mean_val_loss":
        figure, field = VAL_LOSS, "tune.selection.rule"
    else:
        figure, field = selection.rule.removeprefix("max_mean_"), "tune.selection.rule"
    if figure not in available:
        raise ConfigError(f"{field}: no validation figure {figure!r}; the trials report {available}")
    return list(dict.fromkeys([figure, VAL_LOSS]))


def check_concurrency(params: Params, cluster_cpus: float) -> None:
    """Raise ConfigError unless ``tune.max_concurrent_trials`` training jobs fit on the cluster's CPUs."""
    per_trial = params.ray.num_workers * params.ray.cpus_per_worker
    needed = params.tune.max_concurrent_trials * per_trial
    if needed > cluster_cpus:
        raise ConfigError(
            f"tune.max_concurrent_trials = {params.tune.max_concurrent_trials} trials × {per_trial} CPUs each "
            f"(ray.num_workers × ray.cpus_per_worker) need {needed} CPUs, but the Ray cluster has {cluster_cpus:g}; "
            f"lower tune.max_concurrent_trials"
        )


def _metric_names(task) -> list[str]:
    """The metric names :class:`TaskMetrics` reports for ``task`` (computed on a dummy batch in whose truth every
    class occurs: a class absent from the truth has no ``dice_<class>``)."""
    metrics = TaskMetrics(task)
    if task.is_segmentation:
        every_class = torch.arange(16).remainder(task.out_channels).view(1, 4, 4)  # binary: all 0, as before
        metrics.update(torch.zeros(1, task.out_channels, 4, 4), every_class)
    else:
        metrics.update(torch.zeros(1, task.out_channels), torch.zeros(1, dtype=torch.long))
    return list(metrics.compute())


def _tuner(params: Params, context: SweepContext) -> ray.tune.Tuner:
    cfg = params.ray
    in_process = cfg.num_workers == 1
    gpu = in_process and cluster.use_gpu(params)
    # A driver trial holds no CPU (its TorchTrainer's workers do) but Tune needs a non-empty request.
    resources: dict[str, float] = (
        {"CPU": cfg.cpus_per_worker, "GPU": int(gpu)} if in_process else {"CPU": 0, "memory": DRIVER_MEMORY}
    )
    trainable = ray.tune.with_resources(ray.tune.with_parameters(run_trial, context=context), resources)
    path = f"{storage_path(params).rstrip('/')}/{context.sweep}"
    if ray.tune.Tuner.can_restore(path):
        print(f"tune: resuming sweep {context.sweep!r} from {path}")
        return ray.tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    asha = params.tune.asha
    scheduler = (
        ASHAScheduler(
            metric=f"{VAL_LOSS}_mean",
            mode="min",
            max_t=len(params.folds),
            grace_period=asha.grace_period,
            reduction_factor=asha.reduction_factor,
        )
        if asha.enabled
        else None
    )
    return ray.tune.Tuner(
        trainable,
        param_space=param_space(params.tune),
        tune_config=ray.tune.TuneConfig(
            max_concurrent_trials=min(params.tune.max_concurrent_trials, grid_size(params.tune)), scheduler=scheduler
        ),
        run_config=ray.tune.RunConfig(
            name=context.sweep,
            storage_path=storage_path(params),
            failure_config=ray.tune.FailureConfig(max_failures=cfg.max_failures),
            verbose=1 if on_terminal() or is_verbose() else 0,  # the live trial table; a log gets epoch lines
        ),
    )


def _adopt_earlier_runs(context: SweepContext) -> None:
    """Gather the sweep's trial runs under this invocation's parent run, trials finished before a resume
    included, and mark parent runs of earlier, killed invocations of the sweep KILLED."""
    client = MlflowClient()
    for run in find_runs(client, context.experiment_id, {"tune_sweep": context.sweep}):
        tags = run.data.tags
        if "tune_trial" in tags and "fold" not in tags:
            client.set_tag(run.info.run_id, MLFLOW_PARENT_RUN_ID, context.parent_run_id)
        elif "tune_trial" not in tags and run.info.run_id != context.parent_run_id and run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))


def _row(result: ray.tune.Result, keys: tuple[str, ...], folds: int) -> dict[str, Any]:
    metrics, config = result.metrics or {}, result.config
    if config is None:
        raise PipelineError(f"tune: a trial of {result.path} has no grid point")
    figures = {k: v for k, v in metrics.items() if k.endswith(("_mean", "_std"))}
    folds_done = int(metrics.get("folds_done", 0))
    status = "error" if result.error is not None else "complete" if folds_done == folds else "stopped early"
    return {
        **{key: config[key] for key in keys},
        "trial": trial_key(config),
        "status": status,
        "folds_done": folds_done,
        **figures,
    }


def _write(params: Params, reports: Path, document: TuneDocument, figure, rows: list[dict[str, Any]]) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(reports / FIGURE, buffer.getvalue())
    atomic_write_text(reports / TABLE_CSV, table_csv(rows, grid_keys(params.tune)))
    every_balancer = [*dict.fromkeys((*params.train.balancers, *balancer_classes()))]  # the selected ones first
    tuned = tuned_params_yaml(document.selected, params.tune.balancer, every_balancer)
    atomic_write_text(reports / TUNED_PARAMS, tuned)
    document.write(reports / TUNE_FILE)
