"""One Ray Tune trial: the swept balancer (``tune.balancer``) at one grid point, trained on every fold, reported fold by fold.

The trial is the unit the sweep compares — its figure is the mean ± std across folds — so the folds
run inside it, one after the other, rather than as a grid dimension: the std is then computed where
all folds are known, ASHA can stop a hopeless trial after ``tune.asha.grace_period`` folds (one Tune
iteration = one fold), and a trial never waits on other trials to be complete.

How a fold trains depends on ``ray.num_workers``: one worker trains in the trial's own process (the
trial holds ``ray.cpus_per_worker`` CPUs); several launch a Ray Train ``TorchTrainer`` from the trial
(a driver function holding no CPU of its own), exactly as the train stage does.

Resuming. After each fold the trial reports its statistics with a Tune checkpoint holding the figures
of the folds done; a restored trial skips those. An interrupted fold resumes from its own checkpoint:
``<trial dir>/fold_<k>/last.pt`` in the trial's process, or the Ray Train run of the same name. Tune saves
its experiment state at most every 10 s, so a fold reported just before the driver died may be missing from
the restored trial: it then resumes from that finished checkpoint, trains no epoch and is reported again.

MLflow: a run per trial (tags ``tune_sweep``, ``tune_trial``, ``tune_run: trial``, the grid point as ``balancer.<name>.<setting>`` params), a
child run per fold (``tune_run: fold``, ``fold``) with its per-epoch losses, task weights and temperature; a
restored trial re-uses both.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.tune
from mlflow.tracking import MlflowClient

from pipeline.config import Params, parse_params
from pipeline.data.folds import load_fold
from pipeline.environment import use_tracking_credentials
from pipeline.tasks import build_tasks
from pipeline.tracking import EpochLogger
from pipeline.tracking.epochs import numeric_metrics
from pipeline.tracking.runs import nested_run, run_name
from pipeline.train.checkpoint import DirectoryStore
from pipeline.train.distributed import run_fold
from pipeline.train.identity import ray_run_name
from pipeline.train.loop import EpochCallback, FoldResult, Trainer
from pipeline.train.progress import EpochReporter
from pipeline.tune.grid import trial_key, trial_params
from pipeline.tune.statistics import across_folds, fold_figures

FOLDS_FILE = "folds.json"


@dataclass(frozen=True)
class SweepContext:
    """What every trial needs besides its grid point; picklable (params as JSON, paths as strings).

    ``tracking_credentials``: the driver's (:func:`pipeline.environment.tracking_credentials`); a trial's
    process has the Ray node's environment, so it sets them before talking to MLflow.
    """

    params: dict[str, Any]
    data_root: str
    sweep: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tracking_credentials: dict[str, str] = field(repr=False)


def run_trial(config: dict[str, Any], context: SweepContext) -> None:
    """Tune's function trainable: train the grid point ``config`` on every fold, reporting after each."""
    use_tracking_credentials(context.tracking_credentials)
    params = trial_params(parse_params(context.params, "tune sweep params"), config)
    key, balancer = trial_key(config), params.tune.balancer
    done = _folds_done(ray.tune.get_checkpoint())
    client = MlflowClient(context.tracking_uri)
    # A trial's fold runs carry its identity tags too: ``tune_run`` tells the levels apart, so a resumed trial
    # finds its own run, not its newest fold run.
    identity = {"tune_sweep": context.sweep, "tune_trial": key}
    with nested_run(
        client,
        context.experiment_id,
        context.parent_run_id,
        run_name("tune", key),
        tags={**identity, "tune_run": "trial", "stage": "tune", "balancer": balancer},
        params={f"balancer.{balancer}.{k}": str(v) for k, v in config.items()}
        | {"train.epochs": str(params.train.epochs)},
        identity=(*identity, "tune_run"),
        outage_s=params.tracking.outage_s,
    ) as trial_run:
        for fold in params.folds:
            if str(fold) in done:
                continue
            with nested_run(
                client,
                context.experiment_id,
                trial_run,
                run_name(key, f"fold {fold}"),
                tags={**identity, "tune_run": "fold", "stage": "tune", "balancer": balancer, "fold": str(fold)},
                identity=(*identity, "tune_run", "fold"),
                outage_s=params.tracking.outage_s,
            ) as fold_run:
                logger = EpochLogger(context.tracking_uri, fold_run)
                result = _train_fold(params, fold, Path(context.data_root), EpochReporter(logger, f"{balancer} {key}"))
                logger.finish(result.history, params.tracking.outage_s)
                figures = fold_figures(result.best_val_loss, result.val_metrics)
                client.log_batch(fold_run, metrics=numeric_metrics({f"best/{k}": v for k, v in figures.items()}, 0))
            done[str(fold)] = figures
            summary = across_folds(list(done.values())) | {"folds_done": len(done)}
            client.log_batch(trial_run, metrics=numeric_metrics(summary, step=len(done)))
            _report(summary, done)


def _train_fold(params: Params, fold: int, data_root: Path, on_epoch: EpochCallback) -> FoldResult:
    folder = Path(ray.tune.get_context().get_trial_dir()) / f"fold_{fold}"
    balancer = params.tune.balancer
    if params.ray.num_workers == 1:
        trainer = Trainer(params, build_tasks(params), balancer, load_fold(data_root, fold), fold)
        return trainer.fit(DirectoryStore(folder), on_epoch=on_epoch)
    return run_fold(
        params, balancer, fold, data_root, folder, ray_run_name(params, balancer, fold), epoch_callback=on_epoch
    )


def _folds_done(checkpoint: ray.tune.Checkpoint | None) -> dict[str, dict[str, float]]:
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / FOLDS_FILE).read_text())


def _report(summary: dict[str, float], done: dict[str, dict[str, float]]) -> None:
    with tempfile.TemporaryDirectory(prefix="mtl-tune-") as folder:
        (Path(folder) / FOLDS_FILE).write_text(json.dumps(done))
        ray.tune.report(summary, checkpoint=ray.tune.Checkpoint.from_directory(folder))
