"""Per-epoch metrics, logged from wherever the training loop runs (a Ray worker included)."""

from __future__ import annotations

import logging
import numbers
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipeline.environment import tracking_credentials, use_tracking_credentials
from pipeline.tracking.redaction import redact
from pipeline.tracking.retry import TrackingError, is_transient, retried, single_attempts, summary

# record fields that identify the record rather than measure something: the step and a run tag
IDENTIFYING = ("epoch", "fold")
_INVALID_KEY_CHARS = re.compile(r"[^\w./ -]")
_log = logging.getLogger(__name__)


def metric_key(name: str) -> str:
    """``name`` as a valid MLflow metric key: characters outside ``[\\w./ -]`` become ``_`` and empty,
    ``.`` or ``..`` path segments are dropped (``"val/lesion/dice"`` is kept as is)."""
    parts = [p for p in _INVALID_KEY_CHARS.sub("_", name).split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


def numeric_metrics(values: Mapping[str, Any], step: int) -> list[Metric]:
    """One :class:`Metric` per real number in ``values`` (None, bools and non-numbers skipped), keys sanitised."""
    timestamp_ms = int(time.time() * 1000)
    return [
        Metric(metric_key(key), float(value), timestamp_ms, step)
        for key, value in values.items()
        if isinstance(value, numbers.Real) and not isinstance(value, bool)
    ]


class EpochLogger:
    """``on_epoch`` callback: logs a record's numeric fields to run ``run_id`` at ``step = record["epoch"]``.

    Picklable (it carries the URI, the run id and the tracking credentials of the process that built
    it, see :func:`pipeline.environment.tracking_credentials`), so the driver can build it and ship it to Ray
    workers, whose environment is the Ray node's, not the driver's; each process puts the credentials
    into its environment and opens its own client on first use. The identifying fields ``epoch`` and
    ``fold`` are not logged as metrics (the step and the run say them).

    An unreachable server does not stop training: each epoch's metrics join a pending queue, and every
    call delivers the queue oldest first, one ``log_batch`` per epoch, each request tried once (see
    :func:`~pipeline.tracking.retry.single_attempts`); what the server does not take waits for the next
    epoch, with a warning. A refusal (e.g. 401, a deleted run) raises. The queue is this process's own
    (a copy shipped to a worker starts empty), so the driver ends each fold with :meth:`finish`, which
    makes the run hold every epoch of the fold's history however the workers fared.
    """

    def __init__(self, tracking_uri: str, run_id: str, credentials: Mapping[str, str] | None = None):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.credentials = dict(tracking_credentials() if credentials is None else credentials)
        self._client: MlflowClient | None = None
        self._pending: list[list[Metric]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "credentials": self.credentials}

    def __setstate__(self, state: dict[str, Any]) -> None:
        EpochLogger.__init__(self, state["tracking_uri"], state["run_id"], state["credentials"])

    def __repr__(self) -> str:  # leaves out the URI, which may carry a password, and the credentials
        return f"EpochLogger(run_id={self.run_id!r})"

    def __call__(self, record: Mapping[str, Any]) -> None:
        self._pending.append(epoch_metrics(record))
        try:
            with single_attempts():
                self._deliver()
        except Exception as error:
            if not is_transient(error):
                raise
            _log.warning(
                "MLflow tracking server %s unreachable (%s): run %s, epoch %s kept with %d epoch(s) to deliver "
                "when it answers",
                redact(self.tracking_uri),
                summary(error),
                self.run_id,
                record["epoch"],
                len(self._pending),
            )

    def finish(self, history: Sequence[Mapping[str, Any]], outage_s: float) -> None:
        """Make run ``run_id`` hold the metrics of every epoch record in ``history`` (the fold's, all epochs).

        Reads which (metric, step) pairs the run has and logs the missing ones: epochs this process still
        has queued, and those a worker queued and lost (it ended, or Ray restarted it). Rides out an outage
        of up to ``outage_s`` seconds (``tracking.outage_s``), else raises a :class:`TrackingError` naming
        the URI (password masked), the run and how many epochs the run lacks, or may lack: those it was not
        seen to hold (all of them when it could not be read).
        """
        self._pending = [epoch_metrics(record) for record in history]  # until the run says otherwise

        def complete() -> None:
            self._pending = self._missing(history)
            self._deliver()

        try:
            retried(complete, uri=self.tracking_uri, outage_s=outage_s, what=f"completing run {self.run_id}")
        except TrackingError as error:
            raise TrackingError(
                f"{error}; {len(self._pending)} of {len(history)} epochs' metrics not confirmed in the run"
            ) from None

    def _deliver(self) -> None:
        """Log the pending epochs oldest first, each dropped from the queue once the server has it."""
        client = self._connected()
        while self._pending:
            client.log_batch(self.run_id, metrics=self._pending[0])
            self._pending.pop(0)

    def _missing(self, history: Sequence[Mapping[str, Any]]) -> list[list[Metric]]:
        """Per epoch of ``history`` that the run lacks something of, the metrics it lacks."""
        client = self._connected()
        epochs = [epoch_metrics(record) for record in history]
        keys = {metric.key for metrics in epochs for metric in metrics}
        logged = {(key, point.step) for key in keys for point in client.get_metric_history(self.run_id, key)}
        lacking = [[m for m in metrics if (m.key, m.step) not in logged] for metrics in epochs]
        return [metrics for metrics in lacking if metrics]

    def _connected(self) -> MlflowClient:
        if self._client is None:
            use_tracking_credentials(self.credentials)
            self._client = MlflowClient(self.tracking_uri)
        return self._client


def epoch_metrics(record: Mapping[str, Any]) -> list[Metric]:
    """The metrics of one epoch record at ``step = record["epoch"]``, its identifying fields left out."""
    fields = {key: value for key, value in record.items() if key not in IDENTIFYING}
    return numeric_metrics(fields, step=int(record["epoch"]))
