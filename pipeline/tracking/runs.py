"""Run structure: a parent run per stage invocation, a nested child run per (balancer, fold).

Names make balancer, fold and data version readable in the MLflow UI's run list::

    train · atdwa · data 3f2a1c9          (parent: tags stage, balancer + lineage; all params)
      atdwa · fold 0 · data 3f2a1c9       (child: tags stage, balancer, fold + lineage; all params)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.entities import Param, Run, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from pipeline.config import Params
from pipeline.tracking.connection import connect
from pipeline.tracking.lineage import LINEAGE_KEYS, flatten_params, lineage_tags
from pipeline.tracking.redaction import redact_values


def run_name(*parts: str) -> str:
    """``"train · atdwa · data 3f2a1c9"`` from ``("train", "atdwa", "data 3f2a1c9")``."""
    return " · ".join(parts)


@contextlib.contextmanager
def stage_run(params: Params, stage: str, balancer: str | None, data_root: Path) -> Iterator[Run]:
    """Connect (failing fast) and open the stage's parent run; it ends FINISHED, or FAILED on an exception.

    Yields the active :class:`mlflow.ActiveRun`. System metrics (CPU, memory, GPU) are sampled for the
    run when ``tracking.system_metrics`` is true.
    """
    connect(params)
    lineage = lineage_tags(params, data_root)
    tags = redact_values({"stage": stage, **({"balancer": balancer} if balancer else {}), **lineage})
    name = run_name(stage, *([balancer] if balancer else []), f"data {lineage['data_version']}")
    with mlflow.start_run(run_name=name, tags=tags, log_system_metrics=params.tracking.system_metrics) as run:
        MlflowClient().log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten_params(params).items()])
        yield run


@contextlib.contextmanager
def child_run(parent: Run, balancer: str, fold: int) -> Iterator[str]:
    """Create a child run of ``parent`` for one fold and yield its run id; it ends FINISHED, or FAILED.

    The run is created through the client, not made the active run, so its id can be handed to Ray
    workers (see :class:`~pipeline.tracking.epochs.EpochLogger`) while the parent stays active in the
    driver. It copies the parent's params, ``stage`` and lineage tags. Several may be open at once
    (e.g. folds trained concurrently, entered through a :class:`contextlib.ExitStack`).
    """
    client = MlflowClient()
    parent_id = parent.info.run_id
    inherited = client.get_run(parent_id).data
    lineage = {k: v for k, v in inherited.tags.items() if k in LINEAGE_KEYS or k == "stage"}
    name = run_name(balancer, f"fold {fold}", f"data {lineage.get('data_version', 'unknown')}")
    tags = redact_values({**lineage, "balancer": balancer, "fold": str(fold)})
    run = client.create_run(
        parent.info.experiment_id, run_name=name, tags={**tags, MLFLOW_PARENT_RUN_ID: parent_id}
    )
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, v) for k, v in redact_values(inherited.params).items()])
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
