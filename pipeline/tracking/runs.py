"""Run structure: a parent run per stage invocation, a nested child run per (balancer, fold).

Names make balancer, fold and data version readable in the MLflow UI's run list::

    train · atdwa · data 3f2a1c9          (parent: tags stage, balancer + lineage; all params)
      atdwa · fold 0 · data 3f2a1c9       (child: tags stage, balancer, fold + lineage; all params)
"""

from __future__ import annotations

import contextlib
import functools
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
from pipeline.tracking.retry import once_quietly, retried


def run_name(*parts: str) -> str:
    """``"train · atdwa · data 3f2a1c9"`` from ``("train", "atdwa", "data 3f2a1c9")``."""
    return " · ".join(parts)


@contextlib.contextmanager
def stage_run(params: Params, stage: str, balancer: str | None, data_root: Path) -> Iterator[Run]:
    """Connect (failing fast) and open the stage's parent run; it ends FINISHED, or FAILED on an exception.

    Yields the active :class:`mlflow.ActiveRun`. System metrics (CPU, memory, GPU) are sampled for the
    run when ``tracking.system_metrics`` is true. Once connected, its calls ride out an outage of the
    server of up to ``tracking.outage_s`` seconds (see :mod:`pipeline.tracking.retry`); marking the run
    FAILED is tried once, so an error on its way up is neither hidden nor held up.
    """
    uri = connect(params)
    call = functools.partial(retried, uri=uri, outage_s=params.tracking.outage_s)
    lineage = lineage_tags(params, data_root)
    tags = redact_values({"stage": stage, **({"balancer": balancer} if balancer else {}), **lineage})
    name = run_name(stage, *([balancer] if balancer else []), f"data {lineage['data_version']}")
    run = call(
        lambda: mlflow.start_run(run_name=name, tags=tags, log_system_metrics=params.tracking.system_metrics),
        what=f"starting run {name!r}",
    )
    run_id, client = run.info.run_id, MlflowClient()
    try:
        params_logged = [Param(k, v) for k, v in flatten_params(params).items()]
        call(lambda: client.log_batch(run_id, params=params_logged), what=f"logging the params of run {run_id}")
        yield run
    except BaseException:
        once_quietly(lambda: mlflow.end_run(RunStatus.to_string(RunStatus.FAILED)))
        raise
    call(lambda: client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED)), what=f"ending run {run_id}")
    # the status is stored; this ends the run's life in this process (active run, system metrics sampling)
    once_quietly(lambda: mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED)))


@contextlib.contextmanager
def child_run(parent: Run, balancer: str, fold: int, *, outage_s: float) -> Iterator[str]:
    """Create a child run of ``parent`` for one fold and yield its run id; it ends FINISHED, or FAILED.

    The run is created through the client, not made the active run, so its id can be handed to Ray
    workers (see :class:`~pipeline.tracking.epochs.EpochLogger`) while the parent stays active in the
    driver. It copies the parent's params, ``stage`` and lineage tags. Several may be open at once
    (e.g. folds trained concurrently, entered through a :class:`contextlib.ExitStack`). ``outage_s``
    (``tracking.outage_s``): see :func:`nested_run`.
    """
    client = MlflowClient()
    inherited = retried(
        lambda: client.get_run(parent.info.run_id).data,
        uri=client.tracking_uri,
        outage_s=outage_s,
        what=f"reading run {parent.info.run_id}",
    )
    lineage = {k: v for k, v in inherited.tags.items() if k in LINEAGE_KEYS or k == "stage"}
    name = run_name(balancer, f"fold {fold}", f"data {lineage.get('data_version', 'unknown')}")
    with nested_run(
        client,
        parent.info.experiment_id,
        parent.info.run_id,
        name,
        tags={**lineage, "balancer": balancer, "fold": str(fold)},
        params=inherited.params,
        outage_s=outage_s,
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
    *,
    outage_s: float,
) -> Iterator[str]:
    """Yield the id of a child run of ``parent_id``; it ends FINISHED, or FAILED on an exception.

    With ``identity`` (names of ``tags``), a run of the experiment whose identity tags equal these is
    reused instead of created: re-attached to ``parent_id`` and set running again, so a resumed job
    continues its run rather than leaving a second, partial one. ``tags`` and ``params`` are redacted.
    Each call rides out an outage of the server of up to ``outage_s`` seconds (``tracking.outage_s``,
    see :func:`~pipeline.tracking.retry.retried`); marking the run FAILED is tried once.
    """
    call = functools.partial(retried, uri=client.tracking_uri, outage_s=outage_s)
    tags = redact_values(tags)
    existing = None
    if identity:
        matching = call(
            lambda: find_runs(client, experiment_id, {k: tags[k] for k in identity}),
            what=f"searching experiment {experiment_id} for run {name!r}",
        )
        existing = next(iter(matching), None)
    if existing is None:
        run_tags = {**tags, MLFLOW_PARENT_RUN_ID: parent_id}
        run_id = call(
            lambda: client.create_run(experiment_id, run_name=name, tags=run_tags), what=f"creating run {name!r}"
        ).info.run_id
        if params:
            logged = [Param(k, v) for k, v in redact_values(params).items()]
            call(lambda: client.log_batch(run_id, params=logged), what=f"logging the params of run {run_id}")
    else:
        run_id = existing.info.run_id
        call(lambda: client.set_tag(run_id, MLFLOW_PARENT_RUN_ID, parent_id), what=f"re-attaching run {run_id}")
        call(
            lambda: client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING)),
            what=f"resuming run {run_id}",
        )
    try:
        yield run_id
    except BaseException:
        once_quietly(lambda: client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED)))
        raise
    call(lambda: client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED)), what=f"ending run {run_id}")


def find_runs(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> list[Run]:
    """Runs of the experiment whose tags include ``tags``, newest first."""
    quoted = {k: v.replace("'", "\\'") for k, v in tags.items()}
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in quoted.items())
    return list(client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"]))
