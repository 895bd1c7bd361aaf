"""The process environment the stages read: where the tracking server and the Ray cluster are, and the credentials
that must reach the processes that log to MLflow but never a log, a param or a tag.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.config import Params

SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "RAY_AUTH_TOKEN",
)
TRACKING_CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
"""What MLflow's client sends a tracking server to log in (basic auth, or a bearer token)."""
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(params: Params) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else a local ``sqlite:///mlflow.db``.

    A relative sqlite path is made absolute (against the current directory), so that Ray workers,
    whose working directory differs, log to the same database.
    """
    uri = params.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def ray_address(params: Params) -> str | None:
    """``ray.address``, else ``$RAY_ADDRESS``, else None (start a local Ray)."""
    return params.ray.address or os.environ.get("RAY_ADDRESS") or None


def secret_values() -> tuple[str, ...]:
    """Values of credential variables in the environment, which must never be logged anywhere."""
    return tuple(v for name in SECRET_VARIABLES if (v := os.environ.get(name)))


def environment(names: Iterable[str]) -> dict[str, str]:
    """The variables among ``names`` that are set in this process's environment (e.g. to forward to a job)."""
    return {name: os.environ[name] for name in names if name in os.environ}


def tracking_credentials() -> dict[str, str]:
    """The :data:`TRACKING_CREDENTIAL_VARIABLES` set in this process's environment.

    Processes of a Ray cluster (Ray Train workers, Tune trials) get the environment of the node that
    started them, not the driver's, so the driver hands these to the code that logs to MLflow there
    (:class:`~pipeline.tracking.epochs.EpochLogger`, the sweep's context) inside the pickled object
    itself, never as a param or a tag; see :func:`use_tracking_credentials`.
    """
    return environment(TRACKING_CREDENTIAL_VARIABLES)


def use_tracking_credentials(credentials: Mapping[str, str]) -> None:
    """Put the driver's ``credentials`` (from :func:`tracking_credentials`) into this process's environment,
    where MLflow's client reads them on every request.

    Called in the Ray process that logs for the driver, before its first request; the driver's values
    replace any the node has, so the worker logs as the user that owns the run.
    """
    os.environ.update(credentials)
