"""Riding out an outage of the tracking server: quick single attempts, retried with back-off up to a deadline.

MLflow's HTTP client retries a dead server on its own, with back-off, for about four minutes per request
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` = 7, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` = 2), then raises an error
that shows the URI as it is, password included. Inside :func:`single_attempts` each request is tried once,
for at most :data:`ATTEMPT_TIMEOUT_S` seconds, so the caller decides: the epoch logger keeps what it could
not deliver and trains on; :func:`retried` tries again after 0.5, 1, 2, … s until ``tracking.outage_s``
has passed, then raises a :class:`TrackingError` naming the (redacted) URI.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import requests
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT
from mlflow.exceptions import MlflowException

from pipeline.errors import PipelineError
from pipeline.tracking.redaction import redact

ATTEMPT_TIMEOUT_S = 15
FIRST_WAIT_S = 0.5
MAX_WAIT_S = 15.0
SUMMARY_CHARS = 300
T = TypeVar("T")


class TrackingError(PipelineError):
    """The tracking server did not take a call within ``tracking.outage_s`` seconds."""


def is_transient(error: BaseException) -> bool:
    """Whether waiting may cure ``error``: no connection, a timeout, a 5xx or 429 answer (not a refusal,
    e.g. 401 or 404, nor an error of the caller's own)."""
    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    return isinstance(error, (requests.RequestException, ConnectionError, TimeoutError))


@contextlib.contextmanager
def single_attempts() -> Iterator[None]:
    """MLflow HTTP requests made in this block are tried once, for at most :data:`ATTEMPT_TIMEOUT_S` seconds.

    MLflow reads its retry settings from the environment on every request; they are set for the block and
    restored after it (other threads of the process see them meanwhile, which makes them fail sooner, not wrongly).
    """
    settings = {MLFLOW_HTTP_REQUEST_MAX_RETRIES.name: "0", MLFLOW_HTTP_REQUEST_TIMEOUT.name: str(ATTEMPT_TIMEOUT_S)}
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def retried(call: Callable[[], T], *, uri: str, outage_s: float, what: str) -> T:
    """``call()`` in :func:`single_attempts`, tried again on a transient failure (see :func:`is_transient`).

    Waits 0.5, 1, 2, … s (at most :data:`MAX_WAIT_S`) between attempts; the last attempt starts when
    ``outage_s`` seconds have passed since the first (``outage_s = 0``: one attempt). A failure that is not
    transient is raised at once. Raises :class:`TrackingError` naming ``uri`` (password masked), ``what`` and
    the last failure.
    """
    deadline = time.monotonic() + outage_s
    wait = FIRST_WAIT_S
    while True:
        try:
            with single_attempts():
                return call()
        except Exception as error:
            remaining = deadline - time.monotonic()
            if not is_transient(error):
                raise
            if remaining <= 0:
                raise TrackingError(
                    f"MLflow tracking server {redact(uri)} did not answer for tracking.outage_s = {outage_s:g} s: "
                    f"{what} failed ({summary(error)})"
                ) from None
        time.sleep(min(wait, remaining))
        wait = min(2 * wait, MAX_WAIT_S)


def summary(error: BaseException) -> str:
    """``Type: message`` on one line, credentials masked, cut at :data:`SUMMARY_CHARS` characters."""
    text = redact(f"{type(error).__name__}: {' '.join(str(error).split())}")
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 3] + "..."


def once_quietly(call: Callable[[], object]) -> None:
    """One quick attempt at ``call()``, any failure ignored: for marking a run FAILED while an error is already
    on its way up, which an unreachable server must neither hide nor hold up (the run then stays RUNNING)."""
    with contextlib.suppress(Exception), single_attempts():
        call()
