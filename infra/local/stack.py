"""The team stack as plain local processes: PostgreSQL, an S3 endpoint and an MLflow server with basic auth.

The same services as the container deployment, started from binaries on this machine, each on a free
port of 127.0.0.1 and each in a temporary folder of its own that is removed when its context manager
exits (so nothing outlives a test session or a workstation's Ctrl-C):

- :func:`postgres` — a throw-away cluster (``initdb`` + ``pg_ctl``) with one database;
- :func:`s3` — moto's ``ThreadedMotoServer`` (an in-process S3 API, as DVC's own tests use) with one bucket;
- :func:`mlflow_server` — ``mlflow server --app-name basic-auth`` with its runs, registry and users in
  that database and its artifacts proxied to ``s3://<bucket>/mlartifacts``;
- :func:`team_stack` — the three together; ``python -m infra.local.stack`` keeps them up until Ctrl-C
  and prints the variables that point the pipeline, DVC and boto3 at them.

A missing PostgreSQL installation raises :class:`MissingTool` (the tests skip on it, naming the
package); every other failure raises :class:`StackError` with the service's log.
"""

from __future__ import annotations

import configparser
import contextlib
import glob
import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import requests
from moto.server import ThreadedMotoServer

HOST = "127.0.0.1"
POSTGRES_GLOB = "/usr/lib/postgresql/*/bin/initdb"  # Debian/Ubuntu keep the server binaries off PATH
POSTGRES_PROGRAMS = ("initdb", "pg_ctl", "createdb")
POSTGRES_OWNER = "postgres"  # the system user apt's postgresql package creates; initdb refuses root
POSTGRES_START_TIMEOUT_S = 60
MLFLOW_START_TIMEOUT_S = 180.0  # the first start runs every schema migration on PostgreSQL
STOP_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 4000
INSTALL_HINT = "apt-get install postgresql"


class StackError(RuntimeError):
    """A service of the local stack failed to start or stop; the message carries its log."""


class MissingTool(StackError):
    """A program the stack needs is not installed; the message says which and how to install it."""


@dataclass(frozen=True)
class Postgres:
    """A running cluster: ``uri`` names user, host, port and database; the password travels apart from it
    (as ``PGPASSWORD``), so that it does not show in process listings or logged URIs."""

    uri: str
    password: str = field(repr=False)

    @property
    def sqlalchemy_uri(self) -> str:
        """``uri`` with the driver named: SQLAlchemy ≥ 2.1 maps a bare ``postgresql://`` to psycopg 3, but
        the stack installs psycopg2 (``psycopg2-binary``)."""
        return self.uri.replace("postgresql://", "postgresql+psycopg2://", 1)


@dataclass(frozen=True)
class S3:
    """A running S3 endpoint with one bucket, and the (fake) credentials clients sign their requests with."""

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The standard AWS credential variables for this endpoint's clients (boto3, DVC, MLflow)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self):
        """A boto3 S3 client of this endpoint, credentials passed explicitly (the environment is not read)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )


@dataclass
class MlflowServer:
    """A running tracking server; ``username``/``password`` are its basic-auth admin.

    :meth:`stop` and :meth:`start` take it down and bring it back at the same URL, with the same store and
    users (an outage, for tests); ``process`` is the current server process.
    """

    url: str
    username: str
    password: str = field(repr=False)
    process: subprocess.Popen = field(repr=False, compare=False)
    command: list[str] = field(repr=False, compare=False)
    environment: dict[str, str] = field(repr=False, compare=False)
    log: Path = field(repr=False, compare=False)

    def stop(self) -> None:
        """Stop the server's processes; its URL refuses connections until :meth:`start`."""
        _stop_group(self.process)

    def start(self) -> None:
        """Start the server again (after :meth:`stop`); returns once ``/health`` answers."""
        self.process = _launch(self.command, self.environment, self.log)
        _wait_for_health(self.url, self.process, self.log)

    def env(self) -> dict[str, str]:
        """The variables MLflow clients read to reach and log in to this server."""
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
        }


