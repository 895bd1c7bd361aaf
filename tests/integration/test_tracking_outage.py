"""The tracking server goes away mid-training (#18 item 3), against the team stack's ``mlflow server`` on PostgreSQL.

A fold is tracked exactly as the train stage tracks it (parent run, child run, an :class:`EpochLogger` shipped
to the trainer as a pickled copy, as Ray ships it to the rank-0 worker, then ``finish`` on the driver's logger),
with the real training loop in this process. The server is stopped and started again from the epoch callback,
after a given epoch, so the outage falls on the same epochs every time.

What a user relies on: a blink of the server neither stops nor restarts training and loses no epoch (the run
ends FINISHED with every epoch's metrics, each once); a server gone for good fails the stage within
``tracking.outage_s`` with one line naming the server (password masked) and the run, and leaves no run FINISHED.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from infra.local import stack
from pipeline.config import Params
from pipeline.data.folds import load_fold
from pipeline.errors import PipelineError
from pipeline.tasks import build_tasks
from pipeline.tracking import EpochLogger, child_run, stage_run
from pipeline.train.loop import FoldResult, Trainer
from tests.conftest import isolated_mlflow, tiny_params

pytestmark = pytest.mark.slow

EPOCHS = 5
OUTAGE_S = 2.0
KEYS = ("val_loss/lesion", "train_loss/diagnosis", "weight/lesion", "lr", "val/lesion/dice")


@dataclass
class Outage:
    """``on_epoch``: hands each record to ``logger``, then stops ``server`` after epoch ``down_after`` and
    starts it again after epoch ``up_after`` (None: never)."""

    server: stack.MlflowServer
    down_after: int
    up_after: int | None
    logger: EpochLogger | None = None
    epochs: list[int] = field(default_factory=list)

    def __call__(self, record: dict[str, Any]) -> None:
        self.epochs.append(record["epoch"])
        self.logger(record)
        if record["epoch"] == self.down_after:
            self.server.stop()
        if record["epoch"] == self.up_after:
            self.server.start()


@pytest.fixture
def server(team_server: stack.MlflowServer) -> Iterator[stack.MlflowServer]:
    """The session's server, running again after the test whatever the test did to it."""
    yield team_server
    if team_server.process.poll() is not None:
        team_server.start()


def uri_with_password(server: stack.MlflowServer) -> str:
    return server.url.replace("://", f"://{server.username}:{server.password}@", 1)


def outage_params(server: stack.MlflowServer, experiment: str) -> Params:
    return tiny_params(
        model={"width": 8},
        train={"epochs": EPOCHS, "folds": [0], "early_stopping_patience": EPOCHS},
        tracking={
            "uri": uri_with_password(server),
            "experiment": experiment,
            "system_metrics": False,
            "log_models": False,
            "outage_s": OUTAGE_S,
        },
    )


def track_fold(params: Params, data: Path, outage: Outage) -> FoldResult:
    """Train fold 0 of balancer ``equal`` tracked as the train stage tracks a fold, the epochs going to
    ``outage`` with a pickled copy of the driver's logger (as Ray ships it to the rank-0 worker)."""
    with (
        stage_run(params, "train", "equal", data) as parent,
        child_run(parent, "equal", 0, outage_s=params.tracking.outage_s) as run_id,
    ):
        logger = EpochLogger(params.tracking.uri, run_id)
        outage.logger = pickle.loads(pickle.dumps(logger))
        result = Trainer(params, build_tasks(params), "equal", load_fold(data, 0), fold=0).fit(on_epoch=outage)
        logger.finish(result.history, params.tracking.outage_s)
    return result


def test_a_blink_of_the_server_loses_no_epoch_and_the_run_ends_finished(server, tiny_data):
    outage = Outage(server, down_after=1, up_after=3)
    with isolated_mlflow():
        result = track_fold(outage_params(server, "outage-blink"), tiny_data, outage)

    assert outage.epochs == list(range(EPOCHS))  # trained straight through, once
    client = MlflowClient(uri_with_password(server))
    run = client.get_run(outage.logger.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_run(run.data.tags[MLFLOW_PARENT_RUN_ID]).info.status == "FINISHED"
    for key in KEYS:
        logged = sorted((p.step, p.value) for p in client.get_metric_history(run.info.run_id, key))
        assert logged == [(r["epoch"], pytest.approx(r[key], nan_ok=True)) for r in result.history], key


def test_a_server_gone_for_good_fails_the_stage_naming_it_and_leaves_no_run_finished(server, tiny_data):
    outage = Outage(server, down_after=1, up_after=None)
    started = time.monotonic()
    with isolated_mlflow(), pytest.raises(PipelineError) as failure:
        track_fold(outage_params(server, "outage-gone"), tiny_data, outage)
    message, run_id = str(failure.value), outage.logger.run_id

    assert outage.epochs == list(range(EPOCHS))  # training went on without the server
    assert time.monotonic() - started < 120  # bounded by tracking.outage_s, not MLflow's minutes of retries
    assert "\n" not in message and server.password not in message
    masked = server.url.replace("://", f"://{server.username}:***@", 1)
    assert message.startswith(f"MLflow tracking server {masked} did not answer for tracking.outage_s = {OUTAGE_S:g} s")
    assert run_id in message and f"{EPOCHS} of {EPOCHS} epochs' metrics not confirmed in the run" in message

    server.start()
    client = MlflowClient(uri_with_password(server))
    runs = client.search_runs([client.get_experiment_by_name("outage-gone").experiment_id])
    assert run_id in {r.info.run_id for r in runs}
    assert not [r for r in runs if r.info.status == "FINISHED"]
    assert [p.step for p in client.get_metric_history(run_id, "val_loss/lesion")] == [0, 1]
