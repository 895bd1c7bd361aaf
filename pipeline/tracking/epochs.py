"""Per-epoch metrics, logged from wherever the training loop runs (a Ray worker included)."""

from __future__ import annotations

import numbers
import re
import time
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipeline.config import tracking_credentials, use_tracking_credentials

# record fields that identify the record rather than measure something: the step and a run tag
IDENTIFYING = ("epoch", "fold")
_INVALID_KEY_CHARS = re.compile(r"[^\w./ -]")


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
    it, see :func:`pipeline.config.tracking_credentials`), so the driver can build it and ship it to Ray
    workers, whose environment is the Ray node's, not the driver's; each process puts the credentials
    into its environment and opens its own client on first use. One ``log_batch`` call per epoch. The
    identifying fields ``epoch`` and ``fold`` are not logged as metrics (the step and the run say them).
    A failure to log raises: a worker that cannot reach MLflow fails rather than train unrecorded.
    """

    def __init__(self, tracking_uri: str, run_id: str, credentials: Mapping[str, str] | None = None):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.credentials = dict(tracking_credentials() if credentials is None else credentials)
        self._client: MlflowClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "credentials": self.credentials}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["tracking_uri"], state["run_id"], state["credentials"])

    def __repr__(self) -> str:  # leaves out the URI, which may carry a password, and the credentials
        return f"EpochLogger(run_id={self.run_id!r})"

    def __call__(self, record: Mapping[str, Any]) -> None:
        if self._client is None:
            use_tracking_credentials(self.credentials)
            self._client = MlflowClient(self.tracking_uri)
        fields = {k: v for k, v in record.items() if k not in IDENTIFYING}
        self._client.log_batch(self.run_id, metrics=numeric_metrics(fields, step=int(record["epoch"])))
