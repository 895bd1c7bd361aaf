"""The team stack's services, one of each per test session, started by :mod:`infra.local.stack`.

Real processes on 127.0.0.1: PostgreSQL, moto's S3 server, and ``mlflow server --app-name basic-auth``
on both. Without PostgreSQL installed the tests that need it are skipped with the package to install;
any other failure to start a service is an error. The fixtures change no environment variable: a
test sets the credentials it means to use, after the session's Ray cluster has started (its workers
must not inherit them, or the test could not tell whether the pipeline hands them on).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.local import stack


@pytest.fixture(scope="session")
def s3_store() -> Iterator[stack.S3]:
    with stack.s3() as store:
        yield store


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[stack.Postgres]:
    try:
        stack.require_postgres()
    except stack.MissingTool as exc:
        pytest.skip(str(exc))
    with stack.postgres() as database:
        yield database


@pytest.fixture(scope="session")
def team_server(postgres_db: stack.Postgres, s3_store: stack.S3) -> Iterator[stack.MlflowServer]:
    with stack.mlflow_server(postgres_db, s3_store) as server:
        yield server
