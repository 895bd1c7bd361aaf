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
    inherited = client.get_run(parent.info.run_id).data
    lineage = {k: v for k, v in inherited.tags.items() if k in LINEAGE_KEYS or k == "stage"}
    name = run_name(balancer, f"fold {fold}", f"data {lineage.get('data_version', 'unknown')}")
    with nested_run(
        client, parent.info.experiment_id, parent.info.run_id, name,
        tags={**lineage, "balancer": balancer, "fold": str(fold)}, params=inherited.params,
    ) as run_id:
        yield run_id


@contextlib.contextmanager
def nested_run(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    name: str,
    tags: dict[str, str],
    params: dict[str, str] | None = None,
    identity: tuple[str, ...] = (),
) -> Iterator[str]:
    """Yield the id of a child run of ``parent_id``; it ends FINISHED, or FAILED on an exception.

    With ``identity`` (names of ``tags``), a run of the experiment whose identity tags equal these is
    reused instead of created: re-attached to ``parent_id`` and set running again, so a resumed job
    continues its run rather than leaving a second, partial one. ``tags`` and ``params`` are redacted.
    """
    tags = redact_values(tags)
    existing = next(iter(find_runs(client, experiment_id, {k: tags[k] for k in identity})), None) if identity else None
    if existing is None:
        run_id = client.create_run(experiment_id, run_name=name, tags={**tags, MLFLOW_PARENT_RUN_ID: parent_id}).info.run_id
        if params:
            client.log_batch(run_id, params=[Param(k, v) for k, v in redact_values(params).items()])
    else:
        run_id = existing.info.run_id
        client.set_tag(run_id, MLFLOW_PARENT_RUN_ID, parent_id)
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


def find_runs(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> list[Run]:
    """Runs of the experiment whose tags include ``tags``, newest first."""
    quoted = {k: v.replace("'", "\\'") for k, v in tags.items()}
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in quoted.items())
    return list(client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"]))
