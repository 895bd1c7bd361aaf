"""The local stack's own promises: PostgreSQL asks for its password even on loopback, a service leaves
nothing listening when it stops, and a machine without PostgreSQL is told what to install."""

from __future__ import annotations

import contextlib
import socket
from urllib.parse import urlsplit

import psycopg2
import pytest

from infra.local import stack

pytestmark = pytest.mark.slow


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((stack.HOST, port)) == 0


def test_postgres_wants_its_password_and_is_gone_after_exit(postgres_db):
    with contextlib.closing(psycopg2.connect(postgres_db.uri, password=postgres_db.password)) as connection:
        assert connection.server_version >= 150000
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(postgres_db.uri, password="not-the-password")

    with stack.postgres(database="other") as other:
        port = urlsplit(other.uri).port
        assert _listening(port)
    assert not _listening(port)


def test_without_postgresql_the_error_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(stack, "POSTGRES_GLOB", str(tmp_path / "*" / "bin" / "initdb"))
    with pytest.raises(stack.MissingTool, match="initdb, pg_ctl, createdb.*apt-get install postgresql"):
        stack.require_postgres()
