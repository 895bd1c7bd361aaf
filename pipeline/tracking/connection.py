"""Point MLflow at the configured tracking store and experiment, failing fast when it is unreachable.

MLflow's own HTTP client retries a dead server with back-off for minutes; :func:`connect` probes
``<uri>/health`` once with a short timeout instead, before any data is loaded.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import Params
from pipeline.environment import tracking_uri
from pipeline.errors import PipelineError
from pipeline.tracking.redaction import redact

PROBE_TIMEOUT_S = 3.0
SQLITE_PREFIX = "sqlite:///"
ARTIFACTS_DIR = "mlartifacts"


def connect(params: Params) -> str:
    """Set the tracking URI and the experiment ``tracking.experiment`` (created if missing); return the URI.

    An ``http(s)`` server must answer ``/health`` within :data:`PROBE_TIMEOUT_S` seconds (any answer
    below 500, 401 included, counts). A local sqlite store gets its folder created and its experiments
    store artifacts in ``mlartifacts/`` next to the database file, not in the working directory.
    """
    uri = tracking_uri(params)
    if uri.startswith(("http://", "https://")):
        _probe(uri)
    mlflow.set_tracking_uri(uri)
    try:
        experiment_id = _experiment_id(params.tracking.experiment, _local_artifact_location(uri))
    except MlflowException as exc:
        raise PipelineError(f"MLflow tracking store {redact(uri)}: {redact(exc.message)}") from None
    mlflow.set_experiment(experiment_id=experiment_id)
    return uri


def _probe(uri: str) -> None:
    shown = redact(uri)
    hint = "start it, or set tracking.uri in params.yaml or $MLFLOW_TRACKING_URI"
    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S)
    except requests.exceptions.SSLError:
        return  # a TLS server answers there; MLflow's client applies the configured certificates
    except requests.exceptions.Timeout:
        raise PipelineError(
            f"MLflow tracking server {shown} did not answer within {PROBE_TIMEOUT_S:g} s; {hint}"
        ) from None
    except requests.RequestException as exc:
        raise PipelineError(f"MLflow tracking server {shown} is unreachable ({type(exc).__name__}); {hint}") from None
    if response.status_code >= 500:
        raise PipelineError(f"MLflow tracking server {shown} answered HTTP {response.status_code} on /health; {hint}")


def _local_artifact_location(uri: str) -> str | None:
    """For ``sqlite:///<path>``: create the database folder; artifacts go to ``<folder>/mlartifacts``."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    database = Path(uri[len(SQLITE_PREFIX) :].split("?", 1)[0])
    if not database.name or database.name == ":memory:":
        return None
    folder = database.resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    return (folder / ARTIFACTS_DIR).as_uri()


def _experiment_id(name: str, artifact_location: str | None) -> str:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as exc:  # another stage created it in the meantime
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" or not (experiment := client.get_experiment_by_name(name)):
                raise
    if experiment.lifecycle_stage != "active":
        raise PipelineError(
            f"tracking.experiment = {name!r} is deleted in MLflow; restore it (mlflow experiments restore) "
            "or choose another name"
        )
    return experiment.experiment_id