@dataclass(frozen=True)
class TeamStack:
    database: Postgres
    store: S3
    server: MlflowServer

    def env(self) -> dict[str, str]:
        """Everything a shell needs for the pipeline (tracking, ``s3://`` data sources) and DVC's remote."""
        return {**self.server.env(), **self.store.env(), "AWS_ENDPOINT_URL": self.store.endpoint_url}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def postgres_bin_dir() -> Path:
    """The folder of ``initdb``, ``pg_ctl`` and ``createdb``: from PATH (links resolved: a linked ``initdb``
    may stand alone), else the newest Debian-style install."""
    found = shutil.which("initdb")
    installed = sorted(glob.glob(POSTGRES_GLOB), key=_major_version)
    candidates = [Path(found).resolve()] if found else [Path(p) for p in installed]
    for initdb in reversed(candidates):
        if all((initdb.parent / name).is_file() for name in POSTGRES_PROGRAMS):
            return initdb.parent
    raise MissingTool(
        f"PostgreSQL server binaries ({', '.join(POSTGRES_PROGRAMS)}) not found on PATH or in "
        f"{POSTGRES_GLOB}: {INSTALL_HINT}"
    )


def _major_version(initdb: str) -> int:
    version = Path(initdb).parents[1].name
    return int(version) if version.isdigit() else 0


def require_postgres() -> tuple[Path, list[str]]:
    """PostgreSQL's program folder and the command prefix that runs its server programs; MissingTool if
    either cannot be had on this machine."""
    return postgres_bin_dir(), _owner_command()


def _owner_command() -> list[str]:
    """The prefix that runs PostgreSQL's server programs as a non-root user (they refuse to run as root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise MissingTool(
            "runuser not found (running as root, PostgreSQL must run as another user): apt-get install util-linux"
        )
    try:
        pwd.getpwnam(POSTGRES_OWNER)
    except KeyError:
        raise MissingTool(
            f"no system user {POSTGRES_OWNER!r} to run PostgreSQL as (running as root): {INSTALL_HINT} creates it"
        ) from None
    return ["runuser", "-u", POSTGRES_OWNER, "--"]


@contextlib.contextmanager
def postgres(database: str = "mlflow", user: str = "mlflow") -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster on a free port of 127.0.0.1 with the database ``database``.

    Authentication is scram-sha-256 with a random password, also on loopback: ``trust`` would let any
    local account of a shared workstation read and rewrite the team's runs and users. The cluster lives
    in its own folder under the system temp dir (not a caller's folder: pytest's are private to root,
    and the ``postgres`` user must be able to reach its data and socket folders), which is removed on exit.
    """
    bin_dir, owner = require_postgres()
    root = Path(tempfile.mkdtemp(prefix="mtl-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "postgres.log"
    password = secrets.token_urlsafe(24)
    port = free_port()
    try:
        sockets.mkdir()
        pwfile = root / "pwfile"
        pwfile.write_text(password)
        pwfile.chmod(0o600)
        if owner:
            for path in (root, sockets, pwfile):
                shutil.chown(path, POSTGRES_OWNER, POSTGRES_OWNER)
        _run(
            [
                *owner,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-instructions",
            ],
            "initdb",
        )
        pwfile.unlink()
        server_options = f"-c listen_addresses={HOST} -p {port} -k {sockets}"
        _run(
            [
                *owner,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                server_options,
                "-w",
                "-t",
                str(POSTGRES_START_TIMEOUT_S),
                "start",
            ],
            "pg_ctl start",
            log,
        )
        try:
            _run(
                [str(bin_dir / "createdb"), "-h", HOST, "-p", str(port), "-U", user, database],
                "createdb",
                log,
                env={**os.environ, "PGPASSWORD": password},
            )
            yield Postgres(uri=f"postgresql://{user}@{HOST}:{port}/{database}", password=password)
        finally:
            _run([*owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], "pg_ctl stop", log)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(command: list[str], what: str, log: Path | None = None, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        detail = (result.stdout + result.stderr).strip()
        if log is not None and log.exists():
            detail += f"\n--- {log.name} ---\n{_tail(log)}"
        raise StackError(f"{what} failed (exit {result.returncode}):\n{detail}")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]


@contextlib.contextmanager
def s3(bucket: str = "mtl-team") -> Iterator[S3]:
    """moto's S3 API served from a thread of this process on a free port of 127.0.0.1, with ``bucket``.

    moto accepts any credentials; random ones are made up so that a test can tell whether a secret
    leaked. moto keeps its buckets in process-wide memory, so they are reset when the server stops.
    """
    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)  # port 0: the OS picks, no race
    server.start()
    request_log = logging.getLogger("werkzeug")  # moto's handler logs every request at INFO
    level = request_log.level
    request_log.setLevel(logging.WARNING)
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    try:
        store = S3(
            endpoint_url=endpoint_url,
            bucket=bucket,
            access_key_id=f"AKIA{secrets.token_hex(8).upper()}",
            secret_access_key=secrets.token_urlsafe(30),
        )
        store.client().create_bucket(Bucket=bucket)
        yield store
    finally:
        requests.post(f"{endpoint_url}/moto-api/reset", timeout=10).raise_for_status()  # moto server's own API
        server.stop()
        request_log.setLevel(level)


@contextlib.contextmanager
def mlflow_server(database: Postgres, store: S3, username: str = "admin") -> Iterator[MlflowServer]:
    """``mlflow server`` with basic auth on a free port of 127.0.0.1, ready (``/health`` answers) on entry.

    Runs, the model registry and the auth app's users all live in ``database`` (the auth tables keep
    their own migration table there); artifacts are proxied by the server to
    ``s3://<store.bucket>/mlartifacts``, so clients need MLflow credentials but no S3 ones. The admin
    ``username`` gets a random password, written only to the auth config (mode 0600) in the server's
    temporary folder. One worker process: the stack serves tests and one workstation.
    """
    root = Path(tempfile.mkdtemp(prefix="mtl-mlflow-"))
    password = secrets.token_urlsafe(18)
    port = free_port()
    url = f"http://{HOST}:{port}"
    auth_config = root / "basic_auth.ini"
    config = configparser.ConfigParser()
    config["mlflow"] = {
        "default_permission": "READ",
        "database_uri": database.sqlalchemy_uri,
        "admin_username": username,
        "admin_password": password,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    with open(auth_config, "w") as out:
        auth_config.chmod(0o600)
        config.write(out)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env = {
        **inherited,
        **store.env(),
        "PGPASSWORD": database.password,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
        "MLFLOW_S3_ENDPOINT_URL": store.endpoint_url,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # server-side jobs (GenAI evaluation, trace roll-ups) start seven huey consumer processes; unused here
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        database.sqlalchemy_uri,
        "--artifacts-destination",
        f"s3://{store.bucket}/mlartifacts",
        "--app-name",
        "basic-auth",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = root / "mlflow.log"
    try:
        server = MlflowServer(
            url=url,
            username=username,
            password=password,
            process=_launch(command, env, log),
            command=command,
            environment=env,
            log=log,
        )
        try:
            _wait_for_health(url, server.process, log)
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _launch(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``command`` in a session (process group) of its own, its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_health(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + MLFLOW_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise StackError(f"mlflow server exited with status {process.returncode}:\n{_tail(log)}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise StackError(
                f"mlflow server did not answer {url}/health within {MLFLOW_START_TIMEOUT_S:g} s:\n{_tail(log)}"
            )
        time.sleep(0.5)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its uvicorn workers included), SIGKILL what outlives the timeout."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def team_stack() -> Iterator[TeamStack]:
    """PostgreSQL, S3 and the MLflow server on top of them; stopped in reverse order on exit."""
    with postgres() as database, s3() as store, mlflow_server(database, store) as server:
        yield TeamStack(database=database, store=store, server=server)


def main() -> int:
    """Bring the stack up, print the ``export`` lines for a shell, and keep it up until Ctrl-C (or SIGTERM)."""
    for stop in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job starts with it ignored
        signal.signal(stop, signal.default_int_handler)
    try:
        with team_stack() as stack:
            print("# team stack up; in another shell:")
            for name, value in stack.env().items():
                print(f"export {name}={shlex.quote(value)}")
            print(
                f"# DVC remote: dvc remote add -d team s3://{stack.store.bucket}/dvc && "
                f"dvc remote modify team endpointurl {stack.store.endpoint_url}"
            )
            print("# Ctrl-C stops everything and deletes its data.", flush=True)
            while stack.server.process.poll() is None:
                time.sleep(1.0)
            print(f"mlflow server exited with status {stack.server.process.returncode}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
